"""`keyshift keyring`, `encrypt`, `decrypt` and `inspect` against the running server, with KEKs
made through the official SDK: files, standard input and output, directory trees, a keyring moved
to a new KEK in one call, 2-level files, and the refusals (wrong context, tampering, truncation)
that must leave no output behind."""

import filecmp
import json
import os
import subprocess

import pytest
from azure.keyvault.keys import KeyClient

from e2e_helpers import unique


def ks(*args, input=None, stdin=None, check=True):
    creds = [] if args[0] == "inspect" else ["--credentials", os.environ["KEYSHIFT_E2E_ADMIN"]]
    out = subprocess.run([os.environ["KEYSHIFT_BIN"], *args, *creds], capture_output=True, input=input,
                         stdin=stdin)
    if check and out.returncode != 0:
        raise AssertionError(f"keyshift {' '.join(map(str, args))}: {out.stderr.decode(errors='replace')}")
    return out


@pytest.fixture
def keks(key_client: KeyClient):
    oct_kek = key_client.create_oct_key(unique("kek-oct"), hardware_protected=True)
    rsa_kek = key_client.create_rsa_key(unique("kek-rsa"), size=3072)
    return oct_kek, rsa_kek


def test_files_stdin_trees_and_a_keyring_moved_to_a_new_kek(keks, key_client, tmp_path):
    oct_kek, rsa_kek = keks
    keyring = tmp_path / "keyring.json"
    made = json.loads(ks("keyring", "create", "--kek", oct_kek.id, "--out", keyring).stdout)
    assert made["kek"] == oct_kek.id and len(made["master_key_id"]) == 32
    assert ks("keyring", "create", "--kek", oct_kek.id, "--out", keyring, check=False).returncode != 0

    data = os.urandom(3 * 65536 + 123)
    plain = tmp_path / "report.bin"
    plain.write_bytes(data)
    ks("encrypt", plain, "--keyring", keyring, "--context", "tenant=acme")
    sealed = tmp_path / "report.bin.ksenv"
    header = json.loads(ks("inspect", sealed).stdout)
    assert header["mode"] == "3-level" and header["master_key_id"] == made["master_key_id"]
    assert header["segments"] == 4
    out = tmp_path / "back.bin"
    ks("decrypt", sealed, "--keyring", keyring, "--context", "tenant=acme", "--out", out)
    assert out.read_bytes() == data

    # Standard input to standard output, both ways.
    piped = ks("encrypt", "-", "--keyring", keyring, input=data).stdout
    assert ks("decrypt", "-", "--keyring", keyring, input=piped).stdout == data

    # Standard input redirected from a file (`< file`) is read at its offsets on every core, from
    # where it stands, like a stream would be.
    with open(plain, "rb", buffering=0) as f:
        os.lseek(f.fileno(), 1000, os.SEEK_SET)
        from_file = ks("encrypt", "-", "--keyring", keyring, stdin=f).stdout
        assert os.lseek(f.fileno(), 0, os.SEEK_CUR) == len(data)
    (tmp_path / "from-file.ksenv").write_bytes(from_file)
    with open(tmp_path / "from-file.ksenv", "rb", buffering=0) as f:
        assert ks("decrypt", "-", "--keyring", keyring, stdin=f).stdout == data[1000:]

    # A tree, on both cores, and back.
    tree = tmp_path / "tree"
    for i in range(12):
        d = tree / f"dir{i % 3}" / ("deep" if i % 2 else "")
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_bytes(os.urandom(i * 5000))
    ks("encrypt", tree, "--keyring", keyring, "--out", tmp_path / "tree.enc")
    assert len(list((tmp_path / "tree.enc").rglob("*.ksenv"))) == 12
    ks("decrypt", tmp_path / "tree.enc", "--keyring", keyring, "--out", tmp_path / "tree.dec")
    cmp = filecmp.dircmp(tree, tmp_path / "tree.dec")
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only

    # The move: one rewrap of the master key to the new KEK, no data file touched; then the old
    # KEK is disabled and every file still opens.
    moved = json.loads(ks("keyring", "rewrap", "--keyring", keyring, "--kek", rsa_kek.id).stdout)
    assert moved["old_kek"] == oct_kek.id and moved["kek"] == rsa_kek.id
    assert moved["master_key_id"] == made["master_key_id"]
    assert json.loads((tmp_path / "keyring.json.prev").read_text())["kek_kid"] == oct_kek.id
    key_client.update_key_properties(oct_kek.name, enabled=False)
    out.unlink()
    ks("decrypt", sealed, "--keyring", keyring, "--context", "tenant=acme", "--out", out)
    assert out.read_bytes() == data
    # ... and the previous record no longer opens anything: its KEK is disabled.
    refused = ks("decrypt", sealed, "--keyring", tmp_path / "keyring.json.prev", "--context", "tenant=acme",
                 "--out", tmp_path / "nope.bin", check=False)
    assert refused.returncode != 0 and not (tmp_path / "nope.bin").exists()


def test_two_level_files_and_every_refusal_leaves_no_output(keks, tmp_path):
    oct_kek, _ = keks
    data = os.urandom(200_000)
    plain = tmp_path / "doc.bin"
    plain.write_bytes(data)
    ks("encrypt", plain, "--kek", oct_kek.id, "--context", "doc=1", "--segment-size", "4096")
    sealed = tmp_path / "doc.bin.ksenv"
    header = json.loads(ks("inspect", sealed).stdout)
    assert header["mode"] == "2-level" and header["kek"] == oct_kek.id and header["wrap_alg"] == "A256KW"
    ks("decrypt", sealed, "--context", "doc=1", "--out", tmp_path / "ok.bin")
    assert (tmp_path / "ok.bin").read_bytes() == data

    def refused(path, context="doc=1"):
        target = tmp_path / "refused.bin"
        out = ks("decrypt", path, "--context", context, "--out", target, check=False)
        assert out.returncode != 0, "decrypt should have failed"
        assert not target.exists(), "a failed decrypt left output behind"
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "a temporary file was left"
        return out.stderr.decode()

    assert "context" in refused(sealed, context="doc=2").lower()
    raw = bytearray(sealed.read_bytes())
    mid = len(raw) // 2
    raw[mid] ^= 1
    tampered = tmp_path / "tampered.ksenv"
    tampered.write_bytes(raw)
    assert "segment" in refused(tampered).lower()
    truncated = tmp_path / "truncated.ksenv"
    truncated.write_bytes(sealed.read_bytes()[: header["header_bytes"] + 3 * (4096 + 16)])
    assert "truncat" in refused(truncated).lower()
    not_envelope = tmp_path / "plain.ksenv"
    not_envelope.write_bytes(b"hello, not an envelope")
    assert "envelope" in refused(not_envelope).lower()
