"""Helpers shared by the e2e test modules (base64url, JWK -> `cryptography` keys, error envelopes, local checks)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import uuid
from typing import Optional

from azure.keyvault.keys import JsonWebKey
from azure.keyvault.keys.crypto import CryptographyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

# --------------------------------------------------------------------------------------------------------------------
# generic helpers
# --------------------------------------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_from_bytes(b: bytes) -> int:
    return int.from_bytes(b, "big")


def int_to_bytes(i: int, length: Optional[int] = None) -> bytes:
    if length is None:
        length = max(1, (i.bit_length() + 7) // 8)
    return i.to_bytes(length, "big")


CURVES = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
    "P-256K": (ec.SECP256K1, 32),
}


def public_key_from_jwk(jwk: JsonWebKey):
    """A `cryptography` public key built from the public JWK the server returned."""
    if jwk.kty in ("RSA", "RSA-HSM"):
        assert jwk.n and jwk.e, "RSA JWK without n/e"
        assert jwk.n[0] != 0, "JWK n has a leading zero byte (RFC 7518 forbids it)"
        return rsa.RSAPublicNumbers(int_from_bytes(jwk.e), int_from_bytes(jwk.n)).public_key()
    if jwk.kty in ("EC", "EC-HSM"):
        curve_cls, size = CURVES[jwk.crv]
        assert len(jwk.x) == size and len(jwk.y) == size, f"EC x/y not {size} bytes wide"
        return ec.EllipticCurvePublicNumbers(int_from_bytes(jwk.x), int_from_bytes(jwk.y), curve_cls()).public_key()
    raise AssertionError(f"no public key for kty {jwk.kty}")


def assert_no_private_material(jwk: JsonWebKey) -> None:
    for attr in ("d", "p", "q", "dp", "dq", "qi", "k"):
        assert getattr(jwk, attr, None) in (None, b""), f"server returned private JWK member {attr}"


def ks(*args, check=True, env=None) -> subprocess.CompletedProcess:
    """Runs the keyshift binary under test (`env`: variables added to this process's); with `check`, a non-zero
    exit fails the test with its stderr."""
    out = subprocess.run([os.environ["KEYSHIFT_BIN"], *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"keyshift {' '.join(map(str, args))}: {out.stderr}")
    return out


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def force_remote(client: CryptographyClient) -> CryptographyClient:
    """Make a CryptographyClient send every operation to the server.

    azure-keyvault-keys 4.11.3 (crypto/_client.py `_initialize`) downloads the key and then encrypts, wraps and
    verifies locally with the public key (RSA, EC) -- and, for oct keys, whose `k` the server rightly never returns,
    it even builds a local SymmetricKey with *random* bytes for AES-KW and AES-CBCPAD. A client built from a key id
    string that is flagged as 'forbidden to get the key' (what the SDK itself does after a 403 on keys/get) keeps its
    NoLocalCryptography provider, so every call goes over the wire.
    """
    assert client._key is None, "force_remote needs a client built from a key id string"  # pylint:disable=protected-access
    client._keys_get_forbidden = True  # pylint:disable=protected-access
    return client


def error_code(exc) -> Optional[str]:
    """The `error.code` of a KeyVaultError envelope carried by an azure-core HttpResponseError."""
    try:
        return exc.response.json()["error"]["code"]
    except Exception:  # noqa: BLE001
        return None


def describe(exc) -> str:
    resp = getattr(exc, "response", None)
    if resp is None:
        return repr(exc)
    req = resp.request
    return f"{req.method} {req.url} -> {resp.status_code} {resp.text()}"



# --------------------------------------------------------------------------------------------------------------------
# algorithms and local checks
# --------------------------------------------------------------------------------------------------------------------

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
HASHLIB = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}

RSA_ENC = {
    "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    "RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    "RSA1_5": padding.PKCS1v15,
}
RSA_SIGN = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
EC_SIGN = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "P-256K": "ES256K"}


def rsa_sig_padding(alg: str):
    h = HASHES[alg[2:]]()
    if alg.startswith("PS"):
        return padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h
    return padding.PKCS1v15(), h


def verify_rsa_locally(pub, alg: str, digest: bytes, signature: bytes) -> None:
    pad, h = rsa_sig_padding(alg)
    pub.verify(signature, digest, pad, Prehashed(h))


def verify_ec_locally(pub, alg: str, digest: bytes, signature: bytes, coord: int) -> None:
    assert len(signature) == 2 * coord, f"ECDSA signature must be raw r||s of {2 * coord} bytes, got {len(signature)}"
    r = int.from_bytes(signature[:coord], "big")
    s = int.from_bytes(signature[coord:], "big")
    h = HASHES[{"ES256": "256", "ES256K": "256", "ES384": "384", "ES512": "512"}[alg]]()
    pub.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(h)))


def digest_for(alg: str, data: bytes = b"keyshift e2e") -> bytes:
    bits = {"ES256K": "256"}.get(alg, alg[-3:])
    return HASHLIB[bits](data).digest()


