//! Daily cost series: a month-end forecast by least-squares line, and anomaly flags by median
//! absolute deviation (robust to the very spikes it is looking for).

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};
use time::{Date, Month};

use crate::money;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyCost {
    pub date: Date,
    pub cost: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// `2026-11`.
    pub month: String,
    pub days_in_month: u8,
    pub days_observed: u8,
    pub to_date: Decimal,
    /// `to_date` plus the fitted line over the days after the last observed one, in cents.
    pub month_total: Decimal,
    /// Fitted change in daily cost per day.
    pub trend_per_day: Decimal,
}

/// Forecasts the month's total from the days of it observed so far (other days are ignored).
/// One observed day forecasts a flat month; none gives `None`.
pub fn forecast_month(series: &[DailyCost], year: i32, month: Month) -> Option<Forecast> {
    let days_in_month = time::util::days_in_month(month, year);
    let points: Vec<(f64, f64)> = series
        .iter()
        .filter(|p| p.date.year() == year && p.date.month() == month)
        .map(|p| (f64::from(p.date.day()), p.cost.to_f64().unwrap_or(0.0)))
        .collect();
    if points.is_empty() {
        return None;
    }
    let to_date: Decimal = series
        .iter()
        .filter(|p| p.date.year() == year && p.date.month() == month)
        .map(|p| p.cost)
        .sum();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let intercept = mean_y - slope * mean_x;
    let last_observed = points.iter().map(|p| p.0).fold(0.0, f64::max) as u8;
    // Days before the last observed one are past: a day without samples cost nothing.
    let remaining: f64 = (last_observed + 1..=days_in_month)
        // A falling line never forecasts negative spend.
        .map(|d| (intercept + slope * f64::from(d)).max(0.0))
        .sum();
    Some(Forecast {
        month: format!("{year}-{:02}", u8::from(month)),
        days_in_month,
        days_observed: u8::try_from(points.len()).unwrap_or(u8::MAX),
        to_date,
        month_total: money::cents(to_date + money::price(remaining).unwrap_or_default()),
        trend_per_day: money::price(slope.abs())
            .map(|d| if slope < 0.0 { -d } else { d })
            .unwrap_or_default(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub date: Date,
    pub cost: Decimal,
    /// Median of the preceding window.
    pub expected: Decimal,
    /// How many median absolute deviations away.
    pub deviations: f64,
}

/// Days whose cost is more than `threshold` median absolute deviations from the median of the
/// `window` days before them. Needs at least seven earlier days. A flat history (deviation 0)
/// uses 1% of its median as the deviation, so a one-cent wobble is not an anomaly.
pub fn anomalies(series: &[DailyCost], window: usize, threshold: f64) -> Vec<Anomaly> {
    const MIN_HISTORY: usize = 7;
    let mut found = Vec::new();
    for i in MIN_HISTORY..series.len() {
        let history: Vec<f64> = series[i.saturating_sub(window)..i]
            .iter()
            .map(|p| p.cost.to_f64().unwrap_or(0.0))
            .collect();
        let median = median(&history);
        let deviations: Vec<f64> = history.iter().map(|x| (x - median).abs()).collect();
        let mad = median_of(deviations).max(median.abs() * 0.01);
        let cost = series[i].cost.to_f64().unwrap_or(0.0);
        if mad <= 0.0 {
            continue;
        }
        let score = (cost - median).abs() / mad;
        if score > threshold {
            found.push(Anomaly {
                date: series[i].date,
                cost: series[i].cost,
                expected: money::cents(money::price(median).unwrap_or_default()),
                deviations: (score * 10.0).round() / 10.0,
            });
        }
    }
    found
}

fn median(values: &[f64]) -> f64 {
    median_of(values.to_vec())
}

fn median_of(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::str::FromStr;

    use time::macros::date;

    use super::*;

    fn series(start: Date, costs: &[&str]) -> Vec<DailyCost> {
        costs
            .iter()
            .enumerate()
            .map(|(i, c)| DailyCost {
                date: start + time::Duration::days(i as i64),
                cost: Decimal::from_str(c).unwrap(),
            })
            .collect()
    }

    #[test]
    fn linear_spend_forecasts_exactly() {
        // 10, 11, ..., 19 over the first ten days of November: day d costs 9 + d.
        let costs: Vec<String> = (10..20).map(|c| c.to_string()).collect();
        let refs: Vec<&str> = costs.iter().map(String::as_str).collect();
        let f =
            forecast_month(&series(date!(2026 - 11 - 01), &refs), 2026, Month::November).unwrap();
        assert_eq!(f.days_observed, 10);
        assert_eq!(f.to_date, Decimal::from(145));
        // Sum of 9 + d for d = 1..=30 is 270 + 465.
        assert_eq!(f.month_total, Decimal::from(735));
        assert_eq!(f.trend_per_day, Decimal::from(1));
        assert_eq!(f.month, "2026-11");
    }

    #[test]
    fn one_day_forecasts_a_flat_month_and_none_gives_nothing() {
        let f = forecast_month(
            &series(date!(2026 - 02 - 01), &["3.50"]),
            2026,
            Month::February,
        )
        .unwrap();
        assert_eq!(f.month_total, Decimal::from_str("98.00").unwrap());
        assert!(forecast_month(&[], 2026, Month::February).is_none());
        // A cluster first sampled mid-month: the days before it cost nothing, not a forecast.
        let late = series(date!(2026 - 11 - 15), &["2"]);
        let f = forecast_month(&late, 2026, Month::November).unwrap();
        assert_eq!(f.month_total, Decimal::from(32), "day 15 and 15 more days");
        let falling = series(date!(2026 - 11 - 01), &["30", "20", "10"]);
        let f = forecast_month(&falling, 2026, Month::November).unwrap();
        assert_eq!(f.month_total, Decimal::from(60), "never below zero");
    }

    #[test]
    fn spikes_are_flagged_and_noise_is_not() {
        let s = series(
            date!(2026 - 11 - 01),
            &[
                "100", "102", "98", "101", "99", "100", "103", "97", "101", "250", "100", "100.5",
            ],
        );
        let found = anomalies(&s, 14, 3.0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].date, date!(2026 - 11 - 10));
        assert_eq!(found[0].expected, Decimal::from(100));
        let flat = series(date!(2026 - 11 - 01), &["50"; 10]);
        assert!(anomalies(&flat, 14, 3.0).is_empty());
        let mut step = flat.clone();
        step.push(DailyCost {
            date: date!(2026 - 11 - 11),
            cost: Decimal::from(80),
        });
        assert_eq!(anomalies(&step, 14, 3.0).len(), 1);
    }
}
