//! Pricing scraper: turns the Spot Instance Advisor feed, spot price history, on-demand prices
//! and the instance catalogue into one [`Pool`] per (region, zone id, instance type).
//!
//! Each feed is pluggable: the AWS API (`aws`), an HTTPS URL or a file. The hourly schedule
//! fans out one message per region on the scrape queue, and each region is scraped in its own
//! invocation; a failing region is reported and the others are still written. A feed that
//! every region needs (the advisor, a price file) failing stops the region's run before any
//! write, so the previous good data stays. A pool is written only when a value a plan uses
//! changed beyond its tolerance ([`Pool::plan_equivalent`]). No history is stored: the
//! volatility plans use comes from EC2's own 30-day price history, read each run.

pub mod sources;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use spotwise_aws::queue::QueueError;
use spotwise_aws::{AwsFailure, Queue};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{InstanceType, Notification, Pool, Severity};
use spotwise_core::messages::{ScheduleTrigger, ScrapeRegion};
use spotwise_core::pricing::FeedError;
use spotwise_core::pricing::advisor::{Advisor, AdvisorError};
use spotwise_core::pricing::pools::{RegionInputs, SpotPrices, build_pools};
use spotwise_core::pricing::{catalogue, ondemand, spot};
use spotwise_core::{Classify, Disposition, TenantId};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use spotwise_store::keys;
use spotwise_store::snapshots;
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;
use tracing::{error, info};

pub use sources::Source;

const RUN_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
const SPOT_WINDOW: time::Duration = time::Duration::days(30);

pub struct Config {
    pub common: CommonConfig,
    pub advisor: Source,
    pub spot_prices: Source,
    pub on_demand: Source,
    pub catalogue: Source,
    pub regions: Vec<String>,
    pub concurrency: usize,
    pub notifications_queue_url: String,
    /// Where the hourly fan-out puts one message per region.
    pub scrape_queue_url: String,
    /// The tenant whose endpoints receive platform alerts (scrape failures).
    pub ops_tenant: TenantId,
}

fn source(
    env: &Env,
    var: &str,
    default: Option<&str>,
    dev_mode: bool,
) -> Result<Source, ConfigError> {
    let raw = match (env.optional(var), default) {
        (Some(v), _) => v,
        (None, Some(d)) => d.to_owned(),
        (None, None) => env.required(var)?,
    };
    Source::parse(&raw, dev_mode).map_err(|reason| ConfigError::Invalid {
        var: var.into(),
        value: raw,
        reason,
    })
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env)?;
        let dev = common.dev_mode;
        let advisor = source(env, "SPOT_ADVISOR_SOURCE", None, dev)?;
        if advisor == Source::Aws {
            return Err(ConfigError::Invalid {
                var: "SPOT_ADVISOR_SOURCE".into(),
                value: "aws".into(),
                reason: "the advisor feed has no API; use its https URL or a file".into(),
            });
        }
        let regions: Vec<String> = env
            .required("SCRAPE_REGIONS")?
            .split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        let raw_tenant = env
            .optional("OPS_TENANT_ID")
            .unwrap_or_else(|| "spotwise-ops".into());
        let ops_tenant = TenantId::new(&raw_tenant).map_err(|e| ConfigError::Invalid {
            var: "OPS_TENANT_ID".into(),
            value: raw_tenant,
            reason: e.to_string(),
        })?;
        Ok(Self {
            advisor,
            spot_prices: source(env, "SPOT_PRICE_SOURCE", Some("aws"), dev)?,
            on_demand: source(env, "ON_DEMAND_PRICE_SOURCE", Some("aws"), dev)?,
            catalogue: source(env, "CATALOGUE_SOURCE", Some("aws"), dev)?,
            regions,
            concurrency: env.parse_or("SCRAPE_CONCURRENCY", 4usize)?.max(1),
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            scrape_queue_url: env.required("SCRAPE_QUEUE_URL")?,
            ops_tenant,
            common,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub http: reqwest::Client,
    pub sdk: SdkConfig,
    pub notifications: Queue,
    pub scrape_queue: Queue,
    /// Overrides the Pricing API endpoint (tests point it at a local fake).
    pub pricing_endpoint: Option<String>,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Result<Self, reqwest::Error> {
        Ok(Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            http: reqwest::Client::builder()
                .timeout(sources::FETCH_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            sdk: sdk.clone(),
            notifications: Queue::new(
                aws_sdk_sqs::Client::new(sdk),
                &config.notifications_queue_url,
            ),
            scrape_queue: Queue::new(aws_sdk_sqs::Client::new(sdk), &config.scrape_queue_url),
            pricing_endpoint: None,
        })
    }

    fn pricing_client(&self, region: &str) -> aws_sdk_pricing::Client {
        let endpoint_region = ondemand::pricing_endpoint_region(region);
        let mut builder = aws_sdk_pricing::config::Builder::from(&spotwise_aws::sdk::for_region(
            &self.sdk,
            endpoint_region,
        ));
        if let Some(url) = &self.pricing_endpoint {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_pricing::Client::from_conf(builder.build())
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
    Feed(#[from] FeedError),
    #[error(transparent)]
    Advisor(#[from] AdvisorError),
    #[error(transparent)]
    Aws(#[from] AwsFailure),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("region {0} is not in SCRAPE_REGIONS")]
    UnknownRegion(String),
}

impl Classify for ScrapeError {
    fn disposition(&self) -> Disposition {
        match self {
            ScrapeError::Fetch {
                retryable: true, ..
            } => Disposition::Retryable,
            ScrapeError::Fetch { .. } | ScrapeError::Feed(_) | ScrapeError::Advisor(_) => {
                Disposition::NonRetryable
            }
            ScrapeError::Aws(e) => e.disposition(),
            ScrapeError::Store(e) => e.disposition(),
            ScrapeError::Queue(e) => e.disposition(),
            ScrapeError::Body(e) => e.disposition(),
            ScrapeError::UnknownRegion(_) => Disposition::NonRetryable,
        }
    }
}

/// Feeds loaded once per run and shared by every region.
struct SharedFeeds {
    advisor: Advisor,
    spot_by_region: Option<BTreeMap<(String, String), f64>>,
    spot_history: Option<Vec<spot::PricePoint>>,
    on_demand: Option<BTreeMap<(String, String), f64>>,
    catalogue: Option<Vec<InstanceType>>,
}

/// What one region's scrape did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionReport {
    pub region: String,
    pub pools: usize,
    pub written: usize,
    pub unchanged: usize,
    #[serde(default)]
    pub error: Option<String>,
}

/// The record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapeRun {
    pub run_id: String,
    pub sources: BTreeMap<String, String>,
    pub regions: Vec<RegionReport>,
    pub pools: usize,
    pub written: usize,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    pub duration_ms: u64,
}

/// The current pools of a region, as stored.
pub async fn stored_pools(store: &Store, region: &str) -> Result<Vec<Pool>, StoreError> {
    Ok(store
        .query_all::<Pool>(&Query::gsi1(keys::region_pools_partition(region)))
        .await?
        .into_iter()
        .map(|i| i.body)
        .collect())
}

/// The function's two triggers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ScraperEvent {
    /// Per-region messages from the scrape queue.
    Regions(SqsEvent),
    /// The hourly schedule.
    Schedule(ScheduleTrigger),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ScraperResponse {
    Batch(SqsBatchResponse),
    FanOut(FanOut),
}

/// What one fan-out did.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub regions: usize,
    pub enqueued: usize,
}

pub async fn handle(
    deps: &Deps,
    config: &Config,
    event: ScraperEvent,
) -> Result<ScraperResponse, ScrapeError> {
    match event {
        ScraperEvent::Regions(batch) => {
            let Ok(response) = handle_batch(deps, config, batch).await;
            Ok(ScraperResponse::Batch(response))
        }
        ScraperEvent::Schedule(trigger) => {
            let messages: Vec<ScrapeRegion> = config
                .regions
                .iter()
                .map(|region| ScrapeRegion {
                    region: region.clone(),
                })
                .collect();
            let enqueued = deps.scrape_queue.send_all(&messages).await?;
            info!(regions = messages.len(), enqueued, scheduled_at = ?trigger.time, "scrape fan-out");
            Ok(ScraperResponse::FanOut(FanOut {
                regions: messages.len(),
                enqueued,
            }))
        }
    }
}

/// Scrapes the region of each message. A region's failure is in its run record and alerted,
/// not retried: the next hour scrapes it again.
pub async fn handle_batch(
    deps: &Deps,
    config: &Config,
    event: SqsEvent,
) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, 1, |message: SqsMessage| async move {
        let request: ScrapeRegion = parse_body(&message, "scrape request")?;
        if !config.regions.contains(&request.region) {
            return Err(ScrapeError::UnknownRegion(request.region));
        }
        scrape(deps, config, &[request.region]).await.map(drop)
    })
    .await)
}

/// Scrapes `regions` (bounded concurrency), records the run and alerts on failures.
pub async fn scrape(
    deps: &Deps,
    config: &Config,
    regions: &[String],
) -> Result<ScrapeRun, ScrapeError> {
    let started = std::time::Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let mut run = ScrapeRun {
        run_id: ulid::Ulid::new().to_string(),
        sources: BTreeMap::from([
            ("advisor".to_owned(), config.advisor.name().to_owned()),
            (
                "spot_prices".to_owned(),
                config.spot_prices.name().to_owned(),
            ),
            ("on_demand".to_owned(), config.on_demand.name().to_owned()),
            ("catalogue".to_owned(), config.catalogue.name().to_owned()),
        ]),
        regions: Vec::new(),
        pools: 0,
        written: 0,
        error: None,
        started_at,
        duration_ms: 0,
    };
    match load_shared(deps, config).await {
        Ok(shared) => {
            let shared = &shared;
            run.regions = futures_util::stream::iter(regions.iter().cloned())
                .map(|region| async move { scrape_region(deps, shared, &region, started_at).await })
                .buffer_unordered(config.concurrency)
                .collect()
                .await;
            run.regions.sort_by(|a, b| a.region.cmp(&b.region));
        }
        Err(err) => {
            error!(error = %err, "a shared feed failed; nothing written, previous pools kept");
            run.error = Some(err.to_string());
        }
    }
    run.pools = run.regions.iter().map(|r| r.pools).sum();
    run.written = run.regions.iter().map(|r| r.written).sum();
    run.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let record = Item::new(keys::scrape_run(&run.run_id), run.clone())
        .expiring_at(started_at + RUN_RETENTION);
    deps.store.put(&record, PutCondition::IfAbsent).await?;

    let failures: Vec<String> = run
        .error
        .iter()
        .cloned()
        .chain(
            run.regions
                .iter()
                .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.region))),
        )
        .collect();
    if !failures.is_empty() {
        alert(deps, config, &run, &failures).await?;
    }
    info!(run_id = %run.run_id, pools = run.pools, written = run.written, failures = failures.len(),
          duration_ms = run.duration_ms, "scrape run recorded");
    Ok(run)
}

async fn load_shared(deps: &Deps, config: &Config) -> Result<SharedFeeds, ScrapeError> {
    let advisor_bytes = sources::fetch(&deps.http, &config.advisor).await?;
    let advisor = Advisor::parse(&advisor_bytes, config.advisor.name())?;
    let spot_by_region;
    let spot_history;
    match &config.spot_prices {
        Source::Aws => {
            spot_by_region = None;
            spot_history = None;
        }
        other => {
            let bytes = sources::fetch(&deps.http, other).await?;
            // A history file (DescribeSpotPriceHistory JSON) or the spot.js feed.
            if bytes.windows(16).any(|w| w == b"SpotPriceHistory") {
                spot_history = Some(spot::parse_history(&bytes, other.name())?);
                spot_by_region = None;
            } else {
                spot_by_region = Some(spot::parse_spotjs(&bytes, other.name())?);
                spot_history = None;
            }
        }
    }
    let on_demand = match &config.on_demand {
        Source::Aws => None,
        other => {
            let bytes = sources::fetch(&deps.http, other).await?;
            Some(if bytes.windows(9).any(|w| w == b"PriceList") {
                let (prices, _) = ondemand::parse_get_products(&bytes, other.name())?;
                prices
                    .into_iter()
                    .filter_map(|p| Some(((p.region?, p.instance_type), p.price_hr)))
                    .collect()
            } else {
                ondemand::parse_price_table(&bytes, other.name())?
            })
        }
    };
    let catalogue = match &config.catalogue {
        Source::Aws => None,
        other => {
            let bytes = sources::fetch(&deps.http, other).await?;
            Some(if bytes.windows(13).any(|w| w == b"InstanceTypes") {
                catalogue::parse_describe_instance_types(&bytes, other.name())?
            } else {
                catalogue::parse_catalogue_file(&bytes, other.name())?
            })
        }
    };
    Ok(SharedFeeds {
        advisor,
        spot_by_region,
        spot_history,
        on_demand,
        catalogue,
    })
}

async fn scrape_region(
    deps: &Deps,
    shared: &SharedFeeds,
    region: &str,
    now: OffsetDateTime,
) -> RegionReport {
    match region_pools(deps, shared, region, now).await {
        Ok((pools, written)) => RegionReport {
            region: region.to_owned(),
            pools,
            written,
            unchanged: pools - written,
            error: None,
        },
        Err(err) => {
            error!(%region, error = %err, "region scrape failed; its previous pools are kept");
            RegionReport {
                region: region.to_owned(),
                pools: 0,
                written: 0,
                unchanged: 0,
                error: Some(err.to_string()),
            }
        }
    }
}

async fn region_pools(
    deps: &Deps,
    shared: &SharedFeeds,
    region: &str,
    now: OffsetDateTime,
) -> Result<(usize, usize), ScrapeError> {
    let ec2 = aws_sdk_ec2::Client::new(&spotwise_aws::sdk::for_region(&deps.sdk, region));
    let zones = sources::zones(&ec2).await?;
    let catalogue_owned;
    let catalogue = match &shared.catalogue {
        Some(c) => c,
        None => {
            catalogue_owned = sources::catalogue(&ec2).await?;
            &catalogue_owned
        }
    };
    let on_demand_owned;
    let on_demand = match &shared.on_demand {
        Some(p) => p,
        None => {
            on_demand_owned = sources::on_demand(&deps.pricing_client(region), region).await?;
            &on_demand_owned
        }
    };
    let history_stats;
    let spot_prices = match (&shared.spot_by_region, &shared.spot_history) {
        (Some(by_region), _) => SpotPrices::PerRegion(by_region),
        (None, Some(points)) => {
            history_stats = spot::summarize(points, now, SPOT_WINDOW);
            SpotPrices::PerZone(&history_stats)
        }
        (None, None) => {
            let points = sources::spot_history(&ec2, now - SPOT_WINDOW).await?;
            history_stats = spot::summarize(&points, now, SPOT_WINDOW);
            SpotPrices::PerZone(&history_stats)
        }
    };
    let inputs = RegionInputs {
        region,
        zones: &zones,
        catalogue,
        spot: spot_prices,
        on_demand,
        advisor: &shared.advisor,
    };
    let pools = build_pools(&inputs, now);

    let stored: HashMap<_, _> = stored_pools(&deps.store, region)
        .await?
        .into_iter()
        .map(|p| (p.key.clone(), p))
        .collect();
    let changed: Vec<&Pool> = pools
        .iter()
        .filter(|p| stored.get(&p.key).is_none_or(|old| !old.plan_equivalent(p)))
        .collect();
    let items: Vec<Item<&Pool>> = changed
        .iter()
        .map(|pool| snapshots::current_pool_item(pool))
        .collect();
    deps.store.batch_put(&items).await?;
    info!(%region, zones = zones.len(), types = catalogue.len(), pools = pools.len(), written = changed.len(), "region scraped");
    Ok((pools.len(), changed.len()))
}

async fn alert(
    deps: &Deps,
    config: &Config,
    run: &ScrapeRun,
    failures: &[String],
) -> Result<(), ScrapeError> {
    let notification = Notification {
        tenant_id: config.ops_tenant.clone(),
        event_type: "scrape_failure".into(),
        severity: if run.error.is_some() {
            Severity::Critical
        } else {
            Severity::Warning
        },
        cluster_id: None,
        labels: BTreeMap::from([("run_id".to_owned(), run.run_id.clone())]),
        title: format!(
            "Pricing scrape {}: {} problem(s)",
            run.run_id,
            failures.len()
        ),
        body: failures.join("\n"),
        links: vec![],
        occurred_at: run.started_at,
        dedup_key: format!("scrape#{}", run.run_id),
    };
    deps.notifications.send(&notification, None).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
