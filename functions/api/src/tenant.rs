//! The caller's tenant and its API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_core::ClusterId;
use spotwise_core::domain::{ApiKey, Principal, Role, Tenant};
use spotwise_store::keys;
use spotwise_store::{PutCondition, Query, Write};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::{self, Caller};
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::resource_id;

#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = Tenant), (status = 401, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn get(State(state): State<AppState>, caller: Caller) -> Result<Json<Tenant>, ApiError> {
    caller.require(Role::Viewer)?;
    let tenant = state
        .store
        .get::<Tenant>(&keys::tenant(&caller.tenant))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(tenant.body))
}

/// A key as listed: never its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    /// `swk_<prefix>_…`: how the key starts.
    pub prefix: String,
    /// `admin`, `operator`, `viewer`, or `agent`.
    pub role: String,
    /// The cluster an agent key is bound to.
    pub cluster_id: Option<ClusterId>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&ApiKey> for KeyView {
    fn from(key: &ApiKey) -> Self {
        let (role, cluster_id) = match &key.principal {
            Principal::User { role } => (role.as_str().to_owned(), None),
            Principal::Agent { cluster_id } => ("agent".to_owned(), Some(cluster_id.clone())),
        };
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            prefix: format!("swk_{}_", key.prefix),
            role,
            cluster_id,
            created_at: key.created_at,
            revoked_at: key.revoked_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    Admin,
    Operator,
    Viewer,
    /// Bound to the cluster named by `cluster_id`.
    Agent,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub role: KeyRole,
    /// Agent keys only: the cluster the key is bound to.
    pub cluster_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub key: KeyView,
    /// The whole key, shown this once: only its hash is stored.
    pub secret: String,
}

#[utoipa::path(post, path = "/v1/keys", tag = "tenant", request_body = KeyInput,
    responses((status = 201, body = CreatedKey), (status = 400, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 404, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<KeyInput>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    caller.require(Role::Admin)?;
    if input.name.trim().is_empty() || input.name.chars().count() > 100 {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    let principal = match (input.role, input.cluster_id) {
        (KeyRole::Admin, None) => Principal::User { role: Role::Admin },
        (KeyRole::Operator, None) => Principal::User {
            role: Role::Operator,
        },
        (KeyRole::Viewer, None) => Principal::User { role: Role::Viewer },
        (KeyRole::Agent, Some(cluster)) => {
            let cluster_id = ClusterId::new(cluster.clone())
                .map_err(|e| ApiError::field("cluster_id", e.to_string()))?;
            state
                .store
                .get::<serde_json::Value>(&keys::cluster(&caller.tenant, &cluster_id))
                .await?
                .ok_or_else(|| ApiError::not_found(format!("cluster {cluster}")))?;
            Principal::Agent { cluster_id }
        }
        (KeyRole::Agent, None) => {
            return Err(ApiError::field(
                "cluster_id",
                "agent keys are bound to a cluster",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::field(
                "cluster_id",
                "only agent keys are bound to a cluster",
            ));
        }
    };
    let issued = auth::issue(
        &caller.tenant,
        input.name.trim(),
        principal,
        OffsetDateTime::now_utc(),
    );
    let view = KeyView::from(&issued.key);
    audit::commit(
        &state,
        vec![Write::put(
            &auth::key_item(&issued.key),
            PutCondition::IfAbsent,
        )?],
        audit::entry(
            &caller,
            "key.create",
            format!("key/{}", view.id),
            None,
            snapshot(&view),
        )?,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: view,
            secret: issued.secret,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/keys", tag = "tenant", params(PageParams),
    responses((status = 200, body = Page<KeyView>), (status = 403, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<KeyView>>, ApiError> {
    caller.require(Role::Admin)?;
    let query = page.apply(Query::gsi1(keys::api_keys_partition(&caller.tenant)))?;
    Ok(Json(Page::from_store(
        state.store.query::<ApiKey>(&query).await?,
        |k| KeyView::from(&k),
    )))
}

/// Revokes a key at once; it stays listed, marked revoked.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "tenant", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let key = keys::api_key(resource_id(&id, "key")?);
    let mut item = state
        .store
        .get::<ApiKey>(&key)
        .await?
        .filter(|item| item.body.tenant_id == caller.tenant)
        .ok_or_else(|| ApiError::not_found(format!("key {id}")))?;
    if item.body.revoked_at.is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    if item.body.id == caller.key_id {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "a key cannot revoke itself; use another admin key",
        ));
    }
    let before = KeyView::from(&item.body);
    item.body.revoked_at = Some(OffsetDateTime::now_utc());
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "key.revoke",
            format!("key/{id}"),
            snapshot(&before),
            snapshot(&KeyView::from(&item.body)),
        )?,
    )
    .await?;
    state.keys.forget(&item.body.id);
    Ok(StatusCode::NO_CONTENT)
}
