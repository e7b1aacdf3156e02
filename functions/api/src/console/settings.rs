//! Settings pages: a cluster's policy, silences and maintenance windows, linked accounts with
//! the templates to deploy in them, and API keys.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{Notice, Page, apply, back_to, signed_in};
use super::view::{self, Section, text, when};
use super::{Console, Failure, segment, session_token};

// ---------------------------------------------------------------- policy

pub async fn policy(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let (policy, etag) = api.get_tagged(&format!("/v1/clusters/{id}/policy")).await?;
    let editable = me.may_operate();
    let select = |name: &str, options: &[(&str, &str)]| {
        let current = policy[name].as_str().unwrap_or_default().to_owned();
        html! {
            select id=(name) name=(name) disabled[!editable] {
                @for (value, label) in options { option value=(value) selected[*value == current] { (label) } }
            }
        }
    };
    let number = |name: &str, min: u32, max: u32| {
        html! { input id=(name) name=(name) type="number" min=(min) max=(max) required value=(policy[name]) disabled[!editable]; }
    };
    let namespaces: Vec<&str> = policy["excluded_namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let body = html! {
        form.stack method="post" action=(format!("/console/clusters/{id}/policy")) {
            input type="hidden" name="etag" value=(etag.unwrap_or_default());
            label for="mode" { "Mode" }
            (select("mode", &[("recommend", "Recommend: plans wait for approval"), ("auto", "Auto: act within the disruption budget")]))
            label for="min_spot_pools" { "Spread spot over at least this many pools (type × zone)" }
            (number("min_spot_pools", 1, 50))
            label for="max_interruption_band" { "Highest Spot Advisor interruption band" }
            select #max_interruption_band name="max_interruption_band" disabled[!editable] {
                @for (band, label) in [(0, "0: under 5%"), (1, "1: 5–10%"), (2, "2: 10–15%"), (3, "3: 15–20%"), (4, "4: over 20%")] {
                    option value=(band) selected[policy["max_interruption_band"] == band] { (label) }
                }
            }
            label for="on_demand_base_pct" { "Share of each workload kept on on-demand, %" }
            (number("on_demand_base_pct", 0, 100))
            label for="max_disrupted_nodes" { "Most nodes disrupted at once" }
            (number("max_disrupted_nodes", 1, 100))
            label for="rebalance" { "On a rebalance recommendation" }
            (select("rebalance", &[("cordon", "Cordon the node"), ("drain", "Drain the node"), ("notify", "Only notify")]))
            label for="rollout_backend" { "Realise plans with" }
            (select("rollout_backend", &[("auto", "Karpenter when the cluster runs it, else node groups"), ("managed-node-groups", "EKS managed node groups"), ("karpenter", "Karpenter")]))
            label.inline { input type="checkbox" name="exclude_burstable" value="on" checked[policy["exclude_burstable"] == true] disabled[!editable]; " Never burstable (t*) types" }
            label.inline { input type="checkbox" name="exclude_previous_generation" value="on" checked[policy["exclude_previous_generation"] == true] disabled[!editable]; " Never previous-generation types" }
            label for="excluded_namespaces" { "Namespaces never moved (comma-separated)" }
            input #excluded_namespaces name="excluded_namespaces" value=(namespaces.join(", ")) maxlength="6400" disabled[!editable];
            @if editable { button #save-policy type="submit" { "Save policy" } }
        }
        p { a href=(format!("/console/clusters/{id}/node-templates")) { "Node templates" } " · "
            a href=(format!("/console/clusters/{id}")) { "Back to the cluster" } }
    };
    Ok(view::layout("Policy", &me, Some(Section::Overview), notice.text(), body).into_response())
}

pub async fn save_policy(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let field = |name: &str| super::form_value(&fields, name).map(str::trim);
    let (mut policy, _) = api.get_tagged(&format!("/v1/clusters/{id}/policy")).await?;
    for name in ["mode", "rebalance", "rollout_backend"] {
        if let Some(value) = field(name) {
            policy[name] = json!(value);
        }
    }
    for name in [
        "min_spot_pools",
        "max_interruption_band",
        "on_demand_base_pct",
        "max_disrupted_nodes",
    ] {
        if let Some(value) = field(name) {
            // A number the API bounds; text it cannot parse is sent as such and refused by name.
            policy[name] = value
                .parse::<u64>()
                .map_or_else(|_| json!(value), |n| json!(n));
        }
    }
    policy["exclude_burstable"] = json!(field("exclude_burstable") == Some("on"));
    policy["exclude_previous_generation"] =
        json!(field("exclude_previous_generation") == Some("on"));
    policy["excluded_namespaces"] = json!(
        field("excluded_namespaces")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect::<Vec<_>>()
    );
    api.change(
        Method::PUT,
        &format!("/v1/clusters/{id}/policy"),
        Some(&policy),
        field("etag").filter(|t| !t.is_empty()),
    )
    .await?;
    Ok(back_to(
        &format!("/console/clusters/{id}/policy"),
        "Policy saved; the next plan follows it.",
    ))
}

// ---------------------------------------------------------------- silences and windows

pub async fn suppression(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let (silences, windows) = tokio::try_join!(
        api.get("/v1/silences?limit=100"),
        api.get("/v1/maintenance-windows?limit=100"),
    )?;
    let matchers = |list: &Value| -> String {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{} {} {}",
                    text(&m["label"]),
                    text(&m["op"]),
                    m["value"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let body = html! {
        section aria-labelledby="silences" {
            h2 #silences { "Silences" }
            div.scroll { table #silence-list {
                thead { tr { th scope="col" { "Matching" } th scope="col" { "Until" } th scope="col" { "Why" } th scope="col" { "" } } }
                tbody { @for silence in silences["items"].as_array().into_iter().flatten() { tr {
                    td { (matchers(&silence["matchers"])) } td { (when(&silence["expires_at"])) } td { (text(&silence["comment"])) }
                    td { @if me.may_operate() { form method="post" action=(format!("/console/silences/{}/delete", text(&silence["id"]))) {
                        button.secondary type="submit" { "End" } } } }
                } } }
            } }
            @if me.may_operate() {
                form.stack method="post" action="/console/silences" {
                    label for="label" { "Silence notifications whose" }
                    select #label name="label" { option value="event_type" { "event type" } option value="cluster" { "cluster" } option value="severity" { "severity" } }
                    label for="value" { "is" }
                    input #value name="value" required maxlength="253" placeholder="savings_report";
                    label for="hours" { "for hours" }
                    input #hours name="hours" type="number" min="1" max="2160" value="4" required;
                    label for="comment" { "Why" }
                    input #comment name="comment" required maxlength="1000";
                    button #add-silence type="submit" { "Silence" }
                }
            }
        }
        section aria-labelledby="windows" {
            h2 #windows { "Maintenance windows" }
            div.scroll { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Rule (UTC)" } th scope="col" { "From" } th scope="col" { "Minutes" } th scope="col" { "" } } }
                tbody { @for window in windows["items"].as_array().into_iter().flatten() { tr {
                    td { (text(&window["name"])) } td { code { (text(&window["rule"])) } } td { (when(&window["starts"])) } td { (window["duration_minutes"]) }
                    td { @if me.may_operate() { form method="post" action=(format!("/console/maintenance-windows/{}/delete", text(&window["id"]))) {
                        button.secondary type="submit" { "Delete" } } } }
                } } }
            } }
            @if me.may_operate() {
                form.stack method="post" action="/console/maintenance-windows" {
                    label for="window-name" { "Name" }
                    input #window-name name="name" required maxlength="100";
                    label for="rule" { "Recurrence (RRULE, UTC)" }
                    input #rule name="rule" required maxlength="200" value="FREQ=WEEKLY;BYDAY=SA";
                    label for="starts" { "First occurrence (RFC 3339)" }
                    input #starts name="starts" required maxlength="40" placeholder="2026-12-05T02:00:00Z";
                    label for="duration_minutes" { "Minutes" }
                    input #duration_minutes name="duration_minutes" type="number" min="1" max="10080" value="120" required;
                    button #add-window type="submit" { "Add window" }
                }
            }
        }
    };
    Ok(view::layout(
        "Silences and maintenance windows",
        &me,
        Some(Section::Notifications),
        notice.text(),
        body,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct SilenceForm {
    label: String,
    value: String,
    hours: i64,
    comment: String,
}

pub async fn add_silence(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SilenceForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let until =
        time::OffsetDateTime::now_utc() + time::Duration::hours(form.hours.clamp(1, 24 * 90));
    let body = json!({"matchers": [{"label": form.label, "op": "equal", "value": form.value}],
        "expires_at": spotwise_core::rfc3339(until), "comment": form.comment});
    apply(
        &console,
        &token,
        Method::POST,
        "/v1/silences",
        Some(&body),
        "/console/suppression",
        "Silenced.",
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct WindowForm {
    name: String,
    rule: String,
    starts: String,
    duration_minutes: u32,
}

pub async fn add_window(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<WindowForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let body = json!({"name": form.name, "rule": form.rule, "starts": form.starts, "duration_minutes": form.duration_minutes});
    apply(
        &console,
        &token,
        Method::POST,
        "/v1/maintenance-windows",
        Some(&body),
        "/console/suppression",
        "Maintenance window added.",
    )
    .await
}

/// Ends a silence, deletes a window, revokes a key or removes a user.
async fn remove(
    console: &Console,
    headers: &HeaderMap,
    api_path: &str,
    id: &str,
    back: &str,
    done: &str,
) -> Page {
    let token = session_token(headers).ok_or(Failure::SignIn)?;
    let id = segment(id)?;
    apply(
        console,
        &token,
        Method::DELETE,
        &format!("{api_path}/{id}"),
        None,
        back,
        done,
    )
    .await
}

pub async fn end_silence(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    remove(
        &console,
        &headers,
        "/v1/silences",
        &id,
        "/console/suppression",
        "Silence ended.",
    )
    .await
}

pub async fn delete_window(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    remove(
        &console,
        &headers,
        "/v1/maintenance-windows",
        &id,
        "/console/suppression",
        "Window deleted.",
    )
    .await
}

pub async fn revoke_key(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    remove(
        &console,
        &headers,
        "/v1/keys",
        &id,
        "/console/admin",
        "Key revoked.",
    )
    .await
}

pub async fn remove_user(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    remove(
        &console,
        &headers,
        "/v1/users",
        &id,
        "/console/admin",
        "User removed and signed out everywhere.",
    )
    .await
}

// ---------------------------------------------------------------- accounts and keys

const CUSTOMER_ROLE: &str = include_str!("../../../../infra/customer-role.yaml");
const CUSTOMER_EVENTS: &str = include_str!("../../../../infra/customer-events.yaml");

pub async fn template(Path(name): Path<String>) -> Response {
    let body = match name.as_str() {
        "customer-role.yaml" => CUSTOMER_ROLE,
        "customer-events.yaml" => CUSTOMER_EVENTS,
        _ => return view::error_page(axum::http::StatusCode::NOT_FOUND, "no such template"),
    };
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    response
}

pub async fn accounts(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let accounts = api.get("/v1/accounts?limit=100").await?;
    let body = html! {
        div.scroll { table #accounts {
            thead { tr { th scope="col" { "Account" } th scope="col" { "Role" } th scope="col" { "Regions" } th scope="col" { "Health" }
                th scope="col" { "Interruption events" } th scope="col" { "" } } }
            tbody { @for account in accounts["items"].as_array().into_iter().flatten() {
                @let account_id = text(&account["account_id"]);
                tr {
                    td { (account_id) br; small { "linked " (when(&account["linked_at"])) } }
                    td.url { (text(&account["role_arn"])) }
                    td { (account["regions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")) }
                    td { (health(&account["health"])) }
                    td { (forwarding(&account["event_forwarding"])) }
                    td { @if me.may_operate() { div.actions {
                        form method="post" action=(format!("/console/accounts/{account_id}/validate")) { button.secondary type="submit" { "Check again" } }
                        @if me.is_admin() { form method="post" action=(format!("/console/accounts/{account_id}/unlink")) { button.secondary type="submit" { "Unlink" } } }
                    } } }
                }
            } }
        } }
        @if me.is_admin() {
            section aria-labelledby="link" {
                h2 #link { "Link an account" }
                ol {
                    li { "Get an ExternalId for the role's trust policy: " form.inline method="post" action="/console/accounts/external-id" {
                        button.secondary #external-id type="submit" { "Issue ExternalId" } } }
                    li { "Deploy " a href="/console/templates/customer-role.yaml" download { "customer-role.yaml" }
                        " in the account with that ExternalId, and " a href="/console/templates/customer-events.yaml" download { "customer-events.yaml" }
                        " in each region, so interruption warnings reach Spotwise." }
                    li { "Link the role:" }
                }
                form.stack method="post" action="/console/accounts" {
                    label for="role_arn" { "Role ARN" }
                    input #role_arn name="role_arn" required maxlength="2048" placeholder="arn:aws:iam::111122223333:role/SpotwiseAccess";
                    label for="regions" { "Regions (comma-separated)" }
                    input #regions name="regions" required maxlength="600" value="us-east-1";
                    button #link-account type="submit" { "Link" }
                }
            }
        }
    };
    Ok(view::layout(
        "Linked accounts",
        &me,
        Some(Section::Admin),
        notice.text(),
        body,
    )
    .into_response())
}

/// `healthy`, `pending`, or `unhealthy: <reason>`, however the API tags the state.
fn health(value: &Value) -> String {
    match value {
        Value::String(state) => state.clone(),
        Value::Object(fields) => {
            let state = fields
                .get("status")
                .or(fields.get("state"))
                .and_then(Value::as_str)
                .or_else(|| fields.keys().next().map(String::as_str))
                .unwrap_or("unknown");
            let reason = fields
                .get("reason")
                .or(fields.values().find_map(|v| v.get("reason")))
                .and_then(Value::as_str);
            reason.map_or_else(|| state.to_owned(), |r| format!("{state}: {r}"))
        }
        _ => "—".into(),
    }
}

fn forwarding(value: &Value) -> String {
    if value.is_null() {
        return "not checked".into();
    }
    let gaps: Vec<&str> = value["gaps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match (value["admitted"] == true, gaps.is_empty()) {
        (true, true) => format!("arriving (checked {})", when(&value["checked_at"])),
        _ if gaps.is_empty() => "not admitted".into(),
        _ => gaps.join(" "),
    }
}

pub async fn issue_external_id(State(console): State<Console>, headers: HeaderMap) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let issued = console
        .client(Some(&token))
        .change(Method::POST, "/v1/accounts/external-id", None, None)
        .await?;
    Ok(back_to(
        "/console/accounts",
        &format!(
            "ExternalId for the role's trust policy: {}",
            text(&issued["external_id"])
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub struct LinkForm {
    role_arn: String,
    regions: String,
}

pub async fn link(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<LinkForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let regions: Vec<&str> = form
        .regions
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .collect();
    let body = json!({"role_arn": form.role_arn.trim(), "regions": regions});
    let linked = console
        .client(Some(&token))
        .change(Method::POST, "/v1/accounts", Some(&body), None)
        .await?;
    Ok(back_to(
        "/console/accounts",
        &format!(
            "Account {} linked; discovery runs now.",
            text(&linked["account_id"])
        ),
    ))
}

pub async fn account_action(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    let (method, path, done) = match action.as_str() {
        "validate" => (
            Method::POST,
            format!("/v1/accounts/{id}/validate"),
            "Checked.",
        ),
        "unlink" => (
            Method::DELETE,
            format!("/v1/accounts/{id}"),
            "Unlinked: its clusters' agents were revoked.",
        ),
        _ => {
            return Err(Failure::Refused(
                axum::http::StatusCode::NOT_FOUND,
                "no such action".into(),
            ));
        }
    };
    apply(
        &console,
        &token,
        method,
        &path,
        None,
        "/console/accounts",
        done,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct KeyForm {
    name: String,
    role: String,
}

/// A new API key: its secret is shown once, on the page this answers with (never in a URL).
pub async fn create_key(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<KeyForm>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let created = console
        .client(Some(&token))
        .change(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": form.name, "role": form.role})),
            None,
        )
        .await?;
    let notice = format!(
        "Key {} created. Its secret, shown only now: {}",
        text(&created["key"]["name"]),
        text(&created["secret"])
    );
    super::pages::admin_page(
        &console,
        &token,
        &me,
        Some(&notice),
        &super::pages::AuditFilter::default(),
    )
    .await
}

// ---------------------------------------------------------------- node templates

/// A template's list, or what an empty one means (`any` allowed, `none` excluded).
fn listed(value: &Value, empty: &str) -> String {
    let items: Vec<&str> = value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if items.is_empty() {
        empty.into()
    } else {
        items.join(", ")
    }
}

/// The cluster's node templates, and a new one: what nodes its plans may use.
pub async fn templates(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let templates = api
        .get(format!("/v1/clusters/{id}/node-templates?limit=100"))
        .await?;
    let body = html! {
        p { "Plans use only the nodes some template allows (every node, when there is none), with the template's labels and taints." }
        div.scroll { table #templates {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Families" } th scope="col" { "Never" } th scope="col" { "Capacity" }
                th scope="col" { "Architectures" } th scope="col" { "vCPUs" } th scope="col" { "Labels" } th scope="col" { "" } } }
            tbody { @for template in templates["items"].as_array().into_iter().flatten() { tr {
                td { (text(&template["name"])) } td { (listed(&template["instance_families"], "any")) } td { (listed(&template["exclude_instance_types"], "none")) }
                td { (listed(&template["capacity_types"], "any")) } td { (listed(&template["architectures"], "any")) }
                td { (template["min_vcpus"].as_u64().map_or("0".into(), |v| v.to_string())) "–" (template["max_vcpus"].as_u64().map_or("any".into(), |v| v.to_string())) }
                td { (template["labels"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", ")) }
                td { @if me.may_operate() { form method="post" action=(format!("/console/clusters/{id}/node-templates/{}/delete", text(&template["id"]))) {
                    button.secondary type="submit" aria-label=(format!("Delete {}", text(&template["name"]))) { "Delete" } } } }
            } } }
        } }
        @if me.may_operate() {
            h2 { "New template" }
            form.stack method="post" action=(format!("/console/clusters/{id}/node-templates")) {
                label for="template-name" { "Name" }
                input #template-name name="name" required maxlength="63";
                label for="instance_families" { "Families (comma-separated; empty: any)" }
                input #instance_families name="instance_families" maxlength="2000" placeholder="m7g, c7g, r7g";
                label for="exclude_instance_types" { "Never these types (* matches any characters)" }
                input #exclude_instance_types name="exclude_instance_types" maxlength="2000" placeholder="*.metal";
                fieldset { legend { "Capacity" }
                    label.inline { input type="checkbox" name="capacity_types" value="spot" checked; " spot" }
                    label.inline { input type="checkbox" name="capacity_types" value="on-demand" checked; " on-demand" } }
                fieldset { legend { "Architectures" }
                    label.inline { input type="checkbox" name="architectures" value="x86_64" checked; " x86_64" }
                    label.inline { input type="checkbox" name="architectures" value="arm64" checked; " arm64" } }
                label for="min_vcpus" { "At least vCPUs" }
                input #min_vcpus name="min_vcpus" type="number" min="1" max="448";
                label for="max_vcpus" { "At most vCPUs" }
                input #max_vcpus name="max_vcpus" type="number" min="1" max="448";
                label for="labels" { "Labels (key=value, comma-separated)" }
                input #labels name="labels" maxlength="2000" placeholder="workload=batch";
                button #add-template type="submit" { "Add template" }
            }
        }
        p { a href=(format!("/console/clusters/{id}/policy")) { "Policy" } " · " a href=(format!("/console/clusters/{id}")) { "Back to the cluster" } }
    };
    Ok(view::layout(
        "Node templates",
        &me,
        Some(Section::Overview),
        notice.text(),
        body,
    )
    .into_response())
}

fn comma_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The API's template body from the form: lists split at commas, labels at `=`; bounds and
/// names are the API's to check.
fn template_body(fields: &[(String, String)]) -> Value {
    let field = |name: &str| {
        super::form_value(fields, name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let all = |name: &str| {
        fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let number =
        |name: &str| field(name).map(|v| v.parse::<u64>().map_or_else(|_| json!(v), |n| json!(n)));
    let labels: serde_json::Map<String, Value> = comma_list(field("labels"))
        .iter()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), json!(v.trim())))
        .collect();
    json!({
        "name": field("name").unwrap_or_default(),
        "instance_families": comma_list(field("instance_families")),
        "exclude_instance_types": comma_list(field("exclude_instance_types")),
        "capacity_types": all("capacity_types"),
        "architectures": all("architectures"),
        "min_vcpus": number("min_vcpus"),
        "max_vcpus": number("max_vcpus"),
        "labels": labels,
    })
}

pub async fn add_template(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    apply(
        &console,
        &token,
        Method::POST,
        &format!("/v1/clusters/{id}/node-templates"),
        Some(&template_body(&fields)),
        &format!("/console/clusters/{id}/node-templates"),
        "Template added; the next plan uses only what the templates allow.",
    )
    .await
}

pub async fn delete_template(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((id, template)): Path<(String, String)>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let (id, template) = (segment(&id)?, segment(&template)?);
    apply(
        &console,
        &token,
        Method::DELETE,
        &format!("/v1/clusters/{id}/node-templates/{template}"),
        None,
        &format!("/console/clusters/{id}/node-templates"),
        "Template deleted.",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_health_reads_as_a_sentence() {
        assert_eq!(health(&json!("healthy")), "healthy");
        assert_eq!(
            health(&json!({"state": "unhealthy", "reason": "AccessDenied"})),
            "unhealthy: AccessDenied"
        );
        assert_eq!(
            health(&json!({"unhealthy": {"reason": "AccessDenied"}})),
            "unhealthy: AccessDenied"
        );
        assert_eq!(forwarding(&Value::Null), "not checked");
        assert_eq!(
            forwarding(
                &json!({"admitted": false, "gaps": ["us-east-1: no rule forwards EC2 events"], "checked_at": "2026-12-04T10:00:00Z"})
            ),
            "us-east-1: no rule forwards EC2 events"
        );
    }

    #[test]
    fn the_template_form_becomes_the_apis_body() {
        let fields: Vec<(String, String)> = [
            ("name", "batch"),
            ("instance_families", " m7g, c7g ,"),
            ("exclude_instance_types", ""),
            ("capacity_types", "spot"),
            ("architectures", "arm64"),
            ("min_vcpus", "4"),
            ("max_vcpus", ""),
            ("labels", "workload=batch, team = data"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            template_body(&fields),
            json!({"name": "batch", "instance_families": ["m7g", "c7g"], "exclude_instance_types": [],
                "capacity_types": ["spot"], "architectures": ["arm64"], "min_vcpus": 4, "max_vcpus": null,
                "labels": {"workload": "batch", "team": "data"}})
        );
    }
}
