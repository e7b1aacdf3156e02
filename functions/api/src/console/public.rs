//! The public status page and savings badge: no sign-in, rendered from `GET /v1/status/{id}`.

use axum::extract::Path;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::Value;

use super::view::{self, money, number, text, when};
use super::{Console, Failure, segment};

/// A day's colour on the 90-day strip.
fn day_class(uptime: &Value) -> &'static str {
    match uptime.as_f64() {
        None => "day-none",
        Some(u) if u >= 0.999 => "day-up",
        Some(u) if u >= 0.99 => "day-degraded",
        Some(_) => "day-down",
    }
}

fn strip(days: &[Value]) -> Markup {
    const CELL: f64 = 7.0;
    html! {
        svg.strip viewBox=(format!("0 0 {:.0} 24", days.len() as f64 * CELL)) role="img"
            aria-label=(format!("Uptime on each of the last {} days", days.len())) {
            @for (i, day) in days.iter().enumerate() {
                rect class=(day_class(day)) x=(format!("{:.0}", i as f64 * CELL)) y="0" width="5" height="24" {
                    title { @if let Some(u) = day.as_f64() { (format!("{:.2}%", u * 100.0)) } @else { "not monitored" } }
                }
            }
        }
    }
}

async fn status_of(console: &Console, id: &str) -> Result<Value, Failure> {
    let id = segment(id)?;
    console.client(None).get(format!("/v1/status/{id}")).await
}

pub async fn page(
    State(console): State<Console>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let status = status_of(&console, &id).await?;
    let clusters = status["clusters"].as_array().cloned().unwrap_or_default();
    let body = html! {
        p { "Spotwise agents in " (text(&status["tenant"])) "'s clusters, and their uptime over the last 90 days. Updated "
            (when(&status["generated_at"])) "." }
        div.scroll { table #status {
            thead { tr { th scope="col" { "Cluster" } th scope="col" { "Agent" } th scope="col" { "Uptime, 90 days" } th scope="col" { "Day by day" } } }
            tbody { @for cluster in &clusters { tr {
                td { (text(&cluster["name"])) }
                td { @match cluster["agent"].as_str() {
                    Some("online") => span.badge.good { "online" },
                    Some("offline") => span.badge.bad { "offline" },
                    _ => span.badge.muted { "not installed" },
                } }
                td { @if let Some(u) = cluster["uptime"].as_f64() { (format!("{:.2}%", u * 100.0)) } @else { "—" } }
                td { (strip(cluster["days"].as_array().map(Vec::as_slice).unwrap_or_default())) }
            } } }
        } }
        p #status-savings { "Spotwise saves " (text(&status["tenant"])) " " (money(number(&status["monthly_savings"]))) " a month." }
    };
    let mut response =
        view::public(&format!("{} status", text(&status["tenant"])), body).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}

/// An SVG badge: `spot savings | $1,375.61/mo`.
pub async fn badge(State(console): State<Console>, Path(id): Path<String>) -> Response {
    let Ok(status) = status_of(&console, &id).await else {
        return (StatusCode::NOT_FOUND, "no such status page").into_response();
    };
    let label = "spot savings";
    let value = format!("{}/mo", money(number(&status["monthly_savings"])));
    // Verdana 11 px averages under 7 px a character; the badge is sized from that.
    let width = |s: &str| s.chars().count() as f64 * 6.8 + 12.0;
    let (left, right) = (width(label), width(&value));
    let svg = html! {
        svg xmlns="http://www.w3.org/2000/svg" width=(format!("{:.0}", left + right)) height="20" role="img"
            aria-label=(format!("{label}: {value}")) {
            title { (label) ": " (value) }
            rect width=(format!("{left:.0}")) height="20" fill="#555" {}
            rect x=(format!("{left:.0}")) width=(format!("{right:.0}")) height="20" fill="#1a7f37" {}
            g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11" text-anchor="middle" {
                text x=(format!("{:.0}", left / 2.0)) y="14" { (label) }
                text x=(format!("{:.0}", left + right / 2.0)) y="14" { (value) }
            }
        }
    };
    let mut response = svg.into_string().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_coloured_by_uptime() {
        assert_eq!(day_class(&serde_json::json!(1.0)), "day-up");
        assert_eq!(day_class(&serde_json::json!(0.995)), "day-degraded");
        assert_eq!(day_class(&serde_json::json!(0.5)), "day-down");
        assert_eq!(day_class(&Value::Null), "day-none");
    }
}
