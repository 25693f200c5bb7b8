//! The operations of the keys API, plus Keyshift's key usage extension.

use crate::client::{Call, KeyClient};
use crate::error::ClientError;
use crate::kid::{validate_key_name, validate_version, Kid, VaultUrl};
use crate::retry::Idempotency::{self, Safe, Unsafe};
use keyshift_api::b64;
use keyshift_api::keys::{
    BackupBlob, DeletedKeyBundle, KeyBundle, KeyCreateParameters, KeyImportParameters, KeyItem,
    KeyOperationResult, KeyOperationsParameters, KeySignParameters, KeyUpdateParameters,
    KeyVerifyParameters, KeyVerifyResult, ListResult, RandomBytes, RewrapParameters, RewrapResult,
};
use keyshift_api::rbac::{RoleAssignment, RoleDefinition};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use zeroize::Zeroizing;

/// Most pages followed in one listing: a guard against a server that never ends one.
const MAX_PAGES: usize = 100_000;

/// Keyshift's usage report of a key (`GET /keys/{name}[/{version}]/usage`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct KeyUsageReport {
    /// The key's identifier without version.
    pub key: String,
    /// Every version (newest first), or the one asked for.
    pub versions: Vec<VersionUsage>,
}

/// The usage of one version.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct VersionUsage {
    /// The versioned kid.
    pub kid: String,
    /// Who did what with it; empty when unused.
    pub usage: Vec<UsageEntry>,
}

/// One principal's use of a version for one operation.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageEntry {
    /// The principal's object id.
    pub principal: String,
    /// The audit operation (`KeyWrap`, `KeyUnwrap`, `KeyGet`, ...).
    pub operation: String,
    /// Successful uses.
    pub count: u64,
    /// First use, RFC 3339.
    pub first_used: String,
    /// Last use, RFC 3339.
    pub last_used: String,
}

impl KeyClient {
    fn url(
        &self,
        vault: &VaultUrl,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Url, ClientError> {
        let mut url = vault.join(path)?;
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", &self.inner.api_version);
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        method: Method,
        vault: &VaultUrl,
        url: Url,
        body: Option<Zeroizing<Vec<u8>>>,
        idempotency: Idempotency,
    ) -> Result<T, ClientError> {
        let call = Call {
            what,
            method,
            vault,
            url,
            body,
            idempotency,
        };
        let bytes = Zeroizing::new(self.execute(&call).await?);
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::invalid_response(format!(
                "{what}: the answer is not the expected JSON ({})",
                // serde_json's messages name types and positions, never the input.
                e
            ))
            .with_status(200)
        })
    }

    /// Gets a key: the latest version, or `version`.
    pub async fn get_key(
        &self,
        vault: &VaultUrl,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyBundle, ClientError> {
        let kid = Kid::new(vault.clone(), name, version)?;
        let url = self.url(vault, &kid.path(), &[])?;
        self.call("get_key", Method::GET, vault, url, None, Safe)
            .await
    }

    /// Creates a key, or a new version of it. Not retried once it may have reached the service.
    pub async fn create_key(
        &self,
        vault: &VaultUrl,
        name: &str,
        parameters: &KeyCreateParameters,
    ) -> Result<KeyBundle, ClientError> {
        validate_key_name(name)?;
        let url = self.url(vault, &format!("/keys/{name}/create"), &[])?;
        let body = json(parameters)?;
        self.call("create_key", Method::POST, vault, url, Some(body), Unsafe)
            .await
    }

    /// Imports a key with its private members (`d`, `p`, `q`, `dp`, `dq`, `qi`, `k`, `key_hsm`),
    /// or a new version of it. Not retried once it may have reached the service.
    pub async fn import_key(
        &self,
        vault: &VaultUrl,
        name: &str,
        parameters: &KeyImportParameters,
    ) -> Result<KeyBundle, ClientError> {
        validate_key_name(name)?;
        let url = self.url(vault, &format!("/keys/{name}"), &[])?;
        let body = import_body(parameters)?;
        self.call("import_key", Method::PUT, vault, url, Some(body), Unsafe)
            .await
    }

    /// Updates attributes, tags, `key_ops` or the release policy of the latest version or of
    /// `version`.
    pub async fn update_key(
        &self,
        vault: &VaultUrl,
        name: &str,
        version: Option<&str>,
        parameters: &KeyUpdateParameters,
    ) -> Result<KeyBundle, ClientError> {
        let kid = Kid::new(vault.clone(), name, version)?;
        let url = self.url(vault, &kid.path(), &[])?;
        let body = json(parameters)?;
        self.call("update_key", Method::PATCH, vault, url, Some(body), Safe)
            .await
    }

    /// Deletes a key (all versions); with soft delete it stays recoverable.
    pub async fn delete_key(
        &self,
        vault: &VaultUrl,
        name: &str,
    ) -> Result<DeletedKeyBundle, ClientError> {
        validate_key_name(name)?;
        let url = self.url(vault, &format!("/keys/{name}"), &[])?;
        self.call("delete_key", Method::DELETE, vault, url, None, Unsafe)
            .await
    }

    /// Lists the keys of a vault (one item per key, base kids), following every `nextLink`.
    /// `max_results` is the page size (1 to 25).
    pub async fn list_keys(
        &self,
        vault: &VaultUrl,
        max_results: Option<u32>,
    ) -> Result<Vec<KeyItem>, ClientError> {
        self.list_keys_pages(vault, max_results)?.collect().await
    }

    /// Lists the versions of a key (versioned kids), following every `nextLink`.
    pub async fn list_versions(
        &self,
        vault: &VaultUrl,
        name: &str,
        max_results: Option<u32>,
    ) -> Result<Vec<KeyItem>, ClientError> {
        self.list_versions_pages(vault, name, max_results)?
            .collect()
            .await
    }

    /// The keys of a vault, a page at a time.
    pub fn list_keys_pages(
        &self,
        vault: &VaultUrl,
        max_results: Option<u32>,
    ) -> Result<Pages, ClientError> {
        let url = self.url(vault, "/keys", &max_results_query(max_results)?)?;
        Ok(Pages::new(self.clone(), vault.clone(), "list_keys", url))
    }

    /// The versions of a key, a page at a time.
    pub fn list_versions_pages(
        &self,
        vault: &VaultUrl,
        name: &str,
        max_results: Option<u32>,
    ) -> Result<Pages, ClientError> {
        validate_key_name(name)?;
        let url = self.url(
            vault,
            &format!("/keys/{name}/versions"),
            &max_results_query(max_results)?,
        )?;
        Ok(Pages::new(
            self.clone(),
            vault.clone(),
            "list_versions",
            url,
        ))
    }

    /// Makes a new version of a key now. Not retried once it may have reached the service.
    pub async fn rotate_key(&self, vault: &VaultUrl, name: &str) -> Result<KeyBundle, ClientError> {
        validate_key_name(name)?;
        let url = self.url(vault, &format!("/keys/{name}/rotate"), &[])?;
        self.call("rotate_key", Method::POST, vault, url, None, Unsafe)
            .await
    }

    /// An opaque, protected backup of every version of a key.
    pub async fn backup_key(&self, vault: &VaultUrl, name: &str) -> Result<Vec<u8>, ClientError> {
        validate_key_name(name)?;
        let url = self.url(vault, &format!("/keys/{name}/backup"), &[])?;
        let blob: BackupBlob = self
            .call("backup_key", Method::POST, vault, url, None, Safe)
            .await?;
        Ok(blob.value)
    }

    /// Restores a backup into `vault` (same security domain). Not retried once it may have
    /// reached the service.
    pub async fn restore_key(
        &self,
        vault: &VaultUrl,
        backup: &[u8],
    ) -> Result<KeyBundle, ClientError> {
        let url = self.url(vault, "/keys/restore", &[])?;
        let body = json(&BackupBlob {
            value: backup.to_vec(),
        })?;
        self.call("restore_key", Method::POST, vault, url, Some(body), Unsafe)
            .await
    }

    async fn key_operation(
        &self,
        what: &'static str,
        kid: &Kid,
        op: &str,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<KeyOperationResult, ClientError> {
        // `/keys/{name}//{op}` when no version is pinned, as the SDKs send it.
        let url = self.url(&kid.vault_url, &format!("{}/{op}", kid.path()), &[])?;
        self.call(what, Method::POST, &kid.vault_url, url, Some(body), Safe)
            .await
    }

    /// Wraps `key` (e.g. a data key) with the key `kid` (`RSA-OAEP-256`, `A256KW`, ...).
    pub async fn wrap_key(
        &self,
        kid: &Kid,
        alg: &str,
        key: &[u8],
    ) -> Result<KeyOperationResult, ClientError> {
        let body = json(&operation(alg, key))?;
        self.key_operation("wrap_key", kid, "wrapkey", body).await
    }

    /// Unwraps `wrapped` with the key `kid`; the result's `value` is the plain key.
    pub async fn unwrap_key(
        &self,
        kid: &Kid,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<KeyOperationResult, ClientError> {
        let body = json(&operation(alg, wrapped))?;
        self.key_operation("unwrap_key", kid, "unwrapkey", body)
            .await
    }

    /// Encrypts with the key `kid`; for GCM the service picks the IV and returns it with the tag.
    pub async fn encrypt(
        &self,
        kid: &Kid,
        parameters: &KeyOperationsParameters,
    ) -> Result<KeyOperationResult, ClientError> {
        let body = json(parameters)?;
        self.key_operation("encrypt", kid, "encrypt", body).await
    }

    /// Decrypts with the key `kid` (GCM needs `iv` and `tag`, CBC needs `iv`).
    pub async fn decrypt(
        &self,
        kid: &Kid,
        parameters: &KeyOperationsParameters,
    ) -> Result<KeyOperationResult, ClientError> {
        let body = json(parameters)?;
        self.key_operation("decrypt", kid, "decrypt", body).await
    }

    /// Signs a digest (the service does not hash): `RS256`, `PS256`, `ES256`, ...
    pub async fn sign(
        &self,
        kid: &Kid,
        alg: &str,
        digest: &[u8],
    ) -> Result<KeyOperationResult, ClientError> {
        let body = json(&KeySignParameters {
            alg: alg.to_owned(),
            value: digest.to_vec(),
        })?;
        self.key_operation("sign", kid, "sign", body).await
    }

    /// Verifies a signature over a digest.
    pub async fn verify(
        &self,
        kid: &Kid,
        alg: &str,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, ClientError> {
        let body = json(&KeyVerifyParameters {
            alg: alg.to_owned(),
            digest: digest.to_vec(),
            value: signature.to_vec(),
        })?;
        let url = self.url(&kid.vault_url, &format!("{}/verify", kid.path()), &[])?;
        let result: KeyVerifyResult = self
            .call(
                "verify",
                Method::POST,
                &kid.vault_url,
                url,
                Some(body),
                Safe,
            )
            .await?;
        Ok(result.value)
    }

    /// `count` (1 to 128) random bytes from the vault.
    pub async fn get_random_bytes(
        &self,
        vault: &VaultUrl,
        count: usize,
    ) -> Result<Vec<u8>, ClientError> {
        if !(1..=128).contains(&count) {
            return Err(ClientError::invalid_input(
                "count must be between 1 and 128",
            ));
        }
        let url = self.url(vault, "/rng", &[])?;
        let body = json(&serde_json::json!({ "count": count }))?;
        let random: RandomBytes = self
            .call(
                "get_random_bytes",
                Method::POST,
                vault,
                url,
                Some(body),
                Safe,
            )
            .await?;
        if random.value.len() != count {
            return Err(ClientError::invalid_response(format!(
                "asked for {count} random bytes, got {}",
                random.value.len()
            )));
        }
        Ok(random.value)
    }

    /// Keyshift extension: who used each version of a key, for what, how often
    /// (`GET /keys/{name}[/{version}]/usage`, see `docs/api-extensions.md`).
    pub async fn key_usage(
        &self,
        vault: &VaultUrl,
        name: &str,
        version: Option<&str>,
    ) -> Result<KeyUsageReport, ClientError> {
        validate_key_name(name)?;
        let path = match version {
            Some(v) => {
                validate_version(v)?;
                format!("/keys/{name}/{v}/usage")
            }
            None => format!("/keys/{name}/usage"),
        };
        let url = self.url(vault, &path, &[])?;
        self.call("key_usage", Method::GET, vault, url, None, Safe)
            .await
    }
    /// Keyshift extension: moves up to 1,000 wrapped keys (or ciphertexts) from the key `source`
    /// to `parameters.target` without the plaintext leaving the server
    /// (`POST /keys/{name}[/{version}]/rewrap`, see `docs/api-extensions.md`). Item failures are
    /// per item, in the result. Retried on throttling: it changes no state.
    /// Also returns the service's request id: the audit event that records the batch.
    pub async fn rewrap(
        &self,
        source: &Kid,
        parameters: &RewrapParameters,
    ) -> Result<(RewrapResult, Option<String>), ClientError> {
        let url = self.url(&source.vault_url, &format!("{}/rewrap", source.path()), &[])?;
        let call = Call {
            what: "rewrap",
            method: Method::POST,
            vault: &source.vault_url,
            url,
            body: Some(json(parameters)?),
            idempotency: Safe,
        };
        let (bytes, request_id) = self.execute_with_request_id(&call).await?;
        let bytes = Zeroizing::new(bytes);
        let result = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::invalid_response(format!(
                "rewrap: the answer is not the expected JSON ({e})"
            ))
            .with_status(200)
        })?;
        Ok((result, request_id))
    }

    /// `POST /securitydomain/download`: the vault's security domain split to the custodians whose
    /// DER certificates are given, `required` of them needed. Returns the file's JSON text.
    pub async fn download_security_domain(
        &self,
        vault: &VaultUrl,
        certificates_der: &[Vec<u8>],
        required: usize,
    ) -> Result<String, ClientError> {
        let url = self.url(vault, "/securitydomain/download", &[])?;
        let certificates: Vec<serde_json::Value> = certificates_der
            .iter()
            .map(|der| serde_json::json!({"kty": "RSA", "x5c": [b64::encode_standard(der)]}))
            .collect();
        let body = json(&serde_json::json!({"certificates": certificates, "required": required}))?;
        let reply: serde_json::Value = self
            .call(
                "download_security_domain",
                Method::POST,
                vault,
                url,
                Some(body),
                Unsafe,
            )
            .await?;
        reply
            .get("value")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| ClientError::invalid_response("the download has no value"))
    }

    /// `GET /securitydomain/upload`: the transfer key a security domain is uploaded under.
    pub async fn security_domain_transfer_key<T: DeserializeOwned>(
        &self,
        vault: &VaultUrl,
    ) -> Result<T, ClientError> {
        let url = self.url(vault, "/securitydomain/upload", &[])?;
        self.call(
            "security_domain_transfer_key",
            Method::GET,
            vault,
            url,
            None,
            Safe,
        )
        .await
    }

    /// `POST /securitydomain/upload` of `value` (the upload's JSON text).
    pub async fn upload_security_domain(
        &self,
        vault: &VaultUrl,
        value: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self.url(vault, "/securitydomain/upload", &[])?;
        let body = json(&serde_json::json!({ "value": value }))?;
        self.call(
            "upload_security_domain",
            Method::POST,
            vault,
            url,
            Some(body),
            Safe,
        )
        .await
    }

    /// `POST /backup` to `storage_uri` (`file:///<container>` on a Keyshift server). Returns the
    /// operation, whose `azureStorageBlobContainerUri` is the backup's folder URL.
    pub async fn full_backup(
        &self,
        vault: &VaultUrl,
        storage_uri: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self.url(vault, "/backup", &[])?;
        let body = json(&serde_json::json!({ "storageResourceUri": storage_uri, "token": "" }))?;
        self.call("full_backup", Method::POST, vault, url, Some(body), Unsafe)
            .await
    }

    /// `PUT /restore` of the backup in `folder` of `storage_uri`, or `PUT /keys/{key}/restore`
    /// of one key of it.
    pub async fn full_restore(
        &self,
        vault: &VaultUrl,
        storage_uri: &str,
        folder: &str,
        key: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        let sas = serde_json::json!({ "storageResourceUri": storage_uri, "token": "" });
        let (url, body) = match key {
            Some(name) => {
                validate_key_name(name)?;
                (
                    self.url(vault, &format!("/keys/{name}/restore"), &[])?,
                    serde_json::json!({ "sasTokenParameters": sas, "folder": folder }),
                )
            }
            None => (
                self.url(vault, "/restore", &[])?,
                serde_json::json!({ "sasTokenParameters": sas, "folderToRestore": folder }),
            ),
        };
        // Safe to repeat: keys restored already with the same content are left as they are.
        self.call(
            "full_restore",
            Method::PUT,
            vault,
            url,
            Some(json(&body)?),
            Safe,
        )
        .await
    }

    /// Role assignments at `scope` (`/`, `/keys` or `/keys/{name}`) and below it.
    pub async fn list_role_assignments(
        &self,
        vault: &VaultUrl,
        scope: &str,
    ) -> Result<Vec<RoleAssignment>, ClientError> {
        let url = self.url(vault, &rbac_path(scope, "roleAssignments"), &[])?;
        let list: RbacList<RoleAssignment> = self
            .call("list_role_assignments", Method::GET, vault, url, None, Safe)
            .await?;
        Ok(list.value)
    }

    /// Role definitions (built-in and custom) of a vault.
    pub async fn list_role_definitions(
        &self,
        vault: &VaultUrl,
    ) -> Result<Vec<RoleDefinition>, ClientError> {
        let url = self.url(vault, &rbac_path("/", "roleDefinitions"), &[])?;
        let list: RbacList<RoleDefinition> = self
            .call("list_role_definitions", Method::GET, vault, url, None, Safe)
            .await?;
        Ok(list.value)
    }

    /// Creates the role assignment `name` (a GUID): `role_definition_id` (full id or GUID) for
    /// `principal_id` at `scope`. Naming the assignment makes it safe to retry.
    pub async fn put_role_assignment(
        &self,
        vault: &VaultUrl,
        scope: &str,
        name: &str,
        role_definition_id: &str,
        principal_id: &str,
    ) -> Result<RoleAssignment, ClientError> {
        let url = self.url(
            vault,
            &format!("{}/{name}", rbac_path(scope, "roleAssignments")),
            &[],
        )?;
        let body = json(&serde_json::json!({"properties": {
            "roleDefinitionId": role_definition_id, "principalId": principal_id}}))?;
        self.call(
            "put_role_assignment",
            Method::PUT,
            vault,
            url,
            Some(body),
            Safe,
        )
        .await
    }
}

#[derive(Deserialize)]
struct RbacList<T> {
    value: Vec<T>,
}

/// `/{scope}/providers/Microsoft.Authorization/{collection}`, with the scope unencoded as the
/// SDKs send it (`/` becomes `//providers/...`).
fn rbac_path(scope: &str, collection: &str) -> String {
    format!(
        "/{}/providers/Microsoft.Authorization/{collection}",
        scope.trim_start_matches('/')
    )
}

fn operation(alg: &str, value: &[u8]) -> KeyOperationsParameters {
    KeyOperationsParameters {
        alg: alg.to_owned(),
        value: value.to_vec(),
        iv: None,
        aad: None,
        tag: None,
    }
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|e| ClientError::invalid_input(format!("the request could not be encoded: {e}")))
}

fn max_results_query(max_results: Option<u32>) -> Result<Vec<(&'static str, String)>, ClientError> {
    match max_results {
        None => Ok(vec![]),
        Some(n @ 1..=25) => Ok(vec![("maxresults", n.to_string())]),
        Some(_) => Err(ClientError::invalid_input(
            "maxresults must be between 1 and 25",
        )),
    }
}

/// The import body. `JsonWebKey` never serializes private members (a server-side guard), so
/// they are added here, base64url, for the one request that must carry them.
fn import_body(parameters: &KeyImportParameters) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let jwk = parameters
        .key
        .as_ref()
        .ok_or_else(|| ClientError::invalid_input("an import needs a key"))?;
    let mut key = serde_json::to_value(jwk)
        .map_err(|e| ClientError::invalid_input(format!("the key could not be encoded: {e}")))?;
    if let Some(members) = key.as_object_mut() {
        for (name, value) in [
            ("d", &jwk.d),
            ("dp", &jwk.dp),
            ("dq", &jwk.dq),
            ("qi", &jwk.qi),
            ("p", &jwk.p),
            ("q", &jwk.q),
            ("k", &jwk.k),
            ("key_hsm", &jwk.key_hsm),
        ] {
            if let Some(bytes) = value {
                members.insert(name.into(), b64::encode(bytes).into());
            }
        }
    }
    let mut body = serde_json::Map::new();
    body.insert("key".into(), key);
    if let Some(hsm) = parameters.hsm {
        body.insert("Hsm".into(), hsm.into());
    }
    let mut put =
        |name: &str, value: serde_json::Result<serde_json::Value>| -> Result<(), ClientError> {
            let value = value.map_err(|e| {
                ClientError::invalid_input(format!("the request could not be encoded: {e}"))
            })?;
            body.insert(name.into(), value);
            Ok(())
        };
    if let Some(a) = &parameters.attributes {
        put("attributes", serde_json::to_value(a))?;
    }
    if let Some(t) = &parameters.tags {
        put("tags", serde_json::to_value(t))?;
    }
    if let Some(r) = &parameters.release_policy {
        put("release_policy", serde_json::to_value(r))?;
    }
    json(&serde_json::Value::Object(body))
}

/// A listing read a page at a time. Every `nextLink` must stay on the vault's scheme, host and
/// port: a link elsewhere is refused (it would receive the bearer token).
#[derive(Debug)]
pub struct Pages {
    client: KeyClient,
    vault: VaultUrl,
    what: &'static str,
    next: Option<Url>,
    seen: HashSet<String>,
}

impl Pages {
    fn new(client: KeyClient, vault: VaultUrl, what: &'static str, first: Url) -> Self {
        Pages {
            client,
            vault,
            what,
            next: Some(first),
            seen: HashSet::new(),
        }
    }

    /// The next page, or `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<KeyItem>>, ClientError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        if self.seen.len() >= MAX_PAGES || !self.seen.insert(url.to_string()) {
            return Err(ClientError::invalid_response(format!(
                "{}: the service's nextLink repeats a page",
                self.what
            )));
        }
        let page: ListResult<KeyItem> = self
            .client
            .call(self.what, Method::GET, &self.vault, url, None, Safe)
            .await?;
        if let Some(link) = page.next_link.as_deref().filter(|l| !l.is_empty()) {
            self.next = Some(next_link_url(
                &self.vault,
                link,
                &self.client.inner.api_version,
            )?);
        }
        Ok(Some(page.value))
    }

    /// Reads the remaining pages into one list.
    pub async fn collect(mut self) -> Result<Vec<KeyItem>, ClientError> {
        let mut items = Vec::new();
        while let Some(page) = self.next_page().await? {
            items.extend(page);
        }
        Ok(items)
    }
}

/// Resolves a `nextLink` (absolute, or relative to the vault), refusing another origin, and sets
/// this client's api-version on it.
fn next_link_url(vault: &VaultUrl, link: &str, api_version: &str) -> Result<Url, ClientError> {
    let base = Url::parse(&format!("{vault}/"))
        .map_err(|_| ClientError::invalid_input("invalid vault URL"))?;
    let url = base
        .join(link)
        .map_err(|_| ClientError::invalid_response("the service's nextLink is not a URL"))?;
    if !vault.same_origin(&url) || !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::invalid_response(format!(
            "the service's nextLink points away from {vault}; refusing to follow it"
        )));
    }
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "api-version")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = url;
    url.set_fragment(None);
    url.query_pairs_mut()
        .clear()
        .append_pair("api-version", api_version)
        .extend_pairs(kept);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyshift_api::keys::JsonWebKey;

    #[test]
    fn next_links_stay_on_the_vault() {
        let v = VaultUrl::parse("https://kv.localhost:8443").unwrap();
        let u = next_link_url(
            &v,
            "https://kv.localhost:8443/keys?api-version=7.4&$skiptoken=abc&maxresults=3",
            "2025-07-01",
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://kv.localhost:8443/keys?api-version=2025-07-01&%24skiptoken=abc&maxresults=3"
        );
        let rel = next_link_url(&v, "/keys?$skiptoken=page-2", "7.6").unwrap();
        assert_eq!(rel.host_str(), Some("kv.localhost"));
        assert_eq!(rel.port(), Some(8443));
        for bad in [
            "https://evil.example/keys?$skiptoken=abc",
            "https://kv.localhost:9999/keys",
            "https://kv.localhost/keys",
            "http://kv.localhost:8443/keys",
            "//evil.example/keys",
            "https://user@kv.localhost:8443/keys",
            "https://kv.localhost:8443@evil.example/keys",
        ] {
            let e = next_link_url(&v, bad, "7.6").expect_err(bad);
            assert_eq!(e.kind(), crate::ErrorKind::InvalidResponse, "{bad}");
        }
    }

    #[test]
    fn import_body_carries_private_members() {
        let params = KeyImportParameters {
            hsm: Some(true),
            key: Some(JsonWebKey {
                kty: Some("oct".into()),
                k: Some(vec![1, 2, 3]),
                ..JsonWebKey::default()
            }),
            ..KeyImportParameters::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&import_body(&params).unwrap()).unwrap();
        assert_eq!(body["key"]["k"], "AQID");
        assert_eq!(body["key"]["kty"], "oct");
        assert_eq!(body["Hsm"], true);
        assert!(body.get("tags").is_none());
        assert!(import_body(&KeyImportParameters::default()).is_err());
    }

    #[test]
    fn operation_bodies_omit_unset_members() {
        let body = json(&operation("A256KW", &[1, 2])).unwrap();
        assert_eq!(&body[..], br#"{"alg":"A256KW","value":"AQI"}"#);
        assert!(max_results_query(Some(0)).is_err());
        assert!(max_results_query(Some(26)).is_err());
        assert_eq!(max_results_query(Some(25)).unwrap().len(), 1);
    }
}
