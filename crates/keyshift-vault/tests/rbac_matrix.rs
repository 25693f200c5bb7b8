//! The decision matrix: every built-in role x every keys operation x scope (the vault, another
//! key, this key). The expected answers are written out once, below, from Azure's published
//! role definitions; the decision code must agree with them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keyshift_vault::rbac::{built_in_roles, decide, Action, Decision, RoleAssignment};
use keyshift_vault::VaultKind;
use std::collections::BTreeSet;

use Action::*;

/// The role-management actions.
const ROLES: [Action; 6] = [
    ReadRoleAssignments,
    WriteRoleAssignments,
    DeleteRoleAssignments,
    ReadRoleDefinitions,
    WriteRoleDefinitions,
    DeleteRoleDefinitions,
];

/// The security domain and full backup and restore: the Administrator's, and (backup only) the
/// Managed HSM Backup role's.
const DOMAIN: [Action; 7] = [
    SecurityDomainDownload,
    SecurityDomainTransferKey,
    SecurityDomainUpload,
    BackupStart,
    BackupStatus,
    RestoreStart,
    RestoreStatus,
];

/// What each built-in role may do, by role id.
fn expected(kind: VaultKind, role_id: &str) -> BTreeSet<Action> {
    let all: BTreeSet<Action> = Action::ALL.iter().copied().collect();
    let set = |a: &[Action]| a.iter().copied().collect::<BTreeSet<Action>>();
    match (kind, role_id) {
        // Key Vault
        (VaultKind::Vault, "00482a5a-887f-4fb3-b363-3b7fe8e74483") => all, // Administrator: vaults/*
        (VaultKind::Vault, "14b46e9e-c2b7-41b4-b07b-48a6ebf60603") => {
            // Crypto Officer: keys/* and keyrotationpolicies/*: no rng, no roles
            all.into_iter()
                .filter(|a| !ROLES.contains(a) && !DOMAIN.contains(a) && *a != Random)
                .collect()
        }
        (VaultKind::Vault, "12338af0-0e69-4776-bea7-57ae8d297424") => set(&[
            Read,
            ReadDeleted,
            Update,
            Backup,
            Encrypt,
            Decrypt,
            Wrap,
            Unwrap,
            Sign,
            Verify,
        ]),
        (VaultKind::Vault, "e147488a-f6f5-4113-8e2d-b22465e65bf6") => {
            set(&[Read, ReadDeleted, Wrap, Unwrap])
        }
        (VaultKind::Vault, "08bbd89e-9f13-488c-ac41-acfcb10c90ab") => set(&[Release]),
        (VaultKind::Vault, "21090545-7ca7-4776-b22c-e363652d74d2") => {
            // Reader: vaults/*/read, which also matches the security domain's transfer key
            // (a public key).
            set(&[
                Read,
                ReadDeleted,
                ReadRotationPolicy,
                SecurityDomainTransferKey,
            ])
        }
        // Managed HSM
        (VaultKind::ManagedHsm, "a290e904-7015-4bba-90c8-60543313cdb4") => {
            // Administrator: roles, the security domain and full backups; no key use
            let mut s = set(&ROLES);
            s.extend(DOMAIN);
            s
        }
        (VaultKind::ManagedHsm, "515eb02d-2335-4d2d-92f2-b1cbdf9c3778") => {
            let mut s = set(&ROLES);
            s.extend([ReadDeleted, Recover, Purge]);
            s
        }
        (VaultKind::ManagedHsm, "21dbd100-6940-42c2-9190-5d6cb909625b") => set(&[
            Read,
            ReadRotationPolicy,
            Update,
            WriteRotationPolicy,
            Delete,
            Create,
            Import,
            Release,
            Backup,
            Restore,
            Encrypt,
            Decrypt,
            Wrap,
            Unwrap,
            Sign,
            Verify,
            Rotate,
            Random,
            ReadRoleAssignments,
            ReadRoleDefinitions,
        ]),
        (VaultKind::ManagedHsm, "4bd23610-cdcf-4971-bdee-bdc562cc28e4") => set(&ROLES),
        (VaultKind::ManagedHsm, "2c18b078-7c48-4d3a-af88-5a3a1b3f82b3") => set(&[
            Read,
            ReadRotationPolicy,
            ReadDeleted,
            ReadRoleAssignments,
            ReadRoleDefinitions,
        ]),
        (VaultKind::ManagedHsm, "33413926-3206-4cdd-b39a-83574fe37a17") => {
            set(&[Read, ReadRotationPolicy, Wrap, Unwrap])
        }
        (VaultKind::ManagedHsm, "21dbd100-6940-42c2-9190-5d6cb909625c") => set(&[Release]),
        (VaultKind::ManagedHsm, "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8") => {
            set(&[Backup, BackupStart, BackupStatus])
        }
        (kind, id) => panic!("no expectation written for {kind:?} role {id}"),
    }
}

#[test]
fn every_role_every_operation_every_scope() {
    let mut checked = 0;
    for kind in [VaultKind::Vault, VaultKind::ManagedHsm] {
        let roles = built_in_roles(kind);
        assert_eq!(roles.len(), if kind == VaultKind::Vault { 6 } else { 8 });
        for role in &roles {
            let allowed = expected(kind, &role.id);
            for scope in ["/", "/keys", "/keys/other", "/keys/this"] {
                let assignment = RoleAssignment {
                    name: "a1".into(),
                    scope: scope.into(),
                    role_definition_id: role.id.clone(),
                    principal_id: "p".into(),
                };
                for action in Action::ALL {
                    let resource = if action == Random
                        || ROLES.contains(&action)
                        || DOMAIN.contains(&action)
                    {
                        "/"
                    } else {
                        "/keys/this"
                    };
                    let covers = match scope {
                        "/" => true,
                        "/keys" | "/keys/this" => resource != "/",
                        _ => false,
                    };
                    let want = covers && allowed.contains(&action);
                    let got = decide(
                        kind,
                        "p",
                        action,
                        resource,
                        std::slice::from_ref(&assignment),
                        |id| roles.iter().find(|r| r.id == id),
                    );
                    assert_eq!(
                        matches!(got, Decision::Allowed { .. }),
                        want,
                        "{kind:?} {} at {scope}: {action:?}",
                        role.name
                    );
                    // Another principal never benefits from this assignment.
                    let other = decide(
                        kind,
                        "q",
                        action,
                        resource,
                        std::slice::from_ref(&assignment),
                        |id| roles.iter().find(|r| r.id == id),
                    );
                    assert!(matches!(other, Decision::Denied { .. }));
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, (6 + 8) * 4 * Action::ALL.len());
}

#[test]
fn no_assignment_denies_and_names_the_action() {
    let roles = built_in_roles(VaultKind::Vault);
    let d = decide(VaultKind::Vault, "p", Encrypt, "/keys/k", &[], |id| {
        roles.iter().find(|r| r.id == id)
    });
    assert_eq!(
        d,
        Decision::Denied {
            data_action: "Microsoft.KeyVault/vaults/keys/encrypt/action"
        }
    );
    // An assignment naming a role that does not exist grants nothing.
    let ghost = RoleAssignment {
        name: "g".into(),
        scope: "/".into(),
        role_definition_id: "00000000-0000-0000-0000-000000000000".into(),
        principal_id: "p".into(),
    };
    let d = decide(VaultKind::Vault, "p", Read, "/keys/k", &[ghost], |id| {
        roles.iter().find(|r| r.id == id)
    });
    assert!(matches!(d, Decision::Denied { .. }));
}
