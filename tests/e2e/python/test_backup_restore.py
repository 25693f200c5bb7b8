"""Disaster recovery across deployments with the official SDK: azure-keyvault-administration's
KeyVaultBackupClient takes a full backup of one deployment's vault, and restores it (whole, then one
key) into a second deployment, which refuses it until two of three custodians have uploaded the
first vault's security domain into it with `keyshift security-domain upload`.

On Keyshift a backup "container" is a directory in the server's backup directory:
`file:///<container>` (see docs/backup-and-recovery.md).
"""

import datetime
import shutil

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.administration import KeyVaultBackupClient
from azure.keyvault.keys import KeyClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conftest import KeyshiftCredential, client_for, keyshift_server
from e2e_helpers import ks


def custodian(directory, name):
    """A custodian's self-signed RSA-2048 certificate and PKCS#8 key, as files."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def backup_client(admin) -> KeyVaultBackupClient:
    return KeyVaultBackupClient(admin["vault_url"], KeyshiftCredential(admin), connection_verify=admin["ca_cert"],
                                verify_challenge_resource=False)


def test_full_backup_restores_in_another_deployment_only_with_the_security_domain(tmp_path):
    with keyshift_server(tmp_path / "east") as (east_path, east), \
            keyshift_server(tmp_path / "west") as (west_path, west):
        keys = client_for(east)
        rsa_key = keys.create_rsa_key("payments-kek", size=2048, tags={"owner": "payments"})
        rotated = keys.rotate_key("payments-kek")
        ec_key = keys.create_ec_key("signing", curve="P-256")

        custodians = [custodian(tmp_path, n) for n in ("ann", "bob", "cho")]
        sd_file = tmp_path / "east-sd.json"
        ks("security-domain", "download", "--credentials", east_path, "--required", "2", "--out", sd_file,
           *[a for cert, _ in custodians for a in ("--cert", cert)])

        result = backup_client(east).begin_backup("file:///nightly", sas_token="unused").result()
        assert result.folder_url.startswith("file:///nightly/mhsm-default-")
        folder = result.folder_url.rsplit("/", 1)[1]
        shutil.copytree(tmp_path / "east" / "backups" / "nightly" / folder,
                        tmp_path / "west" / "backups" / "nightly" / folder)

        west_backup = backup_client(west)
        with pytest.raises(HttpResponseError) as refused:
            west_backup.begin_restore(result.folder_url, sas_token="unused").wait()
        assert refused.value.status_code == 403
        assert "security domain" in refused.value.message

        # One custodian cannot upload the domain; two can.
        one = ks("security-domain", "upload", "--credentials", west_path, "--file", sd_file,
                 "--custodian-key", custodians[0][1], check=False)
        assert one.returncode != 0 and "1 of the 2" in one.stderr
        ks("security-domain", "upload", "--credentials", west_path, "--file", sd_file,
           "--custodian-key", custodians[0][1], "--custodian-key", custodians[2][1])

        west_backup.begin_restore(result.folder_url, sas_token="unused").wait()
        west_keys: KeyClient = client_for(west)
        restored = west_keys.get_key("payments-kek")
        assert restored.key.n == rotated.key.n
        assert restored.properties.version == rotated.properties.version
        assert restored.properties.tags == {"owner": "payments"}
        versions = {p.version for p in west_keys.list_properties_of_key_versions("payments-kek")}
        assert versions == {rsa_key.properties.version, rotated.properties.version}

        # Selective restore of one key, once it is deleted and purged there.
        west_keys.begin_delete_key("signing").wait()
        west_keys.purge_deleted_key("signing")
        west_backup.begin_restore(result.folder_url, sas_token="unused", key_name="signing").wait()
        assert west_keys.get_key("signing").key.x == ec_key.key.x
