//! A cluster's costs by namespace, workload, pod, node or label over a chosen range, with the
//! CSV export and the monthly savings reports.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use maud::html;
use serde::Deserialize;

use super::pages::{Page, signed_in};
use super::view::{self, Section, money, number, text};
use super::{Console, Failure, segment, session_token};

const DIMENSIONS: [(&str, &str); 5] = [
    ("namespace", "Namespace"),
    ("workload", "Workload"),
    ("node", "Node"),
    ("label", "Label"),
    ("pod", "Pod"),
];
const GRANULARITIES: [(&str, &str); 3] = [("day", "Day"), ("month", "Month"), ("hour", "Hour")];

/// The page's choices, as the form sends them.
#[derive(Debug, Default, Deserialize)]
pub struct Range {
    dimension: Option<String>,
    granularity: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl Range {
    fn dimension(&self) -> &str {
        let chosen = self.dimension.as_deref().unwrap_or_default();
        DIMENSIONS
            .iter()
            .find(|(name, _)| *name == chosen)
            .map_or("namespace", |(name, _)| name)
    }

    fn granularity(&self) -> &str {
        let chosen = self.granularity.as_deref().unwrap_or_default();
        GRANULARITIES
            .iter()
            .find(|(name, _)| *name == chosen)
            .map_or("day", |(name, _)| name)
    }

    /// A period bound as typed, if it looks like one (the API checks it against the granularity).
    fn bound(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| {
            !v.is_empty()
                && v.len() <= 13
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'T')
        })
    }

    fn query(&self) -> String {
        let mut query = format!(
            "granularity={}&dimension={}",
            self.granularity(),
            self.dimension()
        );
        for (name, value) in [("from", &self.from), ("to", &self.to)] {
            if let Some(bound) = Self::bound(value) {
                query.push_str(&format!("&{name}={bound}"));
            }
        }
        query
    }
}

/// One line of the table, summed over the range's periods.
#[derive(Default)]
struct Totals {
    cost: f64,
    cpu: f64,
    memory: f64,
    on_demand: f64,
}

impl Totals {
    fn add(&mut self, line: &serde_json::Value) {
        self.cost += number(&line["cost"]);
        self.cpu += number(&line["cpu"]);
        self.memory += number(&line["memory"]);
        self.on_demand += number(&line["on_demand"]);
    }
}

pub async fn costs(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Page {
    let (token, me) = signed_in(&console, &headers).await?;
    let api = console.client(Some(&token));
    let id = segment(&id)?;
    let query = range.query();
    let (detail, periods, reports) = tokio::try_join!(
        api.get(format!("/v1/clusters/{id}")),
        api.get(format!("/v1/clusters/{id}/costs?{query}&limit=100")),
        api.get_or_null(format!("/v1/clusters/{id}/savings-reports?limit=12")),
    )?;
    let mut lines: BTreeMap<String, Totals> = BTreeMap::new();
    let mut folded = Totals::default();
    let listed = periods["items"].as_array().cloned().unwrap_or_default();
    for period in &listed {
        let table = &period["table"];
        for (name, line) in table["lines"].as_object().into_iter().flatten() {
            lines.entry(name.clone()).or_default().add(line);
        }
        folded.add(&table["other"]);
    }
    let mut rows: Vec<(String, Totals)> = lines.into_iter().collect();
    rows.sort_by(|a, b| b.1.cost.total_cmp(&a.1.cost));
    let total: f64 = rows.iter().map(|(_, t)| t.cost).sum::<f64>() + folded.cost;
    let chart: Vec<(String, f64)> = rows
        .iter()
        .take(10)
        .map(|(name, t)| (name.clone(), t.cost))
        .collect();
    let dimension = range.dimension();
    let label = DIMENSIONS
        .iter()
        .find(|(name, _)| *name == dimension)
        .map_or("Line", |(_, label)| label);
    let first = listed.first().map(|p| text(&p["period"]).to_owned());
    let last = listed.last().map(|p| text(&p["period"]).to_owned());
    let body = html! {
        form.filters method="get" action=(format!("/console/clusters/{id}/costs")) {
            label { "By " select name="dimension" {
                @for (name, label) in DIMENSIONS { option value=(name) selected[name == dimension] { (label) } }
            } }
            label { "Per " select name="granularity" {
                @for (name, label) in GRANULARITIES { option value=(name) selected[name == range.granularity()] { (label) } }
            } }
            label { "From " input name="from" value=(range.from.as_deref().unwrap_or("")) placeholder="2026-12-01" maxlength="13" size="13"; }
            label { "To " input name="to" value=(range.to.as_deref().unwrap_or("")) placeholder="2026-12-31" maxlength="13" size="13"; }
            button.secondary type="submit" { "Show" }
            a href=(format!("/console/clusters/{id}/costs.csv?{query}")) download { "Export CSV" }
        }
        @if listed.is_empty() {
            p { "No cost recorded for this range yet: the cost function books every hour the agent reports." }
        } @else {
            p #cost-total { (money(total)) " over " (listed.len()) " " (range.granularity()) "(s), "
                (first.unwrap_or_default()) " to " (last.unwrap_or_default()) "." }
            (view::bars(&format!("Cost by {dimension}, the ten largest."), &chart))
            div.scroll { table #cost-table {
                thead { tr { th scope="col" { (label) } th scope="col" { "Cost" } th scope="col" { "CPU" } th scope="col" { "Memory" }
                    th scope="col" { "At on-demand prices" } th scope="col" { "Saved by spot" } } }
                tbody {
                    @for (name, t) in &rows { tr {
                        td { (name) } td { (money(t.cost)) } td { (money(t.cpu)) } td { (money(t.memory)) }
                        td { (money(t.on_demand)) } td { (money(t.on_demand - t.cost)) }
                    } }
                    @if folded.cost > 0.0 { tr { td { "(other)" } td { (money(folded.cost)) } td { (money(folded.cpu)) } td { (money(folded.memory)) }
                        td { (money(folded.on_demand)) } td { (money(folded.on_demand - folded.cost)) } } }
                }
            } }
        }
        section aria-labelledby="reports" {
            h2 #reports { "Savings reports" }
            div.scroll { table {
                thead { tr { th scope="col" { "Month" } th scope="col" { "Spent" } th scope="col" { "Saved" } th scope="col" { "At on-demand prices" }
                    th scope="col" { "Idle" } th scope="col" { "More to save a month" } } }
                tbody { @for report in reports["items"].as_array().into_iter().flatten() { tr {
                    td { (text(&report["month"])) } td { (money(number(&report["cost"]))) } td { (money(number(&report["realised_total"]))) }
                    td { (money(number(&report["on_demand_equivalent"]))) } td { (money(number(&report["idle"]))) }
                    td { (money(number(&report["projected_monthly_savings"]))) }
                } } }
            } }
        }
    };
    Ok(view::layout(
        &format!("Costs of {}", text(&detail["cluster"]["name"])),
        &me,
        Some(Section::Overview),
        None,
        body,
    )
    .into_response())
}

pub async fn export(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(range): Query<Range>,
) -> Page {
    let token = session_token(&headers).ok_or(Failure::SignIn)?;
    let id = segment(&id)?;
    console
        .client(Some(&token))
        .download(&format!("/v1/clusters/{id}/costs/export?{}", range.query()))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_choices_and_period_shaped_bounds_reach_the_api() {
        let range = Range {
            dimension: Some("workload".into()),
            granularity: Some("month".into()),
            from: Some("2026-11".into()),
            to: Some("2026-12&dimension=pod".into()),
        };
        assert_eq!(
            range.query(),
            "granularity=month&dimension=workload&from=2026-11"
        );
        let unknown = Range {
            dimension: Some("secrets".into()),
            ..Range::default()
        };
        assert_eq!(unknown.query(), "granularity=day&dimension=namespace");
    }
}
