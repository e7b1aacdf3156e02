//! The Spot Instance Advisor feed (`spot-advisor-data.json`).
//!
//! Per region, OS and instance type it gives `r`, an index into `ranges` (the interruption
//! frequency band), and `s`, the savings over on-demand in percent. The `cores` field of
//! `instance_types` counts vCPUs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The highest band index the feed defines (`>20%`).
pub const MAX_BAND: u8 = 4;

#[derive(Debug, Deserialize)]
struct Feed {
    ranges: Vec<Range>,
    spot_advisor: BTreeMap<String, BTreeMap<String, BTreeMap<String, Entry>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub index: u8,
    pub label: String,
    /// Upper bound of the band in percent: 5, 11, 16, 22, 100 (not 10/15/20).
    pub max: u8,
}

#[derive(Debug, Clone, Copy, Deserialize)]
struct Entry {
    s: i16,
    r: u8,
}

/// One (region, OS, instance type) row of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvisorEntry {
    pub region: String,
    pub os: String,
    pub instance_type: String,
    /// 0 (<5%) ..= 4 (>20%).
    pub interruption_band: u8,
    /// Can be negative: some pools cost more on spot than on demand.
    pub savings_pct: i16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Advisor {
    pub ranges: Vec<Range>,
    pub entries: Vec<AdvisorEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvisorError {
    #[error(
        "spot advisor feed from {source_name} is not valid JSON of the expected shape at line {line}, column {column}: {reason}"
    )]
    Malformed {
        source_name: String,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error(
        "spot advisor feed from {source_name}: {region}/{os}/{instance_type} has band {band}, but ranges define 0..={max}"
    )]
    BandOutOfRange {
        source_name: String,
        region: String,
        os: String,
        instance_type: String,
        band: u8,
        max: u8,
    },
    #[error("spot advisor feed from {source_name} has no regions")]
    Empty { source_name: String },
}

impl Advisor {
    /// Parses the feed. `source_name` (a URL or path) is named in every error.
    pub fn parse(json: &[u8], source_name: &str) -> Result<Self, AdvisorError> {
        let feed: Feed = serde_json::from_slice(json).map_err(|e| AdvisorError::Malformed {
            source_name: source_name.to_owned(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        if feed.spot_advisor.is_empty() {
            return Err(AdvisorError::Empty {
                source_name: source_name.to_owned(),
            });
        }
        let max = feed
            .ranges
            .iter()
            .map(|r| r.index)
            .max()
            .unwrap_or(MAX_BAND);
        let mut entries = Vec::new();
        for (region, by_os) in feed.spot_advisor {
            for (os, by_type) in by_os {
                for (instance_type, entry) in by_type {
                    if entry.r > max {
                        return Err(AdvisorError::BandOutOfRange {
                            source_name: source_name.to_owned(),
                            region,
                            os,
                            instance_type,
                            band: entry.r,
                            max,
                        });
                    }
                    entries.push(AdvisorEntry {
                        region: region.clone(),
                        os: os.clone(),
                        instance_type,
                        interruption_band: entry.r,
                        savings_pct: entry.s,
                    });
                }
            }
        }
        Ok(Self {
            ranges: feed.ranges,
            entries,
        })
    }

    /// Linux entries of one region by instance type.
    pub fn linux_in(&self, region: &str) -> std::collections::HashMap<&str, &AdvisorEntry> {
        self.entries
            .iter()
            .filter(|e| e.region == region && e.os == "Linux")
            .map(|e| (e.instance_type.as_str(), e))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEED: &[u8] = include_bytes!("../../../../data/spot-advisor-data.json");

    #[test]
    fn real_feed_parses_with_known_values() {
        let advisor = Advisor::parse(FEED, "data/spot-advisor-data.json").unwrap();
        let m5 = advisor.linux_in("us-east-1")["m5.large"];
        assert_eq!((m5.savings_pct, m5.interruption_band), (66, 3));
        let maxes: Vec<u8> = advisor.ranges.iter().map(|r| r.max).collect();
        assert_eq!(maxes, [5, 11, 16, 22, 100]);
        let regions: std::collections::BTreeSet<&str> =
            advisor.entries.iter().map(|e| e.region.as_str()).collect();
        assert_eq!(regions.len(), 33);
        let us_east_1_linux = advisor
            .entries
            .iter()
            .filter(|e| e.region == "us-east-1" && e.os == "Linux")
            .count();
        assert_eq!(us_east_1_linux, 894);
    }

    #[test]
    fn negative_savings_are_kept() {
        let advisor = Advisor::parse(FEED, "feed").unwrap();
        assert!(advisor.entries.iter().any(|e| e.savings_pct < 0));
    }

    #[test]
    fn truncated_feed_names_source_and_position() {
        let err = Advisor::parse(&FEED[..5000], "https://example.test/feed.json").unwrap_err();
        match err {
            AdvisorError::Malformed {
                source_name,
                line,
                column,
                ..
            } => {
                assert_eq!(source_name, "https://example.test/feed.json");
                assert!(line >= 1 && column > 0);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn band_outside_ranges_is_rejected() {
        let json = br#"{"ranges":[{"index":0,"label":"<5%","max":5}],
            "spot_advisor":{"us-east-1":{"Linux":{"m5.large":{"s":50,"r":3}}}}}"#;
        assert!(matches!(
            Advisor::parse(json, "x"),
            Err(AdvisorError::BandOutOfRange {
                band: 3,
                max: 0,
                ..
            })
        ));
    }

    #[test]
    fn empty_feed_is_rejected() {
        assert!(matches!(
            Advisor::parse(br#"{"ranges":[],"spot_advisor":{}}"#, "x"),
            Err(AdvisorError::Empty { .. })
        ));
    }
}
