//! Wire shapes of the Managed HSM role-assignment and role-definition API (`rbac.json`).

use serde::{Deserialize, Serialize};

/// A role assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleAssignment {
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub id: String,
    /// The assignment name (GUID).
    pub name: String,
    /// `Microsoft.Authorization/roleAssignments`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Properties.
    pub properties: RoleAssignmentProperties,
}

/// Properties of an assignment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleAssignmentProperties {
    /// Scope.
    pub scope: String,
    /// Full role definition id.
    #[serde(rename = "roleDefinitionId")]
    pub role_definition_id: String,
    /// Principal object id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
}

/// Body of PUT role assignment.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleAssignmentCreateParameters {
    /// Properties.
    pub properties: RoleAssignmentCreateProperties,
}

/// Properties of PUT role assignment.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleAssignmentCreateProperties {
    /// Role definition id (full or GUID).
    #[serde(rename = "roleDefinitionId")]
    pub role_definition_id: String,
    /// Principal object id.
    #[serde(rename = "principalId")]
    pub principal_id: String,
}

/// A role definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleDefinition {
    /// `Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{guid}`.
    pub id: String,
    /// The GUID.
    pub name: String,
    /// `Microsoft.Authorization/roleDefinitions`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Properties.
    pub properties: RoleDefinitionProperties,
}

/// Properties of a role definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RoleDefinitionProperties {
    /// Display name.
    #[serde(rename = "roleName")]
    pub role_name: String,
    /// Description.
    pub description: String,
    /// `AKVBuiltInRole` or `CustomRole`.
    #[serde(rename = "type")]
    pub role_type: String,
    /// Permissions.
    pub permissions: Vec<Permission>,
    /// Assignable scopes.
    #[serde(rename = "assignableScopes")]
    pub assignable_scopes: Vec<String>,
}

/// A permission block.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Permission {
    /// Actions.
    pub actions: Vec<String>,
    /// Not actions.
    #[serde(rename = "notActions")]
    pub not_actions: Vec<String>,
    /// Data actions.
    #[serde(rename = "dataActions")]
    pub data_actions: Vec<String>,
    /// Not data actions.
    #[serde(rename = "notDataActions")]
    pub not_data_actions: Vec<String>,
}

/// The full id of a role definition.
pub fn role_definition_id(guid: &str) -> String {
    format!("Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/{guid}")
}

/// Body of PUT role definition.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleDefinitionCreateParameters {
    /// Properties.
    pub properties: RoleDefinitionCreateProperties,
}

/// Properties of PUT role definition; everything optional, checked by the vault.
#[derive(Debug, Clone, Deserialize)]
pub struct RoleDefinitionCreateProperties {
    /// Display name.
    #[serde(rename = "roleName")]
    pub role_name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Permissions.
    pub permissions: Option<Vec<PermissionInput>>,
    /// Assignable scopes.
    #[serde(rename = "assignableScopes")]
    pub assignable_scopes: Option<Vec<String>>,
}

/// A permission block as clients send it (every list optional).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct PermissionInput {
    /// Actions.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Not actions.
    #[serde(default, rename = "notActions")]
    pub not_actions: Vec<String>,
    /// Data actions.
    #[serde(default, rename = "dataActions")]
    pub data_actions: Vec<String>,
    /// Not data actions.
    #[serde(default, rename = "notDataActions")]
    pub not_data_actions: Vec<String>,
}
