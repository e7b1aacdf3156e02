//! A cluster's right-sizing: each workload's requests now and as recommended with the usage
//! behind them, applying a ready recommendation, and how the applied changes ended.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::IntoResponse;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{Notice, Page, apply, signed_in};
use super::view::{self, Section, money, number, text, when};
use super::{Console, segment};

pub async fn page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let id = segment(&id)?;
    let view = console
        .client(Some(&token))
        .get(format!("/v1/clusters/{id}/rightsizing"))
        .await?;
    let workloads = view["workloads"].as_array().cloned().unwrap_or_default();
    let changes = view["changes"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { a href=(format!("/console/clusters/{id}")) { "Back to the cluster" } }
        @if view["revision"].is_null() {
            p { "No plan yet: recommendations come with the first plan, once the agent has sent usage." }
        } @else {
            p { "From plan revision " (view["revision"]) ". The ready recommendations free requests worth "
                strong #ready-saving { (money(number(&view["ready_monthly_saving"]))) } " a month; with all of them applied the node plan costs "
                strong { (money(number(&view["projected_monthly_saving"]))) } " a month less." }
        }
        section aria-labelledby="workloads" {
            h2 #workloads { "Workloads" }
            div.scroll { table #rightsizing {
                thead { tr { th scope="col" { "Workload" } th scope="col" { "Status" } th scope="col" { "Container requests: now → recommended" }
                    th scope="col" { "Usage (cpu p95, memory peak)" } th scope="col" { "A month" } th scope="col" { "" } } }
                tbody { @for workload in &workloads { tr {
                    td { (text(&workload["key"])) br; small { (workload["replicas"]) " replicas · mode " (text(&workload["mode"])) } }
                    td { (text(&workload["status"])) br; small { (text(&workload["reason"])) } }
                    td { (containers(&workload["containers"], false)) }
                    td { (containers(&workload["containers"], true)) }
                    td { (money(number(&workload["monthly_saving"]))) }
                    td { @if workload["status"] == "ready" && me.may_operate() {
                        form.inline method="post" action=(format!("/console/clusters/{id}/rightsizing")) {
                            input type="hidden" name="workload" value=(text(&workload["key"]));
                            button type="submit" aria-label=(format!("Apply to {}", text(&workload["key"]))) { "Apply" }
                        }
                    } }
                } } }
            } }
        }
        section aria-labelledby="changes" {
            h2 #changes { "Applied changes" }
            @if changes.is_empty() {
                p { "None yet." }
            } @else {
                div.scroll { table #resize-changes {
                    thead { tr { th scope="col" { "Asked" } th scope="col" { "Workload" } th scope="col" { "Status" } th scope="col" { "Requests: before → after" } th scope="col" { "Why" } } }
                    tbody { @for change in &changes { tr {
                        td { (when(&change["created_at"])) br; small { (text(&change["requested_by"])) } }
                        td { (workload_name(&change["workload"])) }
                        td { (text(&change["status"])) @if !change["watch_until"].is_null() && change["finished_at"].is_null() {
                            br; small { "watched until " (when(&change["watch_until"])) } } }
                        td { (containers(&change["containers"], false)) }
                        td { small { (text(&change["reason"])) } }
                    } } }
                } }
            }
        }
    };
    let title = "Right-sizing";
    Ok(view::layout(title, &me, Some(Section::Overview), notice.text(), body).into_response())
}

/// Each container's requests before and after, or the usage behind them.
fn containers(list: &Value, usage: bool) -> Markup {
    html! {
        @for container in list.as_array().into_iter().flatten() {
            @let (before, after) = (&container["before"], &container["after"]);
            div { small { (text(&before["name"])) ": " }
                @if usage {
                    @let used = &container["usage"];
                    @if used.is_null() { small { "no usage" } } @else {
                        (used["cpu_p95_m"]) "m, " (used["mem_peak_mib"]) " MiB " small { "over " (used["hours"]) " h" }
                    }
                } @else {
                    (before["cpu_request_m"]) "m → " (after["cpu_request_m"]) "m, "
                    (before["mem_request_mib"]) " → " (after["mem_request_mib"]) " MiB"
                }
            }
        }
    }
}

fn workload_name(workload: &Value) -> String {
    format!(
        "{}/{}/{}",
        text(&workload["namespace"]),
        text(&workload["kind"]),
        text(&workload["name"])
    )
}

#[derive(Debug, Deserialize)]
pub struct ApplyForm {
    workload: String,
}

pub async fn apply_recommendation(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ApplyForm>,
) -> Page {
    let (token, _) = signed_in(&console, &headers).await?;
    let id = segment(&id)?;
    let back = format!("/console/clusters/{id}/rightsizing");
    apply(
        &console,
        &token,
        Method::POST,
        &format!("/v1/clusters/{id}/rightsizing/apply"),
        Some(&json!({"workload": form.workload})),
        &back,
        &format!(
            "Applying to {}: the agent patches its requests and Spotwise watches it, reverting on an OOM kill or new restarts.",
            form.workload
        ),
    )
    .await
}
