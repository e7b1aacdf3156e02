//! Cost allocation and savings as the cost function stores them: per cluster, per dimension
//! (namespace, workload, pod, node, label, or the summary with idle cost and savings), per
//! hour, day or month; CSV export; monthly savings reports.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use spotwise_core::domain::Role;
use spotwise_cost::report::{CostPeriod, ExportRow, MonthlyReport, csv};
use spotwise_store::Query;
use spotwise_store::keys::{self, CostGranularity};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::clusters::{cluster_id, load_cluster};
use crate::error::{ApiError, ErrorResponse};
use crate::paging::{Page, PageParams, Params, PathParams};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    #[default]
    Day,
    Month,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CostDimension {
    /// Totals, idle cost, on-demand equivalent and savings.
    #[default]
    Summary,
    Namespace,
    Workload,
    Pod,
    Node,
    Label,
}

impl CostDimension {
    fn name(self) -> &'static str {
        match self {
            CostDimension::Summary => "summary",
            CostDimension::Namespace => "namespace",
            CostDimension::Workload => "workload",
            CostDimension::Pod => "pod",
            CostDimension::Node => "node",
            CostDimension::Label => "label",
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostQuery {
    /// Default `day`.
    #[param(inline)]
    pub granularity: Option<Granularity>,
    /// Default `summary`.
    #[param(inline)]
    pub dimension: Option<CostDimension>,
    /// First period, inclusive: `2026-11-24T10`, `2026-11-24` or `2026-11` by granularity.
    pub from: Option<String>,
    /// Last period, inclusive.
    pub to: Option<String>,
}

impl CostQuery {
    fn granularity(&self) -> CostGranularity {
        match self.granularity.unwrap_or_default() {
            Granularity::Hour => CostGranularity::Hour,
            Granularity::Day => CostGranularity::Day,
            Granularity::Month => CostGranularity::Month,
        }
    }

    /// Periods are fixed-width, so a string comparison orders them.
    fn check(&self) -> Result<(), ApiError> {
        let width = match self.granularity.unwrap_or_default() {
            Granularity::Hour => "2026-11-24T10".len(),
            Granularity::Day => "2026-11-24".len(),
            Granularity::Month => "2026-11".len(),
        };
        for (field, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(value) = value {
                let shaped = value.len() == width
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'-' || b == b'T');
                if !shaped {
                    return Err(ApiError::field(
                        field,
                        format!("`{value}` is not a period of this granularity"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn keeps(&self, period: &str) -> bool {
        self.from.as_deref().is_none_or(|from| period >= from)
            && self.to.as_deref().is_none_or(|to| period <= to)
    }
}

fn periods_query(caller: &Caller, id: &str, q: &CostQuery) -> Result<Query, ApiError> {
    q.check()?;
    let cluster = cluster_id(id)?;
    let dimension = q.dimension.unwrap_or_default().name();
    Ok(
        Query::partition(keys::tenant_partition(&caller.tenant)).prefix(keys::cost_prefix(
            &cluster,
            q.granularity(),
            dimension,
        )),
    )
}

/// Periods oldest first. Each holds a dimension's table (lines with cost, cpu, memory, gpu,
/// on-demand equivalent; idle on the node table) or the summary. Filters apply per page.
#[utoipa::path(get, path = "/v1/clusters/{id}/costs", tag = "costs",
    params(("id" = String, Path), CostQuery, PageParams),
    responses((status = 200, body = Page<Object>), (status = 400, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn periods(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(q): Params<CostQuery>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<CostPeriod>>, ApiError> {
    caller.require(Role::Viewer)?;
    load_cluster(&state, &caller, &id).await?;
    let query = page.apply(periods_query(&caller, &id, &q)?)?;
    let mut listed = Page::from_store(state.store.query::<CostPeriod>(&query).await?, |p| p);
    listed.items.retain(|p| q.keeps(&p.period));
    Ok(Json(listed))
}

/// Every line of a dimension's tables in the range, as CSV (period, dimension, key, cost, cpu,
/// memory, gpu, on_demand, idle), amounts at full precision.
#[utoipa::path(get, path = "/v1/clusters/{id}/costs/export", tag = "costs",
    params(("id" = String, Path), CostQuery),
    responses((status = 200, description = "CSV", content_type = "text/csv"), (status = 400, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(q): Params<CostQuery>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    if q.dimension.unwrap_or_default() == CostDimension::Summary {
        return Err(ApiError::field(
            "dimension",
            "export a table: namespace, workload, pod, node or label",
        ));
    }
    load_cluster(&state, &caller, &id).await?;
    let periods: Vec<CostPeriod> = state
        .store
        .query_all::<CostPeriod>(&periods_query(&caller, &id, &q)?)
        .await?
        .into_iter()
        .map(|item| item.body)
        .filter(|p| q.keeps(&p.period))
        .collect();
    let rows: Vec<ExportRow<'_>> = periods
        .iter()
        .flat_map(|p| {
            p.table.iter().flat_map(move |table| {
                table.lines.iter().map(move |(key, line)| ExportRow {
                    period: &p.period,
                    dimension: &p.dimension,
                    key,
                    line,
                })
            })
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"costs.csv\"",
            ),
        ],
        csv(&rows),
    )
        .into_response())
}

/// Monthly savings reports, newest first.
#[utoipa::path(get, path = "/v1/clusters/{id}/savings-reports", tag = "costs",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<Object>)), security(("api_key" = [])))]
pub async fn reports(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<MonthlyReport>>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?.id;
    let query = page.apply(
        Query::partition(keys::tenant_partition(&caller.tenant))
            .prefix(keys::savings_reports_prefix(&cluster))
            .newest_first(),
    )?;
    Ok(Json(Page::from_store(
        state.store.query(&query).await?,
        |r| r,
    )))
}

#[utoipa::path(get, path = "/v1/clusters/{id}/savings-reports/{month}", tag = "costs",
    params(("id" = String, Path), ("month" = String, Path, description = "`2026-11`")),
    responses((status = 200, body = Object), (status = 404, body = ErrorResponse)), security(("api_key" = [])))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    PathParams((id, month)): PathParams<(String, String)>,
) -> Result<Json<MonthlyReport>, ApiError> {
    caller.require(Role::Viewer)?;
    let cluster = load_cluster(&state, &caller, &id).await?.id;
    state
        .store
        .get::<MonthlyReport>(&keys::savings_report(&caller.tenant, &cluster, &month))
        .await?
        .map(|item| Json(item.body))
        .ok_or_else(|| ApiError::not_found(format!("savings report {month}")))
}

/// A month's savings realised by the cluster's rollouts: their sum in the newest of its last
/// 12 savings reports that has any.
pub async fn latest_rollout_savings(
    store: &spotwise_store::Store,
    tenant: &spotwise_core::TenantId,
    cluster: &spotwise_core::ClusterId,
) -> Result<rust_decimal::Decimal, spotwise_store::StoreError> {
    let query = Query::partition(keys::tenant_partition(tenant))
        .prefix(keys::savings_reports_prefix(cluster))
        .newest_first()
        .limit(12);
    Ok(store
        .query::<MonthlyReport>(&query)
        .await?
        .items
        .into_iter()
        .find(|r| !r.body.rollouts.is_empty())
        .map(|r| r.body.rollouts.iter().map(|p| p.monthly_saving).sum())
        .unwrap_or_default())
}
