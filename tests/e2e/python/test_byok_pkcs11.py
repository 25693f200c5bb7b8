"""`keyshift byok wrap` from a key inside a PKCS#11 token (SoftHSM2). The keys are made in the token with
pkcs11-tool, as a user would, and wrapped by the token itself (their material is never outside it in the
clear); each is imported with the official SDK into the vaults of two deployments and proven to be the
token's key by an operation that involves the token. Also: the user guide's walk-through, run as written,
and the refusals.

Needs SoftHSM2 (softhsm2-util and its module) and OpenSC (pkcs11-tool): skipped without them, unless
KEYSHIFT_E2E_REQUIRE_SOFTHSM is set (CI sets it), then failed. The module is taken from
KEYSHIFT_PKCS11_MODULE, else from the usual install paths."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from azure.keyvault.keys import JsonWebKey
from azure.keyvault.keys.crypto import (CryptographyClient, EncryptionAlgorithm, KeyWrapAlgorithm,
                                        SignatureAlgorithm)
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from conftest import KeyshiftCredential, client_for, keyshift_server
from e2e_helpers import force_remote, ks, unique

MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora, RHEL
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS
)
TOKEN = "byok-e2e"
PIN = "1234"
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "user-guide.md"


def find_module():
    configured = os.environ.get("KEYSHIFT_PKCS11_MODULE")
    for path in [configured] if configured else MODULE_PATHS:
        if Path(path).is_file():
            return path
    return None


@pytest.fixture(scope="module")
def softhsm_module():
    """The SoftHSM2 module, once softhsm2-util and pkcs11-tool are known to be there."""
    missing = [tool for tool in ("softhsm2-util", "pkcs11-tool") if shutil.which(tool) is None]
    module = find_module()
    if module is None:
        missing.append(f"the SoftHSM2 module ({os.environ.get('KEYSHIFT_PKCS11_MODULE') or ', '.join(MODULE_PATHS)})")
    if missing:
        reason = f"not installed: {'; '.join(missing)} (apt-get install softhsm2 opensc)"
        if os.environ.get("KEYSHIFT_E2E_REQUIRE_SOFTHSM"):
            pytest.fail(f"{reason}, and KEYSHIFT_E2E_REQUIRE_SOFTHSM is set")
        pytest.skip(reason)
    return module


def run(*args, env=None, cwd=None) -> str:
    out = subprocess.run([*map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)
    assert out.returncode == 0, f"{' '.join(map(str, args))}: {out.stdout}{out.stderr}"
    return out.stdout


class Token:
    """A SoftHSM2 token in a configuration of its own, driven with pkcs11-tool."""

    def __init__(self, module: str, home: Path):
        self.module = module
        self.home = home
        self.pin_file = home / "user.pin"
        self.pin_file.write_text(PIN + "\n")

    def p11(self, *args) -> str:
        return run("pkcs11-tool", "--module", self.module, "--token-label", TOKEN, "--login", "--pin", PIN, *args)

    def file(self, name: str, data: bytes = None) -> Path:
        path = self.home / f"{unique(name)}"
        if data is not None:
            path.write_bytes(data)
        return path

    def public_key(self, key_id: str):
        out = self.file("pub.der")
        self.p11("--read-object", "--type", "pubkey", "--id", key_id, "--output-file", out)
        return serialization.load_der_public_key(out.read_bytes())

    def sign(self, key_id: str, mechanism: str, data: bytes) -> bytes:
        sig = self.file("sig")
        self.p11("--sign", "--mechanism", mechanism, "--id", key_id, "--input-file", self.file("in", data),
                 "--output-file", sig)
        return sig.read_bytes()

    def verify(self, key_id: str, mechanism: str, data: bytes, signature: bytes) -> str:
        return self.p11("--verify", "--mechanism", mechanism, "--id", key_id, "--input-file", self.file("in", data),
                        "--signature-file", self.file("sig", signature))

    def encrypt(self, key_id: str, mechanism: str, iv: bytes, data: bytes) -> bytes:
        out = self.file("ct")
        self.p11("--encrypt", "--mechanism", mechanism, "--iv", iv.hex(), "--id", key_id,
                 "--input-file", self.file("pt", data), "--output-file", out)
        return out.read_bytes()


@pytest.fixture(scope="module")
def token(softhsm_module, tmp_path_factory):
    """A fresh token holding the keys a customer brings: extractable RSA 2048 and 3072 and EC P-256 key pairs,
    an extractable AES-256 key, and an AES key made without --extractable."""
    home = tmp_path_factory.mktemp("softhsm")
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\n")
    with pytest.MonkeyPatch.context() as mp:
        # keyshift and pkcs11-tool, run from here, load the module with this configuration.
        mp.setenv("SOFTHSM2_CONF", str(conf))
        run("softhsm2-util", "--init-token", "--free", "--label", TOKEN, "--so-pin", "87654321", "--pin", PIN)
        t = Token(softhsm_module, home)
        pair = ("--keypairgen", "--usage-sign", "--sensitive", "--extractable")
        t.p11(*pair, "--key-type", "rsa:2048", "--label", "rsa-2048", "--id", "01")
        t.p11(*pair, "--key-type", "rsa:3072", "--label", "rsa-3072", "--id", "02")
        t.p11(*pair, "--key-type", "EC:prime256v1", "--label", "ec-p256", "--id", "03")
        t.p11("--keygen", "--key-type", "AES:32", "--label", "aes-256", "--id", "04", "--usage-decrypt",
              "--sensitive", "--extractable")
        t.p11("--keygen", "--key-type", "AES:32", "--label", "aes-locked", "--id", "05", "--usage-decrypt")
        listing = t.p11("--list-objects")
        assert "never extractable" in listing and listing.count("extractable") >= 5, listing
        yield t


@pytest.fixture(scope="module")
def deployments(tmp_path_factory):
    """The harness's server and another one (its own data directory, root key and CA)."""
    first = Path(os.environ["KEYSHIFT_E2E_ADMIN"])
    with keyshift_server(tmp_path_factory.mktemp("second") / "data") as second:
        yield [(first, json.loads(first.read_text())), second]


def kek_for(admin_path, admin, tmp: Path):
    """A new key-exchange key in the deployment's default vault: its versioned kid and PEM."""
    kek = client_for(admin).create_rsa_key(unique("kek"), hardware_protected=True, size=3072,
                                           key_operations=["import"])
    pem = tmp / f"{kek.name}.pem"
    exported = json.loads(ks("byok", "export-kek", kek.id, "--out", pem, "--credentials", admin_path).stdout)
    assert exported["kid"] == kek.id
    return kek.id, pem


def bring(token: Token, deployment, tmp: Path, key_ops, *select, env=None):
    """export-kek, `byok wrap` from the token, import with the SDK: the imported key and wrap's summary."""
    admin_path, admin = deployment
    kid, pem = kek_for(admin_path, admin, tmp)
    blob = tmp / f"{unique('token')}.byok"
    args = ["byok", "wrap", "--kek-kid", kid, "--kek-pem", pem, "--token-label", TOKEN, *select, "--out", blob]
    if env is None:
        args += ["--pkcs11-module", token.module, "--pin-file", token.pin_file]
    summary = json.loads(ks(*args, env=env).stdout)
    assert summary["token"] == TOKEN and summary["kek"] == kid and summary["enc"] == "CKM_RSA_AES_KEY_WRAP"
    assert summary["mechanisms"] == ["CKM_AES_KEY_GEN", "CKM_AES_KEY_WRAP_PAD", "CKM_RSA_PKCS_OAEP"]
    doc = json.loads(blob.read_text())
    assert doc["header"] == {"kid": kid, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"}
    jwk = JsonWebKey(kty=summary["kty"], key_ops=key_ops, t=blob.read_bytes())
    if "crv" in summary:
        jwk.crv = summary["crv"]
    imported = client_for(admin).import_key(unique("from-token"), jwk)
    assert imported.key.kty == summary["kty"]
    return imported, summary


def remote(key, admin) -> CryptographyClient:
    return force_remote(CryptographyClient(key.id, KeyshiftCredential(admin), connection_verify=admin["ca_cert"],
                                           verify_challenge_resource=False))


@pytest.mark.parametrize("bits,key_id", [(2048, "01"), (3072, "02")])
def test_rsa_token_key_in_two_deployments(token, deployments, tmp_path, bits, key_id):
    public = token.public_key(key_id)
    ops = ["sign", "verify", "wrapKey", "unwrapKey"]
    keys = []
    for deployment in deployments:
        # By label with --pkcs11-module and --pin-file here; by id with the environment variables below.
        imported, summary = bring(token, deployment, tmp_path, ops, "--key-label", f"rsa-{bits}")
        assert summary["kty"] == "RSA-HSM" and summary["key_size"] == bits
        assert imported.key.n == public.public_numbers().n.to_bytes(bits // 8, "big")
        keys.append((imported, deployment[1]))

    # Signed inside the token, verified by each vault.
    message = b"signed by the token's RSA key"
    signature = token.sign(key_id, "SHA256-RSA-PKCS", message)
    for key, admin in keys:
        assert remote(key, admin).verify(SignatureAlgorithm.rs256, hashlib.sha256(message).digest(),
                                         signature).is_valid
    # Signed by a vault, verified with the token's public key.
    digest = hashlib.sha256(b"signed by the vault").digest()
    (one, admin_one), (two, admin_two) = keys
    signed = remote(one, admin_one).sign(SignatureAlgorithm.ps256, digest)
    public.verify(signed.signature, b"signed by the vault",
                  padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    # And the key is the same in both deployments: wrapped in one, unwrapped in the other.
    dek = os.urandom(32)
    wrapped = remote(one, admin_one).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert remote(two, admin_two).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek


def test_ec_token_key_in_two_deployments(token, deployments, tmp_path):
    env = {"KEYSHIFT_PKCS11_MODULE": token.module, "KEYSHIFT_PKCS11_PIN": PIN}
    public = token.public_key("03").public_numbers()
    for deployment in deployments:
        imported, summary = bring(token, deployment, tmp_path, ["sign", "verify"], "--key-id", "03", env=env)
        assert summary["kty"] == "EC-HSM" and summary["crv"] == "P-256"
        assert imported.key.crv == "P-256"
        assert (imported.key.x, imported.key.y) == (public.x.to_bytes(32, "big"), public.y.to_bytes(32, "big"))
        client = remote(imported, deployment[1])
        # The vault signs, the token verifies (raw r||s, the format of both).
        digest = hashlib.sha256(b"signed by the vault: " + deployment[1]["vault_url"].encode()).digest()
        signature = client.sign(SignatureAlgorithm.es256, digest).signature
        assert "Signature is valid" in token.verify("03", "ECDSA", digest, signature)
        # The token signs, the vault verifies.
        digest = hashlib.sha256(b"signed by the token").digest()
        assert client.verify(SignatureAlgorithm.es256, digest, token.sign("03", "ECDSA", digest)).is_valid
        # Anything else is refused, so the checks above mean something.
        assert not client.verify(SignatureAlgorithm.es256, hashlib.sha256(b"other").digest(), signature).is_valid


def test_aes_token_key_in_two_deployments(token, deployments, tmp_path):
    keys = []
    for deployment in deployments:
        imported, summary = bring(token, deployment, tmp_path, ["encrypt", "decrypt", "wrapKey", "unwrapKey"],
                                  "--key-label", "aes-256")
        assert summary["kty"] == "oct-HSM" and summary["key_size"] == 256
        keys.append(remote(imported, deployment[1]))
    one, two = keys
    # A data key wrapped by one deployment's vault unwraps in the other's.
    dek = os.urandom(32)
    wrapped = one.wrap_key(KeyWrapAlgorithm.aes_256, dek)
    assert two.unwrap_key(KeyWrapAlgorithm.aes_256, wrapped.encrypted_key).key == dek
    # Encrypted inside the token (AES-CBC), decrypted by each vault (A256CBC, same IV).
    iv, plaintext = os.urandom(16), os.urandom(48)
    ciphertext = token.encrypt("04", "AES-CBC", iv, plaintext)
    assert len(ciphertext) == 48 and ciphertext != plaintext
    for client in keys:
        assert client.decrypt(EncryptionAlgorithm.a256_cbc, ciphertext, iv=iv).plaintext == plaintext


def test_refusals(token, deployments, tmp_path):
    admin_path, admin = deployments[0]
    kid, pem = kek_for(admin_path, admin, tmp_path)
    wrap = ["byok", "wrap", "--kek-kid", kid, "--kek-pem", pem, "--out", tmp_path / "x.byok"]
    from_token = [*wrap, "--pkcs11-module", token.module, "--token-label", TOKEN, "--pin-file", token.pin_file]
    wrong_pin = tmp_path / "wrong.pin"
    wrong_pin.write_text("9999\n")
    refusals = {
        "created non-extractable (CKA_EXTRACTABLE false)": [*from_token, "--key-label", "aes-locked"],
        "has no key labelled \"no-such-key\"": [*from_token, "--key-label", "no-such-key"],
        "has no key with id 7f": [*from_token, "--key-id", "7f"],
        "no token labelled \"no-such-token\"": [*wrap, "--pkcs11-module", token.module, "--token-label",
                                                "no-such-token", "--pin-file", token.pin_file, "--key-id", "01"],
        "refused the user PIN": [*wrap, "--pkcs11-module", token.module, "--token-label", TOKEN,
                                 "--pin-file", wrong_pin, "--key-id", "01"],
        # SoftHSM2 2.6.1 does RSA-OAEP with SHA-1 only: the error names the --enc that works.
        "use --enc CKM_RSA_AES_KEY_WRAP": [*from_token, "--key-id", "01", "--enc", "RSA_AES_KEY_WRAP_256"],
        "cannot load the PKCS#11 module": [*wrap, "--pkcs11-module", tmp_path / "none.so", "--token-label", TOKEN,
                                           "--pin-file", token.pin_file, "--key-id", "01"],
    }
    for expected, args in refusals.items():
        out = ks(*args, check=False)
        assert out.returncode == 1 and out.stderr.startswith("error: ") and expected in out.stderr, \
            f"{expected}: {out.returncode} {out.stderr}"
        assert out.stdout == ""
    assert not (tmp_path / "x.byok").exists()
    # Usage errors (exit 2): a file and a token at once, no key at all, a label and an id at once.
    key_file = tmp_path / "aes.key"
    key_file.write_bytes(os.urandom(32))
    usage = {
        "cannot be used with": [*from_token, "--key-label", "rsa-2048", "--key", key_file],
        "the following required arguments were not provided": [*wrap],
        "'--key-id <HEX>'": [*from_token, "--key-label", "rsa-2048", "--key-id", "01"],
    }
    for expected, args in usage.items():
        out = ks(*args, check=False)
        first_line = out.stderr.splitlines()[0] if out.stderr else ""
        assert out.returncode == 2 and expected in first_line, f"{expected}: {out.returncode} {out.stderr}"
    # No PIN anywhere: a clear error, no prompt.
    out = ks(*wrap, "--pkcs11-module", token.module, "--token-label", TOKEN, "--key-id", "01", check=False,
             env={"KEYSHIFT_PKCS11_PIN": ""})
    assert out.returncode == 1 and "--pin-file" in out.stderr, out.stderr
    # KEYSHIFT_PKCS11_MODULE in the environment does not stand in the way of a key file.
    ks(*wrap, "--key", key_file, "--oct", env={"KEYSHIFT_PKCS11_MODULE": token.module})


def walkthrough_script() -> str:
    """The shell blocks of the user guide's SoftHSM2 walk-through, in order."""
    text = GUIDE.read_text()
    section = text.split("\n## Bring your own key\n", 1)[1].split("\n## ", 1)[0]
    walkthrough = section.split("\n### Walk-through", 1)[1].split("\n### ", 1)[0]
    # The blocks are indented under the steps of a numbered list.
    blocks = [textwrap.dedent(body) for _, body in
              re.findall(r"^( *)```sh\n(.*?)^\1```", walkthrough, flags=re.S | re.M)]
    assert len(blocks) >= 5, "the walk-through's ```sh blocks were not found"
    return "\n".join(blocks)


def test_the_user_guide_walkthrough_runs_as_written(softhsm_module, tmp_path):
    """docs/user-guide.md, "Walk-through": its commands, unchanged, from a directory that has the harness's data
    directory as ./keyshift-data, with `keyshift` on the PATH and HOME in a temporary directory."""
    script = walkthrough_script()
    documented = "/usr/lib/softhsm/libsofthsm2.so"
    assert f"export KEYSHIFT_PKCS11_MODULE={documented}" in script
    if softhsm_module != documented:  # another distribution: the guide says to change this line
        script = script.replace(documented, softhsm_module)
    (tmp_path / "keyshift-data").symlink_to(os.environ["KEYSHIFT_E2E_DATA_DIR"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "keyshift").symlink_to(os.environ["KEYSHIFT_BIN"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYSHIFT_PKCS11_", "SOFTHSM2_"))}
    env.update(HOME=str(tmp_path), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"the walk-through failed:\n{out.stdout}\n{out.stderr}"
    lines = out.stdout.strip().splitlines()
    # What the guide says the commands print: wrap's summary, the imported key's kid, the vault's verdict.
    summary = next(json.loads(line) for line in lines if line.startswith('{"byok"'))
    assert summary["kty"] == "RSA-HSM" and summary["key_size"] == 3072 and summary["token"] == "byok-demo"
    assert any(re.fullmatch(r"https://.*/keys/customer-rsa/[0-9a-f]{32}", line) for line in lines), lines
    assert lines[-1] == "true", lines
