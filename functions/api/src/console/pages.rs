//! The console's pages and forms. Each handler reads what it shows from the API, or sends the
//! form to the API, and redirects back with what happened.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use spotwise_optimizer::plan::HOURS_PER_MONTH;

use super::view::{self, Me, Section, money, number, percent, text, when};
use super::{Console, Failure, segment, session_token};

pub(super) type Page = Result<Response, Failure>;

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MAX_NOTICE: usize = 300;

/// `?notice=` after a change: what happened, shown once at the top of the page.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

impl Notice {
    pub(super) fn text(&self) -> Option<&str> {
        self.notice
            .as_deref()
            .filter(|n| !n.is_empty() && n.len() <= MAX_NOTICE)
    }
}

pub(super) fn back_to(path: &str, notice: &str) -> Response {
    let query: String = url_encode(notice);
    Redirect::to(&format!("{path}?notice={query}")).into_response()
}

pub(super) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a change as the signed-in person, then goes back to `back` saying `done`; a refused
/// change shows the API's reason instead.
pub(super) async fn apply(
    console: &Console,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    back: &str,
    done: &str,
) -> Page {
    console
        .client(Some(token))
        .change(method, path, body, None)
        .await?;
    Ok(back_to(back, done))
}

/// The signed-in person's token and who they are.
pub(super) async fn signed_in(
    console: &Console,
    headers: &HeaderMap,
) -> Result<(String, Me), Failure> {
    let token = session_token(headers).ok_or(Failure::SignIn)?;
    let me = Me::from_api(&console.client(Some(&token)).get("/v1/me").await?);
    Ok((token, me))
}

// ---------------------------------------------------------------- signing in

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    username: String,
    password: String,
}

pub async fn sign_in_form(Query(notice): Query<Notice>) -> Response {
    sign_in_page(StatusCode::OK, notice.text(), None, "").into_response()
}

fn sign_in_page(
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
    username: &str,
) -> Response {
    let body = html! {
        @if let Some(notice) = notice { p.notice role="status" { (notice) } }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form.stack method="post" action="/console/sign-in" {
            label for="username" { "Email" }
            input #username name="username" type="email" autocomplete="username" required maxlength="254" value=(username);
            label for="password" { "Password" }
            input #password name="password" type="password" autocomplete="current-password" required maxlength="256";
            button type="submit" { "Sign in" }
        }
    };
    (status, view::bare("Sign in", body)).into_response()
}

fn challenge_page(status: &str, username: &str, session: &str, error: Option<&str>) -> Response {
    let body = html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form.stack method="post" action="/console/sign-in/challenge" {
            input type="hidden" name="username" value=(username);
            input type="hidden" name="session" value=(session);
            @if status == "mfa_required" {
                label for="code" { "Six-digit code from your authenticator app" }
                input #code name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required;
            } @else {
                p { "Choose your own password: at least 12 characters, with upper and lower case letters and a digit." }
                label for="new_password" { "New password" }
                input #new_password name="new_password" type="password" autocomplete="new-password" minlength="12" maxlength="256" required;
            }
            button type="submit" { "Continue" }
        }
    };
    let title = if status == "mfa_required" {
        "Enter your code"
    } else {
        "Set your password"
    };
    view::bare(title, body).into_response()
}

/// Where the API's answer to a sign-in step leads.
fn after_sign_in_step(console: &Console, answer: super::Answer, username: &str) -> Response {
    if !answer.status.is_success() {
        let message = answer.message();
        return sign_in_page(answer.status, None, Some(&message), username);
    }
    match answer.body["status"].as_str() {
        Some("signed_in") => {
            let mut response = Redirect::to("/console").into_response();
            for cookie in console.session_cookies(&answer.body) {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
            response
        }
        Some(step @ ("new_password_required" | "mfa_required")) => {
            challenge_page(step, username, text(&answer.body["session"]), None)
        }
        _ => sign_in_page(
            StatusCode::BAD_GATEWAY,
            None,
            Some("the sign-in did not finish"),
            username,
        ),
    }
}

pub async fn sign_in(State(console): State<Console>, Form(form): Form<SignInForm>) -> Page {
    let body = json!({"username": form.username, "password": form.password});
    let answer = console
        .client(None)
        .send(Method::POST, "/v1/session", Some(&body), None)
        .await?;
    Ok(after_sign_in_step(&console, answer, &form.username))
}

#[derive(Debug, Deserialize)]
pub struct ChallengeForm {
    username: String,
    session: String,
    new_password: Option<String>,
    code: Option<String>,
}

pub async fn answer_challenge(
    State(console): State<Console>,
    Form(form): Form<ChallengeForm>,
) -> Page {
    let mut body = json!({"username": form.username, "session": form.session});
    if let Some(password) = &form.new_password {
        body["new_password"] = json!(password);
    }
    if let Some(code) = &form.code {
        body["code"] = json!(code);
    }
    let answer = console
        .client(None)
        .send(Method::POST, "/v1/session/challenge", Some(&body), None)
        .await?;
    if answer.status == StatusCode::BAD_REQUEST {
        let step = if form.code.is_some() {
            "mfa_required"
        } else {
            "new_password_required"
        };
        let message = answer.message();
        return Ok(challenge_page(
            step,
            &form.username,
            &form.session,
            Some(&message),
        ));
    }
    Ok(after_sign_in_step(&console, answer, &form.username))
}

#[derive(Debug, Deserialize)]
pub struct TokenLink {
    token: String,
}

/// Dev mode only: a link carrying an ID token opens the console signed in, once the API has
/// accepted the token.
pub async fn dev_session(State(console): State<Console>, Query(link): Query<TokenLink>) -> Page {
    console.client(Some(&link.token)).get("/v1/me").await?;
    let mut response = Redirect::to("/console").into_response();
    let signed = json!({"id_token": link.token, "expires_in": 3600});
    for cookie in console.session_cookies(&signed) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Ends the person's sessions in every browser (the user pool revokes their refresh tokens),
/// and this browser's cookies, even when the API cannot be reached.
pub async fn sign_out(State(console): State<Console>, headers: HeaderMap) -> Response {
    if let Some(token) = session_token(&headers)
        && let Err(Failure::Refused(status, message)) = console
            .client(Some(&token))
            .change(Method::POST, "/v1/me/sign-out", None, None)
            .await
    {
        tracing::warn!(%status, message, "sign-out not recorded by the API");
    }
    let mut response = back_to("/console/sign-in", "You are signed out.");
    for cookie in super::clearing_cookies() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

// ---------------------------------------------------------------- overview

/// What the overview shows of one cluster.
struct ClusterCard {
    cluster: Value,
    detail: Value,
    newest: Value,
    report: Value,
    days: Vec<(String, f64)>,
}

impl ClusterCard {
    fn id(&self) -> &str {
        text(&self.cluster["id"])
    }

    /// What its nodes cost a month now: the newest plan's measure of the running cluster.
    fn monthly_cost(&self) -> f64 {
        number(&self.newest["summary"]["current_monthly_cost"])
    }

    fn proposed(&self) -> bool {
        self.newest["status"] == "proposed"
    }

    fn projected_savings(&self) -> f64 {
        if self.proposed() {
            number(&self.newest["summary"]["monthly_savings"])
        } else {
            0.0
        }
    }

    /// Monthly savings of the rollouts completed this month, before against realised.
    fn realised_savings(&self) -> f64 {
        self.report["rollouts"]
            .as_array()
            .map(|r| r.iter().map(|r| number(&r["monthly_saving"])).sum())
            .unwrap_or(0.0)
    }

    fn nodes(&self) -> (u64, u64) {
        let snapshot = &self.detail["snapshot"];
        (
            snapshot["nodes"].as_u64().unwrap_or(0),
            snapshot["spot_nodes"].as_u64().unwrap_or(0),
        )
    }

    fn agent(&self) -> Markup {
        let agent = &self.detail["agent"];
        html! {
            @if agent.is_null() {
                span.badge.muted { "no agent" }
            } @else if !agent["offline_since"].is_null() {
                span.badge.bad { "offline since " (when(&agent["offline_since"])) }
            } @else {
                span.badge.good { "online" }
                " " small { "last seen " (when(&agent["last_heartbeat_at"])) }
            }
        }
    }
}

async fn cluster_card(api: &super::Client<'_>, cluster: Value) -> Result<ClusterCard, Failure> {
    let id = segment(text(&cluster["id"]))?.to_owned();
    let (detail, recommendations, reports, costs) = tokio::try_join!(
        api.get_or_null(format!("/v1/clusters/{id}")),
        api.get_or_null(format!("/v1/clusters/{id}/recommendations?limit=1")),
        api.get_or_null(format!("/v1/clusters/{id}/savings-reports?limit=1")),
        api.get_or_null(format!("/v1/clusters/{id}/costs?granularity=day")),
    )?;
    let days = costs["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    (
                        text(&p["period"]).to_owned(),
                        number(&p["summary"]["total"]["cost"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ClusterCard {
        newest: recommendations["items"][0].clone(),
        report: reports["items"][0].clone(),
        cluster,
        detail,
        days,
    })
}

pub async fn overview(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let (clusters, feed) = tokio::try_join!(
        api.get("/v1/clusters?limit=100"),
        api.get_or_null("/v1/notifications?limit=8"),
    )?;
    let listed: Vec<Value> = clusters["items"].as_array().cloned().unwrap_or_default();
    let cards = futures_util::future::try_join_all(
        listed
            .into_iter()
            .filter(|c| c["vanished_at"].is_null())
            .map(|c| cluster_card(&api, c)),
    )
    .await?;
    let monthly: f64 = cards.iter().map(ClusterCard::monthly_cost).sum();
    let realised: f64 = cards.iter().map(ClusterCard::realised_savings).sum();
    let projected: f64 = cards.iter().map(ClusterCard::projected_savings).sum();
    let (nodes, spot) = cards
        .iter()
        .map(ClusterCard::nodes)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let today = time::OffsetDateTime::now_utc().date();
    let month = format!("{:04}-{:02}-", today.year(), u8::from(today.month()));
    let mut days: BTreeMap<String, f64> = BTreeMap::new();
    for card in &cards {
        for (day, cost) in card.days.iter().filter(|(day, _)| day.starts_with(&month)) {
            *days.entry(day.clone()).or_default() += cost;
        }
    }
    let body = html! {
        section.figures aria-label="This month" {
            div.figure { h2 { "Monthly cost" } p.big #monthly-cost { (money(monthly)) } p { "of the nodes running now, at current prices" } }
            div.figure { h2 { "Realised savings" } p.big #realised-savings { (money(realised)) } p { "a month, by plans rolled out this month" } }
            div.figure { h2 { "Projected savings" } p.big #projected-savings { (money(projected)) } p { "a month more, if the pending plans are approved" } }
            div.figure { h2 { "Spot share" } p.big #spot-share { (if nodes > 0 { percent(spot as f64 / nodes as f64) } else { "—".into() }) } p { (spot) " of " (nodes) " nodes" } }
        }
        section aria-labelledby="trend" {
            h2 #trend { "Cost by day this month" }
            (view::cost_chart(&days, today, monthly * 24.0 / HOURS_PER_MONTH))
        }
        section aria-labelledby="clusters" {
            h2 #clusters { "Clusters" }
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Cluster" } th scope="col" { "Agent" } th scope="col" { "Nodes (spot)" } th scope="col" { "Monthly cost" } th scope="col" { "Pending plan" } } }
                    tbody {
                        @for card in &cards {
                            @let (nodes, spot) = card.nodes();
                            tr {
                                td { a href=(format!("/console/clusters/{}", card.id())) { (text(&card.cluster["name"])) } br; small { (text(&card.cluster["region"])) " · " (text(&card.cluster["account_id"])) } }
                                td { (card.agent()) }
                                td { (nodes) " (" (spot) ")" }
                                td { @if card.newest.is_null() { "—" } @else { (money(card.monthly_cost())) } }
                                td { @if card.proposed() { "saves " (money(card.projected_savings())) " a month" } @else { "—" } }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="latest" {
            h2 #latest { "Latest notifications" }
            (feed_list(&feed))
            p { a href="/console/notifications" { "All notifications and webhooks" } }
        }
    };
    Ok(view::layout(
        "Overview",
        &me,
        Some(Section::Overview),
        notice.text(),
        body,
    )
    .into_response())
}

pub(super) fn feed_list(feed: &Value) -> Markup {
    let items = feed["items"].as_array().cloned().unwrap_or_default();
    html! {
        @if items.is_empty() {
            p { "Nothing yet." }
        } @else {
            ul.feed {
                @for item in &items {
                    @let n = &item["notification"];
                    li {
                        span class=(format!("badge sev-{}", text(&n["severity"]))) { (text(&n["severity"])) }
                        " " (text(&n["title"]))
                        " " small { (when(&n["occurred_at"])) }
                        @if !item["suppressed"].is_null() { " " small.muted { "(silenced)" } }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- a cluster

fn mix_rows(mix: &Value) -> Vec<(String, u32, u32)> {
    let mut rows: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for entry in mix.as_array().into_iter().flatten() {
        let nodes = entry["nodes"].as_u64().unwrap_or(1) as u32;
        let row = rows
            .entry(text(&entry["instance_type"]).to_owned())
            .or_default();
        if entry["capacity_type"] == "spot" {
            row.0 += nodes;
        } else {
            row.1 += nodes;
        }
    }
    rows.into_iter().map(|(k, (s, o))| (k, s, o)).collect()
}

fn figures_row(label: &str, figures: &Value) -> Markup {
    html! {
        tr {
            th scope="row" { (label) }
            td { (money(number(&figures["cost_hr"]) * HOURS_PER_MONTH)) }
            td { (figures["nodes"].as_u64().unwrap_or(0)) }
            td { (figures["spot_nodes"].as_u64().unwrap_or(0)) }
            td { (figures["pods_pending"].as_u64().unwrap_or(0)) }
        }
    }
}

pub async fn cluster(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let (detail, recommendations, actions, pod_history) = tokio::try_join!(
        api.get(format!("/v1/clusters/{id}")),
        api.get_or_null(format!("/v1/clusters/{id}/recommendations?limit=10")),
        api.get_or_null(format!("/v1/actions?cluster={id}&limit=15")),
        api.get_or_null(format!("/v1/clusters/{id}/pod-history?limit=20")),
    )?;
    let recommendations = recommendations["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let newest = recommendations.first().cloned().unwrap_or(Value::Null);
    let applied = recommendations
        .iter()
        .find(|r| r["status"] != "proposed")
        .cloned();
    let rollout = match &applied {
        Some(r) => {
            api.get_or_null(format!(
                "/v1/clusters/{id}/recommendations/{}/rollout",
                r["revision"]
            ))
            .await?
        }
        None => Value::Null,
    };
    let snapshot = &detail["snapshot"];
    let node_list = snapshot["node_list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let current_mix: Vec<Value> = node_list.clone();
    let title = format!("Cluster {}", text(&detail["cluster"]["name"]));
    let body = html! {
        p { (text(&detail["cluster"]["id"])) " · Kubernetes " (text(&detail["cluster"]["kubernetes_version"])) " · "
            a href=(format!("/console/clusters/{id}/costs")) { "Costs" } " · "
            a href=(format!("/console/clusters/{id}/policy")) { "Policy" } " · "
            a href=(format!("/console/clusters/{id}/node-templates")) { "Node templates" } " · "
            a href=(format!("/console/clusters/{id}/hibernation")) { "Hibernation schedule" } " · "
            a href=(format!("/console/clusters/{id}/rightsizing")) { "Right-sizing" } " · "
            a href="/console/schedules" { "Scheduled runs" } }
        section aria-labelledby="nodes" {
            h2 #nodes { "Nodes" }
            @if snapshot.is_null() {
                p { "No recent snapshot: " (text(&detail["snapshot_problem"])) }
            } @else {
                @let load = ClusterLoad::of(&node_list);
                p { (snapshot["nodes"]) " nodes (" (snapshot["spot_nodes"]) " spot) running " (snapshot["pods"]) " pods, as of " (when(&snapshot["taken_at"])) "." }
                p #utilisation { "Requested: cpu " (percent(load.cpu_requested)) ", memory " (percent(load.memory_requested)) " of what the nodes offer pods"
                    @if let Some((cpu, memory)) = load.used { "; in use when the snapshot was taken: cpu " (percent(cpu)) ", memory " (percent(memory)) } "." }
                (view::mix_chart("Nodes by instance type now.", &mix_rows(&Value::Array(current_mix))))
                div.scroll { table {
                    thead { tr { th scope="col" { "Node" } th scope="col" { "Type" } th scope="col" { "Zone" } th scope="col" { "Capacity" } th scope="col" { "Pods" }
                        th scope="col" { "CPU requested" } th scope="col" { "Memory requested" } th scope="col" { "CPU in use" } } }
                    tbody { @for node in &node_list { tr {
                        td { (text(&node["name"])) @if node["unschedulable"] == true { " " span.badge.bad { "cordoned" } } }
                        td { (text(&node["instance_type"])) } td { (text(&node["zone"])) } td { (text(&node["capacity_type"])) } td { (node["pods"]) }
                        td { (share_cell(&node["cpu_requested_m"], &node["cpu_allocatable_m"])) }
                        td { (share_cell(&node["memory_requested_mib"], &node["memory_allocatable_mib"])) }
                        td { @if node["cpu_used_m"].is_null() { small { "no metrics" } } @else { (share_cell(&node["cpu_used_m"], &node["cpu_allocatable_m"])) } }
                    } } }
                } }
            }
        }
        section aria-labelledby="plan" {
            h2 #plan { "Recommendation" }
            @if newest.is_null() {
                p { "No recommendation yet: the optimizer runs every hour once the agent has sent a snapshot." }
            } @else {
                @let summary = &newest["summary"];
                p { "Revision " (newest["revision"]) ", " (when(&newest["created_at"])) ": "
                    strong #plan-status { (text(&newest["status"])) } }
                table.figures-table {
                    tbody {
                        tr { th scope="row" { "Now" } td { (money(number(&summary["current_monthly_cost"]))) " a month" } }
                        tr { th scope="row" { "Planned" } td { (money(number(&summary["monthly_cost"]))) " a month, "
                            (summary["nodes"]) " nodes (" (summary["spot_nodes"]) " spot)" } }
                        tr { th scope="row" { "Saves" } td { strong { (money(number(&summary["monthly_savings"]))) } " a month" } }
                        tr { th scope="row" { "Planned use" } td { "cpu " (percent(number(&summary["cpu_utilisation"])))
                            ", memory " (percent(number(&summary["mem_utilisation"]))) " of the planned nodes' capacity requested" } }
                    }
                }
                @if let Some(lines) = summary["explanation"].as_array() {
                    details { summary { "Why this plan" } ul { @for line in lines { li { (text(line)) } } } }
                }
                (view::mix_chart("Planned nodes by instance type.", &mix_rows(&newest["node_mix"])))
                @if newest["status"] == "proposed" && me.may_operate() {
                    form method="post" action=(format!("/console/clusters/{id}/recommendations/{}/approve", newest["revision"])) {
                        button #approve type="submit" { "Approve and roll out" }
                    }
                }
            }
        }
        @if !rollout.is_null() {
            section aria-labelledby="rollout" data-refresh-seconds=[rollout["completed_at"].is_null().then_some(ROLLOUT_REFRESH_SECONDS)] {
                h2 #rollout { "Rollout of revision " (rollout["revision"]) }
                p { strong { (text(&rollout["status"])) } ": " (text(&rollout["reason"])) }
                div.scroll { table {
                    thead { tr { th scope="col" { "" } th scope="col" { "Monthly cost" } th scope="col" { "Nodes" } th scope="col" { "Spot" } th scope="col" { "Pods pending" } } }
                    tbody {
                        (figures_row("Before", &rollout["before"]))
                        (figures_row("Planned", &rollout["planned"]))
                        @if !rollout["realised"].is_null() { (figures_row("Realised", &rollout["realised"])) }
                    }
                } }
                @if let Some(events) = rollout["events"].as_array() {
                    ol.events { @for event in events { li { (when(&event["at"])) " — " (text(&event["message"])) } } }
                }
                @if rollout["completed_at"].is_null() && rollout["cancel_requested_by"].is_null() && me.may_operate() {
                    form method="post" action=(format!("/console/clusters/{id}/recommendations/{}/cancel", rollout["revision"])) {
                        button.secondary type="submit" { "Cancel the rollout" }
                    }
                }
            }
        }
        section aria-labelledby="actions" {
            h2 #actions { "Actions" }
            div.scroll { table {
                thead { tr { th scope="col" { "Issued" } th scope="col" { "Action" } th scope="col" { "Status" } th scope="col" { "Result" } } }
                tbody { @for record in actions["items"].as_array().into_iter().flatten() { tr {
                    td { (when(&record["created_at"])) }
                    td { (text(&record["action"]["spec"]["kind"])) " " (record["action"]["spec"]["node"].as_str().unwrap_or("")) br; small { (text(&record["action"]["reason"])) } }
                    td { (text(&record["status"])) }
                    td { small { (record["status_reason"].as_str().unwrap_or("")) } }
                } } }
            } }
        }
        section aria-labelledby="pods" {
            h2 #pods { "Pod history" }
            div.scroll { table #pod-history {
                thead { tr { th scope="col" { "At" } th scope="col" { "Pod" } th scope="col" { "Workload" } th scope="col" { "Change" } } }
                tbody { @for entry in pod_history["items"].as_array().into_iter().flatten() { tr {
                    td { (when(&entry["at"])) } td { (text(&entry["pod"])) } td { (entry["owner"].as_str().unwrap_or("")) }
                    td { (pod_change(entry)) }
                } } }
            } }
        }
        section aria-labelledby="events" {
            h2 #events { "Recent events" }
            ul.feed { @for event in detail["events"].as_array().into_iter().flatten().take(15) {
                li { (when(&event["at"])) " " strong { (text(&event["kind"])) } " " (text(&event["message"])) }
            } }
        }
    };
    Ok(view::layout(&title, &me, Some(Section::Overview), notice.text(), body).into_response())
}

/// A running rollout's page reloads itself this often.
const ROLLOUT_REFRESH_SECONDS: u32 = 20;

/// How much of the nodes' allocatable capacity pods request, and used at the snapshot.
struct ClusterLoad {
    cpu_requested: f64,
    memory_requested: f64,
    used: Option<(f64, f64)>,
}

impl ClusterLoad {
    fn of(nodes: &[Value]) -> Self {
        let sum = |field: &str| nodes.iter().map(|n| number(&n[field])).sum::<f64>();
        let share = |part: f64, whole: f64| if whole > 0.0 { part / whole } else { 0.0 };
        let (cpu, memory) = (sum("cpu_allocatable_m"), sum("memory_allocatable_mib"));
        let metered = nodes.iter().any(|n| !n["cpu_used_m"].is_null());
        Self {
            cpu_requested: share(sum("cpu_requested_m"), cpu),
            memory_requested: share(sum("memory_requested_mib"), memory),
            used: metered.then(|| {
                (
                    share(sum("cpu_used_m"), cpu),
                    share(sum("memory_used_mib"), memory),
                )
            }),
        }
    }
}

/// A share of a node's capacity as a gauge and a percentage.
fn share_cell(part: &Value, whole: &Value) -> Markup {
    let whole = number(whole);
    let share = if whole > 0.0 {
        number(part) / whole
    } else {
        0.0
    };
    html! {
        meter min="0" max="1" high="0.9" value=(format!("{share:.3}")) aria-hidden="true" {}
        " " (percent(share))
    }
}

/// A pod history entry's change in words.
fn pod_change(entry: &Value) -> String {
    let pair = |v: &Value| format!("{} → {}", v[0], v[1]);
    match entry["change"].as_str() {
        Some("started") => format!(
            "started on {}",
            entry["node"].as_str().unwrap_or("no node yet")
        ),
        Some("moved") => format!("moved {} → {}", text(&entry["from"]), text(&entry["to"])),
        Some("gone") => format!("gone from {}", entry["node"].as_str().unwrap_or("no node")),
        Some("resized") => format!(
            "resized: cpu {} m, memory {} MiB",
            pair(&entry["cpu_m"]),
            pair(&entry["mem_mib"])
        ),
        other => other.unwrap_or("changed").to_owned(),
    }
}

pub async fn approve(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((id, revision)): Path<(String, u64)>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    apply(
        &console,
        &token,
        Method::POST,
        &format!("/v1/clusters/{id}/recommendations/{revision}/approve"),
        None,
        &format!("/console/clusters/{id}"),
        &format!("Revision {revision} approved: its rollout has started."),
    )
    .await
}

pub async fn cancel_rollout(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((id, revision)): Path<(String, u64)>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    apply(
        &console,
        &token,
        Method::POST,
        &format!("/v1/clusters/{id}/recommendations/{revision}/rollout/cancel"),
        None,
        &format!("/console/clusters/{id}"),
        "The rollout stops at its next safe point.",
    )
    .await
}

// ---------------------------------------------------------------- hibernation

pub async fn hibernation(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let (current, preview) = tokio::try_join!(
        api.get(format!("/v1/clusters/{id}/hibernation")),
        api.get_or_null(format!("/v1/clusters/{id}/hibernation/preview")),
    )?;
    let schedule = &current["schedule"];
    let awake: Vec<Vec<bool>> = (0..7)
        .map(|day| {
            let hours = schedule["awake"][day].as_str().unwrap_or("");
            (0..24)
                .map(|h| hours.as_bytes().get(h).is_none_or(|b| *b == b'1'))
                .collect()
        })
        .collect();
    let editable = me.may_operate();
    let body = html! {
        p { "Tick the hours the cluster is awake, in its time zone; the others it sleeps: node groups scale to zero and come back before the next awake hour. Drag across the grid to paint several hours." }
        form.stack method="post" action=(format!("/console/clusters/{id}/hibernation")) {
            input type="hidden" name="version" value=(current["version"]);
            label.inline { input #enabled type="checkbox" name="enabled" value="on" checked[schedule["enabled"] == true] disabled[!editable]; " Hibernation on" }
            label for="time_zone" { "Time zone (IANA name)" }
            input #time_zone name="time_zone" value=(text(&schedule["time_zone"])) maxlength="64" required disabled[!editable];
            div.scroll {
                table.grid data-grid {
                    caption { "Awake hours, Monday to Sunday, 00 to 23" }
                    thead { tr { th scope="col" { "Day" } @for h in 0..24 { th scope="col" { (format!("{h:02}")) } } } }
                    tbody { @for (d, hours) in awake.iter().enumerate() { tr {
                        th scope="row" { (DAYS[d]) }
                        @for (h, on) in hours.iter().enumerate() {
                            td { input type="checkbox" name=(format!("h{d}_{h}")) value="1" checked[*on] disabled[!editable]
                                aria-label=(format!("{} {h:02}:00 awake", DAYS[d])); }
                        }
                    } } }
                }
            }
            @if editable { button #save-hibernation type="submit" { "Save schedule" } }
        }
        section aria-labelledby="preview" {
            h2 #preview { "The next seven days" }
            @if preview.is_null() {
                p { "No preview." }
            } @else {
                p #hibernation-savings { "Asleep " (format!("{:.0}", number(&preview["asleep_hours"]))) " hours, saving about "
                    (money(number(&preview["estimated_savings_usd"]))) "." }
                ul { @for t in preview["transitions"].as_array().into_iter().flatten().take(14) {
                    li { (when(&t["at"])) " — " (t["to"].as_str().or(t["state"].as_str()).or(t["kind"].as_str()).unwrap_or("change")) }
                } }
            }
        }
    };
    Ok(view::layout(
        "Hibernation",
        &me,
        Some(Section::Overview),
        notice.text(),
        body,
    )
    .into_response())
}

/// The week's `awake` strings from the ticked boxes.
fn awake_from_form(fields: &[(String, String)]) -> Vec<String> {
    let mut grid = [[b'0'; 24]; 7];
    for (name, _) in fields {
        if let Some((d, h)) = name.strip_prefix('h').and_then(|rest| rest.split_once('_'))
            && let (Ok(d), Ok(h)) = (d.parse::<usize>(), h.parse::<usize>())
            && d < 7
            && h < 24
        {
            grid[d][h] = b'1';
        }
    }
    grid.iter()
        .map(|day| String::from_utf8_lossy(day).into_owned())
        .collect()
}

pub async fn save_hibernation(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let field = |name: &str| super::form_value(&fields, name);
    let current = api.get(format!("/v1/clusters/{id}/hibernation")).await?;
    let schedule = &current["schedule"];
    let settings = json!({
        "enabled": field("enabled") == Some("on"),
        "time_zone": field("time_zone").unwrap_or("UTC"),
        "awake": awake_from_form(&fields),
        "scale_node_groups": schedule["scale_node_groups"],
        "exclude_node_groups": schedule["exclude_node_groups"],
        "scale_workloads": schedule["scale_workloads"],
        "exclude_namespaces": schedule["exclude_namespaces"],
        "exclude_labels": schedule["exclude_labels"],
        "cordon_nodes": schedule["cordon_nodes"],
    });
    let version = field("version").unwrap_or("0");
    api.change(
        Method::PUT,
        &format!("/v1/clusters/{id}/hibernation"),
        Some(&settings),
        Some(&format!("\"{version}\"")),
    )
    .await?;
    Ok(back_to(
        &format!("/console/clusters/{id}/hibernation"),
        "Hibernation schedule saved.",
    ))
}

// ---------------------------------------------------------------- notifications

pub async fn notifications(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    notifications_page(&console, &token, &me, notice.text()).await
}

async fn notifications_page(console: &Console, token: &str, me: &Me, notice: Option<&str>) -> Page {
    let api = console.client(Some(token));
    let (webhooks, feed) = tokio::try_join!(
        api.get("/v1/webhooks?limit=100"),
        api.get_or_null("/v1/notifications?limit=25"),
    )?;
    let body = html! {
        section aria-labelledby="webhooks" {
            h2 #webhooks { "Webhooks" }
            div.scroll { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "URL" } th scope="col" { "From" } th scope="col" { "State" } th scope="col" { "" } } }
                tbody { @for hook in webhooks["items"].as_array().into_iter().flatten() {
                    @let hook_id = text(&hook["id"]);
                    tr {
                        td { a href=(format!("/console/webhooks/{hook_id}")) { (text(&hook["name"])) } }
                        td { (text(&hook["kind"])) }
                        td.url { (text(&hook["url"])) }
                        td { (text(&hook["min_severity"])) }
                        td { @if hook["enabled"] == true { "enabled" } @else { "disabled" } }
                        td { @if me.may_operate() {
                            form method="post" action=(format!("/console/webhooks/{hook_id}/test")) {
                                button.secondary type="submit" aria-label=(format!("Send a test to {}", text(&hook["name"]))) { "Send test" }
                            }
                        } }
                    }
                } }
            } }
        }
        @if me.may_operate() {
            section aria-labelledby="add" {
                h2 #add { "Add a webhook" }
                form.stack method="post" action="/console/notifications" {
                    label for="name" { "Name" }
                    input #name name="name" required maxlength="100";
                    label for="kind" { "Kind" }
                    select #kind name="kind" {
                        option value="slack" { "Slack" } option value="teams" { "Microsoft Teams" }
                        option value="discord" { "Discord" } option value="generic" selected { "Signed webhook (generic JSON)" }
                    }
                    label for="url" { "URL" }
                    input #url name="url" type="url" required maxlength="2048" placeholder="https://hooks.example.com/…";
                    label for="min_severity" { "Send notifications from" }
                    select #min_severity name="min_severity" {
                        option value="info" { "info" } option value="warning" { "warning" } option value="critical" { "critical" }
                    }
                    button #add-webhook type="submit" { "Add webhook" }
                }
            }
        }
        section aria-labelledby="feed" {
            h2 #feed { "Notifications" }
            (feed_list(&feed))
        }
    };
    Ok(view::layout(
        "Notifications",
        me,
        Some(Section::Notifications),
        notice,
        body,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct WebhookForm {
    name: String,
    kind: String,
    url: String,
    min_severity: String,
}

pub async fn add_webhook(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<WebhookForm>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let body = json!({"name": form.name, "kind": form.kind, "url": form.url, "min_severity": form.min_severity});
    let created = console
        .client(Some(&token))
        .change(Method::POST, "/v1/webhooks", Some(&body), None)
        .await?;
    // The signing secret is shown this once, so the page is answered here, not redirected to.
    let notice = match created["secret"].as_str() {
        Some(secret) => format!("Webhook added. Its signing secret, shown only now: {secret}"),
        None => "Webhook added.".to_owned(),
    };
    notifications_page(&console, &token, &me, Some(&notice)).await
}

pub async fn test_webhook(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    let result = console
        .client(Some(&token))
        .change(Method::POST, &format!("/v1/webhooks/{id}/test"), None, None)
        .await?;
    let status = result["status"]
        .as_u64()
        .map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
    Ok(back_to(
        &format!("/console/webhooks/{id}"),
        &format!(
            "Test sent: {} ({status}, {} ms).",
            text(&result["outcome"]),
            result["latency_ms"]
        ),
    ))
}

pub async fn webhook(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let (hook, deliveries) = tokio::try_join!(
        api.get(format!("/v1/webhooks/{id}")),
        api.get_or_null(format!("/v1/webhooks/{id}/deliveries?limit=50")),
    )?;
    let body = html! {
        p { (text(&hook["kind"])) " · " span.url { (text(&hook["url"])) } }
        h2 { "Deliveries" }
        div.scroll { table #deliveries {
            thead { tr { th scope="col" { "At" } th scope="col" { "Event" } th scope="col" { "Attempt" } th scope="col" { "Outcome" } th scope="col" { "HTTP" } th scope="col" { "Answer" } } }
            tbody { @for d in deliveries["items"].as_array().into_iter().flatten() { tr {
                td { (when(&d["at"])) } td { (text(&d["event_type"])) } td { (d["attempt"]) }
                td { (text(&d["outcome"])) } td { (d["status"].as_u64().map(|s| s.to_string()).unwrap_or_default()) }
                td { small { (d["response"].as_str().unwrap_or("")) } }
            } } }
        } }
        p { a href="/console/notifications" { "All webhooks" } }
    };
    Ok(view::layout(
        &format!("Webhook {}", text(&hook["name"])),
        &me,
        Some(Section::Notifications),
        notice.text(),
        body,
    )
    .into_response())
}

// ---------------------------------------------------------------- admin

const ROLES: [&str; 3] = ["viewer", "operator", "admin"];

/// The audit log's filter: an action such as `user.sign_in`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditFilter {
    action: Option<String>,
    /// First day, `2026-12-01`.
    since: Option<String>,
    /// Last day, inclusive.
    until: Option<String>,
}

impl AuditFilter {
    /// The filter as API query parameters; a part that is not an action name or a date is
    /// left out.
    fn query(&self) -> String {
        let mut query = String::new();
        if let Some(action) = self.action.as_deref().filter(|a| {
            !a.is_empty()
                && a.len() <= 64
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        }) {
            query.push_str(&format!("&action={action}"));
        }
        let day = |value: &Option<String>| {
            value.as_deref().and_then(|d| {
                time::Date::parse(d, time::macros::format_description!("[year]-[month]-[day]")).ok()
            })
        };
        if let Some(since) = day(&self.since) {
            query.push_str(&format!("&since={since}T00:00:00Z"));
        }
        if let Some(until) = day(&self.until).and_then(|d| d.next_day()) {
            query.push_str(&format!("&until={until}T00:00:00Z"));
        }
        query
    }
}

pub async fn export_audit(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(filter): Query<AuditFilter>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    console
        .client(Some(&token))
        .download(&format!("/v1/audit/export?format=csv{}", filter.query()))
        .await
}

pub async fn admin(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
    Query(filter): Query<AuditFilter>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    admin_page(&console, &token, &me, notice.text(), &filter).await
}

pub(super) async fn admin_page(
    console: &Console,
    token: &str,
    me: &Me,
    notice: Option<&str>,
    filter: &AuditFilter,
) -> Page {
    let api = console.client(Some(token));
    let (users, keys, audit, status_page) = tokio::try_join!(
        api.get("/v1/users?limit=100"),
        api.get("/v1/keys?limit=100"),
        api.get(format!("/v1/audit?limit=50{}", filter.query())),
        api.get("/v1/tenant/status-page"),
    )?;
    let body = html! {
        section aria-labelledby="users" {
            h2 #users { "Users" }
            div.scroll { table {
                thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Authenticator" } th scope="col" { "Invited by" } th scope="col" { "" } } }
                tbody { @for user in users["items"].as_array().into_iter().flatten().filter(|u| u["removed_at"].is_null()) {
                    @let user_id = text(&user["id"]);
                    tr {
                        td { (text(&user["email"])) }
                        td { (text(&user["role"])) }
                        td { @if user["mfa"] == true {
                            "on "
                            form.inline method="post" action=(format!("/console/admin/users/{user_id}/mfa-reset")) {
                                button.secondary type="submit" aria-label=(format!("Turn off the authenticator of {}", text(&user["email"]))) { "Turn off" }
                            }
                        } @else { "off" } }
                        td { small { (text(&user["invited_by"])) " " (when(&user["created_at"])) } }
                        td { @if user["email"].as_str() != Some(me.name.as_str()) {
                            form.inline method="post" action=(format!("/console/admin/users/{user_id}")) {
                                label.visually-hidden for=(format!("role-{user_id}")) { "Role of " (text(&user["email"])) }
                                select id=(format!("role-{user_id}")) name="role" {
                                    @for role in ROLES { option value=(role) selected[user["role"] == role] { (role) } }
                                }
                                button.secondary type="submit" { "Change role" }
                            }
                            form.inline method="post" action=(format!("/console/users/{user_id}/delete")) {
                                button.secondary type="submit" aria-label=(format!("Remove {}", text(&user["email"]))) { "Remove" }
                            }
                        } }
                    }
                } }
            } }
            h3 { "Invite someone" }
            form.stack method="post" action="/console/admin" {
                label for="email" { "Email" }
                input #email name="email" type="email" required maxlength="254";
                label for="role" { "Role" }
                select #role name="role" { @for role in ROLES { option value=(role) { (role) } } }
                button #invite type="submit" { "Send invitation" }
            }
        }
        section aria-labelledby="public" {
            h2 #public { "Public status page" }
            @if status_page["enabled"] == true {
                p { "Anyone with the link sees each cluster's agent health and 90-day uptime, and the savings realised; nothing else. " }
                ul {
                    li { a #status-link href=(text(&status_page["page_path"])) { "The status page" } }
                    li { "Savings badge: " img #savings-badge src=(text(&status_page["badge_path"])) alt="Spot savings badge";
                        br; code { "<img src=\"" (text(&status_page["badge_path"])) "\" alt=\"Spot savings\">" } }
                }
                form method="post" action="/console/admin/status-page" {
                    input type="hidden" name="enabled" value="false";
                    button.secondary #unpublish type="submit" { "Take the page down" }
                }
            } @else {
                p { "Off. Publishing gives the page a random address; taking it down and publishing again changes it." }
                form method="post" action="/console/admin/status-page" {
                    input type="hidden" name="enabled" value="true";
                    button #publish type="submit" { "Publish the status page" }
                }
            }
        }
        section aria-labelledby="keys" {
            h2 #keys { "API keys" }
            div.scroll { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Starts with" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Revoked" } } }
                tbody { @for key in keys["items"].as_array().into_iter().flatten() { tr {
                    td { (text(&key["name"])) } td { code { (text(&key["prefix"])) "…" } } td { (text(&key["role"])) }
                    td { (when(&key["created_at"])) }
                    td { @if key["revoked_at"].is_null() {
                        form method="post" action=(format!("/console/keys/{}/delete", text(&key["id"]))) {
                            button.secondary type="submit" aria-label=(format!("Revoke {}", text(&key["name"]))) { "Revoke" }
                        }
                    } @else { (when(&key["revoked_at"])) } }
                } } }
            } }
            h3 { "New key" }
            form.inline method="post" action="/console/keys" {
                label for="key-name" { "Name" }
                input #key-name name="name" required maxlength="100";
                label for="key-role" { "Role" }
                select #key-role name="role" { @for role in ROLES { option value=(role) { (role) } } }
                button.secondary #create-key type="submit" { "Create key" }
            }
            p { a href="/console/accounts" { "Linked accounts" } }
        }
        section aria-labelledby="audit" {
            h2 #audit { "Audit log" }
            form.inline method="get" action="/console/admin" {
                label for="action" { "Action" }
                input #action name="action" value=(filter.action.as_deref().unwrap_or("")) placeholder="user.sign_in" maxlength="64";
                label for="since" { "From" }
                input #since name="since" type="date" value=(filter.since.as_deref().unwrap_or(""));
                label for="until" { "To" }
                input #until name="until" type="date" value=(filter.until.as_deref().unwrap_or(""));
                button.secondary #filter-audit type="submit" { "Filter" }
                a href=(format!("/console/admin/audit.csv?{}", filter.query().trim_start_matches('&'))) download { "Export CSV" }
            }
            div.scroll { table #audit-log {
                thead { tr { th scope="col" { "At" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "On" } } }
                tbody { @for event in audit["items"].as_array().into_iter().flatten() { tr {
                    td { (when(&event["at"])) } td { (text(&event["actor"])) } td { (text(&event["action"])) } td { small { (text(&event["target"])) } }
                } } }
            } }
        }
    };
    Ok(view::layout("Admin", me, Some(Section::Admin), notice, body).into_response())
}

#[derive(Debug, Deserialize)]
pub struct StatusPageForm {
    enabled: bool,
}

pub async fn status_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<StatusPageForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let done = if form.enabled {
        "The status page is public."
    } else {
        "The status page is down."
    };
    apply(
        &console,
        &token,
        Method::PUT,
        "/v1/tenant/status-page",
        Some(&json!({"enabled": form.enabled})),
        "/console/admin",
        done,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct InviteForm {
    email: String,
    role: String,
}

pub async fn invite(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let body = json!({"email": form.email, "role": form.role});
    let user = console
        .client(Some(&token))
        .change(Method::POST, "/v1/users", Some(&body), None)
        .await?;
    Ok(back_to(
        "/console/admin",
        &format!(
            "Invited {} as {}: the user pool emails them a temporary password.",
            text(&user["email"]),
            text(&user["role"])
        ),
    ))
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    role: String,
}

pub async fn change_role(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RoleForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    let user = console
        .client(Some(&token))
        .change(
            Method::PUT,
            &format!("/v1/users/{id}"),
            Some(&json!({"role": form.role})),
            None,
        )
        .await?;
    Ok(back_to(
        "/console/admin",
        &format!("{} is now {}.", text(&user["email"]), text(&user["role"])),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticked_boxes_become_the_weeks_awake_hours() {
        let fields = vec![
            ("version".to_owned(), "3".to_owned()),
            ("h0_9".to_owned(), "1".to_owned()),
            ("h0_10".to_owned(), "1".to_owned()),
            ("h6_23".to_owned(), "1".to_owned()),
            ("h7_1".to_owned(), "1".to_owned()),
            ("h0_24".to_owned(), "1".to_owned()),
            ("hx_1".to_owned(), "1".to_owned()),
        ];
        let awake = awake_from_form(&fields);
        assert_eq!(awake.len(), 7);
        assert_eq!(awake[0], format!("{}11{}", "0".repeat(9), "0".repeat(13)));
        assert_eq!(awake[6], format!("{}1", "0".repeat(23)));
        assert!(awake[1..6].iter().all(|d| d == &"0".repeat(24)));
    }

    #[test]
    fn audit_filters_reach_the_api_only_as_actions_and_days() {
        let filter = AuditFilter {
            action: Some("user.sign_in".into()),
            since: Some("2026-12-01".into()),
            until: Some("2026-12-04".into()),
        };
        assert_eq!(
            filter.query(),
            "&action=user.sign_in&since=2026-12-01T00:00:00Z&until=2026-12-05T00:00:00Z"
        );
        let hostile = AuditFilter {
            action: Some("x&key=y".into()),
            since: Some("2026-13-01".into()),
            until: Some("yesterday".into()),
        };
        assert_eq!(hostile.query(), "");
    }

    #[test]
    fn pod_changes_read_as_words() {
        assert_eq!(
            pod_change(&json!({"change": "moved", "from": "a", "to": "b"})),
            "moved a → b"
        );
        assert_eq!(
            pod_change(&json!({"change": "resized", "cpu_m": [500, 68], "mem_mib": [1024, 345]})),
            "resized: cpu 500 → 68 m, memory 1024 → 345 MiB"
        );
        assert_eq!(
            pod_change(&json!({"change": "started"})),
            "started on no node yet"
        );
    }

    #[test]
    fn notices_are_bounded_and_encoded_into_the_redirect() {
        assert_eq!(url_encode("Saved: r7 & more"), "Saved%3A%20r7%20%26%20more");
        let long = Notice {
            notice: Some("x".repeat(MAX_NOTICE + 1)),
        };
        assert_eq!(long.text(), None);
    }

    #[test]
    fn node_mix_rows_count_spot_and_on_demand_per_type() {
        let mix = json!([
            {"instance_type": "m5.large", "capacity_type": "spot", "nodes": 2},
            {"instance_type": "m5.large", "capacity_type": "on-demand", "nodes": 1},
            {"instance_type": "c6g.xlarge", "capacity_type": "spot"},
        ]);
        assert_eq!(
            mix_rows(&mix),
            vec![("c6g.xlarge".into(), 1, 0), ("m5.large".into(), 2, 1)]
        );
    }
}
