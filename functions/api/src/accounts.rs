//! Linking AWS accounts: the tenant's ExternalId, the link itself (AssumeRole with it, and the
//! assumed identity's account must be the role's), re-validation, list and unlink.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_aws::events;
use spotwise_core::domain::{Account, AccountHealth, EventForwarding, Role, RoleArn};
use spotwise_store::accounts::{self, AccountError, UnlinkError};
use spotwise_store::keys::{self, prefix};
use spotwise_store::{Query, StoreError, Write};
use time::OffsetDateTime;
use tracing::{info, warn};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::{Page, PageParams, Params, PathParams};

#[derive(Debug, Serialize, ToSchema)]
pub struct ExternalId {
    /// Put this in the role's trust policy (`sts:ExternalId`), e.g. as the `ExternalId`
    /// parameter of `infra/customer-role.yaml`. The same for every role of the tenant.
    pub external_id: String,
}

#[utoipa::path(post, path = "/v1/accounts/external-id", tag = "accounts",
    responses((status = 200, body = ExternalId)), security(("api_key" = [])))]
pub async fn external_id(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ExternalId>, ApiError> {
    caller.require(Role::Admin)?;
    let external_id = accounts::issue_external_id(
        &state.store,
        &caller.tenant,
        OffsetDateTime::now_utc(),
        &caller.actor(),
    )
    .await?;
    Ok(Json(ExternalId { external_id }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkInput {
    /// `arn:aws:iam::<account>:role/<name>`, trusting Spotwise with the tenant's ExternalId.
    pub role_arn: String,
    /// Regions discovery inventories.
    #[schema(min_items = 1, max_items = 30)]
    pub regions: Vec<String>,
}

fn check_regions(regions: &[String]) -> Result<(), ApiError> {
    if regions.is_empty() || regions.len() > 30 {
        return Err(ApiError::field("regions", "list 1 to 30 regions"));
    }
    for (i, region) in regions.iter().enumerate() {
        // us-east-1, ap-southeast-2, us-gov-west-1, cn-north-1
        let parts: Vec<&str> = region.split('-').collect();
        let shaped = parts.len() >= 3
            && parts.iter().all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
            && parts
                .last()
                .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        if !shaped {
            return Err(ApiError::field(
                format!("regions[{i}]"),
                format!("`{region}` is not an AWS region"),
            ));
        }
    }
    Ok(())
}

fn link_error(err: AccountError) -> ApiError {
    match err {
        AccountError::NoExternalId => ApiError::new(
            StatusCode::CONFLICT,
            "no_external_id",
            "request the tenant's ExternalId first (POST /v1/accounts/external-id) and put it in the role's trust policy",
        ),
        AccountError::AlreadyLinked(account) => ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("account {account} is already linked"),
        ),
        AccountError::LinkedElsewhere(account) => ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!(
                "account {account} is linked by another Spotwise tenant; unlink it there first"
            ),
        ),
        AccountError::Link(e) => {
            ApiError::field("role_arn", format!("the role could not be used: {e}"))
        }
        AccountError::Store(e) => e.into(),
    }
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = LinkInput,
    responses((status = 201, body = Account), (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn link(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(input): JsonBody<LinkInput>,
) -> Result<(StatusCode, Json<Account>), ApiError> {
    caller.require(Role::Admin)?;
    let role =
        RoleArn::parse(&input.role_arn).map_err(|e| ApiError::field("role_arn", e.reason))?;
    check_regions(&input.regions)?;
    let account = accounts::link(
        &state.store,
        &state.cross_account,
        &caller.tenant,
        &role,
        input.regions,
        OffsetDateTime::now_utc(),
        &caller.actor(),
    )
    .await
    .map_err(link_error)?;
    let now = OffsetDateTime::now_utc();
    let forwarding = check_forwarding(&state, &account, now).await;
    let key = keys::account(&caller.tenant, &account.account_id);
    let account = match state.store.get::<Account>(&key).await? {
        Some(mut item) => {
            item.body.event_forwarding = Some(forwarding);
            match state.store.update_versioned(&item).await {
                // Changed meanwhile (validated, say): that write has its own check.
                Ok(_) | Err(StoreError::StaleVersion { .. }) => item.body,
                Err(err) => return Err(err.into()),
            }
        }
        None => account,
    };
    Ok((StatusCode::CREATED, Json(account)))
}

/// Admits the account to the interruption bus, then looks through its role for what would keep
/// its interruption signals from arriving (the forwarding rule in each linked region, hooks the
/// agent could not complete). Problems are reported, never fatal: the link works without them,
/// only interruptions go unseen.
async fn check_forwarding(
    state: &AppState,
    account: &Account,
    now: OffsetDateTime,
) -> EventForwarding {
    let mut gaps = Vec::new();
    let admitted = match state.interruption_bus.admit(&account.account_id).await {
        Ok(()) => true,
        Err(e) => {
            warn!(account = %account.account_id, error = %e, "account not admitted to the interruption bus");
            gaps.push(format!(
                "Spotwise could not admit the account to its interruption bus ({e}); validate the account again"
            ));
            false
        }
    };
    match state
        .cross_account
        .config_for(&account.role_arn, &account.external_id)
        .await
    {
        Ok(customer) => gaps.extend(
            events::forwarding_gaps(&customer, &account.regions, state.interruption_bus.arn())
                .await,
        ),
        Err(e) => gaps.push(format!(
            "the role could not be assumed to check forwarding ({e})"
        )),
    }
    EventForwarding {
        checked_at: now,
        admitted,
        gaps,
    }
}

#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", params(PageParams),
    responses((status = 200, body = Page<Account>)), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<Account>>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = page
        .apply(Query::partition(keys::tenant_partition(&caller.tenant)).prefix(prefix::ACCOUNT))?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |a| a,
    )))
}

fn account_id(id: &str) -> Result<&str, ApiError> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("account {id}")))
    }
}

/// Assumes the role again and records whether it still works, and whether the account's
/// interruption events reach Spotwise (admitting it to the bus again).
#[utoipa::path(post, path = "/v1/accounts/{id}/validate", tag = "accounts", params(("id" = String, Path)),
    responses((status = 200, body = Account), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn validate(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Result<Json<Account>, ApiError> {
    caller.require(Role::Operator)?;
    let key = keys::account(&caller.tenant, account_id(&id)?);
    let mut item = state
        .store
        .get::<Account>(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {id}")))?;
    let before = snapshot(&item.body.health);
    item.body.health = match state
        .cross_account
        .verify_link(&item.body.role_arn, &item.body.external_id)
        .await
    {
        Ok(_) => AccountHealth::Healthy,
        Err(e) => AccountHealth::Unhealthy {
            reason: e.to_string(),
        },
    };
    if item.body.health == AccountHealth::Healthy {
        item.body.event_forwarding =
            Some(check_forwarding(&state, &item.body, OffsetDateTime::now_utc()).await);
    }
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "account.validate",
            format!("account/{id}"),
            before,
            snapshot(&item.body.health),
        )?,
    )
    .await?;
    Ok(Json(item.body))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UnlinkParams {
    /// Unlink even while hibernation has one of the account's clusters asleep.
    pub force: Option<bool>,
}

/// Unlinks an account: discovery stops reading it, and nothing of this tenant acts on its
/// clusters any more (agent keys revoked, agent queues deleted, open actions cancelled,
/// schedules and hibernation removed, secrets, snapshots and cluster records deleted). Cost,
/// plans, pod history and the audit log are kept as history.
///
/// A cluster that hibernation has asleep would stay asleep, with nothing left to wake it: the
/// unlink is refused (409 `asleep`, naming the clusters) unless `force=true`.
#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = String, Path), UnlinkParams),
    responses((status = 204), (status = 404, body = ErrorResponse), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn unlink(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(params): Params<UnlinkParams>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let key = keys::account(&caller.tenant, account_id(&id)?);
    let item = state
        .store
        .get::<Account>(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("account {id}")))?;
    let unlinked = accounts::unlink(
        &state.store,
        &state.sqs,
        &caller.tenant,
        &item,
        OffsetDateTime::now_utc(),
        &caller.actor(),
        params.force.unwrap_or(false),
    )
    .await
    .map_err(|e| match e {
        asleep @ UnlinkError::Asleep(_) => ApiError::new(
            StatusCode::CONFLICT,
            "asleep",
            format!(
                "{asleep}; wake it (POST …/hibernation/wake) and wait for it, \
                 or unlink with force=true to leave it asleep"
            ),
        ),
        UnlinkError::Store(e) => ApiError::from(e),
        UnlinkError::Queue(e) => ApiError::internal("deleting an agent queue", &e),
    })?;
    for id in &unlinked.revoked_key_ids {
        state.keys.forget(id);
    }
    // Its events would be dropped anyway (its clusters are gone); this stops them arriving.
    if let Err(e) = state.interruption_bus.revoke(&item.body.account_id).await {
        warn!(account = %item.body.account_id, error = %e, "account still admitted to the interruption bus");
    }
    info!(account = %item.body.account_id, clusters = unlinked.clusters.len(),
        revoked_keys = unlinked.revoked_key_ids.len(), cancelled_actions = unlinked.cancelled_actions,
        "account unlinked");
    Ok(StatusCode::NO_CONTENT)
}
