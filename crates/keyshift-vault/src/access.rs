//! Role assignments in the store, and the access decision on every request.

use crate::deployment::{from_json, store_error, to_json, Deployment};
use crate::naming::new_id;
use crate::rbac::{self, Action, Decision, RoleAssignment, RoleDefinition};
use crate::records::{ns, VaultRecord};
use crate::{RequestContext, Result};
use keyshift_api::{ApiError, ErrorCode};
use keyshift_store::{Expect, Op};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long this process trusts its copy of a vault's assignments. Writes through this process
/// invalidate it at once, writes by other processes (other nodes, the CLI) when the change
/// follower sees them (`Deployment::follow_changes`, a few hundred milliseconds); this bound is a
/// second line of defence.
const ASSIGNMENT_TTL: Duration = Duration::from_secs(1);

/// A vault's assignments and custom roles, as read together.
#[derive(Clone)]
pub(crate) struct VaultAccess {
    assignments: Arc<Vec<RoleAssignment>>,
    custom_roles: Arc<Vec<RoleDefinition>>,
}

/// Access data per vault id, with when it was read.
#[derive(Default)]
pub(crate) struct AssignmentCache {
    entries: RwLock<HashMap<String, (Instant, VaultAccess)>>,
    /// Counts invalidations. A copy read from the store while a write invalidated the cache may
    /// predate that write: it is not kept (else a reader that started before a new assignment
    /// committed would put back a copy without it, and deleting it would answer 404).
    generation: AtomicU64,
}

impl AssignmentCache {
    fn get(&self, vault_id: &str) -> Option<VaultAccess> {
        let map = self.entries.read().unwrap_or_else(|p| p.into_inner());
        map.get(vault_id)
            .filter(|(at, _)| at.elapsed() < ASSIGNMENT_TTL)
            .map(|(_, a)| a.clone())
    }

    /// What to pass to [`AssignmentCache::put`]: taken before reading the store.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps `access`, read from the store after [`AssignmentCache::generation`] returned
    /// `read_at`, unless the cache was invalidated since.
    fn put(&self, vault_id: &str, access: VaultAccess, read_at: u64) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        // Under the lock that `invalidate` takes too, so none slips between check and insert.
        if self.generation.load(Ordering::SeqCst) == read_at {
            map.insert(vault_id.to_owned(), (Instant::now(), access));
        }
    }

    pub(crate) fn invalidate(&self, vault_id: &str) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.remove(vault_id);
    }

    /// Forgets every vault's copy (the change feed lost track: anything may have changed).
    pub(crate) fn clear(&self) {
        let mut map = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        map.clear();
    }
}

/// The resource scope of a request on key `name`.
pub fn key_resource(name: &str) -> String {
    format!("/keys/{}", name.to_ascii_lowercase())
}

impl Deployment {
    /// The role definitions of a vault: the built-in roles of its kind, then its custom roles.
    pub async fn role_definitions(&self, vault: &VaultRecord) -> Result<Vec<RoleDefinition>> {
        let mut all = rbac::built_in(vault.kind).to_vec();
        all.extend(self.vault_access(vault).await?.custom_roles.iter().cloned());
        Ok(all)
    }

    /// A role definition by GUID or by name (case-insensitive).
    pub async fn role_definition(
        &self,
        vault: &VaultRecord,
        id_or_name: &str,
    ) -> Result<Option<RoleDefinition>> {
        let wanted = id_or_name.rsplit('/').next().unwrap_or(id_or_name);
        Ok(self
            .role_definitions(vault)
            .await?
            .into_iter()
            .find(|r| r.id.eq_ignore_ascii_case(wanted) || r.name.eq_ignore_ascii_case(id_or_name)))
    }

    /// Every role assignment of a vault.
    pub async fn role_assignments(&self, vault: &VaultRecord) -> Result<Arc<Vec<RoleAssignment>>> {
        Ok(self.vault_access(vault).await?.assignments)
    }

    async fn vault_access(&self, vault: &VaultRecord) -> Result<VaultAccess> {
        if let Some(hit) = self.assignments.get(&vault.id) {
            return Ok(hit);
        }
        let read_at = self.assignments.generation();
        let prefix = format!("{}/", vault.id);
        let assignments: Vec<RoleAssignment> = self.list_all(ns::ROLE_ASSIGNMENT, &prefix).await?;
        let custom_roles: Vec<RoleDefinition> = self.list_all(ns::ROLE_DEFINITION, &prefix).await?;
        let access = VaultAccess {
            assignments: Arc::new(assignments),
            custom_roles: Arc::new(custom_roles),
        };
        self.assignments.put(&vault.id, access.clone(), read_at);
        Ok(access)
    }

    /// Assigns a role to a principal at a scope (`/`, `/keys` or `/keys/{name}`), for `ctx`
    /// (its audit event is committed with the assignment).
    pub async fn assign_role(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        role: &str,
        principal_id: &str,
        name: Option<&str>,
    ) -> Result<RoleAssignment> {
        self.write_assignment(ctx, vault, scope, role, principal_id, name)
            .await
    }

    async fn write_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        role: &str,
        principal_id: &str,
        name: Option<&str>,
    ) -> Result<RoleAssignment> {
        let scope = rbac::canonical_scope(scope).ok_or_else(|| {
            ApiError::bad_parameter("The scope must be '/', '/keys' or '/keys/{key-name}'.")
        })?;
        let definition = self.role_definition(vault, role).await?.ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "There is no role definition '{}' in vault '{}'.",
                crate::naming::printable(role),
                vault.name
            ))
        })?;
        if principal_id.is_empty() || principal_id.len() > 128 {
            return Err(ApiError::bad_parameter("The principal id is invalid."));
        }
        let assignment = RoleAssignment {
            name: match name {
                Some(n) => n.to_owned(),
                None => uuid_like()?,
            },
            scope,
            role_definition_id: definition.id,
            principal_id: principal_id.to_owned(),
        };
        let ops = vec![Op::Put {
            ns: ns::ROLE_ASSIGNMENT,
            key: format!("{}/{}", vault.id, assignment.name),
            value: to_json(&assignment)?,
            expect: Expect::Absent,
        }];
        self.commit_as(ctx, ops).await.map_err(|e| match e {
            keyshift_store::StoreError::Conflict { .. } => ApiError::conflict(format!(
                "A role assignment named {} exists already.",
                assignment.name
            )),
            other => store_error(other),
        })?;
        self.assignments.invalidate(&vault.id);
        Ok(assignment)
    }

    /// Removes a role assignment by name, for `ctx` (its audit event is committed with the
    /// removal).
    pub async fn remove_role_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<RoleAssignment> {
        self.delete_assignment(ctx, vault, name).await
    }

    async fn delete_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<RoleAssignment> {
        let key = format!("{}/{name}", vault.id);
        let record = self
            .store
            .get(ns::ROLE_ASSIGNMENT, &key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("No role assignment named {name}."),
                )
            })?;
        let assignment: RoleAssignment = from_json(&record.value)?;
        let ops = vec![Op::Delete {
            ns: ns::ROLE_ASSIGNMENT,
            key,
            expect: Expect::Revision(record.revision),
        }];
        self.commit_as(ctx, ops).await.map_err(store_error)?;
        self.assignments.invalidate(&vault.id);
        Ok(assignment)
    }

    /// Allows the request or answers `403 Forbidden` naming the missing data action.
    pub(crate) async fn authorize(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        action: Action,
        resource: &str,
    ) -> Result<()> {
        if ctx.is_system() {
            return Ok(());
        }
        let access = self.vault_access(vault).await?;
        let built_in = rbac::built_in(vault.kind);
        let decision = rbac::decide(
            vault.kind,
            &ctx.principal_id,
            action,
            resource,
            &access.assignments,
            |id| {
                built_in
                    .iter()
                    .find(|r| r.id == id)
                    .or_else(|| access.custom_roles.iter().find(|r| r.id == id))
            },
        );
        match decision {
            Decision::Allowed { .. } => Ok(()),
            Decision::Denied { data_action } => Err(ApiError::forbidden(format!(
                "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: oid={}\r\nAction: '{data_action}'\r\nResource: '{}{resource}'\r\nAssignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: {}\r\n",
                ctx.principal_id, vault.name, vault.name
            ))
            .with_inner("ForbiddenByRbac")),
        }
    }

    /// Records the deployment's administrator and gives it the Administrator role at `/` of every
    /// vault where it holds no assignment yet (and of every vault created later), for `ctx`.
    pub async fn set_administrator(&self, ctx: &RequestContext, principal_id: &str) -> Result<()> {
        self.record_administrator(ctx, principal_id).await?;
        for vault in self.vaults() {
            self.grant_administrator(ctx, &vault).await?;
        }
        Ok(())
    }

    /// Gives the recorded administrator the Administrator role of the vault's kind at `/`.
    pub(crate) async fn grant_administrator(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
    ) -> Result<()> {
        let Some(admin) = self.administrator() else {
            return Ok(());
        };
        let assignments = self.role_assignments(vault).await?;
        if assignments.iter().any(|a| a.principal_id == admin) {
            return Ok(());
        }
        let role = match vault.kind {
            crate::VaultKind::Vault => "Key Vault Administrator",
            crate::VaultKind::ManagedHsm => "Managed HSM Administrator",
        };
        self.assign_role(ctx, vault, "/", role, &admin, None)
            .await
            .map(|_| ())
    }
}

pub(crate) fn uuid_like() -> Result<String> {
    let hex = new_id()?;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// Which assignments a listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentFilter {
    /// At the scope and below it.
    AtAndBelow,
    /// At exactly the scope (`$filter=atScope()`).
    AtScope,
    /// Of one principal (`$filter=principalId eq '...'`), at the scope and below.
    Principal(String),
}

impl AssignmentFilter {
    /// Parses an OData `$filter` as the role API takes it.
    pub fn parse(filter: Option<&str>) -> Result<Self> {
        let Some(f) = filter.map(str::trim).filter(|f| !f.is_empty()) else {
            return Ok(AssignmentFilter::AtAndBelow);
        };
        if f.eq_ignore_ascii_case("atScope()") {
            return Ok(AssignmentFilter::AtScope);
        }
        let lower = f.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("principalid eq ") {
            let id = rest.trim().trim_matches('\'');
            if !id.is_empty() && !id.contains('\'') {
                // Keep the original casing of the id.
                let start = f.len() - rest.len();
                return Ok(AssignmentFilter::Principal(
                    f[start..].trim().trim_matches('\'').to_owned(),
                ));
            }
        }
        Err(ApiError::bad_parameter(
            "The $filter must be atScope() or principalId eq '<id>'.",
        ))
    }
}

impl Deployment {
    /// `GET /{scope}/providers/Microsoft.Authorization/roleAssignments`
    pub async fn list_role_assignments(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        filter: &AssignmentFilter,
    ) -> Result<Vec<RoleAssignment>> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::ReadRoleAssignments, &scope)
            .await?;
        let all = self.role_assignments(vault).await?;
        Ok(all
            .iter()
            .filter(|a| match filter {
                AssignmentFilter::AtScope => a.scope == scope,
                AssignmentFilter::AtAndBelow => rbac::scope_covers(&scope, &a.scope),
                AssignmentFilter::Principal(p) => {
                    rbac::scope_covers(&scope, &a.scope) && &a.principal_id == p
                }
            })
            .cloned()
            .collect())
    }

    /// `GET /{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`
    pub async fn get_role_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        name: &str,
    ) -> Result<RoleAssignment> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::ReadRoleAssignments, &scope)
            .await?;
        self.role_assignments(vault)
            .await?
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name) && a.scope == scope)
            .cloned()
            .ok_or_else(|| assignment_not_found(name))
    }

    /// `PUT /{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`
    pub async fn put_role_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        name: &str,
        role_definition_id: &str,
        principal_id: &str,
    ) -> Result<RoleAssignment> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::WriteRoleAssignments, &scope)
            .await?;
        if !is_guid(name) {
            return Err(ApiError::bad_parameter(
                "The role assignment name must be a GUID.",
            ));
        }
        self.write_assignment(
            ctx,
            vault,
            &scope,
            role_definition_id,
            principal_id,
            Some(&name.to_ascii_lowercase()),
        )
        .await
    }

    /// `DELETE /{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`
    pub async fn delete_role_assignment(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        name: &str,
    ) -> Result<RoleAssignment> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::DeleteRoleAssignments, &scope)
            .await?;
        let existing = self
            .role_assignments(vault)
            .await?
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name) && a.scope == scope)
            .cloned()
            .ok_or_else(|| assignment_not_found(name))?;
        self.delete_assignment(ctx, vault, &existing.name).await
    }

    /// `GET /{scope}/providers/Microsoft.Authorization/roleDefinitions[/{name}]`
    pub async fn list_role_definitions(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
    ) -> Result<Vec<RoleDefinition>> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::ReadRoleDefinitions, &scope)
            .await?;
        self.role_definitions(vault).await
    }

    /// `PUT /{scope}/providers/Microsoft.Authorization/roleDefinitions/{name}`: a custom role.
    pub async fn put_role_definition(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        name: &str,
        mut definition: RoleDefinition,
    ) -> Result<RoleDefinition> {
        let scope = checked_scope(scope)?;
        if scope != "/" {
            return Err(ApiError::bad_parameter(
                "Role definitions are made at scope '/'.",
            ));
        }
        self.authorize(ctx, vault, Action::WriteRoleDefinitions, &scope)
            .await?;
        if !is_guid(name) {
            return Err(ApiError::bad_parameter(
                "The role definition name must be a GUID.",
            ));
        }
        if rbac::built_in(vault.kind)
            .iter()
            .any(|r| r.id.eq_ignore_ascii_case(name))
        {
            return Err(ApiError::forbidden(
                "Built-in role definitions cannot be changed.",
            ));
        }
        let namespace = match vault.kind {
            crate::VaultKind::Vault => "microsoft.keyvault/vaults/",
            crate::VaultKind::ManagedHsm => "microsoft.keyvault/managedhsm/",
        };
        let valid = |a: &String| {
            a.len() <= 256
                && a.to_ascii_lowercase().starts_with(namespace)
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/.*_-".contains(&b))
        };
        for p in &definition.permissions {
            if let Some(bad) = p
                .data_actions
                .iter()
                .chain(&p.not_data_actions)
                .find(|a| !valid(a))
            {
                return Err(ApiError::bad_parameter(format!(
                    "The data action '{}' is not one of this vault's.",
                    crate::naming::printable(bad)
                )));
            }
        }
        if definition.name.trim().is_empty() || definition.name.len() > 256 {
            return Err(ApiError::bad_parameter(
                "A role definition needs a roleName of at most 256 characters.",
            ));
        }
        definition.id = name.to_ascii_lowercase();
        definition.role_type = rbac::RoleType::Custom;
        if definition.assignable_scopes.is_empty() {
            definition.assignable_scopes = vec!["/".into()];
        }
        let ops = vec![Op::Put {
            ns: ns::ROLE_DEFINITION,
            key: format!("{}/{}", vault.id, definition.id),
            value: to_json(&definition)?,
            expect: Expect::Any,
        }];
        self.commit_as(ctx, ops).await.map_err(store_error)?;
        self.assignments.invalidate(&vault.id);
        Ok(definition)
    }

    /// `DELETE /{scope}/providers/Microsoft.Authorization/roleDefinitions/{name}`: refused while
    /// an assignment uses the role.
    pub async fn delete_role_definition(
        &self,
        ctx: &RequestContext,
        vault: &VaultRecord,
        scope: &str,
        name: &str,
    ) -> Result<RoleDefinition> {
        let scope = checked_scope(scope)?;
        self.authorize(ctx, vault, Action::DeleteRoleDefinitions, &scope)
            .await?;
        if rbac::built_in(vault.kind)
            .iter()
            .any(|r| r.id.eq_ignore_ascii_case(name))
        {
            return Err(ApiError::forbidden(
                "Built-in role definitions cannot be deleted.",
            ));
        }
        let key = format!("{}/{}", vault.id, name.to_ascii_lowercase());
        let record = self
            .store
            .get(ns::ROLE_DEFINITION, &key)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, "The role definition was not found.")
                    .with_inner("RoleDefinitionNotFound")
            })?;
        let definition: RoleDefinition = from_json(&record.value)?;
        if self
            .role_assignments(vault)
            .await?
            .iter()
            .any(|a| a.role_definition_id == definition.id)
        {
            return Err(ApiError::conflict(
                "The role definition is assigned; remove its assignments first.",
            ));
        }
        let ops = vec![Op::Delete {
            ns: ns::ROLE_DEFINITION,
            key,
            expect: Expect::Revision(record.revision),
        }];
        self.commit_as(ctx, ops).await.map_err(store_error)?;
        self.assignments.invalidate(&vault.id);
        Ok(definition)
    }
}

fn checked_scope(scope: &str) -> Result<String> {
    rbac::canonical_scope(scope).ok_or_else(|| {
        ApiError::bad_parameter("The scope must be '/', '/keys' or '/keys/{key-name}'.")
    })
}

fn is_guid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn assignment_not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "The role assignment {} was not found.",
            crate::naming::printable(name)
        ),
    )
    .with_inner("RoleAssignmentNotFound")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(names: &[&str]) -> VaultAccess {
        VaultAccess {
            assignments: Arc::new(
                names
                    .iter()
                    .map(|n| RoleAssignment {
                        name: (*n).to_owned(),
                        scope: "/".into(),
                        role_definition_id: "r".into(),
                        principal_id: "p".into(),
                    })
                    .collect(),
            ),
            custom_roles: Arc::new(vec![]),
        }
    }

    #[test]
    fn a_copy_read_before_a_write_is_not_kept_after_it() {
        let cache = AssignmentCache::default();
        // A reader starts, a write commits and invalidates, then the reader's older copy arrives.
        let read_at = cache.generation();
        cache.invalidate("v");
        cache.put("v", access(&[]), read_at);
        assert!(cache.get("v").is_none(), "the stale copy was dropped");
        // A reader that started after the write keeps its copy.
        let read_at = cache.generation();
        cache.put("v", access(&["a"]), read_at);
        assert_eq!(cache.get("v").unwrap().assignments[0].name, "a");
        cache.invalidate("v");
        assert!(cache.get("v").is_none());
    }
}
