"""`keyshift byok export-kek` and `keyshift byok wrap` from key files (PEM, DER, JWK, raw AES), and
the reason BYOK exists: the same customer key imported into vaults of two separate servers, data
wrapped under it in one unwrapped in the other. The imports go through the official SDK."""

import base64
import json
import os

from azure.keyvault.keys import JsonWebKey, KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import KeyshiftCredential, client_for
from e2e_helpers import force_remote, ks, unique


def import_byok(client: KeyClient, admin_path, tmp_path, key_file, kty, key_ops, extra=(), **jwk):
    kek = client.create_rsa_key(unique("kek"), hardware_protected=True, size=3072, key_operations=["import"])
    pem = tmp_path / f"{kek.name}.pem"
    exported = json.loads(ks("byok", "export-kek", kek.id, "--out", pem, "--credentials", admin_path).stdout)
    assert exported["kid"] == kek.id
    assert pem.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    blob = tmp_path / f"{kek.name}.byok"
    summary = json.loads(ks("byok", "wrap", "--kek-kid", exported["kid"], "--kek-pem", pem, "--key", key_file,
                            "--out", blob, *extra).stdout)
    assert summary["kty"] == kty and summary.get("crv") == jwk.get("crv"), summary
    doc = json.loads(blob.read_text())
    assert doc["schema_version"] == "1.0.0" and doc["header"]["kid"] == kek.id
    return client.import_key(unique("byok"), JsonWebKey(kty=kty, key_ops=key_ops, t=blob.read_bytes(), **jwk))


def test_one_customer_key_in_two_deployments(admin, second_server, tmp_path):
    second_path, second_admin = second_server
    customer = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    key_file = tmp_path / "customer.pem"
    key_file.write_bytes(customer.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    ops = ["wrapKey", "unwrapKey"]
    first = import_byok(client_for(admin), os.environ["KEYSHIFT_E2E_ADMIN"], tmp_path, key_file, "RSA-HSM", ops)
    second = import_byok(client_for(second_admin), second_path, tmp_path, key_file, "RSA-HSM", ops)
    assert first.key.n == second.key.n == customer.public_key().public_numbers().n.to_bytes(384, "big")

    # A data key wrapped by the vault of the first deployment unwraps in the second.
    dek = os.urandom(32)
    one = force_remote(CryptographyClient(first.id, KeyshiftCredential(admin), connection_verify=admin["ca_cert"],
                                          verify_challenge_resource=False))
    two = force_remote(CryptographyClient(second.id, KeyshiftCredential(second_admin),
                                          connection_verify=second_admin["ca_cert"], verify_challenge_resource=False))
    wrapped = one.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert two.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == dek
    back = two.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, dek)
    assert one.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, back.encrypted_key).key == dek


def test_key_files_of_every_kind_and_the_refusals(key_client, tmp_path):
    admin_path = os.environ["KEYSHIFT_E2E_ADMIN"]
    ec_key = ec.generate_private_key(ec.SECP384R1())
    der = tmp_path / "ec.der"
    der.write_bytes(ec_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    imported = import_byok(key_client, admin_path, tmp_path, der, "EC-HSM", ["sign", "verify"], crv="P-384",
                           extra=["--enc", "RSA_AES_KEY_WRAP_256"])
    assert imported.key.x == ec_key.public_key().public_numbers().x.to_bytes(48, "big")

    nums = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    b = lambda i: base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
    jwk = tmp_path / "key.jwk"
    jwk.write_text(json.dumps({"kty": "RSA", "n": b(nums.public_numbers.n), "e": b(nums.public_numbers.e),
                               "d": b(nums.d), "p": b(nums.p), "q": b(nums.q), "dp": b(nums.dmp1),
                               "dq": b(nums.dmq1), "qi": b(nums.iqmp)}))
    imported = import_byok(key_client, admin_path, tmp_path, jwk, "RSA-HSM", ["sign", "verify"])
    assert imported.key.n == nums.public_numbers.n.to_bytes(256, "big")

    kek = key_client.create_rsa_key(unique("kek"), hardware_protected=True, size=2048, key_operations=["import"])
    pem = tmp_path / "kek.pem"
    ks("byok", "export-kek", kek.id, "--out", pem, "--credentials", admin_path)
    refusals = {
        "not a key-exchange key": ["byok", "export-kek", key_client.create_rsa_key(unique("plain")).id,
                                   "--out", tmp_path / "x.pem", "--credentials", admin_path],
        "unversioned kid": ["byok", "wrap", "--kek-kid", kek.id.rsplit("/", 1)[0], "--kek-pem", pem, "--key", jwk],
        "unknown enc": ["byok", "wrap", "--kek-kid", kek.id, "--kek-pem", pem, "--key", jwk, "--enc", "ROT13"],
        "not a key file": ["byok", "wrap", "--kek-kid", kek.id, "--kek-pem", pem, "--key", pem],
        "wrong AES length": ["byok", "wrap", "--kek-kid", kek.id, "--kek-pem", pem, "--key", jwk, "--oct"],
        "not a PEM KEK": ["byok", "wrap", "--kek-kid", kek.id, "--kek-pem", jwk, "--key", jwk],
    }
    for what, args in refusals.items():
        out = ks(*args, check=False)
        assert out.returncode != 0 and out.stderr.startswith("error: "), f"{what}: {out.stderr}"
    # A raw AES key becomes a blob the server opens (oct-HSM import is for managed HSMs: refused here
    # by the vault, with its own error, after the blob opened).
    aes = tmp_path / "aes.key"
    aes.write_bytes(os.urandom(32))
    ks("byok", "wrap", "--kek-kid", kek.id, "--kek-pem", pem, "--key", aes, "--oct", "--out", tmp_path / "aes.byok")
    assert json.loads((tmp_path / "aes.byok").read_text())["header"]["enc"] == "CKM_RSA_AES_KEY_WRAP"
