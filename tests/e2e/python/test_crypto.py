"""CryptographyClient against Keyshift: every algorithm, remote results cross-checked with `cryptography` locally."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.exceptions import InvalidSignature

from e2e_helpers import (
    CURVES,
    EC_SIGN,
    RSA_ENC,
    RSA_SIGN,
    describe,
    digest_for,
    error_code,
    public_key_from_jwk,
    unique,
    verify_ec_locally,
    verify_rsa_locally,
)

def version_of(key) -> str:
    return key.properties.version


# ---------------------------------------------------------------------------------------------------------------------
# RSA encrypt / decrypt / wrap / unwrap
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", list(RSA_ENC))
def test_rsa_local_encrypt_remote_decrypt(rsa2048, crypto_client, wire, alg):
    pub = public_key_from_jwk(rsa2048.key)
    plaintext = os.urandom(32)
    ciphertext = pub.encrypt(plaintext, RSA_ENC[alg]())
    client = crypto_client(rsa2048.id, remote_only=True)
    result = client.decrypt(EncryptionAlgorithm(alg), ciphertext)
    assert result.plaintext == plaintext
    assert result.key_id == rsa2048.id
    wire.assert_called("POST", f"/keys/{rsa2048.name}/{version_of(rsa2048)}/decrypt")


@pytest.mark.parametrize("alg", list(RSA_ENC))
def test_rsa_remote_encrypt_remote_decrypt(rsa2048, crypto_client, wire, alg):
    client = crypto_client(rsa2048.id, remote_only=True)
    plaintext = os.urandom(40)
    enc = client.encrypt(EncryptionAlgorithm(alg), plaintext)
    wire.assert_called("POST", f"/keys/{rsa2048.name}/{version_of(rsa2048)}/encrypt")
    assert enc.key_id == rsa2048.id
    assert len(enc.ciphertext) == 256, "RSA ciphertext length equals the modulus length"
    enc2 = client.encrypt(EncryptionAlgorithm(alg), plaintext)
    assert enc2.ciphertext != enc.ciphertext, "RSA encryption padding must be randomized"
    assert client.decrypt(EncryptionAlgorithm(alg), enc.ciphertext).plaintext == plaintext


@pytest.mark.parametrize("alg", list(RSA_ENC))
def test_rsa_wrap_unwrap(rsa2048, crypto_client, wire, alg):
    pub = public_key_from_jwk(rsa2048.key)
    cek = os.urandom(32)
    client = crypto_client(rsa2048.id, remote_only=True)
    # local wrap -> remote unwrap
    assert client.unwrap_key(KeyWrapAlgorithm(alg), pub.encrypt(cek, RSA_ENC[alg]())).key == cek
    wire.assert_called("POST", f"/{version_of(rsa2048)}/unwrapkey")
    # remote wrap -> remote unwrap
    wrapped = client.wrap_key(KeyWrapAlgorithm(alg), cek)
    wire.assert_called("POST", f"/{version_of(rsa2048)}/wrapkey")
    assert wrapped.key_id == rsa2048.id
    assert wrapped.algorithm == alg
    assert len(wrapped.encrypted_key) == 256
    assert client.unwrap_key(KeyWrapAlgorithm(alg), wrapped.encrypted_key).key == cek


def test_rsa_sdk_local_encrypt_then_remote_decrypt(rsa2048, crypto_client, wire):
    """The default CryptographyClient encrypts locally with the server's JWK; the server must decrypt that."""
    client = crypto_client(rsa2048.id)
    plaintext = b"encrypted by the SDK itself"
    enc = client.encrypt(EncryptionAlgorithm.rsa_oaep_256, plaintext)
    assert client.decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext).plaintext == plaintext
    wire.assert_called("POST", "/decrypt")
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key).key == b"k" * 32


def test_crypto_client_from_key_object(rsa2048, credential, client_kwargs, wire):
    client = CryptographyClient(rsa2048, credential, **client_kwargs)
    digest = digest_for("RS256")
    sig = client.sign(SignatureAlgorithm.rs256, digest)
    wire.assert_called("POST", "/sign")
    assert client.verify(SignatureAlgorithm.rs256, digest, sig.signature).is_valid  # local verify by the SDK


# ---------------------------------------------------------------------------------------------------------------------
# RSA sign / verify
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", RSA_SIGN)
def test_rsa_sign_verify(rsa2048, crypto_client, wire, alg):
    pub = public_key_from_jwk(rsa2048.key)
    client = crypto_client(rsa2048.id, remote_only=True)
    digest = digest_for(alg)
    signed = client.sign(SignatureAlgorithm(alg), digest)
    wire.assert_called("POST", f"/{version_of(rsa2048)}/sign")
    assert signed.key_id == rsa2048.id
    assert signed.algorithm == alg
    assert len(signed.signature) == 256
    verify_rsa_locally(pub, alg, digest, signed.signature)  # PSS: salt length = digest length

    ok = client.verify(SignatureAlgorithm(alg), digest, signed.signature)
    wire.assert_called("POST", f"/{version_of(rsa2048)}/verify")
    assert ok.is_valid is True
    bad = bytearray(signed.signature)
    bad[10] ^= 1
    assert client.verify(SignatureAlgorithm(alg), digest, bytes(bad)).is_valid is False
    other = digest_for(alg, b"other data")
    assert client.verify(SignatureAlgorithm(alg), other, signed.signature).is_valid is False


def test_rsa_sign_wrong_digest_length(rsa2048, crypto_client):
    client = crypto_client(rsa2048.id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.sign(SignatureAlgorithm.rs256, b"\x00" * 20)
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# EC sign / verify
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crv", list(EC_SIGN))
def test_ec_sign_verify(ec_keys, crypto_client, wire, crv):
    key = ec_keys[crv]
    alg = EC_SIGN[crv]
    pub = public_key_from_jwk(key.key)
    client = crypto_client(key.id, remote_only=True)
    digest = digest_for(alg)
    signed = client.sign(SignatureAlgorithm(alg), digest)
    wire.assert_called("POST", f"/{version_of(key)}/sign")
    verify_ec_locally(pub, alg, digest, signed.signature, CURVES[crv][1])

    assert client.verify(SignatureAlgorithm(alg), digest, signed.signature).is_valid is True
    wire.assert_called("POST", f"/{version_of(key)}/verify")
    bad = bytearray(signed.signature)
    bad[-1] ^= 1
    assert client.verify(SignatureAlgorithm(alg), digest, bytes(bad)).is_valid is False

    # the SDK's own local verifier (r||s -> DER) must accept the server's signature too
    assert crypto_client(key.id).verify(SignatureAlgorithm(alg), digest, signed.signature).is_valid is True


def test_ec_sign_with_wrong_curve_alg(ec_keys, crypto_client):
    client = crypto_client(ec_keys["P-256"].id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.sign(SignatureAlgorithm.es384, digest_for("ES384"))
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_ec_key_cannot_encrypt(ec_keys, crypto_client):
    client = crypto_client(ec_keys["P-256"].id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.encrypt(EncryptionAlgorithm.rsa_oaep, b"x")
    assert ei.value.status_code in (400, 403), describe(ei.value)


# ---------------------------------------------------------------------------------------------------------------------
# oct / oct-HSM: AES-KW, AES-GCM, AES-CBC, AES-CBCPAD (all remote; local cross-checks are in test_import.py)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 192, 256])
def test_aes_kw(oct_keys, crypto_client, wire, size):
    key = oct_keys[size]
    client = crypto_client(key.id, remote_only=True)
    alg = KeyWrapAlgorithm(f"A{size}KW")
    cek = os.urandom(32)
    wrapped = client.wrap_key(alg, cek)
    wire.assert_called("POST", f"/{version_of(key)}/wrapkey")
    assert len(wrapped.encrypted_key) == 40, "RFC 3394 output is input + 8 bytes"
    assert client.unwrap_key(alg, wrapped.encrypted_key).key == cek
    wire.assert_called("POST", f"/{version_of(key)}/unwrapkey")
    assert client.wrap_key(alg, cek).encrypted_key == wrapped.encrypted_key, "AES-KW is deterministic"
    tampered = bytearray(wrapped.encrypted_key)
    tampered[0] ^= 1
    with pytest.raises(HttpResponseError) as ei:
        client.unwrap_key(alg, bytes(tampered))
    assert ei.value.status_code == 400, describe(ei.value)


@pytest.mark.parametrize("size", [128, 192, 256])
def test_aes_gcm(oct_keys, crypto_client, wire, size):
    key = oct_keys[size]
    client = crypto_client(key.id, remote_only=True)
    alg = EncryptionAlgorithm(f"A{size}GCM")
    plaintext = b"GCM plaintext of arbitrary length!"
    aad = b"header"
    enc = client.encrypt(alg, plaintext, additional_authenticated_data=aad)
    wire.assert_called("POST", f"/{version_of(key)}/encrypt")
    assert enc.iv is not None and len(enc.iv) == 12, f"server-generated GCM iv must be 12 bytes: {enc.iv!r}"
    assert enc.tag is not None and len(enc.tag) == 16
    assert len(enc.ciphertext) == len(plaintext)
    assert enc.aad == aad
    dec = client.decrypt(alg, enc.ciphertext, iv=enc.iv, authentication_tag=enc.tag,
                         additional_authenticated_data=aad)
    assert dec.plaintext == plaintext
    enc2 = client.encrypt(alg, plaintext, additional_authenticated_data=aad)
    assert enc2.iv != enc.iv, "a fresh iv per encryption"
    # wrong aad / tag must fail authentication
    with pytest.raises(HttpResponseError) as ei:
        client.decrypt(alg, enc.ciphertext, iv=enc.iv, authentication_tag=enc.tag,
                       additional_authenticated_data=b"other")
    assert ei.value.status_code == 400, describe(ei.value)
    bad_tag = bytes([enc.tag[0] ^ 1]) + enc.tag[1:]
    with pytest.raises(HttpResponseError) as ei:
        client.decrypt(alg, enc.ciphertext, iv=enc.iv, authentication_tag=bad_tag, additional_authenticated_data=aad)
    assert ei.value.status_code == 400, describe(ei.value)
    # no aad at all
    enc3 = client.encrypt(alg, plaintext)
    assert client.decrypt(alg, enc3.ciphertext, iv=enc3.iv, authentication_tag=enc3.tag).plaintext == plaintext


@pytest.mark.parametrize("size", [128, 192, 256])
def test_aes_cbc(oct_keys, crypto_client, wire, size):
    key = oct_keys[size]
    client = crypto_client(key.id, remote_only=True)
    alg = EncryptionAlgorithm(f"A{size}CBC")
    iv = os.urandom(16)
    plaintext = os.urandom(48)
    enc = client.encrypt(alg, plaintext, iv=iv)
    wire.assert_called("POST", f"/{version_of(key)}/encrypt")
    assert len(enc.ciphertext) == 48, "CBC without padding keeps the length"
    assert enc.iv == iv, "the result echoes the client's iv for CBC"
    assert client.decrypt(alg, enc.ciphertext, iv=iv).plaintext == plaintext
    with pytest.raises(HttpResponseError) as ei:
        client.encrypt(alg, b"not a multiple of 16", iv=iv)
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


@pytest.mark.parametrize("size", [128, 192, 256])
def test_aes_cbcpad(oct_keys, crypto_client, wire, size):
    key = oct_keys[size]
    client = crypto_client(key.id, remote_only=True)
    alg = EncryptionAlgorithm(f"A{size}CBCPAD")
    iv = os.urandom(16)
    for plaintext in (b"", b"twenty bytes of data", os.urandom(32)):
        enc = client.encrypt(alg, plaintext, iv=iv)
        assert len(enc.ciphertext) == (len(plaintext) // 16 + 1) * 16, "PKCS#7 always adds 1..16 bytes"
        assert enc.iv == iv
        assert client.decrypt(alg, enc.ciphertext, iv=iv).plaintext == plaintext
    wire.assert_called("POST", f"/{version_of(key)}/decrypt")


def test_aes_alg_size_mismatch(oct_keys, crypto_client):
    client = crypto_client(oct_keys[128].id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32))
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"
    with pytest.raises(HttpResponseError) as ei:
        client.encrypt(EncryptionAlgorithm.rsa_oaep, b"x")
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_rsa_key_with_aes_alg(rsa2048, crypto_client):
    client = crypto_client(rsa2048.id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.encrypt(EncryptionAlgorithm.a256_gcm, b"x")
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"
    with pytest.raises(HttpResponseError) as ei:
        client.sign("ES256", digest_for("ES256"))
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_unknown_algorithm_is_bad_parameter(rsa2048, crypto_client):
    client = crypto_client(rsa2048.id, remote_only=True)
    with pytest.raises(HttpResponseError) as ei:
        client.sign("RS999", b"\x00" * 32)
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


# ---------------------------------------------------------------------------------------------------------------------
# versioned vs unversioned key ids, KeyClient.get_cryptography_client, the generated client
# ---------------------------------------------------------------------------------------------------------------------


def test_versioned_and_unversioned_crypto_clients(key_client, crypto_client, wire, vault_url):
    name = unique("cc")
    v1 = key_client.create_rsa_key(name, size=2048)
    v2 = key_client.rotate_key(name)
    pub1, pub2 = public_key_from_jwk(v1.key), public_key_from_jwk(v2.key)
    digest = digest_for("PS256")

    # unversioned kid: the SDK sends /keys/{name}//sign; the server uses the latest version
    unversioned = crypto_client(f"{vault_url}/keys/{name}", remote_only=True)
    wire.clear()
    s = unversioned.sign(SignatureAlgorithm.ps256, digest)
    wire.assert_called("POST", f"/keys/{name}//sign")
    verify_rsa_locally(pub2, "PS256", digest, s.signature)
    with pytest.raises(InvalidSignature):
        verify_rsa_locally(pub1, "PS256", digest, s.signature)
    assert unversioned.verify(SignatureAlgorithm.ps256, digest, s.signature).is_valid
    wire.assert_called("POST", f"/keys/{name}//verify")
    enc = unversioned.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"latest")
    wire.assert_called("POST", f"/keys/{name}//encrypt")
    assert unversioned.decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext).plaintext == b"latest"
    wire.assert_called("POST", f"/keys/{name}//decrypt")
    w = unversioned.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"c" * 16)
    wire.assert_called("POST", f"/keys/{name}//wrapkey")
    assert unversioned.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, w.encrypted_key).key == b"c" * 16
    wire.assert_called("POST", f"/keys/{name}//unwrapkey")
    # what the unversioned client encrypted is decryptable with the latest version only
    v2_client = crypto_client(v2.id, remote_only=True)
    assert v2_client.decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext).plaintext == b"latest"
    with pytest.raises(HttpResponseError):
        crypto_client(v1.id, remote_only=True).decrypt(EncryptionAlgorithm.rsa_oaep_256, enc.ciphertext)

    # versioned kid of the old version: signs with v1
    versioned = crypto_client(v1.id, remote_only=True)
    s1 = versioned.sign(SignatureAlgorithm.ps256, digest)
    assert s1.key_id == v1.id
    verify_rsa_locally(pub1, "PS256", digest, s1.signature)

    # the default (not remote-only) unversioned client downloads the latest key and pins its version
    default = crypto_client(f"{vault_url}/keys/{name}")
    s2 = default.sign(SignatureAlgorithm.rs256, digest_for("RS256"))
    assert s2.key_id == v2.id
    verify_rsa_locally(pub2, "RS256", digest_for("RS256"), s2.signature)
    assert default.key_id == v2.id


def test_key_client_get_cryptography_client(key_client, wire):
    name = unique("gcc")
    v1 = key_client.create_ec_key(name, curve="P-256")
    v2 = key_client.create_ec_key(name, curve="P-256")
    digest = digest_for("ES256")
    latest = key_client.get_cryptography_client(name)
    s = latest.sign(SignatureAlgorithm.es256, digest)
    verify_ec_locally(public_key_from_jwk(v2.key), "ES256", digest, s.signature, 32)
    old = key_client.get_cryptography_client(name, key_version=v1.properties.version)
    s1 = old.sign(SignatureAlgorithm.es256, digest)
    assert s1.key_id == v1.id
    verify_ec_locally(public_key_from_jwk(v1.key), "ES256", digest, s1.signature, 32)
    assert old.verify(SignatureAlgorithm.es256, digest, s1.signature).is_valid


def test_generated_client_operations(key_client, rsa2048, wire):
    """The generated client (what the handwritten clients sit on) talks to the server for every operation."""
    gen = key_client._client  # pylint:disable=protected-access
    models = key_client._models  # pylint:disable=protected-access
    name, version = rsa2048.name, version_of(rsa2048)
    enc = gen.encrypt(name, version, models.KeyOperationsParameters(algorithm="RSA-OAEP-256", value=b"generated"))
    assert enc.kid == rsa2048.id
    dec = gen.decrypt(name, version, models.KeyOperationsParameters(algorithm="RSA-OAEP-256", value=enc.result))
    assert dec.result == b"generated"
    wrapped = gen.wrap_key(name, "", models.KeyOperationsParameters(algorithm="RSA-OAEP", value=b"w" * 32))
    unwrapped = gen.unwrap_key(name, "", models.KeyOperationsParameters(algorithm="RSA-OAEP", value=wrapped.result))
    assert unwrapped.result == b"w" * 32
    digest = digest_for("RS384")
    sig = gen.sign(name, version, models.KeySignParameters(algorithm="RS384", value=digest))
    ok = gen.verify(name, version, models.KeyVerifyParameters(algorithm="RS384", digest=digest, signature=sig.result))
    assert ok.value is True
    for op in ("encrypt", "decrypt", "sign", "verify"):
        wire.assert_called("POST", f"/{version}/{op}")
    wire.assert_called("POST", f"/keys/{name}//wrapkey")
    wire.assert_called("POST", f"/keys/{name}//unwrapkey")


# ---------------------------------------------------------------------------------------------------------------------
# permission-like refusals: disabled, nbf/exp, key_ops
# ---------------------------------------------------------------------------------------------------------------------


def _assert_forbidden(call):
    with pytest.raises(HttpResponseError) as ei:
        call()
    assert ei.value.status_code == 403, describe(ei.value)
    assert error_code(ei.value) == "Forbidden", describe(ei.value)
    return ei.value


def test_disabled_key_is_forbidden(key_client, crypto_client):
    key = key_client.create_ec_key(unique("dis"), curve="P-256")
    key_client.update_key_properties(key.name, enabled=False)
    client = crypto_client(key.id, remote_only=True)
    _assert_forbidden(lambda: client.sign(SignatureAlgorithm.es256, digest_for("ES256")))
    key_client.update_key_properties(key.name, enabled=True)
    assert client.sign(SignatureAlgorithm.es256, digest_for("ES256")).signature


def test_not_yet_valid_and_expired_keys_are_forbidden(key_client, crypto_client):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    future = key_client.create_ec_key(unique("nbf"), curve="P-256", not_before=now + timedelta(days=1))
    _assert_forbidden(lambda: crypto_client(future.id, remote_only=True).sign("ES256", digest_for("ES256")))
    expired = key_client.create_ec_key(unique("exp"), curve="P-256", expires_on=now - timedelta(days=1))
    _assert_forbidden(lambda: crypto_client(expired.id, remote_only=True).sign("ES256", digest_for("ES256")))


def test_key_ops_are_enforced(key_client, crypto_client):
    key = key_client.create_rsa_key(unique("ops"), size=2048, key_operations=["sign", "verify"])
    client = crypto_client(key.id, remote_only=True)
    err = _assert_forbidden(lambda: client.encrypt(EncryptionAlgorithm.rsa_oaep, b"x"))
    assert err.response.json()["error"].get("innererror", {}).get("code") == "KeyOperationForbidden", describe(err)
    _assert_forbidden(lambda: client.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"x" * 16))
    assert client.sign(SignatureAlgorithm.rs256, digest_for("RS256")).signature
    # narrowing key_ops by update takes effect at once
    key_client.update_key_properties(key.name, key_operations=["verify"])
    _assert_forbidden(lambda: client.sign(SignatureAlgorithm.rs256, digest_for("RS256")))


def test_expired_key_still_decrypts_unwraps_verifies(key_client, crypto_client):
    """Key Vault semantics: outside nbf/exp a key may not encrypt, wrap or sign, but may decrypt, unwrap, verify."""
    name = unique("expd")
    key = key_client.create_rsa_key(name, size=2048)
    live = crypto_client(key.id, remote_only=True)
    ct = live.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"before expiry").ciphertext
    wrapped = live.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32).encrypted_key
    digest = digest_for("RS256")
    sig = live.sign(SignatureAlgorithm.rs256, digest).signature
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    key_client.update_key_properties(name, not_before=past - timedelta(days=1), expires_on=past)
    _assert_forbidden(lambda: live.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"x"))
    _assert_forbidden(lambda: live.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32))
    _assert_forbidden(lambda: live.sign(SignatureAlgorithm.rs256, digest))
    assert live.decrypt(EncryptionAlgorithm.rsa_oaep_256, ct).plaintext == b"before expiry"
    assert live.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"k" * 32
    assert live.verify(SignatureAlgorithm.rs256, digest, sig).is_valid


def test_crypto_follows_delete_recover_purge(key_client, crypto_client, vault_url):
    name = unique("life")
    key = key_client.create_ec_key(name, curve="P-256")
    digest = digest_for("ES256")
    by_version = crypto_client(key.id, remote_only=True)
    latest = crypto_client(f"{vault_url}/keys/{name}", remote_only=True)
    assert by_version.sign("ES256", digest).signature and latest.sign("ES256", digest).signature  # warm any cache

    key_client.begin_delete_key(name).wait()
    for client in (by_version, latest):
        with pytest.raises(HttpResponseError) as ei:
            client.sign("ES256", digest)
        assert ei.value.status_code == 404, "a deleted key must not be usable: " + describe(ei.value)

    key_client.begin_recover_deleted_key(name).wait()
    assert by_version.sign("ES256", digest).key_id == key.id
    verify_ec_locally(public_key_from_jwk(key.key), "ES256", digest, latest.sign("ES256", digest).signature, 32)

    key_client.begin_delete_key(name).wait()
    key_client.purge_deleted_key(name)
    for client in (by_version, latest):
        with pytest.raises(HttpResponseError) as ei:
            client.sign("ES256", digest)
        assert ei.value.status_code == 404, "a purged key must not be usable: " + describe(ei.value)
