//! The Managed HSM role-assignment and role-definition REST API, served by every vault, so that
//! `azure-keyvault-administration`'s `KeyVaultAccessControlClient` works unmodified.

use crate::app::{json_response, ok_json, parse_json};
use crate::query::Query;
use crate::routes::RbacRoute;
use axum::http::StatusCode;
use axum::response::Response;
use keyshift_api::rbac as wire;
use keyshift_api::{ApiError, ErrorCode};
use keyshift_vault::access::AssignmentFilter;
use keyshift_vault::rbac::{RoleAssignment, RoleDefinition, RoleType};
use keyshift_vault::{Deployment, RequestContext, VaultRecord};

fn assignment(a: &RoleAssignment) -> wire::RoleAssignment {
    let prefix = if a.scope == "/" { "" } else { a.scope.as_str() };
    wire::RoleAssignment {
        id: format!(
            "{prefix}/providers/Microsoft.Authorization/roleAssignments/{}",
            a.name
        ),
        name: a.name.clone(),
        kind: "Microsoft.Authorization/roleAssignments".into(),
        properties: wire::RoleAssignmentProperties {
            scope: a.scope.clone(),
            role_definition_id: wire::role_definition_id(&a.role_definition_id),
            principal_id: a.principal_id.clone(),
        },
    }
}

fn definition(r: &RoleDefinition) -> wire::RoleDefinition {
    wire::RoleDefinition {
        id: wire::role_definition_id(&r.id),
        name: r.id.clone(),
        kind: "Microsoft.Authorization/roleDefinitions".into(),
        properties: wire::RoleDefinitionProperties {
            role_name: r.name.clone(),
            description: r.description.clone(),
            role_type: match r.role_type {
                RoleType::BuiltIn => "AKVBuiltInRole".into(),
                RoleType::Custom => "CustomRole".into(),
            },
            permissions: r
                .permissions
                .iter()
                .map(|p| wire::Permission {
                    actions: p.actions.clone(),
                    not_actions: p.not_actions.clone(),
                    data_actions: p.data_actions.clone(),
                    not_data_actions: p.not_data_actions.clone(),
                })
                .collect(),
            assignable_scopes: r.assignable_scopes.clone(),
        },
    }
}

/// Serves one role API call.
pub async fn dispatch(
    d: &Deployment,
    ctx: &RequestContext,
    vault: &VaultRecord,
    route: RbacRoute,
    query: &Query,
    body: &[u8],
) -> Result<Response, ApiError> {
    Ok(match route {
        RbacRoute::ListAssignments { scope } => {
            let filter = AssignmentFilter::parse(query.get("$filter"))?;
            let list = d.list_role_assignments(ctx, vault, &scope, &filter).await?;
            ok_json(
                &serde_json::json!({ "value": list.iter().map(assignment).collect::<Vec<_>>() }),
            )
        }
        RbacRoute::GetAssignment { scope, name } => ok_json(&assignment(
            &d.get_role_assignment(ctx, vault, &scope, &name).await?,
        )),
        RbacRoute::PutAssignment { scope, name } => {
            let p: wire::RoleAssignmentCreateParameters = parse_json(body)?;
            let a = d
                .put_role_assignment(
                    ctx,
                    vault,
                    &scope,
                    &name,
                    &p.properties.role_definition_id,
                    &p.properties.principal_id,
                )
                .await?;
            let body = serde_json::to_vec(&assignment(&a)).map_err(|_| ApiError::internal())?;
            json_response(StatusCode::CREATED, body)
        }
        RbacRoute::DeleteAssignment { scope, name } => ok_json(&assignment(
            &d.delete_role_assignment(ctx, vault, &scope, &name).await?,
        )),
        RbacRoute::ListDefinitions { scope } => {
            let defs = d.list_role_definitions(ctx, vault, &scope).await?;
            ok_json(
                &serde_json::json!({ "value": defs.iter().map(definition).collect::<Vec<_>>() }),
            )
        }
        RbacRoute::GetDefinition { scope, name } => {
            let defs = d.list_role_definitions(ctx, vault, &scope).await?;
            let def = defs
                .iter()
                .find(|r| r.id.eq_ignore_ascii_case(&name))
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::NotFound, "The role definition was not found.")
                        .with_inner("RoleDefinitionNotFound")
                })?;
            ok_json(&definition(def))
        }
        RbacRoute::PutDefinition { scope, name } => {
            let p: wire::RoleDefinitionCreateParameters = parse_json(body)?;
            let def = RoleDefinition {
                id: name.clone(),
                name: p.properties.role_name.unwrap_or_default(),
                description: p.properties.description.unwrap_or_default(),
                role_type: RoleType::Custom,
                permissions: p
                    .properties
                    .permissions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|w| keyshift_vault::rbac::Permission {
                        actions: w.actions,
                        not_actions: w.not_actions,
                        data_actions: w.data_actions,
                        not_data_actions: w.not_data_actions,
                    })
                    .collect(),
                assignable_scopes: p.properties.assignable_scopes.unwrap_or_default(),
            };
            let saved = d
                .put_role_definition(ctx, vault, &scope, &name, def)
                .await?;
            let body = serde_json::to_vec(&definition(&saved)).map_err(|_| ApiError::internal())?;
            json_response(StatusCode::CREATED, body)
        }
        RbacRoute::DeleteDefinition { scope, name } => ok_json(&definition(
            &d.delete_role_definition(ctx, vault, &scope, &name).await?,
        )),
    })
}
