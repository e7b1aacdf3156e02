//! The console's layout, charts and formatting. Charts are inline SVG with text equivalents,
//! so they need no script and screen readers get the figures.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use std::collections::BTreeMap;
use time::Date;

const STYLESHEET: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

pub async fn stylesheet() -> Response {
    asset(STYLESHEET, "text/css; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// The section a page belongs to, for the navigation's current-page mark.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Schedules,
    Notifications,
    Admin,
}

/// Who is signed in, from `/v1/me`.
pub struct Me {
    pub name: String,
    pub tenant: String,
    pub role: String,
    /// Whether signing in asks for an authenticator code.
    pub mfa: Option<bool>,
}

impl Me {
    pub fn from_api(value: &Value) -> Self {
        let text = |field: &str| value[field].as_str().unwrap_or_default().to_owned();
        Self {
            name: text("name"),
            tenant: text("tenant"),
            role: text("role"),
            mfa: value["mfa"].as_bool(),
        }
    }

    pub fn may_operate(&self) -> bool {
        matches!(self.role.as_str(), "operator" | "admin")
    }

    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Spotwise" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// A signed-in page.
pub fn layout(
    title: &str,
    me: &Me,
    section: Option<Section>,
    notice: Option<&str>,
    body: Markup,
) -> Html<String> {
    let link = |href: &str, label: &str, this: Section| {
        html! {
            @if section == Some(this) {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href="/console" { "Spotwise" }
                        nav aria-label="Sections" {
                            (link("/console", "Overview", Section::Overview))
                            (link("/console/schedules", "Scheduled runs", Section::Schedules))
                            (link("/console/notifications", "Notifications", Section::Notifications))
                            @if me.is_admin() {
                                (link("/console/admin", "Admin", Section::Admin))
                            }
                        }
                        div.who {
                            span { a href="/console/account" { (me.name) } " · " (me.tenant) " · " (me.role) }
                            form method="post" action="/console/sign-out" {
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                    main id="main" {
                        h1 { (title) }
                        @if let Some(notice) = notice {
                            p.notice role="status" { (notice) }
                        }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A page for someone not signed in: a narrow column (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    unsigned(title, "bare", body)
}

/// A public page (the status page): the full width, no navigation.
pub fn public(title: &str, body: Markup) -> Html<String> {
    unsigned(title, "public", body)
}

fn unsigned(title: &str, class: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title))
                body class=(class) {
                    main id="main" {
                        p.brand { "Spotwise" }
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not done",
        s if s.is_client_error() => "Not accepted",
        _ => "Something went wrong",
    };
    let page = bare(
        title,
        html! {
            p.error role="alert" { (message) }
            p { a href="/console" { "Back to the overview" } }
        },
    );
    (status, page).into_response()
}

/// A number the API gives as a JSON number or a decimal string.
pub fn number(value: &Value) -> f64 {
    match value {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// `$1,673.45`.
pub fn money(amount: f64) -> String {
    let cents = (amount.abs() * 100.0).round() as u64;
    let whole = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let sign = if amount < 0.0 && cents > 0 { "-" } else { "" };
    format!("{sign}${grouped}.{:02}", cents % 100)
}

pub fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// `2026-12-04 12:16 UTC` from an RFC 3339 time.
pub fn when(value: &Value) -> String {
    let Some(text) = value.as_str() else {
        return "—".into();
    };
    match text.split_once('T') {
        Some((date, time)) if time.len() >= 5 => format!("{date} {} UTC", &time[..5]),
        _ => text.to_owned(),
    }
}

pub fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("—")
}

/// This month by day: measured cost as bars, the days still to come as outlined bars at the
/// forecast (the cost of today's node mix), and the month's measured and forecast totals.
pub fn cost_chart(measured: &BTreeMap<String, f64>, today: Date, forecast_per_day: f64) -> Markup {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 150.0;
    let first = today.replace_day(1).unwrap_or(today);
    let days_in_month = today.month().length(today.year());
    let days: Vec<(Date, Option<f64>)> = (0..days_in_month)
        .filter_map(|i| first.checked_add(time::Duration::days(i64::from(i))))
        .map(|day| (day, measured.get(&day.to_string()).copied()))
        .collect();
    let bar = |day: &Date, cost: Option<f64>| match cost {
        Some(cost) => Some(("bar", cost)),
        None if *day >= today => Some(("forecast-bar", forecast_per_day)),
        None => None,
    };
    let top = days
        .iter()
        .filter_map(|(day, cost)| bar(day, *cost).map(|(_, c)| c))
        .fold(0.01, f64::max);
    let slot = WIDTH / f64::from(days_in_month);
    let y = |cost: f64| HEIGHT - cost / top * (HEIGHT - 10.0);
    let spent: f64 = days.iter().filter_map(|(_, c)| *c).sum();
    let to_come: f64 = days
        .iter()
        .filter(|(day, cost)| cost.is_none() && *day >= today)
        .count() as f64
        * forecast_per_day;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {}", HEIGHT + 18.0)) role="img"
                aria-label=(format!("Cost by day in {} {}: {} measured, {} forecast for the month",
                    today.month(), today.year(), money(spent), money(spent + to_come))) {
                @for (i, (day, cost)) in days.iter().enumerate() {
                    @if let Some((class, value)) = bar(day, *cost) {
                        rect class=(class) x=(format!("{:.1}", i as f64 * slot + slot * 0.15)) y=(format!("{:.1}", y(value)))
                            width=(format!("{:.1}", slot * 0.7)) height=(format!("{:.1}", HEIGHT - y(value))) {
                            title { (day) ": " (money(value)) @if cost.is_none() { " (forecast)" } }
                        }
                    }
                    @if i == 0 || (i + 1) % 5 == 0 {
                        text.axis x=(format!("{:.1}", i as f64 * slot + slot / 2.0)) y=(format!("{:.0}", HEIGHT + 14.0)) text-anchor="middle" {
                            (day.day())
                        }
                    }
                }
            }
            figcaption #cost-forecast {
                (money(spent)) " measured so far this month; " (money(spent + to_come))
                " forecast for the month, the days to come (outlined) at today's node mix, "
                (money(forecast_per_day)) " a day."
            }
        }
    }
}

/// Amounts as horizontal bars, largest first as given.
pub fn bars(caption: &str, rows: &[(String, f64)]) -> Markup {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 220.0;
    const WIDTH: f64 = 640.0;
    let most = rows
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0, f64::max)
        .max(0.000_1);
    let unit = (WIDTH - LABEL - 90.0) / most;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {:.0}", rows.len().max(1) as f64 * ROW)) role="img" aria-label=(caption) {
                @for (i, (name, value)) in rows.iter().enumerate() {
                    @let y = i as f64 * ROW;
                    text.axis x="0" y=(format!("{:.0}", y + 15.0)) { (name.chars().take(34).collect::<String>()) }
                    rect.bar x=(LABEL) y=(format!("{:.0}", y + 3.0)) width=(format!("{:.1}", value * unit)) height="16" {
                        title { (name) ": " (money(*value)) }
                    }
                    text.axis x=(format!("{:.1}", LABEL + value * unit + 4.0)) y=(format!("{:.0}", y + 15.0)) { (money(*value)) }
                }
            }
            figcaption { (caption) }
        }
    }
}

/// Nodes per instance type, spot and on-demand stacked.
pub fn mix_chart(caption: &str, rows: &[(String, u32, u32)]) -> Markup {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 150.0;
    const WIDTH: f64 = 480.0;
    let most = rows.iter().map(|(_, s, o)| s + o).max().unwrap_or(1).max(1) as f64;
    let unit = (WIDTH - LABEL - 40.0) / most;
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {WIDTH} {:.0}", rows.len().max(1) as f64 * ROW)) role="img" aria-label=(caption) {
                @for (i, (kind, spot, on_demand)) in rows.iter().enumerate() {
                    @let y = i as f64 * ROW;
                    text.axis x="0" y=(format!("{:.0}", y + 15.0)) { (kind) }
                    rect.spot x=(LABEL) y=(format!("{:.0}", y + 3.0)) width=(format!("{:.1}", *spot as f64 * unit)) height="16" {
                        title { (spot) " spot" }
                    }
                    rect.ondemand x=(format!("{:.1}", LABEL + *spot as f64 * unit)) y=(format!("{:.0}", y + 3.0))
                        width=(format!("{:.1}", *on_demand as f64 * unit)) height="16" {
                        title { (on_demand) " on-demand" }
                    }
                    text.axis x=(format!("{:.1}", LABEL + (spot + on_demand) as f64 * unit + 4.0)) y=(format!("{:.0}", y + 15.0)) {
                        (spot + on_demand)
                    }
                }
            }
            figcaption { (caption) " " span.key.spot { "spot" } " " span.key.ondemand { "on-demand" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_grouped_and_rounded_to_cents() {
        assert_eq!(money(1673.452), "$1,673.45");
        assert_eq!(money(297.84), "$297.84");
        assert_eq!(money(0.004), "$0.00");
        assert_eq!(money(1_234_567.0), "$1,234,567.00");
        assert_eq!(money(-32.266), "-$32.27");
    }

    #[test]
    fn numbers_come_as_json_numbers_or_decimal_strings() {
        assert_eq!(number(&serde_json::json!(1.5)), 1.5);
        assert_eq!(number(&serde_json::json!("1375.61")), 1375.61);
        assert_eq!(number(&serde_json::json!(null)), 0.0);
    }

    #[test]
    fn times_are_shown_to_the_minute() {
        assert_eq!(
            when(&serde_json::json!("2026-12-04T12:16:46.601194224Z")),
            "2026-12-04 12:16 UTC"
        );
        assert_eq!(when(&Value::Null), "—");
    }

    #[test]
    fn the_month_chart_forecasts_the_days_to_come() {
        let today = time::macros::date!(2026 - 12 - 04);
        let measured = BTreeMap::from([
            ("2026-12-02".to_owned(), 10.0),
            ("2026-12-04".to_owned(), 4.0),
        ]);
        let chart = cost_chart(&measured, today, 10.0).into_string();
        assert_eq!(chart.matches("class=\"bar\"").count(), 2);
        // The 5th to the 31st: 27 days to come.
        assert_eq!(chart.matches("class=\"forecast-bar\"").count(), 27);
        assert!(chart.contains("$14.00 measured so far this month; $284.00 forecast"));
    }

    #[test]
    fn text_in_charts_is_escaped() {
        let chart = mix_chart("<b>", &[("<script>".into(), 1, 2)]).into_string();
        assert!(!chart.contains("<script>"));
        assert!(chart.contains("&lt;script&gt;"));
    }
}
