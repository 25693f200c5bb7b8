"""Fixtures for the Keyshift end-to-end suite driven by the official azure-keyvault-keys SDK.

The harness (tests/e2e/harness.sh) starts a server and exports:
  KEYSHIFT_E2E_ADMIN         path of the data dir's admin.json (vault_url, ca_cert, token_url, client id/secret)
  KEYSHIFT_E2E_KV2_URL       https://localhost:<p2>, the second vault on a port of its own
  KEYSHIFT_E2E_KV2_HOST_URL  https://kv2.localhost:<port>, the second vault by host name
  KEYSHIFT_E2E_REQUIRE_HOSTS if set, the host-name test fails instead of skipping when kv2.localhost does not resolve
  KEYSHIFT_E2E_DATA_DIR      the server's data directory (the user guide's walk-through runs against it)
Not from the harness: KEYSHIFT_E2E_REQUIRE_SOFTHSM, if set, makes the PKCS#11 tests fail instead of skipping
without SoftHSM2 and pkcs11-tool.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient

from e2e_helpers import CURVES, force_remote, unique

# --------------------------------------------------------------------------------------------------------------------
# credential
# --------------------------------------------------------------------------------------------------------------------


class KeyshiftCredential:
    """A minimal azure-core TokenCredential: client credentials against Keyshift's token endpoint."""

    def __init__(self, admin: Dict[str, Any]):
        self._admin = admin
        self._lock = threading.Lock()
        self._cache: Dict[str, AccessToken] = {}
        self.requests: List[Dict[str, Any]] = []  # what the SDK asked for (scopes, tenant_id, ...)

    def get_token(self, *scopes: str, claims: Optional[str] = None, tenant_id: Optional[str] = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        scope = " ".join(scopes)
        self.requests.append({"scopes": scopes, "tenant_id": tenant_id, "claims": claims, "enable_cae": enable_cae})
        with self._lock:
            cached = self._cache.get(scope)
            if cached and cached.expires_on - 60 > time.time():
                return cached
            resp = requests.post(
                self._admin["token_url"],
                data={
                    "grant_type": "client_credentials",
                    "client_id": self._admin["client_id"],
                    "client_secret": self._admin["client_secret"],
                    "scope": scope,
                },
                verify=self._admin["ca_cert"],
                timeout=30,
            )
            assert resp.status_code == 200, f"token request failed: {resp.status_code} {resp.text}"
            body = resp.json()
            assert body.get("token_type", "").lower() == "bearer", body
            token = AccessToken(body["access_token"], int(time.time()) + int(body["expires_in"]))
            self._cache[scope] = token
            return token


# --------------------------------------------------------------------------------------------------------------------
# wire log: every request/response the SDK pipeline sends, via azure-core's raw_response_hook
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Exchange:
    method: str
    url: str
    status: int
    request_body: bytes
    response_text: str


@dataclass
class WireLog:
    exchanges: List[Exchange] = field(default_factory=list)

    def __call__(self, pipeline_response) -> None:
        req = pipeline_response.http_request
        resp = pipeline_response.http_response
        body = req.body if isinstance(req.body, (bytes, bytearray)) else (req.body or b"")
        if isinstance(body, str):
            body = body.encode()
        try:
            text = resp.text()
        except Exception:  # noqa: BLE001
            text = "<unreadable>"
        self.exchanges.append(Exchange(req.method, req.url, resp.status_code, bytes(body), text))

    def clear(self) -> None:
        self.exchanges.clear()

    def authorized(self) -> List[Exchange]:
        """Exchanges other than the bodiless 401 challenge round-trips."""
        return [e for e in self.exchanges if e.status != 401]

    def find(self, method: str, path_suffix: str) -> List[Exchange]:
        out = []
        for e in self.authorized():
            path = e.url.split("?", 1)[0]
            if e.method == method and path.endswith(path_suffix):
                out.append(e)
        return out

    def assert_called(self, method: str, path_suffix: str) -> Exchange:
        found = self.find(method, path_suffix)
        assert found, f"expected a {method} ...{path_suffix} request; saw " + "; ".join(
            f"{e.method} {e.url} {e.status}" for e in self.exchanges
        )
        return found[-1]


# --------------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------------


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set: run the suite through tests/e2e/harness.sh")
    return value


@pytest.fixture(scope="session")
def admin() -> Dict[str, Any]:
    with open(_env("KEYSHIFT_E2E_ADMIN")) as f:
        data = json.load(f)
    for k in ("tenant_id", "client_id", "client_secret", "vault_url", "ca_cert", "token_url"):
        assert data.get(k), f"admin.json lacks {k}"
    return data


@pytest.fixture(scope="session")
def credential(admin) -> KeyshiftCredential:
    return KeyshiftCredential(admin)


@pytest.fixture(scope="session")
def vault_url(admin) -> str:
    return admin["vault_url"]


@pytest.fixture(scope="session")
def ca_cert(admin) -> str:
    return admin["ca_cert"]


@pytest.fixture
def wire() -> WireLog:
    return WireLog()


@pytest.fixture
def client_kwargs(ca_cert, wire) -> Dict[str, Any]:
    """Keyword arguments for every SDK client aimed at https://localhost:<port> (challenge check off)."""
    return {"connection_verify": ca_cert, "verify_challenge_resource": False, "raw_response_hook": wire}


@pytest.fixture
def key_client(vault_url, credential, client_kwargs) -> KeyClient:
    return KeyClient(vault_url, credential, **client_kwargs)


@pytest.fixture
def crypto_client(credential, client_kwargs):
    """CryptographyClient factory: `crypto_client(key_or_id, remote_only=False)`."""

    def make(key, remote_only: bool = False) -> CryptographyClient:
        client = CryptographyClient(key, credential, **client_kwargs)
        if remote_only:
            force_remote(client)
        return client

    return make


@pytest.fixture(scope="session")
def session_key_client(vault_url, credential, ca_cert) -> KeyClient:
    return KeyClient(vault_url, credential, connection_verify=ca_cert, verify_challenge_resource=False)


@pytest.fixture(scope="session")
def rsa2048(session_key_client):
    """One shared RSA 2048 key (all six ops) for the many algorithm tests."""
    return session_key_client.create_rsa_key(unique("shared-rsa"), size=2048)


@pytest.fixture(scope="session")
def ec_keys(session_key_client):
    return {crv: session_key_client.create_ec_key(unique("shared-ec"), curve=crv) for crv in CURVES}


@pytest.fixture(scope="session")
def oct_keys(session_key_client):
    return {size: session_key_client.create_oct_key(unique("shared-oct"), size=size, hardware_protected=True)
            for size in (128, 192, 256)}


# --------------------------------------------------------------------------------------------------------------------
# other deployments: a `keyshift serve` of their own
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def keyshift_server(data: Path) -> Iterator[Tuple[Path, Dict[str, Any]]]:
    """Another `keyshift serve`, its own data directory, root key and CA: another deployment.
    Yields the path of its admin.json and its content."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(data.parent / f"{data.name}.log", "w")
    proc = subprocess.Popen([os.environ["KEYSHIFT_BIN"], "serve", "--data-dir", str(data),
                             "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        admin_path = data / "admin.json"
        deadline = time.time() + 60
        while time.time() < deadline:
            if admin_path.exists() and admin_path.stat().st_size > 0:
                try:
                    admin = json.loads(admin_path.read_text())
                    requests.get(admin["vault_url"] + "/health", verify=admin["ca_cert"], timeout=2).raise_for_status()
                    break
                except (ValueError, requests.RequestException):
                    pass
            assert proc.poll() is None, "the second server exited"
            time.sleep(0.2)
        else:
            pytest.fail("the second server did not start")
        yield admin_path, admin
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def second_server(tmp_path):
    with keyshift_server(tmp_path / "second") as server:
        yield server


def client_for(admin: Dict[str, Any]) -> KeyClient:
    """A KeyClient for the default vault of the deployment `admin` describes."""
    return KeyClient(admin["vault_url"], KeyshiftCredential(admin), connection_verify=admin["ca_cert"],
                     verify_challenge_resource=False)
