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
