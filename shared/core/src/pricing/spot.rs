//! Spot prices: EC2 DescribeSpotPriceHistory records (per zone) and the public spot.js feed
//! (per region), reduced to the latest price, a 30-day time-weighted average and volatility.

use std::collections::BTreeMap;

use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use super::{FeedError, round_price};

/// One price change in one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct PricePoint {
    /// Zone name as EC2 reports it (`us-east-1a`); mapped to a zone id by the caller.
    pub zone: String,
    pub instance_type: String,
    pub price: f64,
    pub at: OffsetDateTime,
}

/// What the optimizer needs from a zone's price history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpotStats {
    pub latest: f64,
    /// Time-weighted mean over the window.
    pub average: f64,
    /// Time-weighted standard deviation divided by the mean (0 for a flat price).
    pub volatility: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliHistory {
    spot_price_history: Vec<CliRecord>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CliRecord {
    availability_zone: String,
    instance_type: String,
    product_description: String,
    spot_price: String,
    timestamp: String,
}

/// Linux prices only; Windows pools are a different market.
pub fn is_linux(product_description: &str) -> bool {
    product_description.starts_with("Linux/UNIX")
}

/// Parses DescribeSpotPriceHistory output (CLI/SDK JSON).
pub fn parse_history(json: &[u8], source: &str) -> Result<Vec<PricePoint>, FeedError> {
    let parsed: CliHistory =
        serde_json::from_slice(json).map_err(|e| FeedError::json(source, &e))?;
    parsed
        .spot_price_history
        .into_iter()
        .filter(|r| is_linux(&r.product_description))
        .enumerate()
        .map(|(i, r)| {
            let price = r.spot_price.parse::<f64>().map_err(|_| {
                FeedError::new(
                    source,
                    format!("record {i}: SpotPrice {:?} is not a number", r.spot_price),
                )
            })?;
            let at =
                OffsetDateTime::parse(&r.timestamp, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| {
                        FeedError::new(
                            source,
                            format!("record {i}: Timestamp {:?} is not RFC 3339", r.timestamp),
                        )
                    })?;
            Ok(PricePoint {
                zone: r.availability_zone,
                instance_type: r.instance_type,
                price,
                at,
            })
        })
        .collect()
}

/// Reduces price changes to statistics per (zone, instance type) over `[now - window, now]`.
///
/// Each record is a change: a price holds until the next record. The last change before the
/// window start is the price in force at its start (AWS returns it when StartTime is set).
pub fn summarize(
    points: &[PricePoint],
    now: OffsetDateTime,
    window: Duration,
) -> BTreeMap<(String, String), SpotStats> {
    let mut by_pool: BTreeMap<(String, String), Vec<&PricePoint>> = BTreeMap::new();
    for p in points {
        by_pool
            .entry((p.zone.clone(), p.instance_type.clone()))
            .or_default()
            .push(p);
    }
    let start = now - window;
    by_pool
        .into_iter()
        .filter_map(|(key, mut changes)| {
            changes.sort_by_key(|p| p.at);
            let latest = changes.last()?.price;
            let mut weighted = 0.0;
            let mut weighted_sq = 0.0;
            let mut total = 0.0;
            for (i, change) in changes.iter().enumerate() {
                let from = change.at.max(start);
                let to = changes.get(i + 1).map_or(now, |next| next.at).min(now);
                let seconds = (to - from).as_seconds_f64();
                if seconds > 0.0 {
                    weighted += change.price * seconds;
                    weighted_sq += change.price * change.price * seconds;
                    total += seconds;
                }
            }
            let (average, volatility) = if total > 0.0 {
                let mean = weighted / total;
                let variance = (weighted_sq / total - mean * mean).max(0.0);
                (
                    mean,
                    if mean > 0.0 {
                        variance.sqrt() / mean
                    } else {
                        0.0
                    },
                )
            } else {
                (latest, 0.0)
            };
            Some((
                key,
                SpotStats {
                    latest,
                    average: round_price(average),
                    volatility: (volatility * 1e4).round() / 1e4,
                },
            ))
        })
        .collect()
}

/// Region codes used by the legacy spot.js feed.
pub fn region_from_legacy(code: &str) -> &str {
    match code {
        "us-east" => "us-east-1",
        "us-west" => "us-west-1",
        "eu-ireland" => "eu-west-1",
        "apac-sin" => "ap-southeast-1",
        "apac-syd" => "ap-southeast-2",
        "apac-tokyo" => "ap-northeast-1",
        other => other,
    }
}

#[derive(Deserialize)]
struct SpotJs {
    config: SpotJsConfig,
}

#[derive(Deserialize)]
struct SpotJsConfig {
    regions: Vec<SpotJsRegion>,
}

#[derive(Deserialize)]
struct SpotJsRegion {
    region: String,
    #[serde(rename = "instanceTypes")]
    instance_types: Vec<SpotJsFamily>,
}

#[derive(Deserialize)]
struct SpotJsFamily {
    sizes: Vec<SpotJsSize>,
}

#[derive(Deserialize)]
struct SpotJsSize {
    size: String,
    #[serde(rename = "valueColumns")]
    value_columns: Vec<SpotJsColumn>,
}

#[derive(Deserialize)]
struct SpotJsColumn {
    name: String,
    prices: BTreeMap<String, String>,
}

/// Parses the spot.js feed (with or without its `callback(...);` JSONP wrapper) into Linux
/// prices per (region, instance type). `N/A*` entries (not offered) are left out.
pub fn parse_spotjs(
    body: &[u8],
    source: &str,
) -> Result<BTreeMap<(String, String), f64>, FeedError> {
    let text =
        std::str::from_utf8(body).map_err(|e| FeedError::new(source, format!("not UTF-8: {e}")))?;
    let text = text.trim();
    let json = match text.strip_prefix("callback(") {
        Some(rest) => rest
            .trim_end_matches(';')
            .strip_suffix(')')
            .ok_or_else(|| FeedError::new(source, "JSONP wrapper is not closed"))?,
        None => text,
    };
    let parsed: SpotJs = serde_json::from_str(json).map_err(|e| FeedError::json(source, &e))?;
    let mut prices = BTreeMap::new();
    for region in parsed.config.regions {
        let code = region_from_legacy(&region.region).to_owned();
        for size in region.instance_types.into_iter().flat_map(|f| f.sizes) {
            let linux = size
                .value_columns
                .iter()
                .find(|c| c.name == "linux")
                .and_then(|c| c.prices.get("USD"));
            if let Some(price) = linux.and_then(|p| p.parse::<f64>().ok()) {
                prices.insert((code.clone(), size.size), price);
            }
        }
    }
    Ok(prices)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn point(zone: &str, price: f64, at: OffsetDateTime) -> PricePoint {
        PricePoint {
            zone: zone.into(),
            instance_type: "m5.large".into(),
            price,
            at,
        }
    }

    #[test]
    fn real_history_parses_and_summarizes_per_zone() {
        let points = parse_history(
            include_bytes!("../../tests/data/describe-spot-price-history-m5.large-us-east-1.json"),
            "h",
        )
        .unwrap();
        assert_eq!(points.len(), 250);
        let latest_time = points.iter().map(|p| p.at).max().unwrap();
        let stats = summarize(&points, latest_time, Duration::days(30));
        assert!(stats.len() >= 5, "{} zones", stats.len());
        let f = stats[&("us-east-1f".to_owned(), "m5.large".to_owned())];
        assert_eq!(f.latest, 0.0437);
        assert!(f.average > 0.03 && f.average < 0.06, "{f:?}");
        assert!(f.volatility >= 0.0 && f.volatility < 1.0);
    }

    #[test]
    fn average_is_time_weighted_and_starts_with_the_price_in_force() {
        let now = datetime!(2026-01-31 00:00 UTC);
        // 0.10 in force since before the window; 0.20 for the last 10 of 30 days.
        let points = [
            point("a", 0.10, datetime!(2025-12-01 00:00 UTC)),
            point("a", 0.20, datetime!(2026-01-21 00:00 UTC)),
        ];
        let s =
            summarize(&points, now, Duration::days(30))[&("a".to_owned(), "m5.large".to_owned())];
        assert_eq!(s.latest, 0.20);
        assert!(
            (s.average - (0.10 * 20.0 + 0.20 * 10.0) / 30.0).abs() < 1e-6,
            "{s:?}"
        );
        // Two levels 20:10 -> sd = 0.0471, mean 0.1333 -> cv 0.3536.
        assert!((s.volatility - 0.3536).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn flat_price_has_zero_volatility() {
        let now = datetime!(2026-01-31 00:00 UTC);
        let s = summarize(
            &[point("a", 0.05, datetime!(2026-01-01 00:00 UTC))],
            now,
            Duration::days(30),
        );
        assert_eq!(
            s[&("a".to_owned(), "m5.large".to_owned())],
            SpotStats {
                latest: 0.05,
                average: 0.05,
                volatility: 0.0
            }
        );
    }

    #[test]
    fn spotjs_legacy_regions_and_not_available_prices() {
        let prices = parse_spotjs(
            include_bytes!("../../../../data/spot-prices-spotjs.json"),
            "spot.js",
        )
        .unwrap();
        let regions: std::collections::BTreeSet<&str> =
            prices.keys().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            regions,
            [
                "ap-southeast-2",
                "eu-west-1",
                "us-east-1",
                "us-east-2",
                "us-west-1"
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(
            prices[&("us-east-1".to_owned(), "a1.medium".to_owned())],
            0.0084
        );
    }

    #[test]
    fn spotjs_jsonp_wrapper_is_stripped() {
        let body = br#"callback({"vers":0.01,"config":{"regions":[{"region":"eu-ireland","instanceTypes":[{"type":"x","sizes":[
            {"size":"m5.large","valueColumns":[{"name":"linux","prices":{"USD":"0.0350"}},{"name":"mswin","prices":{"USD":"N/A*"}}]},
            {"size":"p2.xlarge","valueColumns":[{"name":"linux","prices":{"USD":"N/A*"}}]}]}]}]}});"#;
        let prices = parse_spotjs(body, "s").unwrap();
        assert_eq!(prices.len(), 1);
        assert_eq!(
            prices[&("eu-west-1".to_owned(), "m5.large".to_owned())],
            0.035
        );
        assert!(parse_spotjs(b"callback({\"vers\":1", "s").is_err());
    }
}
