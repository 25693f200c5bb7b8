//! Role-based access: the data actions of the keys API, the built-in roles of Key Vault and of
//! Managed HSM local RBAC with their exact ids and data actions, and the decision, deny by
//! default. This module is pure: the vault hands it the caller's assignments and asks.

use crate::records::VaultKind;
use serde::{Deserialize, Serialize};

/// What a keys API request does, independent of the vault kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// get key, list keys, list versions, attestation
    Read,
    /// create
    Create,
    /// import
    Import,
    /// update
    Update,
    /// delete (soft)
    Delete,
    /// get or list deleted keys
    ReadDeleted,
    /// recover
    Recover,
    /// purge
    Purge,
    /// backup
    Backup,
    /// restore
    Restore,
    /// rotate
    Rotate,
    /// get rotation policy
    ReadRotationPolicy,
    /// set rotation policy
    WriteRotationPolicy,
    /// encrypt
    Encrypt,
    /// decrypt
    Decrypt,
    /// wrapkey
    Wrap,
    /// unwrapkey
    Unwrap,
    /// sign
    Sign,
    /// verify
    Verify,
    /// release
    Release,
    /// get random bytes
    Random,
    /// list or get role assignments
    ReadRoleAssignments,
    /// create role assignments
    WriteRoleAssignments,
    /// delete role assignments
    DeleteRoleAssignments,
    /// list or get role definitions
    ReadRoleDefinitions,
    /// create or update custom role definitions
    WriteRoleDefinitions,
    /// delete custom role definitions
    DeleteRoleDefinitions,
    /// download the security domain (split to custodians)
    SecurityDomainDownload,
    /// read the security domain's transfer key, before an upload
    SecurityDomainTransferKey,
    /// upload a security domain
    SecurityDomainUpload,
    /// start a full backup
    BackupStart,
    /// read a full backup's status
    BackupStatus,
    /// start a full or selective restore
    RestoreStart,
    /// read a restore's status
    RestoreStatus,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 34] = [
        Action::Read,
        Action::Create,
        Action::Import,
        Action::Update,
        Action::Delete,
        Action::ReadDeleted,
        Action::Recover,
        Action::Purge,
        Action::Backup,
        Action::Restore,
        Action::Rotate,
        Action::ReadRotationPolicy,
        Action::WriteRotationPolicy,
        Action::Encrypt,
        Action::Decrypt,
        Action::Wrap,
        Action::Unwrap,
        Action::Sign,
        Action::Verify,
        Action::Release,
        Action::Random,
        Action::ReadRoleAssignments,
        Action::WriteRoleAssignments,
        Action::DeleteRoleAssignments,
        Action::ReadRoleDefinitions,
        Action::WriteRoleDefinitions,
        Action::DeleteRoleDefinitions,
        Action::SecurityDomainDownload,
        Action::SecurityDomainTransferKey,
        Action::SecurityDomainUpload,
        Action::BackupStart,
        Action::BackupStatus,
        Action::RestoreStart,
        Action::RestoreStatus,
    ];

    /// The Azure data action this request needs in a vault of `kind`.
    pub fn data_action(self, kind: VaultKind) -> &'static str {
        use Action::*;
        match kind {
            VaultKind::Vault => match self {
                Read | ReadDeleted => "Microsoft.KeyVault/vaults/keys/read",
                Create => "Microsoft.KeyVault/vaults/keys/create/action",
                Import => "Microsoft.KeyVault/vaults/keys/import/action",
                Update => "Microsoft.KeyVault/vaults/keys/update/action",
                Delete => "Microsoft.KeyVault/vaults/keys/delete",
                Recover => "Microsoft.KeyVault/vaults/keys/recover/action",
                Purge => "Microsoft.KeyVault/vaults/keys/purge/action",
                Backup => "Microsoft.KeyVault/vaults/keys/backup/action",
                Restore => "Microsoft.KeyVault/vaults/keys/restore/action",
                Rotate => "Microsoft.KeyVault/vaults/keys/rotate/action",
                ReadRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/read",
                WriteRotationPolicy => "Microsoft.KeyVault/vaults/keyrotationpolicies/write",
                Encrypt => "Microsoft.KeyVault/vaults/keys/encrypt/action",
                Decrypt => "Microsoft.KeyVault/vaults/keys/decrypt/action",
                Wrap => "Microsoft.KeyVault/vaults/keys/wrap/action",
                Unwrap => "Microsoft.KeyVault/vaults/keys/unwrap/action",
                Sign => "Microsoft.KeyVault/vaults/keys/sign/action",
                Verify => "Microsoft.KeyVault/vaults/keys/verify/action",
                Release => "Microsoft.KeyVault/vaults/keys/release/action",
                // Key Vault has no RNG data action (Azure serves /rng on Managed HSM only); ours
                // sits under vaults/* so that the Administrator has it and nobody else by default.
                Random => "Microsoft.KeyVault/vaults/rng/action",
                // Key Vault manages roles in Azure's control plane; here they are data actions
                // under vaults/*, so that only the Administrator has them.
                ReadRoleAssignments => "Microsoft.KeyVault/vaults/roleAssignments/read/action",
                WriteRoleAssignments => "Microsoft.KeyVault/vaults/roleAssignments/write/action",
                DeleteRoleAssignments => "Microsoft.KeyVault/vaults/roleAssignments/delete/action",
                ReadRoleDefinitions => "Microsoft.KeyVault/vaults/roleDefinitions/read/action",
                WriteRoleDefinitions => "Microsoft.KeyVault/vaults/roleDefinitions/write/action",
                DeleteRoleDefinitions => "Microsoft.KeyVault/vaults/roleDefinitions/delete/action",
                // Key Vault has no security domain or full backup; ours are Managed HSM's,
                // under vaults/* so that only the Administrator has them.
                SecurityDomainDownload => {
                    "Microsoft.KeyVault/vaults/securitydomain/download/action"
                }
                SecurityDomainTransferKey => {
                    "Microsoft.KeyVault/vaults/securitydomain/transferkey/read"
                }
                SecurityDomainUpload => "Microsoft.KeyVault/vaults/securitydomain/upload/action",
                BackupStart => "Microsoft.KeyVault/vaults/backup/start/action",
                BackupStatus => "Microsoft.KeyVault/vaults/backup/status/action",
                RestoreStart => "Microsoft.KeyVault/vaults/restore/start/action",
                RestoreStatus => "Microsoft.KeyVault/vaults/restore/status/action",
            },
            VaultKind::ManagedHsm => match self {
                Read | ReadRotationPolicy => "Microsoft.KeyVault/managedHsm/keys/read/action",
                Create => "Microsoft.KeyVault/managedHsm/keys/create",
                Import => "Microsoft.KeyVault/managedHsm/keys/import/action",
                Update | WriteRotationPolicy => "Microsoft.KeyVault/managedHsm/keys/write/action",
                Delete => "Microsoft.KeyVault/managedHsm/keys/delete",
                ReadDeleted => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/read/action",
                Recover => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/recover/action",
                Purge => "Microsoft.KeyVault/managedHsm/keys/deletedKeys/delete",
                Backup => "Microsoft.KeyVault/managedHsm/keys/backup/action",
                Restore => "Microsoft.KeyVault/managedHsm/keys/restore/action",
                Rotate => "Microsoft.KeyVault/managedHsm/keys/rotate/action",
                Encrypt => "Microsoft.KeyVault/managedHsm/keys/encrypt/action",
                Decrypt => "Microsoft.KeyVault/managedHsm/keys/decrypt/action",
                Wrap => "Microsoft.KeyVault/managedHsm/keys/wrap/action",
                Unwrap => "Microsoft.KeyVault/managedHsm/keys/unwrap/action",
                Sign => "Microsoft.KeyVault/managedHsm/keys/sign/action",
                Verify => "Microsoft.KeyVault/managedHsm/keys/verify/action",
                Release => "Microsoft.KeyVault/managedHsm/keys/release/action",
                Random => "Microsoft.KeyVault/managedHsm/rng/action",
                ReadRoleAssignments => "Microsoft.KeyVault/managedHsm/roleAssignments/read/action",
                WriteRoleAssignments => {
                    "Microsoft.KeyVault/managedHsm/roleAssignments/write/action"
                }
                DeleteRoleAssignments => {
                    "Microsoft.KeyVault/managedHsm/roleAssignments/delete/action"
                }
                ReadRoleDefinitions => "Microsoft.KeyVault/managedHsm/roleDefinitions/read/action",
                WriteRoleDefinitions => {
                    "Microsoft.KeyVault/managedHsm/roleDefinitions/write/action"
                }
                DeleteRoleDefinitions => {
                    "Microsoft.KeyVault/managedHsm/roleDefinitions/delete/action"
                }
                SecurityDomainDownload => {
                    "Microsoft.KeyVault/managedHsm/securitydomain/download/action"
                }
                SecurityDomainTransferKey => {
                    "Microsoft.KeyVault/managedHsm/securitydomain/transferkey/read"
                }
                SecurityDomainUpload => {
                    "Microsoft.KeyVault/managedHsm/securitydomain/upload/action"
                }
                BackupStart => "Microsoft.KeyVault/managedHsm/backup/start/action",
                BackupStatus => "Microsoft.KeyVault/managedHsm/backup/status/action",
                RestoreStart => "Microsoft.KeyVault/managedHsm/restore/start/action",
                RestoreStatus => "Microsoft.KeyVault/managedHsm/restore/status/action",
            },
        }
    }
}

/// One permission block of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Permission {
    /// Control-plane actions (kept for the REST shape; never grant data access).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Control-plane exclusions.
    #[serde(default, rename = "notActions")]
    pub not_actions: Vec<String>,
    /// Data actions granted; `*` matches any run of characters.
    #[serde(default, rename = "dataActions")]
    pub data_actions: Vec<String>,
    /// Data actions taken back from this block's grants.
    #[serde(default, rename = "notDataActions")]
    pub not_data_actions: Vec<String>,
}

/// Built-in or custom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleType {
    /// Shipped with the service.
    #[serde(rename = "AKVBuiltInRole")]
    BuiltIn,
    /// Made by a user.
    #[serde(rename = "CustomRole")]
    Custom,
}

/// A role definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDefinition {
    /// The GUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Built-in or custom.
    pub role_type: RoleType,
    /// Permissions.
    pub permissions: Vec<Permission>,
    /// Where it may be assigned.
    pub assignable_scopes: Vec<String>,
}

/// Case-insensitive glob where `*` matches any run of characters (slashes included).
pub fn action_matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match p.split_first() {
            None => a.is_empty(),
            Some((b'*', rest)) => (0..=a.len()).any(|i| go(rest, &a[i..])),
            Some((c, rest)) => {
                a.first().is_some_and(|x| x.eq_ignore_ascii_case(c)) && go(rest, &a[1..])
            }
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

impl RoleDefinition {
    /// Whether this role grants `data_action`: some block grants it and does not take it back.
    pub fn grants(&self, data_action: &str) -> bool {
        self.permissions.iter().any(|p| {
            p.data_actions
                .iter()
                .any(|g| action_matches(g, data_action))
                && !p
                    .not_data_actions
                    .iter()
                    .any(|n| action_matches(n, data_action))
        })
    }
}

/// A scope string in its canonical form: `/`, `/keys` or `/keys/{name}` (name lowercased).
pub fn canonical_scope(scope: &str) -> Option<String> {
    let trimmed = scope.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.split('/').skip(1).collect();
    match parts.as_slice() {
        [] => Some("/".into()),
        [k] if k.eq_ignore_ascii_case("keys") => Some("/keys".into()),
        [k, name]
            if k.eq_ignore_ascii_case("keys") && crate::naming::check_key_name(name).is_ok() =>
        {
            Some(format!("/keys/{}", name.to_ascii_lowercase()))
        }
        _ => None,
    }
}

/// Whether an assignment at `assignment_scope` covers a request on `resource` (both canonical).
pub fn scope_covers(assignment_scope: &str, resource: &str) -> bool {
    assignment_scope == "/"
        || resource == assignment_scope
        || (assignment_scope == "/keys" && resource.starts_with("/keys/"))
}

fn role(id: &str, name: &str, description: &str, data_actions: &[&str]) -> RoleDefinition {
    RoleDefinition {
        id: id.into(),
        name: name.into(),
        description: description.into(),
        role_type: RoleType::BuiltIn,
        permissions: vec![Permission {
            data_actions: data_actions.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }],
        assignable_scopes: vec!["/".into()],
    }
}

/// The built-in roles of a vault kind, built once.
pub fn built_in(kind: VaultKind) -> &'static [RoleDefinition] {
    static VAULT: std::sync::OnceLock<Vec<RoleDefinition>> = std::sync::OnceLock::new();
    static HSM: std::sync::OnceLock<Vec<RoleDefinition>> = std::sync::OnceLock::new();
    match kind {
        VaultKind::Vault => VAULT.get_or_init(|| built_in_roles(kind)),
        VaultKind::ManagedHsm => HSM.get_or_init(|| built_in_roles(kind)),
    }
}

/// The built-in roles of a vault kind.
pub fn built_in_roles(kind: VaultKind) -> Vec<RoleDefinition> {
    const KV: &str = "Microsoft.KeyVault/vaults";
    const HSM: &str = "Microsoft.KeyVault/managedHsm";
    let kv = |a: &str| format!("{KV}/{a}");
    let hsm = |a: &str| format!("{HSM}/{a}");
    let refs = |v: &[String]| v.to_vec();
    match kind {
        VaultKind::Vault => {
            let crypto_user: Vec<String> = [
                "keys/read",
                "keys/update/action",
                "keys/backup/action",
                "keys/encrypt/action",
                "keys/decrypt/action",
                "keys/wrap/action",
                "keys/unwrap/action",
                "keys/sign/action",
                "keys/verify/action",
            ]
            .iter()
            .map(|a| kv(a))
            .collect();
            vec![
                own(
                    "00482a5a-887f-4fb3-b363-3b7fe8e74483",
                    "Key Vault Administrator",
                    "Perform all data plane operations on a key vault and all objects in it.",
                    &[kv("*")],
                ),
                own(
                    "14b46e9e-c2b7-41b4-b07b-48a6ebf60603",
                    "Key Vault Crypto Officer",
                    "Perform any action on the keys of a key vault, except manage permissions.",
                    &[kv("keys/*"), kv("keyrotationpolicies/*")],
                ),
                own(
                    "12338af0-0e69-4776-bea7-57ae8d297424",
                    "Key Vault Crypto User",
                    "Perform cryptographic operations using keys.",
                    &refs(&crypto_user),
                ),
                own(
                    "e147488a-f6f5-4113-8e2d-b22465e65bf6",
                    "Key Vault Crypto Service Encryption User",
                    "Read metadata of keys and perform wrap/unwrap operations.",
                    &[
                        kv("keys/read"),
                        kv("keys/wrap/action"),
                        kv("keys/unwrap/action"),
                    ],
                ),
                own(
                    "08bbd89e-9f13-488c-ac41-acfcb10c90ab",
                    "Key Vault Crypto Service Release User",
                    "Release keys.",
                    &[kv("keys/release/action")],
                ),
                own(
                    "21090545-7ca7-4776-b22c-e363652d74d2",
                    "Key Vault Reader",
                    "Read metadata of key vaults and its certificates, keys, and secrets.",
                    &[kv("*/read"), kv("secrets/readMetadata/action")],
                ),
            ]
        }
        VaultKind::ManagedHsm => {
            let role_admin: Vec<String> = [
                "roleAssignments/delete/action",
                "roleAssignments/read/action",
                "roleAssignments/write/action",
                "roleDefinitions/read/action",
                "roleDefinitions/write/action",
                "roleDefinitions/delete/action",
            ]
            .iter()
            .map(|a| hsm(a))
            .collect();
            let mut administrator = role_admin.clone();
            administrator.extend(
                [
                    "securitydomain/download/action",
                    "securitydomain/download/read",
                    "securitydomain/upload/action",
                    "securitydomain/upload/read",
                    "securitydomain/transferkey/read",
                    "backup/start/action",
                    "backup/status/action",
                    "restore/start/action",
                    "restore/status/action",
                ]
                .iter()
                .map(|a| hsm(a)),
            );
            let mut officer = role_admin.clone();
            officer.extend(
                [
                    "keys/deletedKeys/read/action",
                    "keys/deletedKeys/recover/action",
                    "keys/deletedKeys/delete",
                    "keys/export/action",
                ]
                .iter()
                .map(|a| hsm(a)),
            );
            let user: Vec<String> = [
                "roleDefinitions/read/action",
                "roleAssignments/read/action",
                "keys/read/action",
                "keys/write/action",
                "keys/delete",
                "keys/create",
                "keys/import/action",
                "keys/release/action",
                "keys/backup/action",
                "keys/restore/action",
                "keys/encrypt/action",
                "keys/decrypt/action",
                "keys/wrap/action",
                "keys/unwrap/action",
                "keys/sign/action",
                "keys/verify/action",
                "keys/rotate/action",
                "rng/action",
            ]
            .iter()
            .map(|a| hsm(a))
            .collect();
            vec![
                own(
                    "a290e904-7015-4bba-90c8-60543313cdb4",
                    "Managed HSM Administrator",
                    "Manage roles, the security domain and full backups; no key operations.",
                    &administrator,
                ),
                own(
                    "515eb02d-2335-4d2d-92f2-b1cbdf9c3778",
                    "Managed HSM Crypto Officer",
                    "Manage roles, purge and recover deleted keys, export keys; no key use.",
                    &officer,
                ),
                own(
                    "21dbd100-6940-42c2-9190-5d6cb909625b",
                    "Managed HSM Crypto User",
                    "Create, use and manage keys; no purge.",
                    &user,
                ),
                own(
                    "4bd23610-cdcf-4971-bdee-bdc562cc28e4",
                    "Managed HSM Policy Administrator",
                    "Manage role definitions and assignments.",
                    &role_admin,
                ),
                own(
                    "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3",
                    "Managed HSM Crypto Auditor",
                    "Read key metadata and roles.",
                    &[
                        hsm("roleAssignments/read/action"),
                        hsm("roleDefinitions/read/action"),
                        hsm("keys/read/action"),
                        hsm("keys/deletedKeys/read/action"),
                    ],
                ),
                own(
                    "33413926-3206-4cdd-b39a-83574fe37a17",
                    "Managed HSM Crypto Service Encryption User",
                    "Read key metadata and wrap/unwrap.",
                    &[
                        hsm("keys/read/action"),
                        hsm("keys/wrap/action"),
                        hsm("keys/unwrap/action"),
                    ],
                ),
                own(
                    "21dbd100-6940-42c2-9190-5d6cb909625c",
                    "Managed HSM Crypto Service Release User",
                    "Release keys.",
                    &[hsm("keys/release/action")],
                ),
                own(
                    "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8",
                    "Managed HSM Backup",
                    "Start full backups and back up keys.",
                    &[
                        hsm("backup/start/action"),
                        hsm("backup/status/action"),
                        hsm("keys/backup/action"),
                    ],
                ),
            ]
        }
    }
}

fn own(id: &str, name: &str, description: &str, data_actions: &[String]) -> RoleDefinition {
    let refs: Vec<&str> = data_actions.iter().map(String::as_str).collect();
    role(id, name, description, &refs)
}

/// The decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this role assignment.
    Allowed {
        /// The assignment that allows it.
        assignment: String,
    },
    /// Denied: no assignment of the caller grants the data action on the resource.
    Denied {
        /// The data action that was needed.
        data_action: &'static str,
    },
}

/// An assignment as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleAssignment {
    /// Assignment name (GUID).
    pub name: String,
    /// Canonical scope.
    pub scope: String,
    /// Role definition GUID.
    pub role_definition_id: String,
    /// Principal object id.
    pub principal_id: String,
}

/// Decides whether `principal` may do `action` on `resource` (canonical scope), deny by default.
pub fn decide<'a>(
    kind: VaultKind,
    principal: &str,
    action: Action,
    resource: &str,
    assignments: &[RoleAssignment],
    role_by_id: impl Fn(&str) -> Option<&'a RoleDefinition>,
) -> Decision {
    let data_action = action.data_action(kind);
    for a in assignments {
        if a.principal_id != principal || !scope_covers(&a.scope, resource) {
            continue;
        }
        if role_by_id(&a.role_definition_id).is_some_and(|r| r.grants(data_action)) {
            return Decision::Allowed {
                assignment: a.name.clone(),
            };
        }
    }
    Decision::Denied { data_action }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(action_matches(
            "Microsoft.KeyVault/vaults/*",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(action_matches(
            "microsoft.keyvault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/read"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/*/read",
            "Microsoft.KeyVault/vaults/keys/purge/action"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/keys/read",
            "Microsoft.KeyVault/vaults/keys/readx"
        ));
        assert!(!action_matches(
            "Microsoft.KeyVault/vaults/keys/*",
            "Microsoft.KeyVault/vaults/keyrotationpolicies/read"
        ));
    }

    #[test]
    fn scopes() {
        assert_eq!(canonical_scope("/").as_deref(), Some("/"));
        assert_eq!(canonical_scope("").as_deref(), Some("/"));
        assert_eq!(canonical_scope("/keys/").as_deref(), Some("/keys"));
        assert_eq!(
            canonical_scope("/KEYS/My-Key").as_deref(),
            Some("/keys/my-key")
        );
        assert_eq!(canonical_scope("/keys/a/b"), None);
        assert_eq!(canonical_scope("/secrets"), None);
        assert_eq!(canonical_scope("/keys/bad_name"), None);
        assert!(scope_covers("/", "/keys/a"));
        assert!(scope_covers("/keys", "/keys/a"));
        assert!(scope_covers("/keys", "/keys"));
        assert!(scope_covers("/keys/a", "/keys/a"));
        assert!(!scope_covers("/keys/a", "/keys/b"));
        assert!(!scope_covers("/keys/a", "/keys"));
        assert!(!scope_covers("/keys", "/"));
    }

    #[test]
    fn not_data_actions_subtract_within_a_role() {
        let mut r = built_in_roles(VaultKind::Vault).remove(1);
        r.permissions[0]
            .not_data_actions
            .push("Microsoft.KeyVault/vaults/keys/purge/action".into());
        assert!(r.grants("Microsoft.KeyVault/vaults/keys/delete"));
        assert!(!r.grants("Microsoft.KeyVault/vaults/keys/purge/action"));
    }
}
