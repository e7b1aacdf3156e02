//! Pricing scraper: loads the Spot Instance Advisor feed from its configured source and keeps
//! one advisor item per (region, instance type) for the regions Spotwise serves, recording
//! every run.

use std::time::Duration;

use aws_config::SdkConfig;
use serde::{Deserialize, Serialize};
use spotwise_aws::store::{Item, PutCondition};
use spotwise_aws::{Store, StoreError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::keys::Key;
use spotwise_core::messages::ScheduleTrigger;
use spotwise_core::pricing::advisor::{Advisor, AdvisorEntry, AdvisorError};
use spotwise_core::{Classify, Disposition};
use time::OffsetDateTime;
use tracing::info;

/// Scrape runs are kept for trend questions ("when did this band change?").
const RUN_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The advisor feed is about 1 MB; refuse anything absurdly larger.
const MAX_FEED_BYTES: usize = 64 * 1024 * 1024;

/// Where a feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Url(String),
    File(String),
}

impl Source {
    pub fn parse(value: &str, dev_mode: bool) -> Result<Self, String> {
        if value.starts_with("https://") || (dev_mode && value.starts_with("http://")) {
            Ok(Source::Url(value.to_owned()))
        } else if value.starts_with("http://") {
            Err("plain http:// sources are only allowed with SPOTWISE_DEV_MODE".into())
        } else if let Some(path) = value.strip_prefix("file://") {
            Ok(Source::File(path.to_owned()))
        } else if value.contains("://") {
            Err("expected an https:// URL or a file path".into())
        } else {
            Ok(Source::File(value.to_owned()))
        }
    }

    fn name(&self) -> &str {
        match self {
            Source::Url(s) | Source::File(s) => s,
        }
    }
}

pub struct Config {
    pub common: CommonConfig,
    pub advisor_source: Source,
    pub regions: Vec<String>,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env)?;
        let raw = env.required("SPOT_ADVISOR_SOURCE")?;
        let advisor_source =
            Source::parse(&raw, common.dev_mode).map_err(|reason| ConfigError::Invalid {
                var: "SPOT_ADVISOR_SOURCE".into(),
                value: raw.clone(),
                reason,
            })?;
        let regions: Vec<String> = env
            .required("SCRAPE_REGIONS")?
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        Ok(Self {
            common,
            advisor_source,
            regions,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub http: reqwest::Client,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("fetching {source_name}: {reason}")]
    Fetch {
        source_name: String,
        reason: String,
        retryable: bool,
    },
    #[error(transparent)]
    Feed(#[from] AdvisorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for ScrapeError {
    fn disposition(&self) -> Disposition {
        match self {
            ScrapeError::Fetch {
                retryable: true, ..
            } => Disposition::Retryable,
            ScrapeError::Fetch { .. } | ScrapeError::Feed(_) => Disposition::NonRetryable,
            ScrapeError::Store(e) => e.disposition(),
        }
    }
}

/// The stored advisor row for one (region, Linux instance type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdvisorItem {
    pub region: String,
    pub instance_type: String,
    pub interruption_band: u8,
    pub savings_pct: i16,
    #[serde(with = "time::serde::rfc3339")]
    pub scraped_at: OffsetDateTime,
}

pub fn advisor_key(region: &str, instance_type: &str) -> Key {
    Key::new(
        format!("ADVISOR#{region}"),
        format!("LINUX#{instance_type}"),
    )
}

/// The record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapeRun {
    pub run_id: String,
    pub source: String,
    pub regions: Vec<String>,
    pub advisor_rows: usize,
    pub missing_regions: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_ms: u64,
}

pub async fn scrape(
    deps: &Deps,
    config: &Config,
    trigger: ScheduleTrigger,
) -> Result<ScrapeRun, ScrapeError> {
    let started = std::time::Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let raw = fetch(deps, &config.advisor_source).await?;
    let advisor = Advisor::parse(&raw, config.advisor_source.name())?;

    let rows: Vec<Item<AdvisorItem>> = advisor
        .entries
        .iter()
        .filter(|e| e.os == "Linux" && config.regions.contains(&e.region))
        .map(|e: &AdvisorEntry| {
            Item::new(
                advisor_key(&e.region, &e.instance_type),
                AdvisorItem {
                    region: e.region.clone(),
                    instance_type: e.instance_type.clone(),
                    interruption_band: e.interruption_band,
                    savings_pct: e.savings_pct,
                    scraped_at: started_at,
                },
            )
        })
        .collect();
    deps.store.batch_put(&rows).await?;

    let missing_regions = config
        .regions
        .iter()
        .filter(|r| !advisor.entries.iter().any(|e| &e.region == *r))
        .cloned()
        .collect();
    let run = ScrapeRun {
        run_id: ulid::Ulid::new().to_string(),
        source: config.advisor_source.name().to_owned(),
        regions: config.regions.clone(),
        advisor_rows: rows.len(),
        missing_regions,
        started_at,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let record = Item::new(
        Key::new("SCRAPE", format!("RUN#{}", run.run_id)),
        run.clone(),
    )
    .expiring_at(started_at + RUN_RETENTION);
    deps.store.put(&record, PutCondition::IfAbsent).await?;
    info!(run_id = %run.run_id, rows = run.advisor_rows, missing = ?run.missing_regions,
          duration_ms = run.duration_ms, scheduled_at = ?trigger.time, "scrape run recorded");
    Ok(run)
}

async fn fetch(deps: &Deps, source: &Source) -> Result<Vec<u8>, ScrapeError> {
    let fail = |reason: String, retryable: bool| ScrapeError::Fetch {
        source_name: source.name().to_owned(),
        reason,
        retryable,
    };
    match source {
        Source::File(path) => tokio::fs::read(path)
            .await
            .map_err(|e| fail(e.to_string(), false)),
        Source::Url(url) => {
            let response = deps
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
            let status = response.status();
            if !status.is_success() {
                return Err(fail(
                    format!("HTTP {status}"),
                    status.is_server_error() || status.as_u16() == 429,
                ));
            }
            let body = response
                .bytes()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
            if body.len() > MAX_FEED_BYTES {
                return Err(fail(
                    format!(
                        "feed is {} bytes, over the {MAX_FEED_BYTES} limit",
                        body.len()
                    ),
                    false,
                ));
            }
            Ok(body.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use spotwise_testkit::{LocalStack, repo_root};

    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            Source::parse("https://x/y.json", false),
            Ok(Source::Url("https://x/y.json".into()))
        );
        assert_eq!(
            Source::parse("data/a.json", false),
            Ok(Source::File("data/a.json".into()))
        );
        assert_eq!(
            Source::parse("file:///tmp/a.json", false),
            Ok(Source::File("/tmp/a.json".into()))
        );
        assert!(Source::parse("http://127.0.0.1/x", false).is_err());
        assert!(Source::parse("http://127.0.0.1/x", true).is_ok());
        assert!(Source::parse("s3://bucket/x", false).is_err());
    }

    #[test]
    fn config_errors_name_the_variable() {
        let env = Env::from_pairs([
            ("TABLE_NAME", "t"),
            ("SPOT_ADVISOR_SOURCE", "ftp://x"),
            ("SCRAPE_REGIONS", "us-east-1"),
        ]);
        let err = Config::from_env(&env).err().unwrap();
        assert!(err.to_string().contains("SPOT_ADVISOR_SOURCE"), "{err}");
    }

    #[tokio::test]
    async fn scrape_stores_advisor_rows_for_configured_regions() {
        let feed = repo_root().join("data/spot-advisor-data.json");
        let stack = LocalStack::start_with(&[
            &format!("SpotAdvisorUrl={}", feed.display()),
            "ScrapeRegions=us-east-1,eu-west-1,xx-nowhere-1",
        ]);
        let config =
            Config::from_env(&Env::from_map(stack.function_env("PricingScraperFunction"))).unwrap();
        let deps = Deps::new(&stack.sdk_config().await, &config).unwrap();

        let trigger: ScheduleTrigger = serde_json::from_str(&spotwise_testkit::fixture(
            "events/pricing-scraper/schedule.json",
        ))
        .unwrap();
        let run = scrape(&deps, &config, trigger).await.unwrap();
        assert_eq!(run.missing_regions, ["xx-nowhere-1"]);
        assert!(
            run.advisor_rows > 894,
            "us-east-1 alone has 894 Linux types, got {}",
            run.advisor_rows
        );

        let m5 = deps
            .store
            .get::<AdvisorItem>(&advisor_key("us-east-1", "m5.large"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m5.body.savings_pct, m5.body.interruption_band), (66, 3));
        let stored = deps
            .store
            .get::<ScrapeRun>(&Key::new("SCRAPE", format!("RUN#{}", run.run_id)))
            .await
            .unwrap();
        assert!(stored.unwrap().ttl.is_some());
    }

    #[tokio::test]
    async fn unreadable_source_is_a_clear_non_retryable_error() {
        let stack = LocalStack::start_with(&["SpotAdvisorUrl=/nonexistent/feed.json"]);
        let config =
            Config::from_env(&Env::from_map(stack.function_env("PricingScraperFunction"))).unwrap();
        let deps = Deps::new(&stack.sdk_config().await, &config).unwrap();
        let err = scrape(&deps, &config, ScheduleTrigger::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/feed.json"), "{err}");
        assert!(!err.is_retryable());
    }
}
