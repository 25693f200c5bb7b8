"""A managed HSM whose keys live in a PKCS#11 token, driven by the official SDKs.

A `keyshift serve` of its own with a fresh SoftHSM2 token attached (`--pkcs11-*` settings from the
environment), a managed HSM made with `keyshift vault create --kind managed-hsm`, crypto roles
granted with azure-keyvault-administration, then azure-keyvault-keys: HSM keys created, used through
CryptographyClient and checked with their public keys, software key types refused, rotation,
key attestation, and deletion.

Needs SoftHSM2: skipped without it, failed when KEYSHIFT_E2E_REQUIRE_SOFTHSM is set (CI).
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import (CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm,
                                        SignatureAlgorithm)
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from conftest import KeyshiftCredential, keyshift_server
from e2e_helpers import digest_for, error_code, force_remote, public_key_from_jwk, unb64url, unique
from test_byok_pkcs11 import softhsm_module  # noqa: F401 (a fixture)

TOKEN = "managed-hsm-e2e"
PIN = "5678"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def hsm(softhsm_module, tmp_path_factory):  # noqa: F811
    """(vault URL, credential, CA) of a managed HSM in a server with a fresh SoftHSM2 token."""
    assert shutil.which("softhsm2-util")
    home = tmp_path_factory.mktemp("mhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\n")
    pin = home / "user.pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    data = home / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--so-pin", "87654321",
                        "--pin", PIN], check=True, capture_output=True)
        mp.setenv("KEYSHIFT_PKCS11_MODULE", softhsm_module)
        mp.setenv("KEYSHIFT_PKCS11_TOKEN_LABEL", TOKEN)
        mp.setenv("KEYSHIFT_PKCS11_PIN_FILE", str(pin))
        with keyshift_server(data) as (_, admin):
            port = free_port()
            out = subprocess.run([os.environ["KEYSHIFT_BIN"], "vault", "create", "hsm1", "--kind", "managed-hsm",
                                  "--port", str(port), "--purge-protection", "--data-dir", str(data)],
                                 capture_output=True, text=True)
            assert out.returncode == 0, out.stdout + out.stderr
            url = f"https://localhost:{port}"
            deadline = time.time() + 30
            while True:
                try:
                    requests.get(url + "/health", verify=admin["ca_cert"], timeout=2).raise_for_status()
                    break
                except requests.RequestException:
                    assert time.time() < deadline, "the managed HSM was not served"
                    time.sleep(0.2)
            credential = KeyshiftCredential(admin)
            # A managed HSM's Administrator manages roles, not keys: grant the crypto roles, as in Azure.
            access = KeyVaultAccessControlClient(url, credential, connection_verify=admin["ca_cert"],
                                                 verify_challenge_resource=False)
            token = credential.get_token("https://managedhsm.azure.net/.default").token
            payload = token.split(".")[1]
            oid = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["oid"]
            roles = {d.role_name: d for d in access.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
            for name in ("Managed HSM Crypto Officer", "Managed HSM Crypto User"):
                access.create_role_assignment(KeyVaultRoleScope.KEYS, roles[name].id, oid)
            yield url, credential, admin["ca_cert"]


def key_client(hsm) -> KeyClient:
    url, credential, ca = hsm
    return KeyClient(url, credential, connection_verify=ca, verify_challenge_resource=False)


def crypto(hsm, key) -> CryptographyClient:
    _, credential, ca = hsm
    return force_remote(CryptographyClient(key.id, credential, connection_verify=ca, verify_challenge_resource=False))


def test_rsa_hsm_key_signs_and_decrypts_in_the_token(hsm):
    keys = key_client(hsm)
    key = keys.create_rsa_key(unique("rsa"), size=2048, hardware_protected=True)
    assert key.key_type == "RSA-HSM"
    assert "SoftHSM" in (key.properties._attributes.hsm_platform or "")
    pub = public_key_from_jwk(key.key)
    client = crypto(hsm, key)
    digest = digest_for("RS256")
    signed = client.sign(SignatureAlgorithm.rs256, digest)
    pub.verify(signed.signature, digest, padding.PKCS1v15(), _Prehashed(hashes.SHA256()))
    assert client.verify(SignatureAlgorithm.rs256, digest, signed.signature).is_valid
    ciphertext = pub.encrypt(b"to the token", padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                           algorithm=hashes.SHA1(), label=None))
    assert client.decrypt(EncryptionAlgorithm.rsa_oaep, ciphertext).plaintext == b"to the token"
    wrapped = client.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)
    assert client.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key).key == b"k" * 32
    # SoftHSM2 has no OAEP with SHA-256: refused by name, never done elsewhere.
    with pytest.raises(HttpResponseError) as e:
        client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    assert e.value.status_code == 400 and "NotSupportedByHsm" in str(e.value)


def test_ec_and_oct_hsm_keys(hsm):
    keys = key_client(hsm)
    ec = keys.create_ec_key(unique("ec"), curve="P-384", hardware_protected=True)
    assert ec.key_type == "EC-HSM"
    digest = digest_for("ES384")
    signature = crypto(hsm, ec).sign(SignatureAlgorithm.es384, digest).signature
    assert crypto(hsm, ec).verify(SignatureAlgorithm.es384, digest, signature).is_valid
    from e2e_helpers import verify_ec_locally
    verify_ec_locally(public_key_from_jwk(ec.key), "ES384", digest, signature, 48)
    aes = keys.create_oct_key(unique("aes"), size=256, hardware_protected=True)
    assert aes.key_type == "oct-HSM"
    client = crypto(hsm, aes)
    out = client.encrypt(EncryptionAlgorithm.a256_gcm, b"sealed in the token", additional_authenticated_data=b"ctx")
    back = client.decrypt(EncryptionAlgorithm.a256_gcm, out.ciphertext, iv=out.iv, authentication_tag=out.tag,
                          additional_authenticated_data=b"ctx")
    assert back.plaintext == b"sealed in the token"
    wrapped = client.wrap_key(KeyWrapAlgorithm.aes_256, b"d" * 32)
    assert client.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == b"d" * 32


def test_software_types_are_refused(hsm):
    with pytest.raises(HttpResponseError) as e:
        key_client(hsm).create_rsa_key(unique("soft"), size=2048)
    assert e.value.status_code == 400, e.value


def test_rotation_attestation_and_deletion(hsm):
    keys = key_client(hsm)
    name = unique("life")
    first = keys.create_rsa_key(name, size=2048, hardware_protected=True)
    rotated = keys.rotate_key(name)
    assert rotated.properties.version != first.properties.version
    assert rotated.key_type == "RSA-HSM"
    attested = keys.get_key_attestation(name)
    attestation = attested.properties.attestation
    assert attestation is not None and attestation.version == "keyshift-pkcs11/1.0"
    assert attestation.certificate_pem_file.startswith(b"-----BEGIN CERTIFICATE-----")
    statement = attestation.private_key_attestation.decode().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(statement + "=" * (-len(statement) % 4)))
    assert claims["CKA_LOCAL"] is True and claims["CKA_NEVER_EXTRACTABLE"] is True, claims
    assert claims["kid"] == rotated.id
    keys.begin_delete_key(name).wait()
    deleted = keys.get_deleted_key(name)
    assert deleted.properties.version == rotated.properties.version
    # Purge protection is on in a managed HSM: the purge waits for the scheduled date.
    with pytest.raises(HttpResponseError) as e:
        keys.purge_deleted_key(name)
    assert e.value.status_code == 403 and error_code(e.value) in ("Forbidden", "PurgeProtectionEnabled")


class _Prehashed:
    """cryptography's Prehashed, imported lazily so the module loads without it."""

    def __new__(cls, algorithm):
        from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
        return Prehashed(algorithm)
