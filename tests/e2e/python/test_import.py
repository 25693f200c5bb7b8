"""import_key with locally generated RSA, EC and AES material, then local <-> remote cross-checks."""

from __future__ import annotations

import os

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives import hashes, padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap, aes_key_wrap_with_padding

from e2e_helpers import CURVES, assert_no_private_material, describe, error_code, int_to_bytes, unique
from e2e_helpers import EC_SIGN, RSA_ENC, digest_for, rsa_sig_padding, verify_ec_locally, verify_rsa_locally

ALL_RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]


def rsa_jwk(private_key: rsa.RSAPrivateKey, key_ops=None) -> JsonWebKey:
    priv = private_key.private_numbers()
    pub = priv.public_numbers
    return JsonWebKey(
        kty="RSA",
        key_ops=key_ops or ALL_RSA_OPS,
        n=int_to_bytes(pub.n),
        e=int_to_bytes(pub.e),
        d=int_to_bytes(priv.d),
        p=int_to_bytes(priv.p),
        q=int_to_bytes(priv.q),
        dp=int_to_bytes(priv.dmp1),
        dq=int_to_bytes(priv.dmq1),
        qi=int_to_bytes(priv.iqmp),
    )


def ec_jwk(private_key: ec.EllipticCurvePrivateKey, crv: str) -> JsonWebKey:
    size = CURVES[crv][1]
    priv = private_key.private_numbers()
    return JsonWebKey(
        kty="EC",
        crv=crv,
        key_ops=["sign", "verify"],
        x=int_to_bytes(priv.public_numbers.x, size),
        y=int_to_bytes(priv.public_numbers.y, size),
        d=int_to_bytes(priv.private_value, size),
    )


@pytest.fixture(scope="module")
def local_rsa():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_import_rsa_cross_checks(key_client, crypto_client, wire, local_rsa, vault_url):
    name = unique("imprsa")
    key = key_client.import_key(name, rsa_jwk(local_rsa), tags={"origin": "local"})
    wire.assert_called("PUT", f"/keys/{name}")
    assert key.id.startswith(f"{vault_url}/keys/{name}/")
    assert key.key_type == "RSA"
    assert key.properties.tags == {"origin": "local"}
    assert int.from_bytes(key.key.n, "big") == local_rsa.public_key().public_numbers().n
    assert key.key.e == b"\x01\x00\x01"
    assert_no_private_material(key.key)
    assert set(key.key_operations) == set(ALL_RSA_OPS)

    client = crypto_client(key.id, remote_only=True)
    pub = local_rsa.public_key()

    # remote sign -> local verify, local sign -> remote verify
    for alg in ("RS256", "PS384", "RS512", "PS512"):
        digest = digest_for(alg)
        verify_rsa_locally(pub, alg, digest, client.sign(SignatureAlgorithm(alg), digest).signature)
        pad, h = rsa_sig_padding(alg)
        local_sig = local_rsa.sign(digest, pad, Prehashed(h))
        assert client.verify(SignatureAlgorithm(alg), digest, local_sig).is_valid is True

    # remote encrypt/wrap -> local decrypt (only possible with a key we hold), and the other way round
    for alg, pad in RSA_ENC.items():
        plaintext = os.urandom(24)
        enc = client.encrypt(EncryptionAlgorithm(alg), plaintext)
        assert local_rsa.decrypt(enc.ciphertext, pad()) == plaintext, f"{alg}: server ciphertext not standard"
        wrapped = client.wrap_key(KeyWrapAlgorithm(alg), plaintext)
        assert local_rsa.decrypt(wrapped.encrypted_key, pad()) == plaintext
        assert client.decrypt(EncryptionAlgorithm(alg), pub.encrypt(plaintext, pad())).plaintext == plaintext
        assert client.unwrap_key(KeyWrapAlgorithm(alg), pub.encrypt(plaintext, pad())).key == plaintext


def test_import_new_version_and_hsm(key_client, local_rsa):
    name = unique("impver")
    v1 = key_client.import_key(name, rsa_jwk(local_rsa))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v2 = key_client.import_key(name, rsa_jwk(other, key_ops=["sign", "verify"]), hardware_protected=True)
    assert v2.key_type == "RSA-HSM"
    assert v2.properties.version != v1.properties.version
    assert set(v2.key_operations) == {"sign", "verify"}
    assert key_client.get_key(name).id == v2.id
    assert int.from_bytes(key_client.get_key(name, v1.properties.version).key.n, "big") == \
        local_rsa.public_key().public_numbers().n
    assert {p.id for p in key_client.list_properties_of_key_versions(name)} == {v1.id, v2.id}


@pytest.mark.parametrize("crv", list(CURVES))
def test_import_ec_cross_checks(key_client, crypto_client, crv):
    curve_cls, size = CURVES[crv]
    local = ec.generate_private_key(curve_cls())
    name = unique("impec")
    key = key_client.import_key(name, ec_jwk(local, crv))
    assert key.key_type == "EC" and key.key.crv == crv
    assert key.key.x == int_to_bytes(local.public_key().public_numbers().x, size)
    assert key.key.y == int_to_bytes(local.public_key().public_numbers().y, size)
    assert_no_private_material(key.key)

    alg = EC_SIGN[crv]
    digest = digest_for(alg)
    client = crypto_client(key.id, remote_only=True)
    verify_ec_locally(local.public_key(), alg, digest, client.sign(SignatureAlgorithm(alg), digest).signature, size)
    h = {"ES256": hashes.SHA256, "ES256K": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}[alg]()
    r, s = decode_dss_signature(local.sign(digest, ec.ECDSA(Prehashed(h))))
    raw = int_to_bytes(r, size) + int_to_bytes(s, size)
    assert client.verify(SignatureAlgorithm(alg), digest, raw).is_valid is True
    assert client.verify(SignatureAlgorithm(alg), digest_for(alg, b"x"), raw).is_valid is False


@pytest.mark.parametrize("size", [128, 192, 256])
@pytest.mark.parametrize("hsm", [False, True], ids=["oct", "oct-HSM"])
def test_import_oct_cross_checks(key_client, crypto_client, size, hsm):
    k = os.urandom(size // 8)
    name = unique("impoct")
    key = key_client.import_key(
        name,
        JsonWebKey(kty="oct", k=k, key_ops=["encrypt", "decrypt", "wrapKey", "unwrapKey"]),
        hardware_protected=hsm,
    )
    assert key.key_type == ("oct-HSM" if hsm else "oct")
    assert key.key.k is None, "imported AES material must never be returned"
    client = crypto_client(key.id, remote_only=True)

    # AES-KW (RFC 3394)
    cek = os.urandom(32)
    kw = KeyWrapAlgorithm(f"A{size}KW")
    assert client.wrap_key(kw, cek).encrypted_key == aes_key_wrap(k, cek)
    assert client.unwrap_key(kw, aes_key_wrap(k, cek)).key == cek
    # CKM_AES_KEY_WRAP (RFC 3394) and CKM_AES_KEY_WRAP_PAD (RFC 5649, any length)
    ckm = KeyWrapAlgorithm.ckm_aes_key_wrap
    assert client.wrap_key(ckm, cek).encrypted_key == aes_key_wrap(k, cek)
    assert client.unwrap_key(ckm, aes_key_wrap(k, cek)).key == cek
    ckm_pad = KeyWrapAlgorithm.ckm_aes_key_wrap_pad
    odd = os.urandom(21)
    assert client.wrap_key(ckm_pad, odd).encrypted_key == aes_key_wrap_with_padding(k, odd)
    assert client.unwrap_key(ckm_pad, aes_key_wrap_with_padding(k, odd)).key == odd

    # AES-GCM: server-generated iv; local decrypt of the server's output, remote decrypt of ours
    gcm = EncryptionAlgorithm(f"A{size}GCM")
    aad = b"aad-bytes"
    plaintext = b"some plaintext for GCM"
    enc = client.encrypt(gcm, plaintext, additional_authenticated_data=aad)
    assert AESGCM(k).decrypt(enc.iv, enc.ciphertext + enc.tag, aad) == plaintext
    nonce = os.urandom(12)
    sealed = AESGCM(k).encrypt(nonce, plaintext, aad)
    dec = client.decrypt(gcm, sealed[:-16], iv=nonce, authentication_tag=sealed[-16:],
                         additional_authenticated_data=aad)
    assert dec.plaintext == plaintext

    # AES-CBC (no padding)
    iv = os.urandom(16)
    block_pt = os.urandom(32)
    cbc = EncryptionAlgorithm(f"A{size}CBC")
    enc = client.encrypt(cbc, block_pt, iv=iv)
    d = Cipher(algorithms.AES(k), modes.CBC(iv)).decryptor()
    assert d.update(enc.ciphertext) + d.finalize() == block_pt
    e = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    assert client.decrypt(cbc, e.update(block_pt) + e.finalize(), iv=iv).plaintext == block_pt

    # AES-CBC with PKCS#7 padding
    cbcpad = EncryptionAlgorithm(f"A{size}CBCPAD")
    odd_pt = b"seventeen bytes!!"
    enc = client.encrypt(cbcpad, odd_pt, iv=iv)
    d = Cipher(algorithms.AES(k), modes.CBC(iv)).decryptor()
    unpadder = sym_padding.PKCS7(128).unpadder()
    assert unpadder.update(d.update(enc.ciphertext) + d.finalize()) + unpadder.finalize() == odd_pt
    padder = sym_padding.PKCS7(128).padder()
    e = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    local_ct = e.update(padder.update(odd_pt) + padder.finalize()) + e.finalize()
    assert client.decrypt(cbcpad, local_ct, iv=iv).plaintext == odd_pt


def test_import_bad_oct_length(key_client):
    with pytest.raises(HttpResponseError) as ei:
        key_client.import_key(unique("impbad"), JsonWebKey(kty="oct", k=os.urandom(10)))
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"


def test_import_inconsistent_rsa(key_client, local_rsa):
    jwk = rsa_jwk(local_rsa)
    jwk.d = int_to_bytes(int.from_bytes(jwk.d, "big") ^ 1)  # d no longer matches n/e/p/q
    with pytest.raises(HttpResponseError) as ei:
        key_client.import_key(unique("impbad"), jwk)
    assert ei.value.status_code == 400, describe(ei.value)
    assert error_code(ei.value) == "BadParameter"
