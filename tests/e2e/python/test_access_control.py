"""Role-based access with the official azure-keyvault-administration KeyVaultAccessControlClient,
unmodified: list role definitions, assign a role to a workload principal at a key's scope, see the
workload's SDK calls allowed and refused accordingly, remove the assignment."""

import json
import os
import subprocess
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.administration import KeyVaultAccessControlClient, KeyVaultRoleScope
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from conftest import KeyshiftCredential


def keyshift(*args):
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], *args, "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    )
    return out.stdout


@pytest.fixture
def access_client(vault_url, credential, ca_cert):
    return KeyVaultAccessControlClient(vault_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)


def test_role_definitions_are_the_built_in_ones(access_client):
    definitions = {d.role_name: d for d in access_client.list_role_definitions(KeyVaultRoleScope.GLOBAL)}
    assert "Key Vault Crypto Service Encryption User" in definitions
    user = definitions["Key Vault Crypto User"]
    assert user.name == "12338af0-0e69-4776-bea7-57ae8d297424"
    assert user.role_type == "AKVBuiltInRole"
    assert "Microsoft.KeyVault/vaults/keys/encrypt/action" in user.permissions[0].data_actions
    got = access_client.get_role_definition(KeyVaultRoleScope.GLOBAL, user.name)
    assert got.role_name == "Key Vault Crypto User"


def test_assign_use_and_remove(access_client, admin, vault_url, ca_cert, session_key_client):
    kek = session_key_client.create_oct_key(f"kek-{uuid.uuid4().hex[:8]}", size=256, hardware_protected=True)
    other = session_key_client.create_oct_key(f"other-{uuid.uuid4().hex[:8]}", size=256, hardware_protected=True)
    workload = json.loads(keyshift("principal", "create", "e2e-workload"))
    creds = KeyshiftCredential({**admin, "client_id": workload["client_id"], "client_secret": workload["client_secret"]})
    kwargs = dict(connection_verify=ca_cert, verify_challenge_resource=False)
    role = next(d for d in access_client.list_role_definitions(KeyVaultRoleScope.GLOBAL)
                if d.role_name == "Key Vault Crypto Service Encryption User")

    # No role yet: the workload is refused, with the data action named.
    workload_keys = KeyClient(vault_url, creds, **kwargs)
    with pytest.raises(HttpResponseError) as refused:
        workload_keys.get_key(kek.name)
    assert refused.value.status_code == 403
    assert "Microsoft.KeyVault/vaults/keys/read" in str(refused.value)

    scope = f"/keys/{kek.name}"
    assignment = access_client.create_role_assignment(scope, role.id, workload["principal_id"])
    assert assignment.properties.principal_id == workload["principal_id"]
    assert assignment.properties.role_definition_id == role.id
    assert assignment.properties.scope == scope
    fetched = access_client.get_role_assignment(scope, assignment.name)
    assert fetched.role_assignment_id == assignment.role_assignment_id
    listed = [a.name for a in access_client.list_role_assignments(KeyVaultRoleScope.GLOBAL)]
    assert assignment.name in listed

    crypto = CryptographyClient(workload_keys.get_key(kek.name), creds, **kwargs)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32))
    assert len(crypto.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key) == 32
    with pytest.raises(HttpResponseError) as refused:
        workload_keys.get_key(other.name)
    assert refused.value.status_code == 403
    with pytest.raises(HttpResponseError) as refused:
        workload_keys.create_ec_key(f"nope-{uuid.uuid4().hex[:8]}")
    assert refused.value.status_code == 403
    assert "keys/create/action" in str(refused.value)

    # The workload may not manage roles.
    workload_access = KeyVaultAccessControlClient(vault_url, creds, **kwargs)
    with pytest.raises(HttpResponseError) as refused:
        workload_access.create_role_assignment("/", role.id, workload["principal_id"])
    assert refused.value.status_code == 403

    access_client.delete_role_assignment(scope, assignment.name)
    with pytest.raises(ResourceNotFoundError):
        access_client.get_role_assignment(scope, assignment.name)
    with pytest.raises(HttpResponseError) as refused:
        workload_keys.get_key(kek.name)
    assert refused.value.status_code == 403
