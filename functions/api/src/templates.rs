//! Node templates per cluster: the nodes its plans may use, and the labels and taints they get.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use spotwise_core::domain::{NodeTemplate, NodeTemplateSpec, Role};
use spotwise_optimizer::template::valid_taint;
use spotwise_store::keys;
use spotwise_store::{Item, PutCondition, Query, Write};

use crate::AppState;
use crate::audit::{self, snapshot};
use crate::auth::Caller;
use crate::clusters::load_cluster;
use crate::error::{ApiError, ErrorResponse, JsonBody};
use crate::paging::{Page, PageParams, Params, PathParams};
use crate::versioning::{etag, if_match, resource_id};

/// A cluster has at most this many templates; each multiplies the offerings planned over.
const MAX_TEMPLATES: usize = 20;

fn validate(input: &NodeTemplateSpec) -> Result<(), ApiError> {
    if !spotwise_core::ids::is_lowercase_token(&input.name, b"-") {
        return Err(ApiError::field(
            "name",
            "must be 1 to 63 lower-case letters, digits or -",
        ));
    }
    for (i, family) in input.instance_families.iter().enumerate() {
        if !spotwise_core::ids::is_lowercase_token(family, b"-") {
            return Err(ApiError::field(
                format!("instance_families[{i}]"),
                "is not an instance family",
            ));
        }
    }
    for (i, pattern) in input.exclude_instance_types.iter().enumerate() {
        if !spotwise_core::ids::is_lowercase_token(pattern, b".-*") {
            return Err(ApiError::field(
                format!("exclude_instance_types[{i}]"),
                "is not an instance type pattern",
            ));
        }
    }
    for (i, zone) in input.zones.iter().enumerate() {
        if !spotwise_core::ids::is_lowercase_token(zone, b"-") {
            return Err(ApiError::field(format!("zones[{i}]"), "is not a zone name"));
        }
    }
    if let (Some(min), Some(max)) = (input.min_vcpus, input.max_vcpus)
        && min > max
    {
        return Err(ApiError::field("max_vcpus", "must not be below min_vcpus"));
    }
    if let (Some(min), Some(max)) = (input.min_memory_mib, input.max_memory_mib)
        && min > max
    {
        return Err(ApiError::field(
            "max_memory_mib",
            "must not be below min_memory_mib",
        ));
    }
    if input.labels.keys().any(|k| k.is_empty() || k.len() > 253) {
        return Err(ApiError::field(
            "labels",
            "keys must be 1 to 253 characters",
        ));
    }
    for (i, taint) in input.taints.iter().enumerate() {
        if !valid_taint(taint) {
            return Err(ApiError::field(
                format!("taints[{i}]"),
                "needs a key and an effect of NoSchedule, PreferNoSchedule or NoExecute",
            ));
        }
    }
    Ok(())
}

fn template(
    caller: &Caller,
    cluster: &spotwise_core::ClusterId,
    id: String,
    input: NodeTemplateSpec,
) -> NodeTemplate {
    NodeTemplate {
        id,
        tenant_id: caller.tenant.clone(),
        cluster_id: cluster.clone(),
        spec: input,
    }
}

async fn all(
    state: &AppState,
    caller: &Caller,
    cluster: &spotwise_core::ClusterId,
) -> Result<Vec<Item<NodeTemplate>>, ApiError> {
    Ok(state
        .store
        .query_all::<NodeTemplate>(
            &Query::partition(keys::tenant_partition(&caller.tenant))
                .prefix(keys::node_templates_prefix(cluster)),
        )
        .await?)
}

#[utoipa::path(get, path = "/v1/clusters/{id}/node-templates", tag = "node templates",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<NodeTemplate>)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<NodeTemplate>>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::node_templates_prefix(&cluster.id)),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |t| t,
    )))
}

#[utoipa::path(post, path = "/v1/clusters/{id}/node-templates", tag = "node templates",
    request_body = NodeTemplateSpec, params(("id" = String, Path)),
    responses((status = 201, body = NodeTemplate), (status = 409, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(input): JsonBody<NodeTemplateSpec>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    validate(&input)?;
    let cluster = load_cluster(&state, &caller, &id).await?;
    let existing = all(&state, &caller, &cluster.id).await?;
    if existing.iter().any(|t| t.body.spec.name == input.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!("a template named {} exists", input.name),
        ));
    }
    if existing.len() >= MAX_TEMPLATES {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many",
            format!("a cluster has at most {MAX_TEMPLATES} templates"),
        ));
    }
    let template_id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    let created = template(&caller, &cluster.id, template_id.clone(), input);
    audit::commit(
        &state,
        vec![Write::put(
            &Item::new(
                keys::node_template(&caller.tenant, &cluster.id, &template_id),
                &created,
            ),
            PutCondition::IfAbsent,
        )?],
        audit::entry(
            &caller,
            "node_template.create",
            format!("cluster/{}/node-template/{template_id}", cluster.id),
            None,
            snapshot(&created),
        )?,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        [(header::ETAG, etag(1))],
        Json(created),
    )
        .into_response())
}

async fn load(
    state: &AppState,
    caller: &Caller,
    id: &str,
    template_id: &str,
) -> Result<Item<NodeTemplate>, ApiError> {
    let cluster = load_cluster(state, caller, id).await?;
    let template_id = resource_id(template_id, "node template")?;
    state
        .store
        .get::<NodeTemplate>(&keys::node_template(
            &caller.tenant,
            &cluster.id,
            template_id,
        ))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("node template {template_id}")))
}

#[utoipa::path(get, path = "/v1/clusters/{id}/node-templates/{template_id}", tag = "node templates",
    params(("id" = String, Path), ("template_id" = String, Path)),
    responses((status = 200, body = NodeTemplate, headers(("ETag" = String)))),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, template_id)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    let item = load(&state, &caller, &id, &template_id).await?;
    Ok(([(header::ETAG, etag(item.version))], Json(item.body)).into_response())
}

#[utoipa::path(put, path = "/v1/clusters/{id}/node-templates/{template_id}", tag = "node templates",
    request_body = NodeTemplateSpec,
    params(("id" = String, Path), ("template_id" = String, Path), ("If-Match" = Option<String>, Header)),
    responses((status = 200, body = NodeTemplate), (status = 409, body = ErrorResponse), (status = 412, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn replace(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, template_id)): PathParams<(String, String)>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<NodeTemplateSpec>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    validate(&input)?;
    let mut item = load(&state, &caller, &id, &template_id).await?;
    if_match(&headers, item.version)?;
    let before = item.body.clone();
    if before.spec.name != input.name {
        let others = all(&state, &caller, &before.cluster_id).await?;
        if others.iter().any(|t| t.body.spec.name == input.name) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("a template named {} exists", input.name),
            ));
        }
    }
    item.body = template(&caller, &before.cluster_id, before.id.clone(), input);
    let version = item.version + 1;
    audit::commit(
        &state,
        vec![Write::versioned(&item)?],
        audit::entry(
            &caller,
            "node_template.update",
            format!("cluster/{}/node-template/{}", before.cluster_id, before.id),
            snapshot(&before),
            snapshot(&item.body),
        )?,
    )
    .await?;
    Ok(([(header::ETAG, etag(version))], Json(item.body)).into_response())
}

#[utoipa::path(delete, path = "/v1/clusters/{id}/node-templates/{template_id}", tag = "node templates",
    params(("id" = String, Path), ("template_id" = String, Path)),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, template_id)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Operator)?;
    let item = load(&state, &caller, &id, &template_id).await?;
    audit::commit(
        &state,
        vec![Write::delete(&item.key)],
        audit::entry(
            &caller,
            "node_template.delete",
            format!(
                "cluster/{}/node-template/{}",
                item.body.cluster_id, item.body.id
            ),
            snapshot(&item.body),
            None,
        )?,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
