"""KeyClient operations against Keyshift: create/get/update/list/delete/recover/purge/backup/restore/rotate/policy/rng."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.keyvault.keys._shared import http_challenge_cache
from azure.keyvault.keys import (
    KeyCurveName,
    KeyOperation,
    KeyRotationLifetimeAction,
    KeyRotationPolicy,
    KeyRotationPolicyAction,
    KeyType,
)

from e2e_helpers import (
    CURVES,
    RSA_ENC,
    assert_no_private_material,
    describe,
    digest_for,
    error_code,
    public_key_from_jwk,
    unique,
    verify_ec_locally,
    verify_rsa_locally,
)

VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
ALL_RSA_OPS = {"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}


def now_s() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def assert_kid(key, vault_url: str, name: str) -> str:
    prefix = f"{vault_url}/keys/{name}/"
    assert key.id.startswith(prefix), f"kid {key.id} does not start with {prefix}"
    version = key.id[len(prefix):]
    assert VERSION_RE.match(version), f"version {version!r} is not 32 lowercase hex"
    assert key.properties.version == version
    assert key.name == name
    assert key.properties.vault_url == vault_url
    return version


def make_versions(create, limit: int = 16):
    """Create versions until the newest one shares its `created` second with an older version whose id sorts
    higher (or `limit` versions exist), and return them oldest first.

    Such a newest version is where a server that picks "the latest" by (created, version id) rather than by
    creation order goes wrong, so the tests using this catch that deterministically instead of half of the time.
    """
    made = [create()]
    while len(made) < limit:
        made.append(create())
        newest = made[-1].properties
        if any(v.properties.created_on == newest.created_on and v.properties.version > newest.version
               for v in made[:-1]):
            break
    return made


def assert_fresh_attributes(key) -> None:
    p = key.properties
    assert p.enabled is True
    assert p.created_on is not None and p.updated_on is not None
    assert abs((p.created_on - datetime.now(timezone.utc)).total_seconds()) < 300
    assert p.recoverable_days == 90
    assert p.recovery_level == "Recoverable+Purgeable"
    assert p.managed in (None, False)


# ---------------------------------------------------------------------------------------------------------------------
# handshake
# ---------------------------------------------------------------------------------------------------------------------


def test_challenge_handshake_and_token(key_client, wire, credential, admin, vault_url):
    # the SDK caches challenges per host:port in a module-global cache; start from a clean one
    http_challenge_cache.clear()
    key = key_client.create_ec_key(unique("hs"), curve="P-256")
    first = wire.exchanges[0]
    assert first.status == 401, "the SDK's first (bodiless) request must be answered with the 401 challenge"
    assert first.request_body == b""
    assert wire.exchanges[1].status == 200
    assert wire.exchanges[1].url.split("?")[0].endswith("/create")
    req = credential.requests[-1]
    assert req["scopes"] == (f"{vault_url}/.default",)
    assert req["tenant_id"] == admin["tenant_id"]
    assert key.key_type == "EC"


# ---------------------------------------------------------------------------------------------------------------------
# create
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,hsm",
    [(2048, False), (3072, False), (2048, True), (4096, True)],
    ids=["RSA-2048", "RSA-3072", "RSA-HSM-2048", "RSA-HSM-4096"],
)
def test_create_rsa(key_client, crypto_client, vault_url, size, hsm):
    name = unique("rsa")
    key = key_client.create_rsa_key(name, size=size, hardware_protected=hsm)
    assert_kid(key, vault_url, name)
    assert key.key_type == ("RSA-HSM" if hsm else "RSA")
    assert_no_private_material(key.key)
    pub = public_key_from_jwk(key.key)
    assert pub.key_size == size
    assert pub.public_numbers().e == 65537
    assert key.key.e == b"\x01\x00\x01"
    assert set(key.key_operations) == ALL_RSA_OPS
    assert_fresh_attributes(key)
    # the key works at its size: remote PS512 signature verified locally, local OAEP ciphertext decrypted remotely
    client = crypto_client(key.id, remote_only=True)
    digest = digest_for("PS512")
    sig = client.sign("PS512", digest).signature
    assert len(sig) == size // 8
    verify_rsa_locally(pub, "PS512", digest, sig)
    ct = pub.encrypt(b"size check", RSA_ENC["RSA-OAEP-256"]())
    assert client.decrypt("RSA-OAEP-256", ct).plaintext == b"size check"


@pytest.mark.parametrize("crv", list(CURVES))
def test_create_ec(key_client, vault_url, crv):
    name = unique("ec")
    key = key_client.create_ec_key(name, curve=crv)
    assert_kid(key, vault_url, name)
    assert key.key_type == "EC"
    assert key.key.crv == crv
    assert_no_private_material(key.key)
    public_key_from_jwk(key.key)  # checks x/y widths and that the point is on the curve
    assert set(key.key_operations) == {"sign", "verify"}
    assert_fresh_attributes(key)


def test_create_ec_hsm(key_client, vault_url):
    name = unique("echsm")
    key = key_client.create_ec_key(name, curve=KeyCurveName.p_384, hardware_protected=True)
    assert key.key_type == "EC-HSM"
    assert key.key.crv == "P-384"
    public_key_from_jwk(key.key)


@pytest.mark.parametrize("size", [128, 192, 256])
@pytest.mark.parametrize("hsm", [False, True], ids=["oct", "oct-HSM"])
def test_create_oct(key_client, vault_url, size, hsm):
    name = unique("oct")
    key = key_client.create_oct_key(name, size=size, hardware_protected=hsm)
    assert_kid(key, vault_url, name)
    assert key.key_type == ("oct-HSM" if hsm else "oct")
    assert key.key.k is None, "the server must never return oct key material"
    assert_no_private_material(key.key)
    assert {"encrypt", "decrypt", "wrapKey", "unwrapKey"} <= set(key.key_operations)
    assert_fresh_attributes(key)


def test_create_key_generic_with_options(key_client, vault_url):
    name = unique("opts")
    nbf = now_s() - timedelta(days=1)
    exp = now_s() + timedelta(days=30)
    key = key_client.create_key(
        name,
        KeyType.rsa,
        size=2048,
        key_operations=[KeyOperation.sign, KeyOperation.verify],
        enabled=True,
        not_before=nbf,
        expires_on=exp,
        tags={"env": "e2e", "team": "keyshift"},
    )
    assert set(key.key_operations) == {"sign", "verify"}
    assert key.properties.not_before == nbf
    assert key.properties.expires_on == exp
    assert key.properties.tags == {"env": "e2e", "team": "keyshift"}
    got = key_client.get_key(name)
    assert got.properties.not_before == nbf
    assert got.properties.expires_on == exp
    assert got.properties.tags == {"env": "e2e", "team": "keyshift"}
    assert set(got.key_operations) == {"sign", "verify"}


def test_create_disabled(key_client):
    name = unique("disabled")
    key = key_client.create_ec_key(name, curve="P-256", enabled=False)
    assert key.properties.enabled is False
    assert key_client.get_key(name).properties.enabled is False


# ---------------------------------------------------------------------------------------------------------------------
# get
# ---------------------------------------------------------------------------------------------------------------------


def test_get_latest_and_by_version(key_client, wire, vault_url):
    name = unique("ver")
    made = make_versions(lambda: key_client.create_ec_key(name, curve="P-256"))  # same name: new versions
    v1, v2 = made[0], made[-1]
    assert len({v.properties.version for v in made}) == len(made)

    wire.clear()
    latest = key_client.get_key(name)
    assert latest.id == v2.id
    assert latest.key.x == v2.key.x
    ex = wire.assert_called("GET", f"/keys/{name}/")  # empty version segment: /keys/{name}/
    assert ex.status == 200

    old = key_client.get_key(name, v1.properties.version)
    assert old.id == v1.id
    assert old.key.x == v1.key.x and old.key.y == v1.key.y
    wire.assert_called("GET", f"/keys/{name}/{v1.properties.version}")


def test_get_is_case_insensitive_on_name(key_client):
    name = unique("CaseKey")
    key = key_client.create_ec_key(name, curve="P-256")
    got = key_client.get_key(name.lower())
    assert got.properties.version == key.properties.version


# ---------------------------------------------------------------------------------------------------------------------
# update
# ---------------------------------------------------------------------------------------------------------------------


def test_update_latest_properties(key_client, wire):
    name = unique("upd")
    key = key_client.create_rsa_key(name, size=2048, tags={"a": "1"})
    nbf = now_s() - timedelta(hours=1)
    exp = now_s() + timedelta(days=10)
    wire.clear()
    updated = key_client.update_key_properties(
        name,
        enabled=False,
        not_before=nbf,
        expires_on=exp,
        tags={"b": "2"},
        key_operations=[KeyOperation.encrypt, KeyOperation.decrypt],
    )
    wire.assert_called("PATCH", f"/keys/{name}/")
    assert updated.id == key.id
    assert updated.properties.enabled is False
    assert updated.properties.not_before == nbf
    assert updated.properties.expires_on == exp
    assert updated.properties.tags == {"b": "2"}
    assert set(updated.key_operations) == {"encrypt", "decrypt"}
    assert updated.properties.updated_on >= key.properties.updated_on
    assert updated.key.n == key.key.n

    got = key_client.get_key(name)
    assert got.properties.enabled is False
    assert got.properties.not_before == nbf
    assert got.properties.expires_on == exp
    assert got.properties.tags == {"b": "2"}
    assert set(got.key_operations) == {"encrypt", "decrypt"}

    # omitted fields stay unchanged
    again = key_client.update_key_properties(name, enabled=True)
    assert again.properties.not_before == nbf
    assert again.properties.enabled is True
    assert again.properties.tags == {"b": "2"}
    assert again.properties.expires_on == exp
    assert set(again.key_operations) == {"encrypt", "decrypt"}


def test_update_specific_version(key_client):
    name = unique("updv")
    v1 = key_client.create_ec_key(name, curve="P-256")
    v2 = key_client.create_ec_key(name, curve="P-256")
    updated = key_client.update_key_properties(name, v1.properties.version, tags={"old": "yes"}, enabled=False)
    assert updated.id == v1.id
    assert updated.properties.tags == {"old": "yes"}
    assert key_client.get_key(name, v1.properties.version).properties.enabled is False
    latest = key_client.get_key(name)
    assert latest.id == v2.id
    assert latest.properties.enabled is True
    assert not latest.properties.tags


# ---------------------------------------------------------------------------------------------------------------------
# list + paging
# ---------------------------------------------------------------------------------------------------------------------


def _next_link_requests(wire, path_suffix):
    return [e for e in wire.authorized() if e.method == "GET" and urlsplit(e.url).path.endswith(path_suffix)]


def test_list_versions_paging(key_client, wire, vault_url):
    name = unique("pages")
    ids = {key_client.create_ec_key(name, curve="P-256").id for _ in range(5)}
    wire.clear()
    pages = [list(page) for page in key_client.list_properties_of_key_versions(name, max_page_size=2).by_page()]
    assert len(pages) >= 3, f"5 versions at max_page_size=2 must take >= 3 pages, got {[len(p) for p in pages]}"
    assert all(len(p) <= 2 for p in pages)
    listed = [p.id for page in pages for p in page]
    assert sorted(listed) == sorted(ids), "every version exactly once, with full versioned kids"
    for props in (p for page in pages for p in page):
        assert props.name == name and VERSION_RE.match(props.version)
    reqs = _next_link_requests(wire, f"/keys/{name}/versions")
    assert len(reqs) == len(pages)
    first = parse_qs(urlsplit(reqs[0].url).query)
    assert first["maxresults"] == ["2"]
    # nextLink requests: absolute URL on the same vault, re-sent with the client's api-version
    for r in reqs[1:]:
        assert r.url.startswith(f"{vault_url}/keys/{name}/versions"), r.url
        assert parse_qs(urlsplit(r.url).query).get("api-version") == ["2025-07-01"], r.url


def test_list_versions_next_link_is_absolute_and_resumable(key_client, vault_url):
    name = unique("resume")
    ids = {key_client.create_ec_key(name, curve="P-256").id for _ in range(3)}
    pager = key_client.list_properties_of_key_versions(name, max_page_size=1).by_page()
    first = [p.id for p in next(pager)]
    assert len(first) == 1
    token = pager.continuation_token
    assert token, "a nextLink must be returned while more versions remain"
    assert token.startswith(f"{vault_url}/"), f"nextLink must be absolute on the same host: {token}"
    # resume from the nextLink with a brand-new pager
    rest = [p.id for page in key_client.list_properties_of_key_versions(name, max_page_size=1).by_page(
        continuation_token=token) for p in page]
    assert sorted(first + rest) == sorted(ids)


def test_list_keys_paging(key_client, wire, vault_url):
    prefix = unique("lst")
    names = {f"{prefix}-{i}" for i in range(4)}
    for n in names:
        key_client.create_ec_key(n, curve="P-256")
    key_client.create_ec_key(f"{prefix}-0", curve="P-256")  # a 2nd version must not list twice
    wire.clear()
    pages = [list(page) for page in key_client.list_properties_of_keys(max_page_size=3).by_page()]
    assert len(pages) >= 2
    assert all(len(p) <= 3 for p in pages)
    mine = [p for page in pages for p in page if p.name.startswith(prefix)]
    assert sorted(p.name for p in mine) == sorted(names)
    for p in mine:
        assert p.id == f"{vault_url}/keys/{p.name}", f"list items carry base kids without version: {p.id}"
        assert p.version is None
        assert p.enabled is True
    all_names = [p.name for page in pages for p in page]
    assert len(all_names) == len(set(n.lower() for n in all_names)), "a key listed twice across pages"
    reqs = _next_link_requests(wire, "/keys")
    assert parse_qs(urlsplit(reqs[0].url).query)["maxresults"] == ["3"]


def test_list_max_page_size_out_of_range(key_client):
    with pytest.raises(HttpResponseError) as ei:
        list(key_client.list_properties_of_keys(max_page_size=26))
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# soft delete, recover, purge
# ---------------------------------------------------------------------------------------------------------------------


def test_soft_delete_get_list_recover(key_client, wire, vault_url):
    name = unique("del")
    v1 = key_client.create_ec_key(name, curve="P-256", tags={"t": "1"})
    made = [v1] + make_versions(lambda: key_client.create_ec_key(name, curve="P-256"))
    v2 = made[-1]

    poller = key_client.begin_delete_key(name)
    deleted = poller.result()
    assert deleted.recovery_id == f"{vault_url}/deletedkeys/{name}"
    assert deleted.id == v2.id
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert abs((deleted.deleted_date - datetime.now(timezone.utc)).total_seconds()) < 300
    days = (deleted.scheduled_purge_date - deleted.deleted_date).total_seconds() / 86400
    assert abs(days - 90) < 0.01, f"scheduledPurgeDate - deletedDate = {days} days, expected 90"
    poller.wait()
    assert poller.done()
    wire.assert_called("GET", f"/deletedkeys/{name}")

    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name, v1.properties.version)
    assert name not in [p.name for p in key_client.list_properties_of_keys()]

    got = key_client.get_deleted_key(name)
    assert got.recovery_id == deleted.recovery_id
    assert got.id == v2.id
    assert got.key.x == v2.key.x
    assert_no_private_material(got.key)

    deleted_pages = [list(pg) for pg in key_client.list_deleted_keys(max_page_size=1).by_page()]
    assert all(len(pg) <= 1 for pg in deleted_pages)
    listed = [d for pg in deleted_pages for d in pg if d.name == name]
    assert len(listed) == 1
    assert listed[0].recovery_id == deleted.recovery_id
    assert listed[0].scheduled_purge_date == deleted.scheduled_purge_date

    # the name is reserved while deleted
    with pytest.raises(ResourceExistsError) as ei:
        key_client.create_ec_key(name, curve="P-256")
    assert ei.value.status_code == 409

    recover = key_client.begin_recover_deleted_key(name)
    recovered = recover.result()
    recover.wait()
    assert recovered.id == v2.id
    assert key_client.get_key(name).key.x == v2.key.x
    assert key_client.get_key(name, v1.properties.version).properties.tags == {"t": "1"}
    versions = {p.id for p in key_client.list_properties_of_key_versions(name)}
    assert versions == {v.id for v in made}
    with pytest.raises(ResourceNotFoundError):
        key_client.get_deleted_key(name)


def test_purge(key_client, wire):
    name = unique("purge")
    old = key_client.create_ec_key(name, curve="P-256")
    key_client.begin_delete_key(name).wait()
    wire.clear()
    assert key_client.purge_deleted_key(name) is None
    ex = wire.assert_called("DELETE", f"/deletedkeys/{name}")
    assert ex.status == 204
    assert ex.response_text == ""
    with pytest.raises(ResourceNotFoundError):
        key_client.get_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name)
    # the name is free again, with a fresh history
    new = key_client.create_ec_key(name, curve="P-256")
    assert [p.id for p in key_client.list_properties_of_key_versions(name)] == [new.id]
    assert new.id != old.id


def test_backup_purge_restore(key_client, crypto_client, vault_url):
    name = unique("bak")
    v1 = key_client.create_ec_key(name, curve="P-256", tags={"gen": "1"})
    # the current version must survive the round trip by creation order, not by version-id order
    made = [v1] + make_versions(lambda: key_client.create_ec_key(name, curve="P-256", tags={"gen": "latest"}))
    v2 = made[-1]
    assert key_client.get_key(name).id == v2.id
    key_client.update_key_properties(name, v1.properties.version, enabled=False)
    key_client.update_key_rotation_policy(
        name,
        KeyRotationPolicy(
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P45D")],
            expires_in="P100D",
        ),
    )
    digest = digest_for("ES256")
    sig = crypto_client(v2.id, remote_only=True).sign("ES256", digest).signature

    blob = key_client.backup_key(name)
    assert isinstance(blob, bytes) and len(blob) > 64
    assert v2.key.x not in blob  # opaque, not a plain copy of the key

    # restore refused while the name is live
    with pytest.raises(ResourceExistsError) as ei:
        key_client.restore_key_backup(blob)
    assert ei.value.status_code == 409

    key_client.begin_delete_key(name).wait()
    # ... and while it is soft-deleted
    with pytest.raises(ResourceExistsError) as ei:
        key_client.restore_key_backup(blob)
    assert ei.value.status_code == 409

    key_client.purge_deleted_key(name)
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(name)
    restored = key_client.restore_key_backup(blob)
    assert restored.name == name
    versions = {p.id: p for p in key_client.list_properties_of_key_versions(name)}
    assert set(versions) == {v.id for v in made}, "the backup contains all versions, with their ids"
    assert versions[v1.id].enabled is False
    assert key_client.get_key(name, v1.properties.version).properties.tags == {"gen": "1"}
    policy = key_client.get_key_rotation_policy(name)
    assert policy.expires_in == "P100D", "the backup carries the rotation policy"
    assert [a.time_after_create for a in policy.lifetime_actions if a.action == KeyRotationPolicyAction.rotate] == ["P45D"]
    # the restored private keys still work
    assert crypto_client(v2.id, remote_only=True).verify("ES256", digest, sig).is_valid
    sig1 = crypto_client(v1.id, remote_only=True)
    key_client.update_key_properties(name, v1.properties.version, enabled=True)
    verify_ec_locally(public_key_from_jwk(v1.key), "ES256", digest, sig1.sign("ES256", digest).signature, 32)

    # and the version that was current at backup time is current again
    assert restored.id == v2.id, (
        f"restore returned {restored.id}, but {v2.id} was the current version at backup; versions: "
        + ", ".join(f"{v.properties.version}@{int(v.properties.created_on.timestamp())}" for v in made)
    )
    assert key_client.get_key(name).id == v2.id
    unversioned = crypto_client(f"{vault_url}/keys/{name}", remote_only=True)
    verify_ec_locally(public_key_from_jwk(v2.key), "ES256", digest, unversioned.sign("ES256", digest).signature, 32)


def test_restore_garbage_is_bad_parameter(key_client):
    with pytest.raises(HttpResponseError) as ei:
        key_client.restore_key_backup(b"this is not a keyshift backup blob at all")
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# rotate, rotation policy
# ---------------------------------------------------------------------------------------------------------------------


def test_rotate(key_client, wire):
    name = unique("rot")
    v1 = key_client.create_rsa_key(name, size=2048, tags={"keep": "me"}, key_operations=["sign", "verify"])
    wire.clear()
    v2 = key_client.rotate_key(name)
    wire.assert_called("POST", f"/keys/{name}/rotate")
    assert v2.name == name
    assert v2.properties.version != v1.properties.version
    assert VERSION_RE.match(v2.properties.version)
    assert v2.key.n != v1.key.n, "rotation must generate new key material"
    assert v2.key_type == v1.key_type
    assert public_key_from_jwk(v2.key).key_size == 2048
    assert key_client.get_key(name).id == v2.id
    assert {p.id for p in key_client.list_properties_of_key_versions(name)} == {v1.id, v2.id}
    # rotate again within the same second: the newest rotation is always the current version
    rotated = make_versions(lambda: key_client.rotate_key(name))
    assert key_client.get_key(name).id == rotated[-1].id

    ec1 = key_client.create_ec_key(unique("rotec"), curve="P-384")
    ec2 = key_client.rotate_key(ec1.name)
    assert ec2.key.crv == "P-384" and ec2.key.x != ec1.key.x


def test_rotate_unknown_key(key_client):
    with pytest.raises(ResourceNotFoundError):
        key_client.rotate_key(unique("nope"))


def test_rotation_policy(key_client, vault_url):
    name = unique("pol")
    key_client.create_rsa_key(name, size=2048)
    default = key_client.get_key_rotation_policy(name)
    assert default.id == f"{vault_url}/keys/{name}/rotationpolicy"
    for action in default.lifetime_actions or []:
        assert action.action in (KeyRotationPolicyAction.rotate, KeyRotationPolicyAction.notify)

    policy = KeyRotationPolicy()
    updated = key_client.update_key_rotation_policy(
        name,
        policy,
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")],
        expires_in="P90D",
    )
    assert updated.id == f"{vault_url}/keys/{name}/rotationpolicy"
    assert updated.expires_in == "P90D"
    rotate = [a for a in updated.lifetime_actions if a.action == KeyRotationPolicyAction.rotate]
    assert len(rotate) == 1 and rotate[0].time_after_create == "P30D" and rotate[0].time_before_expiry is None

    got = key_client.get_key_rotation_policy(name)
    assert got.expires_in == "P90D"
    rotate = [a for a in got.lifetime_actions if a.action == KeyRotationPolicyAction.rotate]
    assert len(rotate) == 1 and rotate[0].time_after_create == "P30D"
    assert got.created_on is not None and got.updated_on is not None

    # replace with a timeBeforeExpiry trigger
    upd2 = key_client.update_key_rotation_policy(
        name,
        KeyRotationPolicy(
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P7D")],
            expires_in="P60D",
        ),
    )
    assert upd2.expires_in == "P60D"
    rotate = [a for a in upd2.lifetime_actions if a.action == KeyRotationPolicyAction.rotate]
    assert rotate[0].time_before_expiry == "P7D" and rotate[0].time_after_create is None

    # the policy's expiry applies to versions made by rotation
    v = key_client.rotate_key(name)
    assert v.properties.expires_on is not None
    delta = v.properties.expires_on - v.properties.created_on
    assert abs(delta.total_seconds() - 60 * 86400) < 120, f"expected exp = created + P60D, got {delta}"


def test_rotation_policy_expiry_below_28_days(key_client):
    name = unique("polshort")
    key_client.create_ec_key(name, curve="P-256")
    with pytest.raises(HttpResponseError) as ei:
        key_client.update_key_rotation_policy(
            name,
            KeyRotationPolicy(
                lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P1D")],
                expires_in="P7D",
            ),
        )
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_rotation_policy_bad_duration(key_client):
    name = unique("polbad")
    key_client.create_ec_key(name, curve="P-256")
    with pytest.raises(HttpResponseError) as ei:
        key_client.update_key_rotation_policy(
            name,
            KeyRotationPolicy(
                lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="30 days")]
            ),
        )
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# random bytes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 16, 128])
def test_random_bytes(key_client, count):
    a = key_client.get_random_bytes(count)
    b = key_client.get_random_bytes(count)
    assert isinstance(a, bytes) and len(a) == count and len(b) == count
    if count >= 16:
        assert a != b


@pytest.mark.parametrize("count", [0, 129])
def test_random_bytes_out_of_range(key_client, count):
    # KeyClient.get_random_bytes refuses count < 1 itself; the generated client sends whatever it is given
    request = key_client._models.GetRandomBytesRequest(count=count)  # pylint:disable=protected-access
    with pytest.raises(HttpResponseError) as ei:
        key_client._client.get_random_bytes(parameters=request)  # pylint:disable=protected-access
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# error mapping
# ---------------------------------------------------------------------------------------------------------------------


def test_not_found_errors(key_client):
    missing = unique("missing")
    for call in (
        lambda: key_client.get_key(missing),
        lambda: key_client.get_key(missing, "0123456789abcdef0123456789abcdef"),
        lambda: key_client.get_deleted_key(missing),
        lambda: key_client.purge_deleted_key(missing),
        lambda: key_client.begin_recover_deleted_key(missing),
        lambda: key_client.begin_delete_key(missing),
        lambda: key_client.backup_key(missing),
        lambda: key_client.update_key_properties(missing, enabled=False),
        lambda: key_client.get_key_rotation_policy(missing),
    ):
        with pytest.raises(ResourceNotFoundError) as ei:
            call()
        assert ei.value.status_code == 404
        assert error_code(ei.value), f"404 without a KeyVaultError envelope: {describe(ei.value)}"
    with pytest.raises(ResourceNotFoundError) as ei:
        key_client.get_key(missing)
    assert error_code(ei.value) == "KeyNotFound", describe(ei.value)


def test_unknown_version_of_existing_key(key_client):
    key = key_client.create_ec_key(unique("uv"), curve="P-256")
    with pytest.raises(ResourceNotFoundError):
        key_client.get_key(key.name, "0123456789abcdef0123456789abcdef")


def test_purge_live_key_is_not_found(key_client):
    key = key_client.create_ec_key(unique("plive"), curve="P-256")
    with pytest.raises(ResourceNotFoundError):
        key_client.purge_deleted_key(key.name)
    assert key_client.get_key(key.name).id == key.id


def test_create_on_deleted_name_conflicts(key_client):
    name = unique("conf")
    key_client.create_ec_key(name, curve="P-256")
    key_client.begin_delete_key(name).wait()
    with pytest.raises(ResourceExistsError) as ei:
        key_client.create_ec_key(name, curve="P-256")
    assert ei.value.status_code == 409
    assert error_code(ei.value) == "Conflict", describe(ei.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_type": "RSA", "size": 1024},
        {"key_type": "RSA", "size": 2047},
        {"key_type": "oct-HSM", "size": 100},
        {"key_type": "EC", "curve": "P-192"},
        {"key_type": "DSA"},
    ],
    ids=["rsa-1024", "rsa-2047", "oct-100", "ec-p192", "kty-dsa"],
)
def test_bad_create_parameters(key_client, kwargs):
    kty = kwargs.pop("key_type")
    with pytest.raises(HttpResponseError) as ei:
        key_client.create_key(unique("bad"), kty, **kwargs)
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter", describe(ei.value)


@pytest.mark.parametrize("name", ["bad_name_with_underscore", "x" * 128, "dot.name"], ids=["underscore", "128-chars", "dot"])
def test_bad_key_name(key_client, name):
    with pytest.raises(HttpResponseError) as ei:
        key_client.create_ec_key(name, curve="P-256")
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_longest_key_name(key_client):
    name = unique("n")
    name = name + "a" * (127 - len(name))
    assert key_client.create_ec_key(name, curve="P-256").name == name
