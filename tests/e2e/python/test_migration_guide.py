"""docs/migration-guide.md, run as written: the ```sh tested blocks of scenario (a) (a service's
wrapped-key list moved to a key in another vault) and (c) (a tree of 2-level envelope files), from
a directory that holds the harness's data directory as ./keyshift-data, with `keyshift` on the PATH.
Only the lines saying where the server is are pointed at the harness's server."""

import json
import os
import re
import subprocess
from pathlib import Path

from azure.keyvault.keys import KeyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from e2e_helpers import b64url, unique

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "migration-guide.md"


def blocks(section: str) -> str:
    text = GUIDE.read_text()
    part = text.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"^```sh tested\n(.*?)^```", part, flags=re.S | re.M)
    assert found, f"no tested blocks in {section}"
    return "\n".join(found)


def run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "keyshift").exists():
        (bin_dir / "keyshift").symlink_to(os.environ["KEYSHIFT_BIN"])
    if not (cwd / "keyshift-data").exists():
        (cwd / "keyshift-data").symlink_to(os.environ["KEYSHIFT_E2E_DATA_DIR"])
    env = {k: v for k, v in os.environ.items() if k != "KEYSHIFT_CREDENTIALS"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", HOME=str(cwd))
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"the guide's commands failed:\n{out.stdout}\n{out.stderr}"
    return out


def test_scenario_a_customer_managed_key_list(key_client: KeyClient, admin, tmp_path):
    source = key_client.create_rsa_key(unique("cmk"), size=2048)
    public = rsa.RSAPublicNumbers(int.from_bytes(source.key.e, "big"), int.from_bytes(source.key.n, "big")).public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    with open(tmp_path / "wrapped-keys.jsonl", "w") as f:
        for i in range(50):
            f.write(json.dumps({"id": f"blob-{i}", "kid": source.id, "alg": "RSA-OAEP-256",
                                "wrapped_key": b64url(public.encrypt(os.urandom(32), oaep)), "container": "c1"}) + "\n")
    script = blocks("(a)")
    # Where the server is: the harness's default vault and its second vault by host name.
    script = script.replace("SOURCE_KID=https://localhost:8443/keys/cmk",
                            f"SOURCE_KID={admin['vault_url']}/keys/{source.name}")
    script = script.replace("TARGET_VAULT=https://kv2.localhost:8443",
                            f"TARGET_VAULT={os.environ['KEYSHIFT_E2E_KV2_HOST_URL']}")
    assert admin["vault_url"] in script and os.environ["KEYSHIFT_E2E_KV2_HOST_URL"] in script
    out = run(script, tmp_path)
    assert "complete" in out.stdout, out.stdout
    verified = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"broken"')]
    assert [v["checked"] for v in verified] == [50] and not verified[0]["broken"]
    assert '"items": 50,' in out.stdout, out.stdout  # the dry run's inventory
    records = [json.loads(line) for line in (tmp_path / "wrapped-keys.jsonl").read_text().splitlines()]
    assert len(records) == 50 and all("/keys/cmk-2027/" in r["kid"] and r["container"] == "c1" for r in records)


def test_scenario_c_envelope_tree(key_client: KeyClient, tmp_path):
    kek = key_client.create_oct_key(unique("files"), hardware_protected=True)
    plain = tmp_path / "plain"
    for i in range(30):
        d = plain / f"y{2020 + i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"doc{i}.txt").write_bytes(os.urandom(3000 + i))
    subprocess.run([os.environ["KEYSHIFT_BIN"], "encrypt", plain, "--out", tmp_path / "archive", "--kek", kek.id,
                    "--credentials", os.environ["KEYSHIFT_E2E_ADMIN"]], check=True, capture_output=True)
    out = run(blocks("(c)"), tmp_path)
    assert "complete" in out.stdout, out.stdout
    verified = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{"broken"')]
    assert verified[0]["checked"] == 20 and verified[0]["under_source"] == 0
    back = tmp_path / "back"
    subprocess.run([os.environ["KEYSHIFT_BIN"], "decrypt", tmp_path / "archive", "--out", back, "--credentials",
                    os.environ["KEYSHIFT_E2E_ADMIN"]], check=True, capture_output=True)
    for p in plain.rglob("*.txt"):
        assert (back / p.relative_to(plain)).read_bytes() == p.read_bytes()
