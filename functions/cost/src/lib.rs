//! Cost function. Hourly, it allocates each cluster's node prices over its pods (from the
//! agent's latest snapshot, priced by the region's pools) as the cost of the hour the snapshot
//! was taken in. Every sixth hour it rolls the hours into the day, and once the day is over the
//! days into the month, one item per dimension and period, so a 30-day query reads 30 items
//! (pods are costed by the hour and the day, not the month). Monthly, it
//! builds each cluster's savings report, stores it and sends it once through the notification
//! queue. Both schedules fan out one SQS message per cluster, so a failing cluster retries and
//! dead-letters alone.

use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use spotwise_aws::Bucket;
use spotwise_aws::queue::{Queue, QueueError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::{Cluster, Notification, Policy, Severity};
use spotwise_core::messages::{CostRequest, ScheduleTrigger};
use spotwise_core::{Classify, ClusterId, Disposition, TenantId};
use spotwise_cost::breakdown::{self, DEFAULT_LABEL_KEYS, Dimension};
use spotwise_cost::opportunities::UnitPrices;
pub use spotwise_cost::report::CostPeriod;
use spotwise_cost::report::{MonthlyReport, ReportInput};
use spotwise_cost::trends::{self, DailyCost};
use spotwise_cost::{Baseline, CostTable, Summary, Weights, allocate, inputs, money};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use spotwise_optimizer::catalog::TypeFilter;
use spotwise_optimizer::rollout::Rollout;
use spotwise_schedule::model::HibernationState;
use spotwise_store::keys::{self, CostGranularity};
use spotwise_store::runs;
use spotwise_store::snapshots::{self, Unusable};
use spotwise_store::{Item, PutCondition, Query};
use spotwise_store::{Store, StoreError};
use time::{Date, Month, OffsetDateTime};
use tracing::{info, warn};

/// Clusters sampled at once; each holds one snapshot in memory.
const CONCURRENCY: usize = 4;
/// Clusters whose agent has not reported for this long are not sampled: their hours count
/// as not covered rather than as the last state seen.
const SAMPLE_MAX_AGE: time::Duration = time::Duration::hours(2);
/// Clusters whose agent reported within this long get a monthly report.
const REPORT_MAX_AGE: time::Duration = time::Duration::days(62);
const HOUR_RETENTION: time::Duration = time::Duration::days(8);
/// Pods are costed by the day; their hours are kept only until their day is rolled up.
const POD_HOUR_RETENTION: time::Duration = time::Duration::days(2);
/// A day in progress is rolled up at the sample of every sixth hour (05, 11, 17, 23), and its
/// month with the last of them, instead of both at every hour.
const DAY_ROLLUP_HOURS: u8 = 6;
const DAY_RETENTION: time::Duration = time::Duration::days(400);
/// Days before the month that give its first days' anomaly flags a history.
const REPORT_HISTORY_DAYS: usize = 14;
/// Right-sizing changes a report looks through (newest first) for those kept in its month.
const RESIZES_REPORTED: u32 = 500;
/// Rollouts a report looks through (newest first) for those completed in its month; a cluster
/// rolls out at most a few plans a month.
const ROLLOUTS_REPORTED: u32 = 31;
/// A month's report is sent once; the claim outlives any redelivery.
const REPORT_CLAIM_HOLD: Duration = Duration::from_secs(40 * 24 * 60 * 60);
/// The stored "dimension" of a period's totals.
const SUMMARY: &str = "summary";

pub struct Config {
    pub common: CommonConfig,
    pub cost_queue_url: String,
    pub notifications_queue_url: String,
    /// The bucket cluster snapshots are read from.
    pub snapshot_bucket: String,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            cost_queue_url: env.required("COST_QUEUE_URL")?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            snapshot_bucket: env.required("SNAPSHOT_BUCKET")?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub cost_queue: Queue,
    pub notifications: Queue,
    pub weights: Weights,
    pub snapshots: Bucket,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            cost_queue: Queue::new(sqs.clone(), &config.cost_queue_url),
            notifications: Queue::new(sqs, &config.notifications_queue_url),
            weights: Weights::default(),
            snapshots: Bucket::new(sdk, &config.snapshot_bucket),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("unknown scheduled job `{0}`: expected cost-sample or savings-report")]
    UnknownJob(String),
    #[error("`{0}` is not a period (hour 2026-11-24T10, month 2026-11)")]
    BadPeriod(String),
}

impl Classify for CostError {
    fn disposition(&self) -> Disposition {
        match self {
            CostError::Body(e) => e.disposition(),
            CostError::Store(e) => e.disposition(),
            CostError::Queue(e) => e.disposition(),
            CostError::UnknownJob(_) | CostError::BadPeriod(_) => Disposition::NonRetryable,
        }
    }
}

/// The function's triggers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum CostEvent {
    Requests(SqsEvent),
    Schedule(ScheduleTrigger),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum CostResponse {
    Batch(SqsBatchResponse),
    FanOut(FanOut),
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FanOut {
    pub job: String,
    pub period: String,
    pub clusters: usize,
    pub stale: usize,
    pub enqueued: usize,
}

/// Why a request did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    UnknownCluster,
    Snapshot(Unusable),
    NoPools { region: String },
    NoCosts { month: String },
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skipped::UnknownCluster => f.write_str("the cluster is unknown"),
            Skipped::Snapshot(unusable) => unusable.fmt(f),
            Skipped::NoPools { region } => write!(f, "no priced pools for region {region}"),
            Skipped::NoCosts { month } => write!(f, "no cost sampled in {month}"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Sampled {
                hour,
                cost,
                pods,
                unpriced_nodes,
            } => write!(
                f,
                "hour {hour}: ${cost} over {pods} pods, {unpriced_nodes} node(s) unpriced"
            ),
            Outcome::Reported { month, notified } => write!(
                f,
                "savings report for {month}{}",
                if *notified { " sent" } else { " already sent" }
            ),
            Outcome::Skipped(why) => why.fmt(f),
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Sampled {
        hour: String,
        cost: Decimal,
        pods: usize,
        unpriced_nodes: usize,
    },
    Reported {
        month: String,
        notified: bool,
    },
    Skipped(Skipped),
}

pub async fn handle(deps: &Deps, event: CostEvent) -> Result<CostResponse, CostError> {
    match event {
        CostEvent::Requests(batch) => {
            let Ok(response) = handle_batch(deps, batch).await;
            Ok(CostResponse::Batch(response))
        }
        // Boxed: unboxed, this future nests past rustc's layout depth limit.
        CostEvent::Schedule(trigger) => {
            Box::pin(fan_out(deps, &trigger, OffsetDateTime::now_utc()))
                .await
                .map(CostResponse::FanOut)
        }
    }
}

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| handle_message(deps, message)).await)
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), CostError> {
    let request: CostRequest = parse_body(&message, "cost request")?;
    let now = OffsetDateTime::now_utc();
    let (result, scheduled) = match &request {
        CostRequest::Sample {
            tenant_id,
            cluster_id,
        } => (sample(deps, tenant_id, cluster_id, now).await, None),
        CostRequest::Report {
            tenant_id,
            cluster_id,
            month,
            scheduled,
        } => (
            report(deps, tenant_id, cluster_id, month, now).await,
            scheduled.as_ref(),
        ),
    };
    if let Ok(Outcome::Skipped(why)) = &result {
        warn!(?request, reason = ?why, "cost request skipped");
    }
    let outcome = runs::outcome_of(&result, |outcome| match outcome {
        Outcome::Skipped(why) => Err(format!("no report: {why}")),
        done => Ok(done.to_string()),
    });
    runs::report(&deps.store, &deps.notifications, scheduled, outcome).await;
    result.map(|_| ())
}

/// `2026-11-24T10`: the UTC hour `at` falls in.
pub fn hour_period(at: OffsetDateTime) -> String {
    format!("{}T{:02}", day_period(at.date()), at.hour())
}

fn day_period(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

fn month_period(year: i32, month: Month) -> String {
    format!("{year:04}-{:02}", u8::from(month))
}

fn parse_month(period: &str) -> Option<(i32, Month)> {
    let (year, month) = period.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    Some((
        year.parse().ok()?,
        Month::try_from(month.parse::<u8>().ok()?).ok()?,
    ))
}

fn parse_day(period: &str) -> Option<Date> {
    let (month, day) = period.rsplit_once('-')?;
    let (year, month) = parse_month(month)?;
    Date::from_calendar_date(year, month, day.parse().ok()?).ok()
}

pub async fn fan_out(
    deps: &Deps,
    trigger: &ScheduleTrigger,
    now: OffsetDateTime,
) -> Result<FanOut, CostError> {
    let job = trigger.job.clone().unwrap_or_else(|| "cost-sample".into());
    let (period, max_age) = match job.as_str() {
        "cost-sample" => (hour_period(now), SAMPLE_MAX_AGE),
        // The month that just ended.
        "savings-report" => {
            let last_month =
                now.date().replace_day(1).unwrap_or(now.date()) - time::Duration::days(1);
            (
                month_period(last_month.year(), last_month.month()),
                REPORT_MAX_AGE,
            )
        }
        _ => return Err(CostError::UnknownJob(job)),
    };
    let clusters = snapshots::snapshotted_clusters(&deps.store, now, max_age).await?;
    let requests: Vec<CostRequest> = clusters
        .fresh
        .iter()
        .map(|(tenant_id, cluster_id)| {
            let (tenant_id, cluster_id) = (tenant_id.clone(), cluster_id.clone());
            if job == "cost-sample" {
                CostRequest::Sample {
                    tenant_id,
                    cluster_id,
                }
            } else {
                CostRequest::Report {
                    tenant_id,
                    cluster_id,
                    month: period.clone(),
                    scheduled: None,
                }
            }
        })
        .collect();
    let enqueued = deps.cost_queue.send_all(&requests).await?;
    info!(%job, %period, clusters = requests.len(), stale = clusters.stale, enqueued, "cost fan-out");
    Ok(FanOut {
        job,
        period,
        clusters: requests.len() + clusters.stale,
        stale: clusters.stale,
        enqueued,
    })
}

/// Allocates the cluster's latest snapshot as the cost of the UTC hour it was taken in,
/// stores the hour's tables and rolls them into the day and the month. Labelling by the
/// snapshot's own time means a late redelivery cannot book today's cluster into an old hour;
/// a second sample of the same hour replaces the first, and the rollups are recomputed from
/// the hours, so nothing counts twice.
pub async fn sample(
    deps: &Deps,
    tenant: &TenantId,
    cluster_id: &ClusterId,
    now: OffsetDateTime,
) -> Result<Outcome, CostError> {
    let keys = (
        keys::cluster(tenant, cluster_id),
        keys::policy(tenant, cluster_id),
        keys::hibernation_state(tenant, cluster_id),
    );
    let (cluster, policy, hibernation) = tokio::join!(
        deps.store.get::<Cluster>(&keys.0),
        deps.store.get::<Policy>(&keys.1),
        deps.store.get::<HibernationState>(&keys.2),
    );
    let Some(cluster) = cluster? else {
        return Ok(Outcome::Skipped(Skipped::UnknownCluster));
    };
    let policy = policy?.map(|p| p.body).unwrap_or_default();
    let loaded = snapshots::load(
        &deps.store,
        &deps.snapshots,
        tenant,
        cluster_id,
        now,
        SAMPLE_MAX_AGE,
    )
    .await?;
    let (head, snapshot) = match loaded {
        Ok(loaded) => loaded,
        Err(why) => return Ok(Outcome::Skipped(Skipped::Snapshot(why))),
    };
    let taken = head.taken_at.to_offset(time::UtcOffset::UTC);
    let hour = hour_period(taken);
    let region = snapshot
        .region
        .clone()
        .unwrap_or_else(|| cluster.body.region.clone());
    // Every type prices a running node, burstable and small ones included.
    let any_type = TypeFilter::any();
    let priced = snapshots::region_offerings(
        &deps.store,
        tenant,
        cluster_id,
        &snapshot,
        &region,
        &any_type,
    )
    .await?;
    if priced.pools == 0 {
        return Ok(Outcome::Skipped(Skipped::NoPools { region }));
    }
    let (nodes, pods) = inputs::from_snapshot(&snapshot, &priced.offerings);
    let allocation = allocate(&nodes, &pods, 1, &deps.weights);

    let baseline = baseline(deps, tenant, cluster_id, &allocation, now).await?;
    let asleep_saving = hibernation?
        .and_then(|h| money::price(h.body.awake_cost_hr))
        .unwrap_or_default();
    let summary = Summary::of(&allocation, &baseline, asleep_saving);
    let label_keys: Vec<String> = if policy.cost_labels.is_empty() {
        DEFAULT_LABEL_KEYS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        policy.cost_labels.clone()
    };
    let mut hour_items: Vec<Item<CostPeriod>> = Dimension::ALL
        .into_iter()
        .map(|dimension| {
            let table = breakdown::table(&allocation, &nodes, &pods, dimension, &label_keys);
            period_item(
                tenant,
                cluster_id,
                CostGranularity::Hour,
                &hour,
                dimension.as_str(),
                Some(table),
                None,
            )
        })
        .collect();
    hour_items.push(period_item(
        tenant,
        cluster_id,
        CostGranularity::Hour,
        &hour,
        SUMMARY,
        None,
        Some(summary.clone()),
    ));
    let hour_items: Vec<Item<CostPeriod>> = hour_items
        .into_iter()
        .map(|item| {
            let kept = if item.body.dimension == Dimension::Pod.as_str() {
                POD_HOUR_RETENTION
            } else {
                HOUR_RETENTION
            };
            item.expiring_at(now + kept)
        })
        .collect();
    deps.store.batch_put(&hour_items).await?;

    let ended = taken.date() < now.to_offset(time::UtcOffset::UTC).date();
    let last_of_day = taken.hour() == 23;
    if ended || last_of_day || taken.hour() % DAY_ROLLUP_HOURS == DAY_ROLLUP_HOURS - 1 {
        roll_up_day(
            deps,
            tenant,
            cluster_id,
            taken.date(),
            ended || last_of_day,
            now,
        )
        .await?;
    }
    // The day before, if its last rollup was missed (no sample at 23:00).
    if !ended && taken.hour() < DAY_ROLLUP_HOURS {
        let yesterday = taken.date() - time::Duration::days(1);
        let summary = period(
            deps,
            tenant,
            cluster_id,
            CostGranularity::Day,
            SUMMARY,
            &day_period(yesterday),
        )
        .await?;
        if summary.is_none_or(|day| !day.complete) {
            roll_up_day(deps, tenant, cluster_id, yesterday, true, now).await?;
        }
    }
    info!(%tenant, cluster = %cluster_id, %hour, cost = %summary.total.cost,
          idle = %summary.total.idle, pods = allocation.pods.len(), "cost sampled");
    Ok(Outcome::Sampled {
        hour,
        cost: summary.total.cost,
        pods: allocation.pods.len(),
        unpriced_nodes: allocation.unpriced_nodes.len(),
    })
}

fn period_item(
    tenant: &TenantId,
    cluster: &ClusterId,
    granularity: CostGranularity,
    period: &str,
    dimension: &str,
    table: Option<CostTable>,
    summary: Option<Summary>,
) -> Item<CostPeriod> {
    Item::new(
        keys::cost(tenant, cluster, granularity, dimension, period),
        CostPeriod {
            cluster_id: cluster.clone(),
            period: period.to_owned(),
            dimension: dimension.to_owned(),
            table,
            summary,
            forecast: None,
            complete: false,
        },
    )
}

/// Recomputes a day from its hours, every dimension; when the day is `complete`, its month from
/// its days too (pods are costed by the day only).
async fn roll_up_day(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    date: Date,
    complete: bool,
    now: OffsetDateTime,
) -> Result<(), CostError> {
    let (day, month) = (day_period(date), month_period(date.year(), date.month()));
    // The summary first: a day without a sampled hour has nothing to roll up.
    let dimensions = [SUMMARY]
        .into_iter()
        .chain(Dimension::ALL.iter().map(|d| d.as_str()));
    for dimension in dimensions {
        let rolled = roll_up(
            deps,
            tenant,
            cluster,
            (CostGranularity::Hour, dimension, &day),
            complete,
            now,
        )
        .await?;
        if !rolled {
            return Ok(());
        }
        if complete && dimension != Dimension::Pod.as_str() {
            roll_up(
                deps,
                tenant,
                cluster,
                (CostGranularity::Day, dimension, &month),
                false,
                now,
            )
            .await?;
        }
    }
    Ok(())
}

/// Recomputes the period `into` (a day from its hours, a month from its days) of one
/// dimension from the finer items it holds; `false`, writing nothing, when it holds none.
async fn roll_up(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    (from, dimension, into): (CostGranularity, &str, &str),
    complete: bool,
    now: OffsetDateTime,
) -> Result<bool, CostError> {
    let parts =
        deps.store
            .query_all::<CostPeriod>(&Query::partition(keys::tenant_partition(tenant)).prefix(
                format!("{}{into}", keys::cost_prefix(cluster, from, dimension)),
            ))
            .await?;
    if parts.is_empty() {
        return Ok(false);
    }
    let mut table: Option<CostTable> = None;
    let mut summary: Option<Summary> = None;
    let mut daily: Vec<DailyCost> = Vec::new();
    for part in parts {
        if let (Some(date), Some(s)) = (parse_day(&part.body.period), &part.body.summary) {
            daily.push(DailyCost {
                date,
                cost: s.total.cost,
            });
        }
        if let Some(t) = &part.body.table {
            table.get_or_insert_with(CostTable::default).merge(t);
        }
        if let Some(s) = &part.body.summary {
            summary.get_or_insert_with(Summary::default).merge(s);
        }
    }
    if let (Some(table), Ok(d)) = (&mut table, dimension.parse::<Dimension>()) {
        table.cap(d.cap());
    }
    let (to, expires) = match from {
        CostGranularity::Hour => (CostGranularity::Day, Some(now + DAY_RETENTION)),
        _ => (CostGranularity::Month, None),
    };
    let mut item = period_item(tenant, cluster, to, into, dimension, table, summary);
    if let (CostGranularity::Month, Some((year, month))) = (to, parse_month(into)) {
        item.body.forecast = trends::forecast_month(&daily, year, month);
    }
    item.body.complete = complete;
    if let Some(at) = expires {
        item = item.expiring_at(at);
    }
    deps.store.put(&item, PutCondition::Always).await?;
    Ok(true)
}

/// The cluster's baseline, captured from this sample when it has none yet.
async fn baseline(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    allocation: &spotwise_cost::Allocation,
    now: OffsetDateTime,
) -> Result<Baseline, CostError> {
    let key = keys::cost_baseline(tenant, cluster);
    if let Some(existing) = deps.store.get::<Baseline>(&key).await? {
        return Ok(existing.body);
    }
    let fresh = Baseline::from_allocation(allocation, spotwise_core::rfc3339(now));
    match deps
        .store
        .put(
            &Item::new(key.clone(), fresh.clone()),
            PutCondition::IfAbsent,
        )
        .await
    {
        Ok(()) => Ok(fresh),
        // Another sample captured it first: use theirs.
        Err(StoreError::AlreadyExists { .. }) => Ok(deps
            .store
            .get::<Baseline>(&key)
            .await?
            .map_or(fresh, |item| item.body)),
        Err(e) => Err(e.into()),
    }
}

async fn period(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    granularity: CostGranularity,
    dimension: &str,
    period: &str,
) -> Result<Option<CostPeriod>, StoreError> {
    Ok(deps
        .store
        .get::<CostPeriod>(&keys::cost(tenant, cluster, granularity, dimension, period))
        .await?
        .map(|item| item.body))
}

/// Daily totals from the `history` days before `month` through its end, oldest first.
async fn daily_costs(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    year: i32,
    month: Month,
) -> Result<Vec<DailyCost>, StoreError> {
    let first = Date::from_calendar_date(year, month, 1).unwrap_or(Date::MIN);
    let before = first - time::Duration::days(1);
    let prefix = keys::cost_prefix(cluster, CostGranularity::Day, SUMMARY);
    let mut series = Vec::new();
    for (y, m) in [(before.year(), before.month()), (year, month)] {
        let items = deps
            .store
            .query_all::<CostPeriod>(
                &Query::partition(keys::tenant_partition(tenant))
                    .prefix(format!("{prefix}{}", month_period(y, m))),
            )
            .await?;
        for item in items {
            if let (Some(date), Some(summary)) = (parse_day(&item.body.period), item.body.summary) {
                series.push(DailyCost {
                    date,
                    cost: summary.total.cost,
                });
            }
        }
    }
    series.sort_by_key(|d| d.date);
    let keep_from = series
        .iter()
        .position(|d| d.date >= first)
        .unwrap_or(series.len())
        .saturating_sub(REPORT_HISTORY_DAYS);
    Ok(series.split_off(keep_from))
}

/// Completes the month's days that were not rolled up after they ended (their last samples
/// came between rollups), so the month holds every sampled hour still kept.
async fn complete_days(
    deps: &Deps,
    tenant: &TenantId,
    cluster: &ClusterId,
    month: &str,
    now: OffsetDateTime,
) -> Result<(), CostError> {
    let in_month = |granularity| {
        Query::partition(keys::tenant_partition(tenant)).prefix(format!(
            "{}{month}",
            keys::cost_prefix(cluster, granularity, SUMMARY)
        ))
    };
    let (hours_query, days_query) = (
        in_month(CostGranularity::Hour),
        in_month(CostGranularity::Day),
    );
    let (hours, days) = tokio::try_join!(
        deps.store.query_all::<CostPeriod>(&hours_query),
        deps.store.query_all::<CostPeriod>(&days_query),
    )?;
    let complete: std::collections::BTreeSet<String> = days
        .into_iter()
        .filter(|day| day.body.complete)
        .map(|day| day.body.period)
        .collect();
    let mut open: Vec<Date> = hours
        .iter()
        .filter_map(|hour| hour.body.period.split_once('T'))
        .filter(|(day, _)| !complete.contains(*day))
        .filter_map(|(day, _)| parse_day(day))
        .collect();
    open.dedup();
    for date in open {
        roll_up_day(deps, tenant, cluster, date, true, now).await?;
    }
    Ok(())
}

/// Builds `month`'s savings report from its rollups, stores it, and notifies the tenant once.
pub async fn report(
    deps: &Deps,
    tenant: &TenantId,
    cluster_id: &ClusterId,
    month: &str,
    now: OffsetDateTime,
) -> Result<Outcome, CostError> {
    let (year, month_of_year) =
        parse_month(month).ok_or_else(|| CostError::BadPeriod(month.into()))?;
    complete_days(deps, tenant, cluster_id, month, now).await?;
    let Some(summary) = period(
        deps,
        tenant,
        cluster_id,
        CostGranularity::Month,
        SUMMARY,
        month,
    )
    .await?
    .and_then(|p| p.summary) else {
        return Ok(Outcome::Skipped(Skipped::NoCosts {
            month: month.into(),
        }));
    };
    let namespaces = period(
        deps,
        tenant,
        cluster_id,
        CostGranularity::Month,
        Dimension::Namespace.as_str(),
        month,
    )
    .await?
    .and_then(|p| p.table)
    .unwrap_or_default();
    let daily = daily_costs(deps, tenant, cluster_id, year, month_of_year).await?;
    let latest = spotwise_store::recommendations::newest(&deps.store, tenant, cluster_id)
        .await?
        .map(|item| item.body);
    let rollouts: Vec<Rollout> = deps
        .store
        .query::<Rollout>(
            &Query::partition(keys::tenant_partition(tenant))
                .prefix(keys::rollouts_prefix(cluster_id))
                .newest_first()
                .limit(ROLLOUTS_REPORTED),
        )
        .await?
        .items
        .into_iter()
        .map(|item| item.body)
        .collect();
    let resizes = Box::pin(spotwise_store::resize::recent(
        &deps.store,
        tenant,
        cluster_id,
        RESIZES_REPORTED,
    ))
    .await?;
    let unit_prices = UnitPrices::of(&summary);
    let cluster_name = cluster_id.to_string();
    let built = MonthlyReport::build(&ReportInput {
        cluster_id: &cluster_name,
        year,
        month: month_of_year,
        summary: &summary,
        namespaces: &namespaces,
        daily: &daily,
        recommendation: latest.as_ref(),
        unit_prices: unit_prices.as_ref(),
        rollouts: &rollouts,
        resizes: &resizes,
    });
    deps.store
        .put(
            &Item::new(
                keys::savings_report(tenant, cluster_id, month),
                built.clone(),
            ),
            PutCondition::Always,
        )
        .await?;

    let claim = keys::idempotency("savings-report", &format!("{tenant}:{cluster_id}:{month}"));
    let Some(held) = deps.store.hold(claim, REPORT_CLAIM_HOLD, now).await? else {
        return Ok(Outcome::Reported {
            month: month.into(),
            notified: false,
        });
    };
    let notification = Notification {
        tenant_id: tenant.clone(),
        event_type: "savings_report".into(),
        severity: Severity::Info,
        cluster_id: Some(cluster_id.clone()),
        // `{savings}` and `{label.month}` in endpoint templates.
        labels: [
            ("savings".to_owned(), format!("${}", built.realised_total)),
            ("month".to_owned(), month.to_owned()),
        ]
        .into(),
        title: built.title(),
        body: built.body(),
        links: Vec::new(),
        occurred_at: now,
        dedup_key: format!("savings-report:{cluster_id}:{month}"),
    };
    // A failure gives the claim back: the retry sends it.
    held.settle(deps.notifications.send(&notification, None).await)
        .await?;
    info!(%tenant, cluster = %cluster_id, %month, saved = %built.realised_total, "savings report sent");
    Ok(Outcome::Reported {
        month: month.into(),
        notified: true,
    })
}

#[cfg(test)]
mod tests;
