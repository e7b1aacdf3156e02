//! The monthly savings report, and CSV export of cost tables.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spotwise_core::ClusterId;
use spotwise_optimizer::plan::HOURS_PER_MONTH;
use spotwise_optimizer::recommendation::Recommendation;
use spotwise_optimizer::resize::{ChangeStatus, ResizeChange};
use spotwise_optimizer::rollout::{Rollout, RolloutStatus};
use time::Month;

use crate::breakdown::{CostTable, Savings, Summary};
use crate::money::{self, CostLine};
use crate::opportunities::{self, Opportunity, UnitPrices};
use crate::trends::{self, Anomaly, DailyCost, Forecast};

/// Namespaces and opportunities a report lists.
const REPORT_TOP: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedCost {
    pub name: String,
    pub cost: Decimal,
}

/// One cluster's month, every amount in cents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthlyReport {
    pub cluster_id: String,
    /// `2026-11`.
    pub month: String,
    pub cost: Decimal,
    pub on_demand_equivalent: Decimal,
    pub idle: Decimal,
    /// Measured over the month's samples.
    pub realised_savings: Savings,
    pub realised_total: Decimal,
    /// What the latest recommendation says adopting it would save per month, still unrealised.
    pub projected_monthly_savings: Option<Decimal>,
    /// Hours with a sample, of the month's hours: cost is only counted where sampled.
    pub hours_covered: u32,
    pub hours_in_month: u32,
    pub top_namespaces: Vec<NamedCost>,
    pub anomalies: Vec<Anomaly>,
    pub opportunities: Vec<Opportunity>,
    /// Plans realised this month: projected beside realised, per month.
    #[serde(default)]
    pub rollouts: Vec<RealisedPlan>,
    /// Right-sizing changes kept this month, with the requests they freed valued per month.
    #[serde(default)]
    pub rightsizing: Vec<RightSized>,
}

/// A workload's right-sizing that stood its watch in the month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightSized {
    /// `namespace/Kind/name`.
    pub workload: String,
    pub kept_at: String,
    /// The freed requests at the plan's prices when it was applied.
    pub monthly_saving: Decimal,
    /// `app: cpu 1000m -> 220m, memory 2048 MiB -> 460 MiB`, per container.
    pub change: String,
}

impl RightSized {
    /// The figures of a kept change; `None` for one that was not kept.
    pub fn of(change: &ResizeChange) -> Option<Self> {
        if change.status != ChangeStatus::Kept {
            return None;
        }
        Some(Self {
            workload: change.workload.to_string(),
            kept_at: spotwise_core::rfc3339(change.finished_at?),
            monthly_saving: money::price(change.monthly_saving)
                .map(money::cents)
                .unwrap_or_default(),
            change: change
                .containers
                .iter()
                .map(|c| {
                    format!(
                        "{}: cpu {}m -> {}m, memory {} MiB -> {} MiB",
                        c.before.name,
                        c.before.cpu_request_m,
                        c.after.cpu_request_m,
                        c.before.mem_request_mib,
                        c.after.mem_request_mib
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// A rollout that completed in the month: the cluster's monthly cost before it, as its plan
/// projected, and as the snapshot after it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealisedPlan {
    pub revision: u64,
    pub completed_at: String,
    pub monthly_before: Decimal,
    pub monthly_planned: Decimal,
    pub monthly_realised: Decimal,
    /// Realised monthly saving: before less realised.
    pub monthly_saving: Decimal,
}

impl RealisedPlan {
    /// The figures of a completed rollout; `None` for one that did not complete.
    pub fn of(rollout: &Rollout) -> Option<Self> {
        let realised = rollout.realised.as_ref()?;
        let completed_at = rollout.completed_at?;
        let monthly = |cost_hr: f64| {
            money::price(cost_hr * HOURS_PER_MONTH)
                .map(money::cents)
                .unwrap_or_default()
        };
        let before = monthly(rollout.before.cost_hr);
        let after = monthly(realised.cost_hr);
        Some(Self {
            revision: rollout.revision,
            completed_at: spotwise_core::rfc3339(completed_at),
            monthly_before: before,
            monthly_planned: monthly(rollout.planned.cost_hr),
            monthly_realised: after,
            monthly_saving: before - after,
        })
    }
}

pub struct ReportInput<'a> {
    pub cluster_id: &'a str,
    pub year: i32,
    pub month: Month,
    pub summary: &'a Summary,
    pub namespaces: &'a CostTable,
    /// Daily totals of the month and, for anomaly context, the days before it.
    pub daily: &'a [DailyCost],
    pub recommendation: Option<&'a Recommendation>,
    pub unit_prices: Option<&'a UnitPrices>,
    /// The cluster's rollouts, any month: those completed in this one are reported.
    pub rollouts: &'a [Rollout],
    /// The cluster's right-sizing changes, any month: those kept in this one are reported.
    pub resizes: &'a [ResizeChange],
}

impl MonthlyReport {
    pub fn build(input: &ReportInput<'_>) -> Self {
        let summary = input.summary;
        let cents = money::cents;
        let savings = Savings {
            spot: cents(summary.savings.spot),
            consolidation: cents(summary.savings.consolidation),
            hibernation: cents(summary.savings.hibernation),
        };
        let in_month = |d: &time::Date| d.year() == input.year && d.month() == input.month;
        Self {
            cluster_id: input.cluster_id.to_owned(),
            month: format!("{}-{:02}", input.year, u8::from(input.month)),
            cost: cents(summary.total.cost),
            on_demand_equivalent: cents(summary.total.on_demand),
            idle: cents(summary.total.idle),
            realised_total: cents(summary.savings.total()),
            realised_savings: savings,
            projected_monthly_savings: input
                .recommendation
                .and_then(|r| r.summary.monthly_savings)
                .and_then(money::price)
                .map(cents),
            hours_covered: summary.samples,
            hours_in_month: u32::from(time::util::days_in_month(input.month, input.year)) * 24,
            top_namespaces: input
                .namespaces
                .ranked()
                .into_iter()
                .take(REPORT_TOP)
                .map(|(name, line)| NamedCost {
                    name: name.to_owned(),
                    cost: cents(line.cost),
                })
                .collect(),
            anomalies: trends::anomalies(input.daily, 14, 3.0)
                .into_iter()
                .filter(|a| in_month(&a.date))
                .collect(),
            opportunities: input
                .recommendation
                .map(|r| opportunities::rank(r, input.unit_prices))
                .unwrap_or_default()
                .into_iter()
                .take(REPORT_TOP)
                .collect(),
            rollouts: input
                .rollouts
                .iter()
                .filter(|r| {
                    r.status == RolloutStatus::Completed
                        && r.completed_at.is_some_and(|at| in_month(&at.date()))
                })
                .filter_map(RealisedPlan::of)
                .collect(),
            rightsizing: input
                .resizes
                .iter()
                .filter(|c| c.finished_at.is_some_and(|at| in_month(&at.date())))
                .filter_map(RightSized::of)
                .collect(),
        }
    }

    pub fn title(&self) -> String {
        format!(
            "Spotwise saved ${} on {} in {}",
            self.realised_total, self.cluster_id, self.month
        )
    }

    /// Plain text with one fact per line, for chat and e-mail formats alike.
    pub fn body(&self) -> String {
        let mut body = String::new();
        let _ = writeln!(
            body,
            "Compute cost ${} (${} at on-demand prices), of which ${} idle.",
            self.cost, self.on_demand_equivalent, self.idle
        );
        let _ = writeln!(
            body,
            "Saved ${}: spot ${}, consolidation ${}, hibernation ${}.",
            self.realised_total,
            self.realised_savings.spot,
            self.realised_savings.consolidation,
            self.realised_savings.hibernation
        );
        if let Some(projected) = self.projected_monthly_savings {
            let _ = writeln!(
                body,
                "The latest recommendation would save another ${projected} a month."
            );
        }
        if self.hours_covered < self.hours_in_month {
            let _ = writeln!(
                body,
                "Measured over {} of {} hours (the agent did not report in the others).",
                self.hours_covered, self.hours_in_month
            );
        }
        if !self.top_namespaces.is_empty() {
            let list: Vec<String> = self
                .top_namespaces
                .iter()
                .map(|n| format!("{} ${}", n.name, n.cost))
                .collect();
            let _ = writeln!(body, "Top namespaces: {}.", list.join(", "));
        }
        for a in &self.anomalies {
            let _ = writeln!(
                body,
                "Unusual day {}: ${} against a usual ${}.",
                a.date,
                money::cents(a.cost),
                a.expected
            );
        }
        for r in &self.rollouts {
            let _ = writeln!(
                body,
                "Plan {} realised: ${}/month before, ${} planned, ${} measured after (saves ${}/month).",
                r.revision,
                r.monthly_before,
                r.monthly_planned,
                r.monthly_realised,
                r.monthly_saving
            );
        }
        for r in &self.rightsizing {
            let _ = writeln!(
                body,
                "Right-sized {} ({}): frees ${}/month of requests.",
                r.workload, r.change, r.monthly_saving
            );
        }
        for o in &self.opportunities {
            let _ = writeln!(body, "Save ${}/month: {}.", o.monthly_saving, o.title);
        }
        body
    }
}

/// One exported row: a table line of one period.
pub struct ExportRow<'a> {
    pub period: &'a str,
    pub dimension: &'a str,
    pub key: &'a str,
    pub line: &'a CostLine,
}

/// RFC 4180 CSV with a header; amounts at full precision so sums can be checked.
pub fn csv(rows: &[ExportRow<'_>]) -> String {
    fn field(out: &mut String, value: &str) {
        if value.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(value);
        }
    }
    let mut out = String::from("period,dimension,key,cost,cpu,memory,gpu,on_demand,idle\r\n");
    for row in rows {
        field(&mut out, row.period);
        out.push(',');
        field(&mut out, row.dimension);
        out.push(',');
        field(&mut out, row.key);
        let l = row.line;
        for amount in [l.cost, l.cpu, l.memory, l.gpu, l.on_demand, l.idle] {
            let _ = write!(out, ",{amount}");
        }
        out.push_str("\r\n");
    }
    out
}

/// Rows of a table, most expensive first, then the folded rest as `__other__`.
pub fn table_rows<'a>(
    period: &'a str,
    dimension: &'a str,
    table: &'a CostTable,
) -> Vec<ExportRow<'a>> {
    let mut rows: Vec<ExportRow<'a>> = table
        .ranked()
        .into_iter()
        .map(|(key, line)| ExportRow {
            period,
            dimension,
            key,
            line,
        })
        .collect();
    if table.folded > 0 {
        rows.push(ExportRow {
            period,
            dimension,
            key: "__other__",
            line: &table.other,
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let line = CostLine {
            cost: Decimal::from_str("1.5").unwrap(),
            cpu: Decimal::from_str("1.5").unwrap(),
            ..CostLine::default()
        };
        let mut table = CostTable::default();
        table.add("team=a,b \"x\"", &line);
        table.add("plain", &line);
        let text = csv(&table_rows("2026-11", "label", &table));
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "period,dimension,key,cost,cpu,memory,gpu,on_demand,idle"
        );
        assert_eq!(lines[1], "2026-11,label,plain,1.5,1.5,0,0,0,0");
        assert_eq!(
            lines[2],
            "2026-11,label,\"team=a,b \"\"x\"\"\",1.5,1.5,0,0,0,0"
        );
    }
}

/// One dimension's table, or the totals, of one cluster for one period, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostPeriod {
    pub cluster_id: ClusterId,
    /// `2026-11-24T10`, `2026-11-24` or `2026-11`.
    pub period: String,
    /// A [`Dimension`] name, or `summary`.
    pub dimension: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<CostTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// On a month's summary: its total forecast from the days so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// On a day: rolled up after it ended, so every sampled hour is in. A day in progress is
    /// rolled up every six hours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
}
