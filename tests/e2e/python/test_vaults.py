"""Wire-level behaviour (api-version, auth challenge) and the second vault kv2 (own port and host name)."""

from __future__ import annotations

import base64
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import ApiVersion, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm

from e2e_helpers import digest_for, force_remote, public_key_from_jwk, unique, verify_ec_locally

SERVER_API_VERSIONS = [
    "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6",
    "7.6-preview.2", "2025-06-01-preview", "2025-07-01", "2026-03-01-preview",
]


@pytest.fixture
def bearer(credential, vault_url):
    return {"Authorization": "Bearer " + credential.get_token(f"{vault_url}/.default").token}


# ---------------------------------------------------------------------------------------------------------------------
# raw HTTP: the contract the SDKs rely on
# ---------------------------------------------------------------------------------------------------------------------


def test_unauthenticated_request_gets_challenge_before_routing(vault_url, ca_cert, admin):
    # a bodiless POST to an operation that needs a body must still get the 401 challenge, not a 400
    r = requests.post(f"{vault_url}/keys/whatever/create?api-version=7.6", verify=ca_cert, timeout=30)
    assert r.status_code == 401, r.text
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'authorization="' in challenge and admin["tenant_id"] in challenge
    assert f'resource="{vault_url}"' in challenge
    assert r.json()["error"]["code"] == "Unauthorized"
    # also without api-version at all
    r = requests.get(f"{vault_url}/keys", verify=ca_cert, timeout=30)
    assert r.status_code == 401
    r = requests.get(f"{vault_url}/keys?api-version=7.6", headers={"Authorization": "Bearer not-a-token"},
                     verify=ca_cert, timeout=30)
    assert r.status_code == 401
    assert "WWW-Authenticate" in r.headers


@pytest.mark.parametrize("version", SERVER_API_VERSIONS)
def test_every_api_version_accepted(vault_url, ca_cert, bearer, version):
    r = requests.get(f"{vault_url}/keys?api-version={version}&maxresults=1", headers=bearer, verify=ca_cert,
                     timeout=30)
    assert r.status_code == 200, f"api-version={version}: {r.status_code} {r.text}"
    assert "value" in r.json()


@pytest.mark.parametrize("query", ["", "?api-version=2099-01-01", "?api-version=7.7", "?api-version="])
def test_missing_or_unknown_api_version(vault_url, ca_cert, bearer, query):
    r = requests.get(f"{vault_url}/keys{query}", headers=bearer, verify=ca_cert, timeout=30)
    assert r.status_code == 400, f"{query!r}: {r.status_code} {r.text}"
    assert r.json()["error"]["code"] == "BadParameter"
    assert r.headers["Content-Type"].startswith("application/json")


def test_percent_encoded_api_version_name(vault_url, ca_cert, bearer):
    # the JS SDK sends ?api%2Dversion=...
    r = requests.get(f"{vault_url}/keys?api%2Dversion=2025-07-01&maxresults=2", headers=bearer, verify=ca_cert,
                     timeout=30)
    assert r.status_code == 200, r.text


def test_wire_shapes(vault_url, ca_cert, bearer):
    name = unique("wire")
    r = requests.post(f"{vault_url}/keys/{name}/create?api-version=7.6", headers=bearer, verify=ca_cert,
                      json={"kty": "EC", "crv": "P-256"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    attrs = body["attributes"]
    for f in ("created", "updated"):
        assert isinstance(attrs[f], int), f"{f} must be integer unix seconds: {attrs[f]!r}"
    assert "=" not in body["key"]["x"] and "=" not in body["key"]["y"], "base64url without padding"
    assert "d" not in body["key"]
    assert all(v is not None for v in body["key"].values()), "null fields must be omitted"
    # padded base64url input is accepted too
    digest = digest_for("ES256")
    padded = base64.urlsafe_b64encode(digest).decode()
    assert padded.endswith("=")
    r = requests.post(f"{body['key']['kid']}/sign?api-version=7.6", headers=bearer, verify=ca_cert,
                      json={"alg": "ES256", "value": padded}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["kid"] == body["key"]["kid"]
    # purge answers 204 with an empty body
    assert requests.delete(f"{vault_url}/keys/{name}?api-version=7.6", headers=bearer, verify=ca_cert,
                           timeout=30).status_code == 200
    r = requests.delete(f"{vault_url}/deletedkeys/{name}?api-version=7.6", headers=bearer, verify=ca_cert, timeout=30)
    assert r.status_code == 204 and r.content == b""


def test_bad_json_body(vault_url, ca_cert, bearer):
    r = requests.post(f"{vault_url}/keys/{unique('badjson')}/create?api-version=7.6",
                      headers={**bearer, "Content-Type": "application/json"}, data=b"{not json", verify=ca_cert,
                      timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# SDK api_version pinning
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [v.value for v in ApiVersion if v.value != "2016-10-01"])
def test_sdk_with_pinned_api_version(vault_url, credential, client_kwargs, wire, version):
    client = KeyClient(vault_url, credential, api_version=version, **client_kwargs)
    key = client.create_ec_key(unique("apiv"), curve="P-256")
    assert client.get_key(key.name).id == key.id
    assert all(f"api-version={version}" in e.url for e in wire.exchanges)
    crypto = force_remote(CryptographyClient(key.id, credential, api_version=version, **client_kwargs))
    sig = crypto.sign(SignatureAlgorithm.es256, digest_for("ES256"))
    verify_ec_locally(public_key_from_jwk(key.key), "ES256", digest_for("ES256"), sig.signature, 32)


# ---------------------------------------------------------------------------------------------------------------------
# the challenge-resource check of the SDK
# ---------------------------------------------------------------------------------------------------------------------


def test_sdk_challenge_verification_rejects_plain_localhost(vault_url, credential, ca_cert):
    """Documents why the default-vault clients turn the check off: resource == request host is not a sub-domain."""
    client = KeyClient(vault_url, credential, connection_verify=ca_cert)
    with pytest.raises(ValueError, match="does not match the requested domain"):
        client.get_key("anything")


# ---------------------------------------------------------------------------------------------------------------------
# second vault: own port
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kv2_url() -> str:
    url = os.environ.get("KEYSHIFT_E2E_KV2_URL")
    if not url:
        raise pytest.UsageError("KEYSHIFT_E2E_KV2_URL is not set: run the suite through tests/e2e/harness.sh")
    return url


@pytest.fixture(scope="session")
def kv2_host_url() -> str:
    url = os.environ.get("KEYSHIFT_E2E_KV2_HOST_URL")
    if not url:
        raise pytest.UsageError("KEYSHIFT_E2E_KV2_HOST_URL is not set: run the suite through tests/e2e/harness.sh")
    return url


def test_kv2_own_port(kv2_url, vault_url, credential, client_kwargs, ca_cert):
    kv2 = KeyClient(kv2_url, credential, **client_kwargs)
    default = KeyClient(vault_url, credential, **client_kwargs)
    name = unique("kv2")
    key = kv2.create_ec_key(name, curve="P-256", tags={"vault": "kv2"})
    assert key.id.startswith(f"{kv2_url}/keys/{name}/"), key.id
    assert kv2.get_key(name).id == key.id
    assert name in [p.name for p in kv2.list_properties_of_keys()]
    # vaults are separate
    with pytest.raises(ResourceNotFoundError):
        default.get_key(name)
    assert name not in [p.name for p in default.list_properties_of_keys()]
    # the CryptographyClient finds the vault from the kid
    crypto = CryptographyClient(key.id, credential, **client_kwargs)
    assert crypto.vault_url == kv2_url
    digest = digest_for("ES256")
    sig = crypto.sign(SignatureAlgorithm.es256, digest)
    verify_ec_locally(public_key_from_jwk(key.key), "ES256", digest, sig.signature, 32)
    # nextLink of a vault on its own port stays on that port
    for _ in range(2):
        kv2.create_ec_key(name, curve="P-256")
    pager = kv2.list_properties_of_key_versions(name, max_page_size=1).by_page()
    assert len(list(next(pager))) == 1
    assert pager.continuation_token.startswith(f"{kv2_url}/keys/{name}/versions"), pager.continuation_token
    assert len([p for page in pager for p in page]) == 2
    # delete/purge inside kv2 only
    kv2.begin_delete_key(name).wait()
    assert kv2.get_deleted_key(name).recovery_id == f"{kv2_url}/deletedkeys/{name}"
    kv2.purge_deleted_key(name)


# ---------------------------------------------------------------------------------------------------------------------
# second vault: host name, SDK challenge verification ON
# ---------------------------------------------------------------------------------------------------------------------


def _resolves(host: str) -> bool:
    try:
        return any(info[4][0] in ("127.0.0.1", "::1") for info in socket.getaddrinfo(host, None))
    except socket.gaierror:
        return False


def test_kv2_host_name_with_challenge_verification(kv2_host_url, kv2_url, credential, ca_cert, wire):
    host = urlsplit(kv2_host_url).hostname
    if not _resolves(host):
        if os.environ.get("KEYSHIFT_E2E_REQUIRE_HOSTS"):
            pytest.fail(f"{host} does not resolve to loopback and KEYSHIFT_E2E_REQUIRE_HOSTS is set "
                        f"(add '127.0.0.1 {host}' to /etc/hosts)")
        pytest.skip(f"{host} does not resolve; add '127.0.0.1 {host}' to /etc/hosts")

    # no verify_challenge_resource=False here: resource https://localhost:<port> is a parent domain of the host
    client = KeyClient(kv2_host_url, credential, connection_verify=ca_cert, raw_response_hook=wire)
    name = unique("kv2host")
    key = client.create_rsa_key(name, size=2048)
    assert key.id.startswith(f"{kv2_host_url}/keys/{name}/"), key.id
    assert wire.exchanges[0].status == 401
    assert client.get_key(name).id == key.id

    crypto = force_remote(CryptographyClient(key.id, credential, connection_verify=ca_cert))
    enc = crypto.encrypt("RSA-OAEP-256", b"via host name")
    assert crypto.decrypt("RSA-OAEP-256", enc.ciphertext).plaintext == b"via host name"

    # paging through the host name: nextLink on the host name too
    client.create_rsa_key(name, size=2048)
    pager = client.list_properties_of_key_versions(name, max_page_size=1).by_page()
    assert len(list(next(pager))) == 1
    assert pager.continuation_token.startswith(f"{kv2_host_url}/keys/{name}/versions"), pager.continuation_token
    rest = [p.id for page in pager for p in page]
    assert len(rest) == 1 and rest[0].startswith(f"{kv2_host_url}/keys/{name}/")

    # the same vault through its own port: same key, kid on that port
    own = KeyClient(kv2_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)
    same = own.get_key(name, key.properties.version)
    assert same.id == f"{kv2_url}/keys/{name}/{key.properties.version}"
    assert same.key.n == key.key.n


def test_backup_restores_into_another_vault_of_the_same_security_domain(vault_url, kv2_url, credential,
                                                                         client_kwargs):
    default = KeyClient(vault_url, credential, **client_kwargs)
    kv2 = KeyClient(kv2_url, credential, **client_kwargs)
    name = unique("xvault")
    key = default.create_ec_key(name, curve="P-384", tags={"from": "default"})
    blob = default.backup_key(name)
    restored = kv2.restore_key_backup(blob)
    assert restored.id == f"{kv2_url}/keys/{name}/{key.properties.version}", "only the vault part of the kid changes"
    assert restored.key.x == key.key.x
    assert restored.properties.tags == {"from": "default"}
    assert restored.properties.recoverable_days == 90
    # both copies sign with the same private key
    digest = digest_for("ES384")
    for kid in (key.id, restored.id):
        crypto = force_remote(CryptographyClient(kid, credential, **client_kwargs))
        sig = crypto.sign(SignatureAlgorithm.es384, digest)
        verify_ec_locally(public_key_from_jwk(key.key), "ES384", digest, sig.signature, 48)
