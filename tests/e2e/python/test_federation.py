"""Workload identity federation with the unmodified azure-identity library: a Kubernetes-shaped
service account token, signed by a key this test makes (with `cryptography`) and published in a
JWKS file that Keyshift trusts, is exchanged by WorkloadIdentityCredential (and by
ClientAssertionCredential) for a Keyshift token that drives the keys SDK."""

import base64
import json
import os
import subprocess
import time
import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ClientAssertionCredential, WorkloadIdentityCredential
from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

AUDIENCE = "api://AzureADTokenExchange"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _keyshift(*args: str) -> dict:
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], *args, "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out) if out.strip().startswith(("{", "[")) else {}


class Cluster:
    """A stand-in for a Kubernetes cluster's service account issuer."""

    def __init__(self, issuer: str, kid: str):
        self.issuer = issuer
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        numbers = self.key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                          "n": _int(numbers.n), "e": _int(numbers.e)}]}

    def token(self, subject: str, audience: str = AUDIENCE, lifetime: int = 3600) -> str:
        now = int(time.time())
        namespace, name = subject.split(":")[2:4]
        claims = {
            "aud": [audience], "exp": now + lifetime, "iat": now, "nbf": now, "iss": self.issuer, "sub": subject,
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": str(uuid.uuid4())}},
        }
        header = {"alg": "RS256", "kid": self.kid, "typ": "JWT"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(f"https://oidc.e2e-{uuid.uuid4().hex[:8]}.test.example", "e2e-key-1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(c.jwks()))
    trusted = _keyshift("federation", "trust", c.issuer, "--jwks-file", str(jwks), "--algorithms", "RS256")
    assert trusted["issuer"] == c.issuer
    assert trusted["algorithms"] == ["RS256"]
    yield c
    subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "federation", "remove", c.issuer, "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        capture_output=True, text=True,
    )


def _federated_principal(cluster: Cluster, subject: str) -> dict:
    workload = _keyshift("principal", "create", f"fed-{uuid.uuid4().hex[:6]}")
    added = _keyshift("principal", "add-federated-credential", workload["client_id"], "--name", "k8s-payments-api",
                      "--issuer", cluster.issuer, "--subject", subject)
    assert added["federated_credential"]["audiences"] == [AUDIENCE]
    subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "role", "assign", "Key Vault Crypto Officer", workload["client_id"],
         "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        check=True, capture_output=True, text=True,
    )
    time.sleep(1.2)  # role assignments reach the running server within a second
    return workload


def test_workload_identity_credential_drives_the_keys_sdk(admin, vault_url, ca_cert, cluster, tmp_path):
    subject = "system:serviceaccount:payments:api"
    workload = _federated_principal(cluster, subject)
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(cluster.token(subject))
    authority = admin["token_url"].split(f"/{admin['tenant_id']}/")[0]

    credential = WorkloadIdentityCredential(
        tenant_id=admin["tenant_id"], client_id=workload["client_id"], token_file_path=str(token_file),
        authority=authority, connection_verify=ca_cert,
    )
    token = credential.get_token("https://vault.azure.net/.default")
    claims = json.loads(base64.urlsafe_b64decode(token.token.split(".")[1] + "=="))
    assert claims["appid"] == workload["client_id"]
    assert claims["oid"] == workload["principal_id"]

    client = KeyClient(vault_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)
    key = client.create_rsa_key(f"fed-{uuid.uuid4().hex[:8]}", size=2048)
    assert client.get_key(key.name).id == key.id


def test_client_assertion_credential_and_refusals(admin, vault_url, ca_cert, cluster):
    subject = "system:serviceaccount:payments:batch"
    workload = _federated_principal(cluster, subject)
    authority = admin["token_url"].split(f"/{admin['tenant_id']}/")[0]

    good = ClientAssertionCredential(
        admin["tenant_id"], workload["client_id"], func=lambda: cluster.token(subject),
        authority=authority, connection_verify=ca_cert,
    )
    client = KeyClient(vault_url, good, connection_verify=ca_cert, verify_challenge_resource=False)
    assert client.create_ec_key(f"fed-{uuid.uuid4().hex[:8]}", curve="P-256").key.kty == "EC"

    def refused(func, match):
        cred = ClientAssertionCredential(admin["tenant_id"], workload["client_id"], func=func,
                                         authority=authority, connection_verify=ca_cert)
        with pytest.raises(ClientAuthenticationError, match=match):
            cred.get_token("https://vault.azure.net/.default")

    refused(lambda: cluster.token("system:serviceaccount:payments:other"), "no federated credential")
    refused(lambda: cluster.token(subject, audience="https://kubernetes.default.svc"), "audience")
    refused(lambda: cluster.token(subject, lifetime=-300), "expired")
    impostor = Cluster(cluster.issuer, cluster.kid)
    refused(lambda: impostor.token(subject), "signature does not verify")
    refused(lambda: Cluster("https://untrusted.test.example", "k").token(subject), "not a trusted federation issuer")

    # Removing the credential ends the mapping.
    _keyshift("principal", "remove-federated-credential", workload["client_id"], "--name", "k8s-payments-api")
    refused(lambda: cluster.token(subject), "no federated credential")


def test_the_cli_refuses_untrusted_issuers_and_bad_jwks(tmp_path):
    workload = _keyshift("principal", "create", "fed-cli")
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "principal", "add-federated-credential", workload["client_id"], "--name", "x-cred",
         "--issuer", "https://never-trusted.test.example", "--subject", "s",
         "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and "not trusted" in out.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}')
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "federation", "trust", "https://x.test.example", "--jwks-file", str(bad),
         "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and "no usable key" in out.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps(Cluster("https://x.test.example", "k").jwks()))
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], "federation", "trust", "https://x.test.example", "--jwks-file", str(good),
         "--algorithms", "RS256,HS256", "--data-dir", os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        capture_output=True, text=True,
    )
    assert out.returncode != 0 and "cannot be trusted" in out.stderr
