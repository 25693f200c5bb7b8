//! The keys API's routes, parsed by hand: the SDKs send paths a generic router will not match
//! (`/keys/k/`, `/keys/k//encrypt`, `/keys/k/release`), fixed segments are case-insensitive, and a
//! key may be named like a reserved segment. This is a pure function of method and path.

use keyshift_api::{ApiError, ErrorCode};
use keyshift_vault::KeyOperation;

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// Anything else.
    Other,
}

impl From<&axum::http::Method> for Method {
    fn from(m: &axum::http::Method) -> Self {
        match *m {
            axum::http::Method::GET => Method::Get,
            axum::http::Method::POST => Method::Post,
            axum::http::Method::PUT => Method::Put,
            axum::http::Method::PATCH => Method::Patch,
            axum::http::Method::DELETE => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// A recognised API call. `version` is `None` for the latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// GET /keys
    ListKeys,
    /// POST /keys/restore
    RestoreKey,
    /// POST /keys/{name}/create
    CreateKey { name: String },
    /// PUT /keys/{name}
    ImportKey { name: String },
    /// DELETE /keys/{name}
    DeleteKey { name: String },
    /// GET /keys/{name}/{version}
    GetKey {
        name: String,
        version: Option<String>,
    },
    /// PATCH /keys/{name}/{version}
    UpdateKey {
        name: String,
        version: Option<String>,
    },
    /// GET /keys/{name}/versions
    ListVersions { name: String },
    /// POST /keys/{name}/backup
    BackupKey { name: String },
    /// POST /keys/{name}/rotate
    RotateKey { name: String },
    /// GET /keys/{name}/rotationpolicy
    GetRotationPolicy { name: String },
    /// PUT /keys/{name}/rotationpolicy
    SetRotationPolicy { name: String },
    /// POST /keys/{name}/{version}/{encrypt|decrypt|wrapkey|unwrapkey}
    Operation {
        name: String,
        version: Option<String>,
        op: KeyOperation,
    },
    /// POST /keys/{name}/{version}/sign
    Sign {
        name: String,
        version: Option<String>,
    },
    /// POST /keys/{name}/{version}/verify
    Verify {
        name: String,
        version: Option<String>,
    },
    /// POST /keys/{name}/{version}/release
    Release {
        name: String,
        version: Option<String>,
    },
    /// GET /keys/{name}/{version}/attestation
    Attestation {
        name: String,
        version: Option<String>,
    },
    /// GET /deletedkeys
    ListDeletedKeys,
    /// GET /deletedkeys/{name}
    GetDeletedKey { name: String },
    /// DELETE /deletedkeys/{name}
    PurgeDeletedKey { name: String },
    /// POST /deletedkeys/{name}/recover
    RecoverDeletedKey { name: String },
    /// POST /rng
    GetRandomBytes,
    /// Keyshift extension: `GET /keys/{name}/usage`, `GET /keys/{name}/{version}/usage`.
    KeyUsage {
        name: String,
        version: Option<String>,
    },
    /// Keyshift extension: `POST /keys/{name}/rewrap`, `POST /keys/{name}/{version}/rewrap`.
    Rewrap {
        name: String,
        version: Option<String>,
    },
}

impl Route {
    /// The operation's name in audit events: Azure Key Vault's diagnostic-log names.
    pub fn operation(&self) -> &'static str {
        match self {
            Route::ListKeys => "KeyList",
            Route::RestoreKey => "KeyRestore",
            Route::CreateKey { .. } => "KeyCreate",
            Route::ImportKey { .. } => "KeyImport",
            Route::DeleteKey { .. } => "KeyDelete",
            Route::GetKey { .. } => "KeyGet",
            Route::UpdateKey { .. } => "KeyUpdate",
            Route::ListVersions { .. } => "KeyListVersions",
            Route::BackupKey { .. } => "KeyBackup",
            Route::RotateKey { .. } => "KeyRotate",
            Route::GetRotationPolicy { .. } => "KeyRotationPolicyGet",
            Route::SetRotationPolicy { .. } => "KeyRotationPolicySet",
            Route::Operation { op, .. } => match op {
                KeyOperation::Encrypt => "KeyEncrypt",
                KeyOperation::Decrypt => "KeyDecrypt",
                KeyOperation::WrapKey => "KeyWrap",
                KeyOperation::UnwrapKey => "KeyUnwrap",
            },
            Route::Sign { .. } => "KeySign",
            Route::Verify { .. } => "KeyVerify",
            Route::Release { .. } => "KeyRelease",
            Route::Attestation { .. } => "KeyAttestationGet",
            Route::ListDeletedKeys => "KeyListDeleted",
            Route::GetDeletedKey { .. } => "KeyGetDeleted",
            Route::PurgeDeletedKey { .. } => "KeyPurge",
            Route::RecoverDeletedKey { .. } => "KeyRecover",
            Route::GetRandomBytes => "RandomBytesGet",
            Route::KeyUsage { .. } => "KeyUsageGet",
            Route::Rewrap { .. } => "KeyRewrap",
        }
    }

    /// The key the request names, and the version if it names one.
    pub fn key(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Route::ListKeys
            | Route::RestoreKey
            | Route::ListDeletedKeys
            | Route::GetRandomBytes => (None, None),
            Route::CreateKey { name }
            | Route::ImportKey { name }
            | Route::DeleteKey { name }
            | Route::ListVersions { name }
            | Route::BackupKey { name }
            | Route::RotateKey { name }
            | Route::GetRotationPolicy { name }
            | Route::SetRotationPolicy { name }
            | Route::GetDeletedKey { name }
            | Route::PurgeDeletedKey { name }
            | Route::RecoverDeletedKey { name } => (Some(name), None),
            Route::GetKey { name, version }
            | Route::UpdateKey { name, version }
            | Route::Operation { name, version, .. }
            | Route::Sign { name, version }
            | Route::Verify { name, version }
            | Route::Release { name, version }
            | Route::Attestation { name, version }
            | Route::KeyUsage { name, version }
            | Route::Rewrap { name, version } => (Some(name), version.as_deref()),
        }
    }
}

fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn version(v: &str) -> Option<String> {
    (!v.is_empty()).then(|| v.to_owned())
}

fn not_found(path: &str) -> ApiError {
    let shown: String = path.chars().take(200).collect();
    ApiError::new(
        ErrorCode::NotFound,
        format!("The requested path {shown} does not exist."),
    )
}

fn wrong_method() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "The HTTP method is not allowed on this path.",
    )
}

/// Parses an already percent-decoded path.
pub fn parse(method: Method, path: &str) -> Result<Route, ApiError> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let mut segs: Vec<&str> = trimmed.split('/').collect();
    // A single trailing slash names the same resource (`/keys/k/` is the latest version of k).
    if segs.len() > 1 && segs.last() == Some(&"") {
        segs.pop();
    }
    use Method::*;
    let route = match segs.as_slice() {
        [k] if eq(k, "keys") => match method {
            Get => Route::ListKeys,
            _ => return Err(wrong_method()),
        },
        [k] if eq(k, "deletedkeys") => match method {
            Get => Route::ListDeletedKeys,
            _ => return Err(wrong_method()),
        },
        [k] if eq(k, "rng") => match method {
            Post => Route::GetRandomBytes,
            _ => return Err(wrong_method()),
        },
        [k, r] if eq(k, "keys") && eq(r, "restore") && method == Post => Route::RestoreKey,
        [k, name] if eq(k, "keys") && !name.is_empty() => {
            let name = name.to_string();
            match method {
                Put => Route::ImportKey { name },
                Delete => Route::DeleteKey { name },
                Get => Route::GetKey {
                    name,
                    version: None,
                },
                Patch => Route::UpdateKey {
                    name,
                    version: None,
                },
                _ => return Err(wrong_method()),
            }
        }
        [k, name, second] if eq(k, "keys") && !name.is_empty() => {
            let name = name.to_string();
            let s = *second;
            match method {
                Post if eq(s, "create") => Route::CreateKey { name },
                Post if eq(s, "rotate") => Route::RotateKey { name },
                Post if eq(s, "backup") => Route::BackupKey { name },
                Post if eq(s, "release") => Route::Release {
                    name,
                    version: None,
                },
                Get if eq(s, "versions") => Route::ListVersions { name },
                Get if eq(s, "rotationpolicy") => Route::GetRotationPolicy { name },
                Get if eq(s, "usage") => Route::KeyUsage {
                    name,
                    version: None,
                },
                Post if eq(s, "rewrap") => Route::Rewrap {
                    name,
                    version: None,
                },
                Put if eq(s, "rotationpolicy") => Route::SetRotationPolicy { name },
                Get if eq(s, "attestation") => Route::Attestation {
                    name,
                    version: None,
                },
                Get => Route::GetKey {
                    name,
                    version: version(s),
                },
                Patch => Route::UpdateKey {
                    name,
                    version: version(s),
                },
                _ => return Err(wrong_method()),
            }
        }
        [k, name, ver, op] if eq(k, "keys") && !name.is_empty() => {
            let name = name.to_string();
            let version = version(ver);
            let op = *op;
            match method {
                Post if eq(op, "encrypt") => Route::Operation {
                    name,
                    version,
                    op: KeyOperation::Encrypt,
                },
                Post if eq(op, "decrypt") => Route::Operation {
                    name,
                    version,
                    op: KeyOperation::Decrypt,
                },
                Post if eq(op, "wrapkey") => Route::Operation {
                    name,
                    version,
                    op: KeyOperation::WrapKey,
                },
                Post if eq(op, "unwrapkey") => Route::Operation {
                    name,
                    version,
                    op: KeyOperation::UnwrapKey,
                },
                Post if eq(op, "sign") => Route::Sign { name, version },
                Post if eq(op, "verify") => Route::Verify { name, version },
                Post if eq(op, "release") => Route::Release { name, version },
                Get if eq(op, "attestation") => Route::Attestation { name, version },
                Get if eq(op, "usage") => Route::KeyUsage { name, version },
                Post if eq(op, "rewrap") => Route::Rewrap { name, version },
                _ if [
                    "encrypt",
                    "decrypt",
                    "wrapkey",
                    "unwrapkey",
                    "sign",
                    "verify",
                    "release",
                    "attestation",
                    "usage",
                    "rewrap",
                ]
                .iter()
                .any(|o| eq(op, o)) =>
                {
                    return Err(wrong_method())
                }
                _ => return Err(not_found(path)),
            }
        }
        [k, name] if eq(k, "deletedkeys") && !name.is_empty() => {
            let name = name.to_string();
            match method {
                Get => Route::GetDeletedKey { name },
                Delete => Route::PurgeDeletedKey { name },
                _ => return Err(wrong_method()),
            }
        }
        [k, name, r] if eq(k, "deletedkeys") && !name.is_empty() && eq(r, "recover") => {
            match method {
                Post => Route::RecoverDeletedKey {
                    name: name.to_string(),
                },
                _ => return Err(wrong_method()),
            }
        }
        _ => return Err(not_found(path)),
    };
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Method::*;

    fn r(m: Method, p: &str) -> Route {
        parse(m, p).unwrap()
    }

    #[test]
    fn sdk_quirks() {
        assert_eq!(
            r(Get, "/keys/k1/"),
            Route::GetKey {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Get, "/keys/k1"),
            Route::GetKey {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Patch, "/keys/k1/"),
            Route::UpdateKey {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Post, "/keys/k1//encrypt"),
            Route::Operation {
                name: "k1".into(),
                version: None,
                op: KeyOperation::Encrypt
            }
        );
        assert_eq!(
            r(Post, "/keys/k1/abc/wrapKey"),
            Route::Operation {
                name: "k1".into(),
                version: Some("abc".into()),
                op: KeyOperation::WrapKey
            }
        );
        assert_eq!(
            r(Post, "/keys/k1/release"),
            Route::Release {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Post, "/keys/k1//release"),
            Route::Release {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Get, "/keys/k1/attestation"),
            Route::Attestation {
                name: "k1".into(),
                version: None
            }
        );
        assert_eq!(
            r(Get, "/KEYS/k1/Versions"),
            Route::ListVersions { name: "k1".into() }
        );
        assert_eq!(r(Get, "/keys/"), Route::ListKeys);
        assert_eq!(r(Post, "/keys/restore"), Route::RestoreKey);
        // A key may be named like a reserved segment where the method tells them apart.
        assert_eq!(
            r(Get, "/keys/restore"),
            Route::GetKey {
                name: "restore".into(),
                version: None
            }
        );
        assert_eq!(
            r(Get, "/keys/create/"),
            Route::GetKey {
                name: "create".into(),
                version: None
            }
        );
        assert_eq!(
            r(Delete, "/deletedkeys/k1"),
            Route::PurgeDeletedKey { name: "k1".into() }
        );
        assert_eq!(
            r(Post, "/deletedkeys/k1/recover"),
            Route::RecoverDeletedKey { name: "k1".into() }
        );
        assert_eq!(r(Post, "/rng"), Route::GetRandomBytes);
    }

    #[test]
    fn unknown_routes_and_methods() {
        for (m, p, code) in [
            (Get, "/", ErrorCode::NotFound),
            (Get, "/secrets/x", ErrorCode::NotFound),
            (Post, "/keys/k/v/explode", ErrorCode::NotFound),
            (Get, "/keys/k/v/encrypt", ErrorCode::MethodNotAllowed),
            (Post, "/keys", ErrorCode::MethodNotAllowed),
            (Get, "/keys//", ErrorCode::NotFound),
            (Get, "/keys/a/b/c/d/e", ErrorCode::NotFound),
            (Other, "/keys/k", ErrorCode::MethodNotAllowed),
        ] {
            assert_eq!(parse(m, p).unwrap_err().code, code, "{m:?} {p}");
        }
    }
}

/// A call of the role-assignment and role-definition API (`/{scope}/providers/Microsoft.Authorization/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacRoute {
    /// GET roleAssignments
    ListAssignments { scope: String },
    /// GET roleAssignments/{name}
    GetAssignment { scope: String, name: String },
    /// PUT roleAssignments/{name}
    PutAssignment { scope: String, name: String },
    /// DELETE roleAssignments/{name}
    DeleteAssignment { scope: String, name: String },
    /// GET roleDefinitions
    ListDefinitions { scope: String },
    /// GET roleDefinitions/{name}
    GetDefinition { scope: String, name: String },
    /// PUT roleDefinitions/{name}: a custom role
    PutDefinition { scope: String, name: String },
    /// DELETE roleDefinitions/{name}
    DeleteDefinition { scope: String, name: String },
}

impl RbacRoute {
    /// The operation's name in audit events.
    pub fn operation(&self) -> &'static str {
        match self {
            RbacRoute::ListAssignments { .. } => "RoleAssignmentList",
            RbacRoute::GetAssignment { .. } => "RoleAssignmentGet",
            RbacRoute::PutAssignment { .. } => "RoleAssignmentCreate",
            RbacRoute::DeleteAssignment { .. } => "RoleAssignmentDelete",
            RbacRoute::ListDefinitions { .. } => "RoleDefinitionList",
            RbacRoute::GetDefinition { .. } => "RoleDefinitionGet",
            RbacRoute::PutDefinition { .. } => "RoleDefinitionSet",
            RbacRoute::DeleteDefinition { .. } => "RoleDefinitionDelete",
        }
    }
}

const PROVIDER: &str = "/providers/microsoft.authorization/";

/// Parses a role API path, or `None` when the path is not one. The scope comes before the provider
/// segment unencoded, so `/` arrives as `///providers/...` and `/keys/k` as `//keys/k/providers/...`.
pub fn parse_rbac(method: Method, path: &str) -> Option<Result<RbacRoute, ApiError>> {
    let at = path.to_ascii_lowercase().find(PROVIDER)?;
    let scope = format!("/{}", path[..at].trim_start_matches('/'));
    let rest: Vec<&str> = path[at + PROVIDER.len()..]
        .trim_end_matches('/')
        .split('/')
        .collect();
    use Method::*;
    let route = match (method, rest.as_slice()) {
        (Get, [c]) if eq(c, "roleAssignments") => RbacRoute::ListAssignments { scope },
        (Get, [c, n]) if eq(c, "roleAssignments") => RbacRoute::GetAssignment {
            scope,
            name: n.to_string(),
        },
        (Put, [c, n]) if eq(c, "roleAssignments") => RbacRoute::PutAssignment {
            scope,
            name: n.to_string(),
        },
        (Delete, [c, n]) if eq(c, "roleAssignments") => RbacRoute::DeleteAssignment {
            scope,
            name: n.to_string(),
        },
        (Get, [c]) if eq(c, "roleDefinitions") => RbacRoute::ListDefinitions { scope },
        (Get, [c, n]) if eq(c, "roleDefinitions") => RbacRoute::GetDefinition {
            scope,
            name: n.to_string(),
        },
        (Put, [c, n]) if eq(c, "roleDefinitions") => RbacRoute::PutDefinition {
            scope,
            name: n.to_string(),
        },
        (Delete, [c, n]) if eq(c, "roleDefinitions") => RbacRoute::DeleteDefinition {
            scope,
            name: n.to_string(),
        },
        (_, [c, ..]) if eq(c, "roleAssignments") || eq(c, "roleDefinitions") => {
            return Some(Err(wrong_method()))
        }
        _ => return Some(Err(not_found(path))),
    };
    Some(Ok(route))
}

#[cfg(test)]
mod rbac_route_tests {
    use super::*;

    #[test]
    fn scopes_and_names() {
        let r = |m, p| parse_rbac(m, p).unwrap().unwrap();
        assert_eq!(
            r(
                Method::Get,
                "///providers/Microsoft.Authorization/roleAssignments"
            ),
            RbacRoute::ListAssignments { scope: "/".into() }
        );
        assert_eq!(
            r(
                Method::Put,
                "//keys/providers/Microsoft.Authorization/roleAssignments/abc"
            ),
            RbacRoute::PutAssignment {
                scope: "/keys".into(),
                name: "abc".into()
            }
        );
        assert_eq!(
            r(
                Method::Delete,
                "/keys/k1/providers/microsoft.authorization/roleassignments/abc"
            ),
            RbacRoute::DeleteAssignment {
                scope: "/keys/k1".into(),
                name: "abc".into()
            }
        );
        assert_eq!(
            r(
                Method::Get,
                "/providers/Microsoft.Authorization/roleDefinitions"
            ),
            RbacRoute::ListDefinitions { scope: "/".into() }
        );
        assert!(parse_rbac(Method::Get, "/keys/k1").is_none());
        assert!(parse_rbac(
            Method::Post,
            "///providers/Microsoft.Authorization/roleAssignments/x"
        )
        .unwrap()
        .is_err());
        assert!(
            parse_rbac(Method::Get, "///providers/Microsoft.Authorization/other")
                .unwrap()
                .is_err()
        );
    }
}
