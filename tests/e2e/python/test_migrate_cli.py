"""`keyshift migrate` with the real binary against the running server, killed with SIGKILL at ten
random moments and resumed each time (scenario f): at the end every item is under the new key and
opens to what it was, none is lost, none was switched twice, and no temporary file is left.

The data: a service-style list of 3,000 data keys wrapped (locally, with the key's public part) by
an RSA key, and a tree of 2-level envelope files written by `keyshift encrypt`.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time

from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from e2e_helpers import b64url, unb64url, unique

ITEMS = 3000
FILES = 120
KILLS = 10


def ks(*args, check=True):
    out = subprocess.run([os.environ["KEYSHIFT_BIN"], *map(str, args)], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"keyshift {' '.join(map(str, args))}: {out.stderr}")
    return out


def test_ten_sigkills_and_resumes_lose_nothing_and_switch_nothing_twice(key_client: KeyClient, credential,
                                                                        client_kwargs, tmp_path):
    admin_path = os.environ["KEYSHIFT_E2E_ADMIN"]
    source = key_client.create_rsa_key(unique("cmk"), size=2048)
    public = rsa.RSAPublicNumbers(int.from_bytes(source.key.e, "big"),
                                  int.from_bytes(source.key.n, "big")).public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    deks = {}
    with open(tmp_path / "keys.jsonl", "w") as f:
        for i in range(ITEMS):
            dek = os.urandom(32)
            deks[f"k{i}"] = dek
            f.write(json.dumps({"id": f"k{i}", "kid": source.id, "alg": "RSA-OAEP-256",
                                "wrapped_key": b64url(public.encrypt(dek, oaep))}) + "\n")
    plain = tmp_path / "plain"
    for i in range(FILES):
        d = plain / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.bin").write_bytes(os.urandom(1000 + 97 * i))
    sealed = tmp_path / "sealed"
    ks("encrypt", plain, "--out", sealed, "--kek", source.id, "--credentials", admin_path)

    plan = tmp_path / "plan.toml"
    target_name = unique("cmk-next")
    ks("migrate", "plan", "--name", "kill-test", "--source", source.id, "--credentials", admin_path,
       "--target-name", target_name, "--wrapped-keys", tmp_path / "keys.jsonl", "--envelope-dir", sealed,
       "--keep-until", "2026-01-01", "--quiet-days", "0", "--out", plan)
    text = plan.read_text()
    assert 'kind = "wrapped-keys"' in text and 'kind = "envelope-dir"' in text
    # Small batches and a request rate limit, so that the kills land in the middle of the work.
    text = text.replace("batch_size = 1000", "batch_size = 50").replace("requests_per_second = 0.0",
                                                                        "requests_per_second = 12.0")
    assert "batch_size = 50" in text and "requests_per_second = 12.0" in text
    plan.write_text(text)

    rng = random.Random(int(os.environ.get("KEYSHIFT_KILL_SEED", "5")))
    killed = 0
    for round_ in range(KILLS):
        verb = "apply" if round_ == 0 else "resume"
        err = open(tmp_path / f"run{round_}.err", "w")
        proc = subprocess.Popen([os.environ["KEYSHIFT_BIN"], "migrate", verb, str(plan)],
                                stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(rng.uniform(0.3, 1.2))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        err.close()
    assert killed >= 8, f"only {killed} of {KILLS} runs were still working when killed"

    done = ks("migrate", "resume", str(plan), "--progress", "json")
    assert "complete" in done.stdout, done.stdout
    progress = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert progress and all("done" in p and "rate_per_s" in p for p in progress)

    status = json.loads(ks("migrate", "status", str(plan), "--json").stdout)
    report = status["report"]
    assert report["complete"] and not report["failures"]
    target = report["target"]
    assert f"/keys/{target_name}/" in target

    # The list: every id exactly once, under the target, opening to its data key.
    records = [json.loads(line) for line in (tmp_path / "keys.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in records) == sorted(deks)
    assert all(r["kid"] == target for r in records)
    crypto = CryptographyClient(target, credential, **client_kwargs)
    for r in rng.sample(records, 40):
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, unb64url(r["wrapped_key"])).key == deks[r["id"]]
    # The journal counts each line switched exactly once: a line switched twice would count twice,
    # a lost one not at all.
    journal = sqlite3.connect(str(plan) + ".journal")
    migrated = journal.execute("SELECT SUM(items) FROM batches WHERE source = 0").fetchone()[0]
    assert migrated == ITEMS
    journal.close()

    # The files: each opens under the target to the original; no temporary file is left.
    leftovers = [p for p in tmp_path.rglob("*") if "keyshift-migrate-tmp" in p.name or p.name.endswith(".keyshift-new")]
    assert not leftovers, leftovers
    for path in sealed.rglob("*.ksenv"):
        assert json.loads(ks("inspect", path).stdout)["kek"] == target
    back = tmp_path / "back"
    ks("decrypt", sealed, "--out", back, "--credentials", admin_path)
    for path in plain.rglob("*.bin"):
        assert (back / path.relative_to(plain)).read_bytes() == path.read_bytes()

    # Verify checks every item; the old version is decrypt/unwrap only.
    verified = [json.loads(line) for line in ks("migrate", "verify", str(plan)).stdout.splitlines()]
    assert [v["checked"] for v in verified] == [ITEMS, FILES]
    old = key_client.get_key(source.name, source.properties.version)
    assert set(old.key_operations) <= {"decrypt", "unwrapKey"}


def test_plan_refusals_are_clear(tmp_path):
    admin_path = os.environ["KEYSHIFT_E2E_ADMIN"]
    bad = ks("migrate", "plan", "--name", "x", "--source", "https://localhost:1/keys/nope", "--credentials",
             admin_path, "--target-name", "t", "--keep-until", "2026-13-01", "--out", tmp_path / "p.toml",
             check=False)
    assert bad.returncode != 0 and "error" in bad.stderr
    (tmp_path / "broken.toml").write_text("version = 1\nname = 'x'\n")
    out = ks("migrate", "apply", tmp_path / "broken.toml", check=False)
    assert out.returncode != 0 and "not a valid plan" in out.stderr, out.stderr
    out = ks("migrate", "status", tmp_path / "broken.toml", check=False)
    assert out.returncode != 0


def test_rekey_in_place_refuses_the_wrong_context_and_is_idempotent(key_client: KeyClient, tmp_path):
    admin_path = os.environ["KEYSHIFT_E2E_ADMIN"]
    old = key_client.create_oct_key(unique("docs-old"), hardware_protected=True)
    new = key_client.create_oct_key(unique("docs-new"), hardware_protected=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(3):
        (plain / f"doc{i}.txt").write_bytes(os.urandom(70_000 + i))
    ks("encrypt", plain, "--out", tmp_path / "docs", "--kek", old.id, "--context", "tenant=acme",
       "--credentials", admin_path)
    files = sorted((tmp_path / "docs").glob("*.ksenv"))
    before = {p: p.read_bytes() for p in files}

    refused = ks("rekey", tmp_path / "docs", "--kek", new.id, "--context", "tenant=other",
                 "--credentials", admin_path, check=False)
    assert refused.returncode != 0 and "context" in refused.stdout.lower(), refused.stdout
    assert {p: p.read_bytes() for p in files} == before, "a refused rekey changed a file"

    done = json.loads(ks("rekey", tmp_path / "docs", "--kek", new.id, "--context", "tenant=acme",
                         "--credentials", admin_path).stdout)
    assert (done["rekeyed"], done["already"]) == (3, 0)
    for p in files:
        assert json.loads(ks("inspect", p).stdout)["kek"] == new.id
        assert p.read_bytes() != before[p]
    again = json.loads(ks("rekey", tmp_path / "docs", "--kek", new.id, "--context", "tenant=acme",
                          "--credentials", admin_path).stdout)
    assert (again["rekeyed"], again["already"]) == (0, 3)
    ks("decrypt", tmp_path / "docs", "--out", tmp_path / "back", "--context", "tenant=acme",
       "--credentials", admin_path)
    for p in plain.iterdir():
        assert (tmp_path / "back" / p.name).read_bytes() == p.read_bytes()


def test_progress_is_a_bar_on_a_terminal(key_client: KeyClient, tmp_path):
    """Without --progress, a terminal on standard error gets a bar redrawn in place."""
    import pty

    admin_path = os.environ["KEYSHIFT_E2E_ADMIN"]
    kek = key_client.create_oct_key(unique("bar"), hardware_protected=True)
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(5):
        (plain / f"f{i}").write_bytes(b"x" * 1000)
    ks("encrypt", plain, "--out", tmp_path / "sealed", "--kek", kek.id, "--credentials", admin_path)
    plan = tmp_path / "bar.toml"
    ks("migrate", "plan", "--name", "bar", "--source", kek.id, "--credentials", admin_path, "--target-name",
       unique("bar-next"), "--envelope-dir", tmp_path / "sealed", "--keep-until", "2026-01-01", "--out", plan)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([os.environ["KEYSHIFT_BIN"], "migrate", "apply", str(plan)], stdout=subprocess.PIPE,
                            stderr=follower)
    os.close(follower)
    out, _ = proc.communicate(timeout=120)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0, out
    assert b"\r" in seen and b"[##" in seen and b"5/5" in seen, seen
    assert not seen.lstrip().startswith(b"{"), "JSON lines on a terminal"
