"""Role-based access with the official azure-keyvault-administration KeyVaultAccessControlClient,
unmodified: list role definitions, assign a role to a workload principal at a key's scope, see the
workload's SDK calls allowed and refused accordingly, remove the assignment. Then the same through
the `keyshift principal` and `keyshift role` commands an operator runs."""

import json
import os
import subprocess
import time
import uuid

import pytest
import requests
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


def _token(admin, client_id, secret):
    """The token endpoint's answer for a client secret: (status, body)."""
    resp = requests.post(
        admin["token_url"],
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
              "scope": "https://vault.azure.net/.default"},
        verify=admin["ca_cert"], timeout=10,
    )
    return resp.status_code, resp.json()


def test_the_principal_and_role_commands(admin, vault_url, ca_cert, session_key_client):
    """`keyshift principal create/list/add-secret/delete` and `keyshift role
    assign/list/remove/definitions`, run as an operator would against the running server's data
    directory, and what each does to the workload's tokens and requests."""
    kek = session_key_client.create_oct_key(f"cli-kek-{uuid.uuid4().hex[:8]}", size=256, hardware_protected=True)
    workload = json.loads(keyshift("principal", "create", "cli-workload"))
    cid, first = workload["client_id"], workload["client_secret"]
    assert any(cid in line and workload["principal_id"] in line
               for line in keyshift("principal", "list").splitlines())

    # A second secret, for rotation: both work.
    second = keyshift("principal", "add-secret", cid).strip()
    assert second and second != first
    for secret in (first, second):
        status, body = _token(admin, cid, secret)
        assert status == 200 and body["access_token"], body

    # The definitions name each built-in role with its data actions.
    roles, current = {}, None
    for line in keyshift("role", "definitions").splitlines():
        if line.startswith("    "):
            roles[current].append(line.strip())
        else:
            current = line.rsplit(" (", 1)[0]
            roles[current] = []
    assert "Microsoft.KeyVault/vaults/keys/wrap/action" in roles["Key Vault Crypto User"]
    assert roles["Key Vault Reader"] == ["Microsoft.KeyVault/vaults/*/read",
                                         "Microsoft.KeyVault/vaults/secrets/readMetadata/action"]

    # Assigned at the key's scope: listed, and the workload may read the key.
    assignment = json.loads(keyshift("role", "assign", "Key Vault Crypto User", cid, "--scope", f"/keys/{kek.name}"))
    listed = [line for line in keyshift("role", "list").splitlines() if assignment["name"] in line]
    assert len(listed) == 1 and workload["principal_id"] in listed[0] and "Key Vault Crypto User" in listed[0]
    creds = KeyshiftCredential({**admin, "client_id": cid, "client_secret": second})
    workload_keys = KeyClient(vault_url, creds, connection_verify=ca_cert, verify_challenge_resource=False)
    time.sleep(1.2)  # role assignments reach the running server within a second
    assert workload_keys.get_key(kek.name).id == kek.id

    # Removed: gone from the list, and the workload is refused again.
    assert keyshift("role", "remove", assignment["name"]).strip() == f"removed {assignment['name']}"
    assert assignment["name"] not in keyshift("role", "list")
    time.sleep(1.2)
    with pytest.raises(HttpResponseError) as refused:
        workload_keys.get_key(kek.name)
    assert refused.value.status_code == 403

    # Deleted: no token for either secret, and gone from the list.
    assert keyshift("principal", "delete", cid).strip() == f"deleted {cid}"
    for secret in (first, second):
        status, body = _token(admin, cid, secret)
        assert status in (400, 401), body
        assert "access_token" not in body
    assert cid not in keyshift("principal", "list")
