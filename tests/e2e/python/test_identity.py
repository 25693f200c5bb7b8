"""Unmodified Azure identity libraries get tokens from Keyshift's token endpoint: Python
azure-identity ClientSecretCredential with the authority pointed at the server and instance
discovery off, then used by the keys SDK."""

import json
import os
import subprocess
import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientSecretCredential
from azure.keyvault.keys import KeyClient


def test_client_secret_credential_drives_the_keys_sdk(admin, vault_url, ca_cert):
    authority = admin["token_url"].split(f"/{admin['tenant_id']}/")[0]
    credential = ClientSecretCredential(
        admin["tenant_id"], admin["client_id"], admin["client_secret"],
        authority=authority, disable_instance_discovery=True, connection_verify=ca_cert,
    )
    token = credential.get_token("https://vault.azure.net/.default")
    header, claims, _ = token.token.split(".")
    assert json.loads(_b64(claims))["tid"] == admin["tenant_id"]
    client = KeyClient(vault_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)
    key = client.create_ec_key(f"identity-{uuid.uuid4().hex[:8]}", curve="P-256")
    assert client.get_key(key.name).id == key.id


def test_client_secret_credential_for_a_workload_and_a_wrong_secret(admin, vault_url, ca_cert):
    authority = admin["token_url"].split(f"/{admin['tenant_id']}/")[0]
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "principal", "create", "identity-workload",
         "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    ).stdout
    workload = json.loads(out)
    good = ClientSecretCredential(
        admin["tenant_id"], workload["client_id"], workload["client_secret"],
        authority=authority, disable_instance_discovery=True, connection_verify=ca_cert,
    )
    assert good.get_token("https://vault.azure.net/.default").token
    bad = ClientSecretCredential(
        admin["tenant_id"], workload["client_id"], "not-the-secret",
        authority=authority, disable_instance_discovery=True, connection_verify=ca_cert,
    )
    with pytest.raises(ClientAuthenticationError, match="Invalid client credentials"):
        bad.get_token("https://vault.azure.net/.default")


def _b64(part: str) -> bytes:
    import base64
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_certificate_credential(admin, vault_url, ca_cert, tmp_path):
    """CertificateCredential signs a client assertion (RFC 7523) with the certificate's key."""
    import datetime
    from azure.core.exceptions import HttpResponseError
    from azure.identity import CertificateCredential
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyshift-e2e-workload")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    pem = tmp_path / "workload.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "principal", "create", "cert-workload", "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    ).stdout
    workload = json.loads(out)
    subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "principal", "add-certificate", workload["client_id"], str(pem),
         "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    )
    authority = admin["token_url"].split(f"/{admin['tenant_id']}/")[0]
    credential = CertificateCredential(
        admin["tenant_id"], workload["client_id"], certificate_path=str(pem),
        authority=authority, disable_instance_discovery=True, connection_verify=ca_cert,
    )
    token = credential.get_token("https://vault.azure.net/.default")
    claims = json.loads(_b64(token.token.split(".")[1]))
    assert claims["appid"] == workload["client_id"]
    assert claims["oid"] == workload["principal_id"]
    # The token is accepted (403: no role yet, rather than 401).
    client = KeyClient(vault_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)
    with pytest.raises(HttpResponseError) as refused:
        client.get_key("anything")
    assert refused.value.status_code == 403

    # A certificate the principal does not have is refused.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(other_key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=30)).sign(other_key, hashes.SHA256()))
    other_pem = tmp_path / "other.pem"
    other_pem.write_bytes(
        other_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + other.public_bytes(serialization.Encoding.PEM)
    )
    stranger = CertificateCredential(
        admin["tenant_id"], workload["client_id"], certificate_path=str(other_pem),
        authority=authority, disable_instance_discovery=True, connection_verify=ca_cert,
    )
    with pytest.raises(ClientAuthenticationError):
        stranger.get_token("https://vault.azure.net/.default")
