"""The audit log after the full SDK run (Python and JavaScript suites), read with the real CLI.

harness.sh runs this module once more, last, with KEYSHIFT_E2E_AFTER_RUN=1; in the main run it is
skipped. It adds a few canaries of its own (an imported private key, a plaintext, a fresh token),
then checks: no secret, token or key material in any event or log line; `keyshift audit verify`
passes and counts every event; `audit list` filters; `keyshift key usage` counts; and a copy of the
data directory with one event modified, or one block removed, fails `audit verify`.
"""

import base64
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import zlib

import pytest
from azure.keyvault.keys.crypto import CryptographyClient, EncryptionAlgorithm, SignatureAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from e2e_helpers import force_remote, int_to_bytes, unique
from test_import import rsa_jwk

pytestmark = pytest.mark.skipif(
    not os.environ.get("KEYSHIFT_E2E_AFTER_RUN"), reason="runs once, after every suite (harness.sh)"
)


def cli(*args, data_dir=None, check=True):
    out = subprocess.run(
        [os.environ["KEYSHIFT_BIN"], *args, "--data-dir", data_dir or os.environ["KEYSHIFT_E2E_DATA_DIR"]],
        capture_output=True, text=True,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"keyshift {' '.join(args)} exited {out.returncode}: {out.stderr}")
    return out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def variants(secret: bytes):
    """The forms a secret could take in a log: raw text, base64url, base64, hex."""
    forms = {b64url(secret), base64.b64encode(secret).decode(), secret.hex()}
    try:
        forms.add(secret.decode())
    except UnicodeDecodeError:
        pass
    return forms


def test_the_audit_log_after_the_full_sdk_run(admin, credential, key_client, crypto_client, tmp_path):
    # Canaries: an imported private key used for a signature, a plaintext, a fresh token.
    local = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = unique("audit-canary")
    key = key_client.import_key(name, rsa_jwk(local))
    signer = force_remote(crypto_client(key.id))
    signer.sign(SignatureAlgorithm.rs256, b"\x11" * 32)
    plaintext = b"audit-canary-plaintext-7f3a9c"
    signer.encrypt(EncryptionAlgorithm.rsa_oaep_256, plaintext)
    token = credential.get_token("https://vault.azure.net/.default").token

    export = tmp_path / "audit.jsonl"
    cli("audit", "export", "--out", str(export))
    text = export.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    log = open(os.environ["KEYSHIFT_E2E_SERVER_LOG"], errors="replace").read()

    priv = local.private_numbers()
    secrets = {
        "the administrator's client secret": variants(admin["client_secret"].encode()),
        "an access token": {token, token.rsplit(".", 1)[1]},
        "the imported key's d": variants(int_to_bytes(priv.d)),
        "the imported key's p": variants(int_to_bytes(priv.p)),
        "the imported key's q": variants(int_to_bytes(priv.q)),
        "a plaintext": variants(plaintext),
    }
    for what, forms in secrets.items():
        for form in forms:
            assert form not in text, f"{what} is in the audit log"
            assert form not in log, f"{what} is in the server log"
    # Positive controls: the export and the log are the real ones.
    assert any(e["operation"] == "KeyImport" and e["key"] == name for e in events)
    assert "listening" in log
    # The full run is in it: both SDK suites' operations, refusals and unauthenticated requests.
    ops = {e["operation"] for e in events}
    assert {"KeyCreate", "KeyWrap", "KeyUnwrap", "KeySign", "KeyVerify", "Authentication",
            "RoleAssignmentCreate"} <= ops, ops
    assert any(e["status"] == 403 for e in events) and any(e["status"] == 401 for e in events)
    # One chain for the server, one for the `keyshift` commands the suites ran on its data
    # directory: each numbered from 0 without gaps, in order.
    chains = {}
    for e in events:
        chains.setdefault(e["chain"], []).append(e["seq"])
    for chain, seqs in chains.items():
        assert sorted(seqs) == list(range(len(seqs))), chain
    assert any(e["principal"] == "local" and e["operation"] == "RoleAssignmentCreate" for e in events)

    verified = json.loads(cli("audit", "verify").stdout)
    assert verified["intact"] and verified["events"] >= len(events), verified

    listed = [json.loads(line) for line in
              cli("audit", "list", "--operation", "KeyImport", "--key", name, "--result", "success").stdout.splitlines()]
    assert len(listed) == 1 and listed[0]["status"] == 200
    admin_id = next(line.split()[0] for line in cli("principal", "list").stdout.splitlines()
                    if admin["client_id"] in line.split())
    assert listed[0]["principal"] == admin_id
    # A client id is accepted for --principal.
    mine = cli("audit", "list", "--principal", admin["client_id"], "--key", name).stdout.splitlines()
    assert len(mine) >= 3 and all(json.loads(line)["principal"] == admin_id for line in mine)
    refused = cli("audit", "list", "--result", "403", "--limit", "3").stdout.splitlines()
    assert refused and all(json.loads(line)["status"] == 403 for line in refused)
    assert cli("audit", "list", "--since", "not-a-time", check=False).returncode != 0

    usage = json.loads(cli("key", "usage", key.id).stdout)
    (version,) = usage["versions"]
    assert version["kid"] == key.id
    by_op = {u["operation"]: u for u in version["usage"]}
    assert by_op["KeySign"]["count"] == 1 and by_op["KeyEncrypt"]["count"] == 1, by_op

    # Tampering, on a consistent copy of the data directory.
    def copy(label):
        dest = tmp_path / label
        shutil.copytree(os.environ["KEYSHIFT_E2E_DATA_DIR"], dest,
                        ignore=shutil.ignore_patterns("keyshift.db*"))
        src = sqlite3.connect(os.path.join(os.environ["KEYSHIFT_E2E_DATA_DIR"], "keyshift.db"))
        dst = sqlite3.connect(dest / "keyshift.db")
        src.backup(dst)
        src.close()
        return dest, dst

    def blocks(db):
        return db.execute("SELECT key, value FROM records WHERE ns = 'audit' ORDER BY key").fetchall()

    # One event's status changed from refused to allowed, its block rewritten with the old hashes.
    modified, db = copy("modified")
    for block_key, value in blocks(db):
        header, body = value[:80], value[80:]
        rows = json.loads(zlib.decompress(body, wbits=-15))
        hit = next((i for i, r in enumerate(rows) if r[10] == 403), None)
        if hit is not None:
            rows[hit][10] = 200
            packer = zlib.compressobj(1, zlib.DEFLATED, -15)
            new = header + packer.compress(json.dumps(rows, separators=(",", ":")).encode()) + packer.flush()
            db.execute("UPDATE records SET value = ? WHERE ns = 'audit' AND key = ?", (new, block_key))
            break
    else:
        pytest.fail("no refused event to tamper with")
    db.commit()
    db.close()
    out = cli("audit", "verify", data_dir=str(modified), check=False)
    assert out.returncode == 1 and "was modified" in out.stderr, out.stderr

    # A block from the middle removed.
    removed, db = copy("removed")
    keys = [k for k, _ in blocks(db)]
    db.execute("DELETE FROM records WHERE ns = 'audit' AND key = ?", (keys[len(keys) // 2],))
    db.commit()
    db.close()
    out = cli("audit", "verify", data_dir=str(removed), check=False)
    assert out.returncode == 1 and "missing or out of order" in out.stderr, out.stderr

    # The header is what the docs say: magic, first sequence number, count.
    _, value = blocks(sqlite3.connect(os.path.join(os.environ["KEYSHIFT_E2E_DATA_DIR"], "keyshift.db")))[0]
    magic, first, count = struct.unpack(">4sQI", value[:16])
    assert magic == b"KSA1" and first == 0 and count >= 1
