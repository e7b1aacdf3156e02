//! The audit log: every mutating call, with who, what, when, and the resource before and after
//! (secrets never included). Kept a year; listed newest first, filtered, exported as CSV or JSON.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use spotwise_core::domain::{AuditEvent, Role};
use spotwise_store::keys;
use spotwise_store::{Query, Write};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorResponse};
use crate::paging::{Page, PageParams, Params};

/// An export reads at most this many events; narrow it with `since`/`until` for more.
const EXPORT_LIMIT: usize = 10_000;

/// The audit event of a change the caller makes, to be committed with the change.
pub fn entry(
    caller: &Caller,
    action: &str,
    target: String,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<Write, ApiError> {
    let change = spotwise_store::audit::Change {
        action,
        target,
        before,
        after,
    };
    Ok(spotwise_store::audit::write_of(
        &caller.tenant,
        &caller.actor(),
        change,
        OffsetDateTime::now_utc(),
    )?)
}

/// Writes a change and its audit event in one transaction: both are stored, or neither and the
/// call fails, so no change goes unaudited. A failed condition is the change's own error
/// (409, 412).
pub async fn commit(
    state: &AppState,
    mut writes: Vec<Write>,
    entry: Write,
) -> Result<(), ApiError> {
    writes.push(entry);
    state.store.transact(writes).await?;
    Ok(())
}

/// A resource as the audit log keeps it.
pub fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only this action, e.g. `webhook.update`.
    pub action: Option<String>,
    /// Only calls by this key id.
    pub key: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Only events before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

impl AuditFilter {
    fn keeps(&self, event: &AuditEvent) -> bool {
        self.action.as_ref().is_none_or(|a| &event.action == a)
            && self
                .key
                .as_ref()
                .is_none_or(|k| event.actor.starts_with(&format!("key:{k} ")))
            && self.since.is_none_or(|t| event.at >= t)
            && self.until.is_none_or(|t| event.at < t)
    }
}

fn audit_query(caller: &Caller) -> Query {
    Query::partition(keys::tenant_partition(&caller.tenant))
        .prefix(keys::prefix::AUDIT)
        .newest_first()
}

/// Newest first. Filters apply within each page, so a page may hold fewer than `limit` events
/// while `next_cursor` still leads to more.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(PageParams, AuditFilter),
    responses((status = 200, body = Page<AuditEvent>), (status = 403, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(page): Params<PageParams>,
    Params(filter): Params<AuditFilter>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
    caller.require(Role::Admin)?;
    let stored = state
        .store
        .query::<AuditEvent>(&page.apply(audit_query(&caller))?)
        .await?;
    let mut listed = Page::from_store(stored, |e| e);
    listed.items.retain(|e| filter.keeps(e));
    Ok(Json(listed))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Json,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportFormat {
    /// Default `csv`.
    #[param(inline)]
    pub format: Option<Format>,
}

#[utoipa::path(get, path = "/v1/audit/export", tag = "audit",
    params(AuditFilter, ExportFormat),
    responses((status = 200, description = "CSV (id, at, actor, action, target, before, after) or a JSON array",
            content((String = "text/csv"), (Vec<AuditEvent> = "application/json"))),
        (status = 400, body = ErrorResponse)),
    security(("api_key" = [])))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Params(filter): Params<AuditFilter>,
    Params(format): Params<ExportFormat>,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let as_json = format.format.unwrap_or_default() == Format::Json;
    let mut events = Vec::new();
    let mut query = audit_query(&caller).limit(500);
    loop {
        let page = state.store.query::<AuditEvent>(&query).await?;
        let past_range = page
            .items
            .last()
            .is_some_and(|e| filter.since.is_some_and(|t| e.body.at < t));
        events.extend(
            page.items
                .into_iter()
                .map(|i| i.body)
                .filter(|e| filter.keeps(e)),
        );
        match page.next {
            Some(next) if !past_range && events.len() < EXPORT_LIMIT => {
                query = query.after(Some(next))
            }
            _ => break,
        }
    }
    events.truncate(EXPORT_LIMIT);
    if as_json {
        return Ok(Json(events).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"audit.csv\"",
            ),
        ],
        csv(&events),
    )
        .into_response())
}

fn csv(events: &[AuditEvent]) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    let json =
        |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let mut out = String::from("id,at,actor,action,target,before,after\r\n");
    for e in events {
        let row = [
            e.id.clone(),
            spotwise_core::rfc3339(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
            json(&e.before),
            json(&e.after),
        ];
        out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use spotwise_core::TenantId;

    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let event = AuditEvent {
            id: "01J".into(),
            tenant_id: TenantId::new("t1").unwrap(),
            actor: "key:abc (ci, prod)".into(),
            action: "webhook.update".into(),
            target: "webhook/w1".into(),
            before: Some(serde_json::json!({"name": "a,b"})),
            after: None,
            at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(
            csv(&[event]),
            "id,at,actor,action,target,before,after\r\n\
             01J,1970-01-01T00:00:00Z,\"key:abc (ci, prod)\",webhook.update,webhook/w1,\"{\"\"name\"\":\"\"a,b\"\"}\",\r\n"
        );
    }
}
