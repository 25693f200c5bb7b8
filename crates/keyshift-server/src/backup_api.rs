//! Managed HSM's security-domain and full backup/restore endpoints (`securitydomain.json`,
//! `backuprestore.json`), on every vault.
//!
//! Azure writes full backups to an Azure Blob container named by `storageResourceUri`; Keyshift
//! writes them to a directory on the server's host: the URI `file:///<container>` names the
//! directory `<container>` inside the server's backup directory (`--backup-dir`), and nothing
//! else. Each backup is a folder `mhsm-<vault>-<YYYYMMDDHHmmSS>` holding `backup.bin` (sealed
//! under the vault's security domain) and `manifest.json`. Operations run to completion before
//! the `202` is answered; their status stays readable at `.../pending` from any node.

use crate::app::{json_response, parse_json, App};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use keyshift_api::{ApiError, ErrorCode};
use keyshift_vault::backup::{CustodianKey, SecurityDomainUpload};
use keyshift_vault::rbac::Action;
use keyshift_vault::{Deployment, RequestContext, VaultRecord};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A security-domain or backup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    /// `POST /securitydomain/download`
    DownloadSecurityDomain,
    /// `GET /securitydomain/download/pending`
    DownloadPending,
    /// `GET /securitydomain/upload`: the transfer key.
    TransferKey,
    /// `POST /securitydomain/upload`
    UploadSecurityDomain,
    /// `GET /securitydomain/upload/pending`
    UploadPending,
    /// `POST /backup`
    Backup,
    /// `GET /backup/{jobId}/pending`
    BackupStatus {
        /// The job.
        job: String,
    },
    /// `PUT /restore`
    Restore,
    /// `PUT /keys/{name}/restore`
    SelectiveRestore {
        /// The key.
        name: String,
    },
    /// `GET /restore/{jobId}/pending`
    RestoreStatus {
        /// The job.
        job: String,
    },
}

impl AdminRoute {
    /// The operation name in the audit log.
    pub fn operation(&self) -> &'static str {
        match self {
            AdminRoute::DownloadSecurityDomain => "SecurityDomainDownload",
            AdminRoute::DownloadPending => "SecurityDomainDownloadStatus",
            AdminRoute::TransferKey => "SecurityDomainTransferKey",
            AdminRoute::UploadSecurityDomain => "SecurityDomainUpload",
            AdminRoute::UploadPending => "SecurityDomainUploadStatus",
            AdminRoute::Backup => "FullBackup",
            AdminRoute::BackupStatus { .. } => "FullBackupStatus",
            AdminRoute::Restore => "FullRestore",
            AdminRoute::SelectiveRestore { .. } => "SelectiveKeyRestore",
            AdminRoute::RestoreStatus { .. } => "RestoreStatus",
        }
    }

    /// The data action it needs.
    pub fn action(&self) -> Action {
        match self {
            AdminRoute::DownloadSecurityDomain | AdminRoute::DownloadPending => {
                Action::SecurityDomainDownload
            }
            AdminRoute::TransferKey => Action::SecurityDomainTransferKey,
            AdminRoute::UploadSecurityDomain | AdminRoute::UploadPending => {
                Action::SecurityDomainUpload
            }
            AdminRoute::Backup => Action::BackupStart,
            AdminRoute::BackupStatus { .. } => Action::BackupStatus,
            AdminRoute::Restore | AdminRoute::SelectiveRestore { .. } => Action::RestoreStart,
            AdminRoute::RestoreStatus { .. } => Action::RestoreStatus,
        }
    }

    /// The key named, for the audit log.
    pub fn key(&self) -> Option<&str> {
        match self {
            AdminRoute::SelectiveRestore { name } => Some(name),
            _ => None,
        }
    }
}

fn wrong_method() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "The HTTP method is not allowed on this path.",
    )
}

/// The route of `path`, when it is one of these; `None` leaves it to the keys API.
pub fn parse(method: crate::routes::Method, path: &str) -> Option<Result<AdminRoute, ApiError>> {
    use crate::routes::Method::*;
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let segs: Vec<&str> = trimmed.split('/').collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let route = match segs.as_slice() {
        [s, d] if eq(s, "securitydomain") && eq(d, "download") => match method {
            Post => AdminRoute::DownloadSecurityDomain,
            _ => return Some(Err(wrong_method())),
        },
        [s, d, p] if eq(s, "securitydomain") && eq(d, "download") && eq(p, "pending") => {
            match method {
                Get => AdminRoute::DownloadPending,
                _ => return Some(Err(wrong_method())),
            }
        }
        [s, u] if eq(s, "securitydomain") && eq(u, "upload") => match method {
            Get => AdminRoute::TransferKey,
            Post => AdminRoute::UploadSecurityDomain,
            _ => return Some(Err(wrong_method())),
        },
        [s, u, p] if eq(s, "securitydomain") && eq(u, "upload") && eq(p, "pending") => match method
        {
            Get => AdminRoute::UploadPending,
            _ => return Some(Err(wrong_method())),
        },
        [b] if eq(b, "backup") => match method {
            Post => AdminRoute::Backup,
            _ => return Some(Err(wrong_method())),
        },
        [b, job, p] if eq(b, "backup") && eq(p, "pending") => match method {
            Get => AdminRoute::BackupStatus {
                job: (*job).to_owned(),
            },
            _ => return Some(Err(wrong_method())),
        },
        [r] if eq(r, "restore") => match method {
            Put => AdminRoute::Restore,
            _ => return Some(Err(wrong_method())),
        },
        [r, job, p] if eq(r, "restore") && eq(p, "pending") => match method {
            Get => AdminRoute::RestoreStatus {
                job: (*job).to_owned(),
            },
            _ => return Some(Err(wrong_method())),
        },
        // `POST /keys/restore` is the keys API's; `PUT /keys/{name}/restore` is this one.
        [k, name, r] if eq(k, "keys") && eq(r, "restore") && method == Put && !name.is_empty() => {
            AdminRoute::SelectiveRestore {
                name: (*name).to_owned(),
            }
        }
        _ => return None,
    };
    Some(Ok(route))
}

#[derive(Deserialize)]
struct DownloadRequest {
    certificates: Vec<CertificateJwk>,
    required: usize,
}

#[derive(Deserialize)]
struct CertificateJwk {
    #[serde(default)]
    x5c: Vec<String>,
}

#[derive(Deserialize)]
struct UploadRequest {
    value: String,
}

#[derive(Deserialize)]
struct SasToken {
    #[serde(rename = "storageResourceUri")]
    storage_resource_uri: String,
}

#[derive(Deserialize)]
struct RestoreRequest {
    #[serde(rename = "sasTokenParameters")]
    sas: SasToken,
    #[serde(rename = "folderToRestore")]
    folder_to_restore: String,
}

#[derive(Deserialize)]
struct SelectiveRestoreRequest {
    #[serde(rename = "sasTokenParameters")]
    sas: SasToken,
    folder: String,
}

fn accepted(body: &serde_json::Value, status_url: Option<String>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = json_response(StatusCode::ACCEPTED, bytes);
    if let Some(url) = status_url.and_then(|u| HeaderValue::from_str(&u).ok()) {
        response.headers_mut().insert("azure-asyncoperation", url);
    }
    response
}

fn custodian(jwk: &CertificateJwk) -> Result<CustodianKey, ApiError> {
    let first = jwk.x5c.first().ok_or_else(|| {
        ApiError::bad_parameter("Each certificate must carry its DER certificate in x5c.")
    })?;
    let der = keyshift_api::b64::decode(first)
        .map_err(|_| ApiError::bad_parameter("A certificate's x5c is not base64."))?;
    let cert = keyshift_crypto::x509::parse_certificate(&der).map_err(|e| {
        ApiError::bad_parameter(format!("A custodian certificate is not usable: {e}"))
    })?;
    Ok(CustodianKey {
        public_key: cert.public_key,
        thumbprint: keyshift_api::b64::encode(&cert.sha256_thumbprint),
    })
}

/// The container directory `uri` names inside `root`: `file:///<container>`, the container a
/// lowercase DNS-label-like name, as Azure's are.
fn container_dir(root: Option<&Path>, uri: &str) -> Result<PathBuf, ApiError> {
    let root = root.ok_or_else(|| {
        ApiError::bad_parameter("This server has no backup directory: start it with --backup-dir.")
            .with_inner("BackupDirectoryNotConfigured")
    })?;
    let container = uri
        .strip_prefix("file:///")
        .map(|c| c.trim_end_matches('/'))
        .filter(|c| valid_name(c, 3, 63))
        .ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "storageResourceUri must be file:///<container>, the container 3 to 63 lowercase letters, digits and hyphens: a directory in the server's backup directory. Got '{}'.",
                keyshift_vault::printable(uri)
            ))
        })?;
    Ok(root.join(container))
}

fn valid_name(name: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn folder_name(vault: &str, now: i64) -> String {
    let t = keyshift_vault::audit::format_millis(now * 1000);
    // 2026-11-29T01:02:03.000Z -> 20261129010203
    let digits: String = t.chars().filter(char::is_ascii_digit).take(14).collect();
    format!("mhsm-{vault}-{digits}")
}

fn io_error(what: &str, e: &std::io::Error) -> ApiError {
    tracing::error!(error = %e, "{what}");
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("The backup directory cannot be written or read ({what}); see the server log."),
    )
}

/// Writes `bytes` to `path` durably: a temporary file, fsynced, renamed, the directory fsynced.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn job_id() -> Result<String, ApiError> {
    let bytes = keyshift_crypto::random_bytes(16).map_err(|_| ApiError::internal())?;
    Ok(keyshift_vault::audit::hex(&bytes))
}

fn status_url(ctx: &RequestContext, kind: &str, job: &str, api_version: &str) -> String {
    format!(
        "{}/{kind}/{job}/pending?api-version={api_version}",
        ctx.base_url
    )
}

/// Answers one request.
pub async fn dispatch(
    app: &App,
    ctx: &RequestContext,
    vault: &VaultRecord,
    route: AdminRoute,
    api_version: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let d: &Deployment = &app.deployment;
    // Who may ask comes before what was asked: a caller without the role learns nothing from
    // the body's validation.
    d.authorize_vault(ctx, vault, route.action()).await?;
    match route {
        AdminRoute::DownloadSecurityDomain => {
            let request: DownloadRequest = parse_json(body)?;
            let custodians = request
                .certificates
                .iter()
                .map(custodian)
                .collect::<Result<Vec<_>, _>>()?;
            let file = d
                .download_security_domain(ctx, vault, &custodians, request.required)
                .await?;
            let value = serde_json::to_string(&file).map_err(|_| ApiError::internal())?;
            Ok(accepted(
                &serde_json::json!({ "value": value }),
                Some(format!(
                    "{}/securitydomain/download/pending?api-version={api_version}",
                    ctx.base_url
                )),
            ))
        }
        AdminRoute::DownloadPending | AdminRoute::UploadPending => {
            Ok(crate::app::ok_json(&serde_json::json!({
                "status": "Success",
                "status_details": "The operation finished before it was acknowledged."
            })))
        }
        AdminRoute::TransferKey => Ok(crate::app::ok_json(
            &d.security_domain_transfer_key(ctx, vault).await?,
        )),
        AdminRoute::UploadSecurityDomain => {
            let request: UploadRequest = parse_json(body)?;
            let upload: SecurityDomainUpload = serde_json::from_str(&request.value)
                .map_err(|_| {
                    ApiError::bad_parameter(
                        "value is not a security-domain upload (make it with `keyshift security-domain upload`).",
                    )
                })?;
            d.upload_security_domain(ctx, vault, &upload).await?;
            Ok(accepted(
                &serde_json::json!({
                    "status": "Success",
                    "status_details": "The security domain was uploaded."
                }),
                Some(format!(
                    "{}/securitydomain/upload/pending?api-version={api_version}",
                    ctx.base_url
                )),
            ))
        }
        AdminRoute::Backup => {
            let request: SasToken = parse_json(body)?;
            let container =
                container_dir(app.backup_dir.as_deref(), &request.storage_resource_uri)?;
            let start = d.now();
            let backup = d.full_backup(ctx, vault).await?;
            let base = folder_name(&vault.name, start);
            let manifest =
                serde_json::to_vec_pretty(&backup.manifest).map_err(|_| ApiError::internal())?;
            let blob = backup.blob;
            let written = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
                std::fs::create_dir_all(&container)?;
                // A folder of its own, even for two backups in one second: never mixed files.
                let mut folder = base.clone();
                for n in 2.. {
                    match std::fs::create_dir(container.join(&folder)) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                            folder = format!("{base}-{n}");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let dir = container.join(&folder);
                write_durably(&dir.join("backup.bin"), &blob)?;
                write_durably(&dir.join("manifest.json"), &manifest)?;
                Ok(folder)
            })
            .await
            .map_err(|_| ApiError::internal())?;
            let folder = written.map_err(|e| io_error("writing the backup", &e))?;
            let job = job_id()?;
            let record = serde_json::json!({
                "status": "Succeeded",
                "statusDetails": format!("{} keys backed up.", backup.manifest.keys),
                "error": null,
                "startTime": start,
                "endTime": d.now(),
                "jobId": job,
                "azureStorageBlobContainerUri": format!(
                    "{}/{folder}",
                    request.storage_resource_uri.trim_end_matches('/')
                ),
            });
            d.put_job(vault, &record).await?;
            Ok(accepted(
                &record,
                Some(status_url(ctx, "backup", &job, api_version)),
            ))
        }
        AdminRoute::BackupStatus { job } => {
            Ok(crate::app::ok_json(&d.job(ctx, vault, &job, false).await?))
        }
        AdminRoute::RestoreStatus { job } => {
            Ok(crate::app::ok_json(&d.job(ctx, vault, &job, true).await?))
        }
        AdminRoute::Restore | AdminRoute::SelectiveRestore { .. } => {
            let (uri, folder, only_key) = match &route {
                AdminRoute::SelectiveRestore { name } => {
                    let r: SelectiveRestoreRequest = parse_json(body)?;
                    (r.sas.storage_resource_uri, r.folder, Some(name.clone()))
                }
                _ => {
                    let r: RestoreRequest = parse_json(body)?;
                    (r.sas.storage_resource_uri, r.folder_to_restore, None)
                }
            };
            let container = container_dir(app.backup_dir.as_deref(), &uri)?;
            if !valid_name(&folder, 1, 200) {
                return Err(ApiError::bad_parameter(format!(
                    "The folder '{}' is not a backup folder name.",
                    keyshift_vault::printable(&folder)
                )));
            }
            let path = container.join(&folder).join("backup.bin");
            let start = d.now();
            let blob = match tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .map_err(|_| ApiError::internal())?
            {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ApiError::new(
                        ErrorCode::NotFound,
                        format!(
                            "There is no backup '{folder}' in container {}.",
                            keyshift_vault::printable(&uri)
                        ),
                    ))
                }
                Err(e) => return Err(io_error("reading the backup", &e)),
            };
            let report = d
                .full_restore(ctx, vault, &blob, only_key.as_deref())
                .await?;
            let job = job_id()?;
            let record = serde_json::json!({
                "status": "Succeeded",
                "statusDetails": format!(
                    "{} keys restored, {} present already; {} role records restored, {} present already.",
                    report.keys_restored, report.keys_present, report.roles_restored, report.roles_present
                ),
                "error": null,
                "jobId": job,
                "startTime": start,
                "endTime": d.now(),
            });
            d.put_job(vault, &record).await?;
            Ok(accepted(
                &record,
                Some(status_url(ctx, "restore", &job, api_version)),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::routes::Method;

    #[test]
    fn routes() {
        assert_eq!(
            parse(Method::Post, "/securitydomain/download")
                .unwrap()
                .unwrap(),
            AdminRoute::DownloadSecurityDomain
        );
        assert_eq!(
            parse(Method::Get, "/SecurityDomain/Upload")
                .unwrap()
                .unwrap(),
            AdminRoute::TransferKey
        );
        assert_eq!(
            parse(Method::Get, "/backup/abc/pending").unwrap().unwrap(),
            AdminRoute::BackupStatus { job: "abc".into() }
        );
        assert_eq!(
            parse(Method::Put, "/keys/k1/restore").unwrap().unwrap(),
            AdminRoute::SelectiveRestore { name: "k1".into() }
        );
        // The keys API's restore stays the keys API's.
        assert!(parse(Method::Post, "/keys/restore").is_none());
        assert!(parse(Method::Post, "/keys/k1/restore").is_none());
        assert!(parse(Method::Get, "/backup").unwrap().is_err());
        assert!(parse(Method::Delete, "/securitydomain/upload")
            .unwrap()
            .is_err());
        assert!(parse(Method::Get, "/keys").is_none());
    }

    #[test]
    fn containers_stay_inside_the_backup_directory() {
        let root = Path::new("/srv/backups");
        assert_eq!(
            container_dir(Some(root), "file:///nightly").unwrap(),
            root.join("nightly")
        );
        for bad in [
            "file:///../etc",
            "file:///a/b",
            "file:///..",
            "file:///Nightly",
            "file://host/nightly",
            "https://acct.blob.core.windows.net/nightly",
            "file:///",
            "file:///ab",
            "file:///-x-",
            "/nightly",
        ] {
            assert!(container_dir(Some(root), bad).is_err(), "{bad}");
        }
        let e = container_dir(None, "file:///nightly").unwrap_err();
        assert_eq!(e.inner, Some("BackupDirectoryNotConfigured"));
        assert!(!valid_name("..", 1, 200));
        assert!(!valid_name("a/b", 1, 200));
        assert!(valid_name("mhsm-kv1-20261129010203", 1, 200));
    }

    #[test]
    fn folder_names_carry_the_time() {
        assert_eq!(folder_name("kv1", 0), "mhsm-kv1-19700101000000");
    }
}
