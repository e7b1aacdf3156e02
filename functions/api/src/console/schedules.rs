//! Scheduled runs: the tenant's schedules with their next runs, pause, resume and run now, and
//! a new schedule whose cron expression is checked as it is typed.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{Html, IntoResponse};
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::pages::{Notice, Page, apply, back_to, signed_in};
use super::view::{self, Section, text, when};
use super::{Console, Failure, segment, session_token};

const KINDS: [(&str, &str); 3] = [
    ("optimize", "Plan the cluster"),
    ("discovery", "Re-read the account"),
    ("report", "Send the savings report"),
];

pub async fn schedules(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let (schedules, clusters) = tokio::try_join!(
        api.get("/v1/schedules?limit=100"),
        api.get("/v1/clusters?limit=100"),
    )?;
    let body = html! {
        div.scroll { table #schedules {
            thead { tr { th scope="col" { "Name" } th scope="col" { "Cluster" } th scope="col" { "Runs" } th scope="col" { "When" }
                th scope="col" { "Next" } th scope="col" { "State" } th scope="col" { "" } } }
            tbody { @for view in schedules["items"].as_array().into_iter().flatten() {
                @let run = &view["schedule"];
                @let schedule_id = text(&run["id"]);
                tr {
                    td { (text(&run["name"])) } td { (text(&run["cluster_id"])) } td { (text(&run["kind"])) }
                    td { code { (text(&run["cron"])) } " " small { (text(&run["time_zone"])) } }
                    td { small { (view["next_runs"][0].as_str().unwrap_or("—")) } }
                    td { (text(&run["status"])) @if let Some(reason) = run["paused_reason"].as_str() { br; small { (reason) } } }
                    td { @if me.may_operate() {
                        div.actions {
                            @let toggle = if run["status"] == "paused" { "resume" } else { "pause" };
                            form method="post" action=(format!("/console/schedules/{schedule_id}/{toggle}")) {
                                button.secondary type="submit" { (if toggle == "resume" { "Resume" } else { "Pause" }) }
                            }
                            form method="post" action=(format!("/console/schedules/{schedule_id}/trigger")) {
                                button.secondary type="submit" { "Run now" }
                            }
                        }
                    } }
                }
            } }
        } }
        @if me.may_operate() {
            section aria-labelledby="new" {
                h2 #new { "New schedule" }
                form.stack method="post" action="/console/schedules" {
                    label for="name" { "Name" }
                    input #name name="name" required maxlength="100";
                    label for="cluster_id" { "Cluster" }
                    select #cluster_id name="cluster_id" {
                        @for cluster in clusters["items"].as_array().into_iter().flatten() {
                            option value=(text(&cluster["id"])) { (text(&cluster["name"])) " (" (text(&cluster["region"])) ")" }
                        }
                    }
                    label for="kind" { "Run" }
                    select #kind name="kind" { @for (kind, label) in KINDS { option value=(kind) { (label) } } }
                    label for="cron" { "Cron (minute hour day-of-month month day-of-week, or @daily)" }
                    input #cron name="cron" required maxlength="200" placeholder="0 6 * * MON-FRI" data-cron-check aria-describedby="cron-preview";
                    label for="time_zone" { "Time zone" }
                    input #time_zone name="time_zone" value="UTC" required maxlength="64";
                    output #cron-preview aria-live="polite" {}
                    button #add-schedule type="submit" { "Add schedule" }
                }
            }
        }
    };
    Ok(view::layout(
        "Scheduled runs",
        &me,
        Some(Section::Schedules),
        notice.text(),
        body,
    )
    .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ScheduleForm {
    name: String,
    cluster_id: String,
    kind: String,
    cron: String,
    time_zone: String,
}

pub async fn add(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ScheduleForm>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let body = json!({"name": form.name, "cluster_id": form.cluster_id, "kind": form.kind,
        "cron": form.cron, "time_zone": form.time_zone});
    let created = console
        .client(Some(&token))
        .change(Method::POST, "/v1/schedules", Some(&body), None)
        .await?;
    Ok(back_to(
        "/console/schedules",
        &format!(
            "Schedule added; first run {}.",
            created["next_runs"][0]
                .as_str()
                .unwrap_or("not yet planned")
        ),
    ))
}

pub async fn act(
    State(console): State<Console>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    let done = match action.as_str() {
        "pause" => "Paused.",
        "resume" => "Resumed.",
        "trigger" => "Run started.",
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
        Method::POST,
        &format!("/v1/schedules/{id}/{action}"),
        None,
        "/console/schedules",
        done,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct CronQuery {
    cron: String,
    time_zone: Option<String>,
}

/// What the schedule form shows under the cron field as it is typed: the next runs, or why the
/// expression is refused, in the API's words.
pub async fn cron_preview(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(query): Query<CronQuery>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let body = json!({"cron": query.cron, "time_zone": query.time_zone.as_deref().unwrap_or("UTC"), "count": 3});
    let answer = console
        .client(Some(&token))
        .send(
            Method::POST,
            "/v1/schedules/validate-cron",
            Some(&body),
            None,
        )
        .await?;
    let fragment = if answer.status.is_success() {
        html! {
            span.ok { "Next runs: "
                @for (i, run) in answer.body["next_runs"].as_array().into_iter().flatten().enumerate() {
                    @if i > 0 { ", " } (when(run))
                }
            }
        }
    } else {
        html! { span.invalid { (answer.message()) } }
    };
    Ok(Html(fragment.into_string()).into_response())
}
