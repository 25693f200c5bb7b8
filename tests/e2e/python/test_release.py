"""Secure key release and BYOK with the unmodified azure-keyvault-keys SDK.

The test plays both outside parties: an attestation authority (an HTTPS server with its own CA,
serving OIDC discovery and a JWKS, trusted with `keyshift attestation trust`) that mints RS256
tokens, and the enclave (an RSA key whose public half goes into the token's x-ms-runtime.keys).
The enclave checks the release answer as a real one would: the JWS signature by x5c[0], the chain
to Keyshift's CA and the vault host in the leaf, then unwraps key_hsm with its private key.
BYOK blobs are built as Azure's BYOK tools build them: OAEP-SHA1 of an AES key, AES-KWP of PKCS#8.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyReleasePolicy
from azure.keyvault.keys.crypto import SignatureAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding
from cryptography.x509.oid import NameOID

from e2e_helpers import b64url, int_to_bytes, unb64url, unique


def _keyshift(*args: str) -> dict:
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], *args, "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out) if out.strip().startswith(("{", "[")) else {}


def _cert(subject: str, key, issuer_name, issuer_key, ca: bool, san=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Authority:
    """A stand-in for Microsoft Azure Attestation, over HTTPS on an ephemeral port."""

    def __init__(self, tmp_path):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "e2e-attestation-key"
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = _cert("e2e attestation CA", ca_key, None, None, ca=True)
        tls_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        leaf = _cert("127.0.0.1", tls_key, ca.subject, ca_key, ca=False,
                     san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        self.ca_file = tmp_path / "attestation-ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert_file, key_file = tmp_path / "tls.pem", tmp_path / "tls.key"
        cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(tls_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        authority = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": authority.issuer, "jwks_uri": authority.issuer + "/certs"}
                elif self.path == "/certs":
                    body = authority.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.issuer = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def jwks(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": b64url(int_to_bytes(numbers.n)), "e": b64url(int_to_bytes(numbers.e))}]}

    def token(self, enclave: "Enclave", **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer + "/", "iat": now, "nbf": now, "exp": now + 8 * 3600, "sdk-test": True,
                "x-ms-ver": "1.0", "x-ms-runtime": {"keys": [enclave.jwk()]}}
        body.update(claims)
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid, "jku": self.issuer + "/certs"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{b64url(signature)}"

    def policy(self, immutable: bool = False) -> KeyReleasePolicy:
        doc = {"version": "1.0.0", "anyOf": [{"authority": self.issuer + "/",
                                               "allOf": [{"claim": "sdk-test", "equals": True}]}]}
        return KeyReleasePolicy(json.dumps(doc).encode(), immutable=immutable)

    def close(self):
        self.server.shutdown()


class Enclave:
    """The party a key is released to: it keeps the private half of its wrapping key."""

    def __init__(self, kid: str = "e2e-enclave"):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "key_ops": ["encrypt"], "use": "enc",
                "n": b64url(int_to_bytes(numbers.n)), "e": b64url(int_to_bytes(numbers.e))}

    def open(self, jws: str, ca_pem: bytes, vault_host: str) -> tuple[dict, bytes]:
        """Verifies a release answer and returns its payload and the released key material."""
        header_b64, payload_b64, signature_b64 = jws.split(".")
        header = json.loads(unb64url(header_b64))
        assert header["alg"] == "RS256"
        import base64
        chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in header["x5c"]]
        leaf, issuer = chain[0], chain[-1]
        leaf.public_key().verify(unb64url(signature_b64), f"{header_b64}.{payload_b64}".encode(),
                                 padding.PKCS1v15(), hashes.SHA256())
        ca = x509.load_pem_x509_certificate(ca_pem)
        assert issuer == ca, "x5c ends at the deployment's CA"
        leaf.verify_directly_issued_by(ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert vault_host in names.get_values_for_type(x509.DNSName) + [
            str(ip) for ip in names.get_values_for_type(x509.IPAddress)], "the leaf names the vault host"
        payload = json.loads(unb64url(payload_b64))
        blob = json.loads(unb64url(payload["response"]["key"]["key"]["key_hsm"]))
        assert blob["header"]["kid"] == self.kid and blob["header"]["alg"] == "dir"
        hash_alg = {"CKM_RSA_AES_KEY_WRAP": hashes.SHA1(), "RSA_AES_KEY_WRAP_256": hashes.SHA256(),
                    "RSA_AES_KEY_WRAP_384": hashes.SHA384()}[blob["header"]["enc"]]
        ciphertext = unb64url(blob["ciphertext"])
        size = self.key.key_size // 8
        aes_key = self.key.decrypt(ciphertext[:size], padding.OAEP(padding.MGF1(hash_alg), hash_alg, None))
        return payload, aes_key_unwrap_with_padding(aes_key, ciphertext[size:])


@pytest.fixture
def authority(tmp_path):
    a = Authority(tmp_path)
    trusted = _keyshift("attestation", "trust", a.issuer, "--jwks-url", a.issuer + "/certs",
                        "--ca-file", str(a.ca_file))
    assert trusted["issuer"] == a.issuer
    assert [x["issuer"] for x in _keyshift("attestation", "list")].count(a.issuer) == 1
    yield a
    _keyshift("attestation", "remove", a.issuer)
    a.close()


def _byok_blob(kek, target_pkcs8: bytes) -> bytes:
    """The .byok JSON for a KEK (a KeyVaultKey): OAEP-SHA1(AES-256 key) || AES-KWP(PKCS#8)."""
    kek_public = rsa.RSAPublicNumbers(int.from_bytes(kek.key.e, "big"), int.from_bytes(kek.key.n, "big")).public_key()
    aes_key = os.urandom(32)
    ciphertext = kek_public.encrypt(aes_key, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
    ciphertext += aes_key_wrap_with_padding(aes_key, target_pkcs8)
    return json.dumps({"schema_version": "1.0.0",
                       "header": {"kid": kek.id, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
                       "ciphertext": b64url(ciphertext), "generator": "keyshift e2e (python cryptography)"}).encode()


def test_release_of_a_created_key(key_client, crypto_client, authority, ca_cert, vault_url):
    name = unique("skr")
    key = key_client.create_rsa_key(name, hardware_protected=True, size=2048, exportable=True, release_policy=authority.policy())
    assert key.properties.exportable is True
    assert key.properties.release_policy.content_type == "application/json; charset=utf-8"
    assert json.loads(key.properties.release_policy.encoded_policy)["version"] == "1.0.0"
    enclave = Enclave()
    result = key_client.release_key(name, authority.token(enclave), nonce="e2e-nonce")
    payload, pkcs8 = enclave.open(result.value, open(ca_cert, "rb").read(), urlparse(vault_url).hostname)
    assert payload["request"]["nonce"] == "e2e-nonce"
    assert payload["request"]["enc"] == "CKM_RSA_AES_KEY_WRAP"
    assert payload["response"]["key"]["key"]["kid"] == key.id
    released = serialization.load_der_private_key(pkcs8, password=None)
    assert released.public_key().public_numbers().n == int.from_bytes(key.key.n, "big")
    # The released key is the vault's key: what it signs, the vault verifies.
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"released")
    value = digest.finalize()
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    signature = released.sign(value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    assert crypto_client(key.id, remote_only=True).verify(SignatureAlgorithm.rs256, value, signature).is_valid


def test_release_refused_without_satisfied_policy_or_exportability(key_client, authority):
    name = unique("skrno")
    key_client.create_rsa_key(name, hardware_protected=True, exportable=True, release_policy=authority.policy())
    enclave = Enclave()
    with pytest.raises(HttpResponseError) as e:
        key_client.release_key(name, authority.token(enclave, **{"sdk-test": False}))
    assert e.value.status_code == 403
    plain = unique("skrplain")
    key_client.create_rsa_key(plain, hardware_protected=True)
    with pytest.raises(HttpResponseError) as e:
        key_client.release_key(plain, authority.token(enclave))
    assert e.value.status_code == 400
    frozen = unique("skrfrozen")
    key_client.create_rsa_key(frozen, hardware_protected=True, exportable=True, release_policy=authority.policy(immutable=True))
    with pytest.raises(HttpResponseError):
        key_client.update_key_properties(frozen, release_policy=authority.policy())


def test_byok_import_through_the_sdk_then_release_returns_the_same_bytes(
        key_client, crypto_client, authority, ca_cert, vault_url):
    kek = key_client.create_rsa_key(unique("kek"), hardware_protected=True, size=3072, key_operations=["import"])
    assert [str(op.value if hasattr(op, "value") else op) for op in kek.key_operations] == ["import"]
    target = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pkcs8 = target.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    name = unique("byok")
    imported = key_client.import_key(
        name, JsonWebKey(kty="RSA-HSM", key_ops=["sign", "verify", "wrapKey", "unwrapKey"], t=_byok_blob(kek, pkcs8)),
        exportable=True, release_policy=authority.policy())
    assert imported.key_type == "RSA-HSM"
    assert int.from_bytes(imported.key.n, "big") == target.public_key().public_numbers().n
    assert imported.key.d is None
    # The imported key works: the vault signs, the local public key verifies.
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"byok")
    value = digest.finalize()
    signed = crypto_client(imported.id, remote_only=True).sign(SignatureAlgorithm.rs256, value)
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
    target.public_key().verify(signed.signature, value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    # Released, it is byte for byte what was imported.
    enclave = Enclave("byok-enclave")
    result = key_client.release_key(name, authority.token(enclave), algorithm="RSA_AES_KEY_WRAP_256")
    payload, released = enclave.open(result.value, open(ca_cert, "rb").read(), urlparse(vault_url).hostname)
    assert payload["request"]["enc"] == "RSA_AES_KEY_WRAP_256"
    assert released == pkcs8
    # A blob made for another KEK is refused with a 400.
    other = key_client.create_rsa_key(unique("kek"), hardware_protected=True, key_operations=["import"])
    blob = json.loads(_byok_blob(other, pkcs8))
    blob["header"]["kid"] = kek.id
    with pytest.raises(HttpResponseError) as e:
        key_client.import_key(unique("byokbad"), JsonWebKey(kty="RSA-HSM", t=json.dumps(blob).encode()))
    assert e.value.status_code == 400
