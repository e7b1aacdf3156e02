//! The single-table key scheme. Every key is built here, by typed functions, so the layout is
//! visible in one place and no caller can invent a key.
//!
//! Tenant-owned items live in partition `T#<tenant>`; only [`TenantId`] (validated, no `#`) can
//! produce such a partition, which is what makes tenant isolation a property of the keys.
//! Dates in keys are UTC days, `2026-11-22` ([`utc_day`]); times are fixed-width UTC RFC 3339,
//! so string order is time order.

use spotwise_core::domain::PoolKey;
use spotwise_core::{ClusterId, TenantId};
use time::OffsetDateTime;

/// A primary key of the table. Only this module builds one (the table decodes stored ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pk: String,
    sk: String,
}

impl Key {
    fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }

    /// The key of an item read back from the table.
    pub(crate) fn stored(pk: String, sk: String) -> Self {
        Self { pk, sk }
    }

    pub fn pk(&self) -> &str {
        &self.pk
    }

    pub fn sk(&self) -> &str {
        &self.sk
    }
}

/// The UTC day of `at`, as every key that holds a day writes it.
pub fn utc_day(at: OffsetDateTime) -> String {
    let day = at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// A liveness probe's key: reading it proves the table answers.
pub fn health_probe() -> Key {
    Key::new("HEALTH", "PROBE")
}

/// A secondary (GSI1) key for reverse look-ups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Gsi1Key {
    pub gsi1pk: String,
    pub gsi1sk: String,
}

pub fn tenant_partition(tenant: &TenantId) -> String {
    format!("T#{tenant}")
}

pub fn tenant(tenant: &TenantId) -> Key {
    Key::new(tenant_partition(tenant), "TENANT")
}

/// The ExternalId a tenant was issued for its next account link.
pub fn external_id(tenant: &TenantId) -> Key {
    Key::new(tenant_partition(tenant), "EXTERNAL_ID")
}

/// One discovery run of one linked account.
pub fn discovery_run(tenant: &TenantId, account_id: &str, run_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{account_id}#{run_id}", prefix::DISCOVERY_RUN),
    )
}

/// One run of the pricing scraper.
pub fn scrape_run(run_id: &str) -> Key {
    Key::new("SCRAPE", format!("{}{run_id}", prefix::RUN))
}

pub fn account(tenant: &TenantId, account_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{account_id}", prefix::ACCOUNT),
    )
}

/// Which tenant linked an AWS account. An account is linked by one tenant at most, so the
/// partitions keyed by cluster id (which embeds the account) belong to exactly one tenant.
pub fn account_owner(account_id: &str) -> Key {
    Key::new(format!("AWSACCOUNT#{account_id}"), "OWNER")
}

pub fn cluster(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::CLUSTER),
    )
}

pub fn nodegroup(tenant: &TenantId, cluster: &ClusterId, name: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{name}", nodegroups_prefix(cluster)),
    )
}

/// Sort-key prefix of one AWS account's clusters in a tenant: cluster ids start with the
/// account (`<account>.<region>.<name>`), so reading an account's clusters never reads the others.
pub fn account_clusters_prefix(account_id: &str) -> String {
    format!("{}{account_id}.", prefix::CLUSTER)
}

/// Sort-key prefix of one AWS account's node groups in a tenant.
pub fn account_nodegroups_prefix(account_id: &str) -> String {
    format!("{}{account_id}.", prefix::NODEGROUP)
}

/// Sort-key prefix of a cluster's node groups.
pub fn nodegroups_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::NODEGROUP)
}

/// The partition of one cluster's nodes, secret and snapshot, as one tenant knows it. A cluster
/// id names an AWS account's cluster; the tenant in the key keeps what one tenant's agent and
/// discovery wrote away from the next tenant that links the same account.
pub fn cluster_partition(tenant: &TenantId, cluster: &ClusterId) -> String {
    format!("C#{tenant}#{cluster}")
}

pub fn node(tenant: &TenantId, cluster: &ClusterId, node_name: &str) -> Key {
    Key::new(
        cluster_partition(tenant, cluster),
        format!("{}{node_name}", prefix::NODE),
    )
}

/// What the interruption handler knows about one instance's signals (see the handler).
pub fn instance_signals(tenant: &TenantId, cluster: &ClusterId, instance_id: &str) -> Key {
    Key::new(
        cluster_partition(tenant, cluster),
        format!("{}{instance_id}", prefix::INSTANCE_SIGNALS),
    )
}

pub fn pool_current(pool: &PoolKey) -> Key {
    Key::new(pool_partition(pool), "CUR")
}

/// Idempotency claims: one item per processed event id, expired by TTL.
pub fn idempotency(scope: &str, id: &str) -> Key {
    Key::new(format!("IDEMP#{scope}#{id}"), "IDEMP")
}

pub fn audit(tenant: &TenantId, event_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{event_id}", prefix::AUDIT),
    )
}

pub fn action(tenant: &TenantId, action_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{action_id}", prefix::ACTION),
    )
}

pub fn cluster_secret(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(cluster_partition(tenant, cluster), "SECRET")
}

pub fn policy(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::POLICY),
    )
}

/// The current snapshot of a cluster as the agent last uploaded it: a head item naming the
/// object in the snapshot bucket, and the one before it.
pub fn snapshot_head(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(cluster_partition(tenant, cluster), "SNAPSHOT")
}

/// The GSI1 partition that lists every cluster with an uploaded snapshot, across tenants.
pub const SNAPSHOTTED_CLUSTERS_PARTITION: &str = "SNAPSHOTTED_CLUSTER";

/// GSI1 entry on a snapshot head, for the optimizer's scheduled fan-out.
pub fn snapshotted_clusters_index(tenant: &TenantId, cluster: &ClusterId) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: SNAPSHOTTED_CLUSTERS_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{cluster}"),
    }
}

/// Where a tenant's objects start in the snapshot bucket: IAM and lifecycle rules can name it.
pub fn tenant_objects_prefix(tenant: &TenantId) -> String {
    format!("tenants/{tenant}/")
}

/// The object key of one uploaded snapshot (gzip JSON), under its tenant's prefix.
pub fn snapshot_object(tenant: &TenantId, cluster: &ClusterId, id: &str) -> String {
    format!(
        "{}clusters/{cluster}/snapshots/{id}.json.gz",
        tenant_objects_prefix(tenant)
    )
}

/// One stored plan of a cluster; versions count up per cluster so the newest sorts last.
pub fn recommendation(tenant: &TenantId, cluster: &ClusterId, version: u64) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}#{version:010}", prefix::RECOMMENDATION),
    )
}

pub fn recommendations_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::RECOMMENDATION)
}

/// The partition of one pool's current item, history, interruption counts and cooldown.
pub fn pool_partition(pool: &PoolKey) -> String {
    format!("POOL#{}#{}#{}", pool.region, pool.zone, pool.instance_type)
}

/// How long a cost period is: `H` (hour, `2026-11-24T10`), `D` (day, `2026-11-24`) or
/// `M` (month, `2026-11`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostGranularity {
    Hour,
    Day,
    Month,
}

impl CostGranularity {
    fn code(self) -> char {
        match self {
            CostGranularity::Hour => 'H',
            CostGranularity::Day => 'D',
            CostGranularity::Month => 'M',
        }
    }
}

/// One cost table (or the `summary`) of a cluster for one period. The dimension comes before
/// the period so one query reads a dimension over a range of periods.
pub fn cost(
    tenant: &TenantId,
    cluster: &ClusterId,
    granularity: CostGranularity,
    dimension: &str,
    period: &str,
) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{period}", cost_prefix(cluster, granularity, dimension)),
    )
}

/// Sort-key prefix of one dimension's periods; append a period prefix (`2026-11`) to narrow.
pub fn cost_prefix(cluster: &ClusterId, granularity: CostGranularity, dimension: &str) -> String {
    format!(
        "{}{cluster}#{}#{dimension}#",
        prefix::COST,
        granularity.code()
    )
}

/// The cluster's cost before Spotwise changed anything, for consolidation savings.
pub fn cost_baseline(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::COST_BASELINE),
    )
}

pub fn savings_report(tenant: &TenantId, cluster: &ClusterId, month: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{month}", savings_reports_prefix(cluster)),
    )
}

pub fn savings_reports_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::SAVINGS_REPORT)
}

/// Present while hibernation has the cluster asleep.
pub fn hibernation_state(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::HIBERNATION_STATE),
    )
}

/// Sort-key prefix of a cluster's pod history, or of one pod's (`namespace/name`).
pub fn pod_history_prefix(cluster: &ClusterId, pod: Option<&str>) -> String {
    match pod {
        Some(pod) => format!("{}{cluster}#{pod}#", prefix::POD_HISTORY),
        None => format!("{}{cluster}#", prefix::POD_HISTORY),
    }
}

/// One change of one pod; `stamp` sorts by time.
pub fn pod_history(tenant: &TenantId, cluster: &ClusterId, pod: &str, stamp: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{stamp}", pod_history_prefix(cluster, Some(pod))),
    )
}

/// Sort-key prefix of a cluster's node templates.
pub fn node_templates_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::NODE_TEMPLATE)
}

pub fn node_template(tenant: &TenantId, cluster: &ClusterId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", node_templates_prefix(cluster)),
    )
}

/// A cluster's weekly hibernation schedule.
pub fn hibernation_schedule(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::HIBERNATION_SCHEDULE),
    )
}

/// The GSI1 partition listing every hibernation schedule across tenants, for the scheduler.
pub const HIBERNATION_SCHEDULES_PARTITION: &str = "HIBERNATION_SCHEDULE";

pub fn hibernation_schedules_index(tenant: &TenantId, cluster: &ClusterId) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: HIBERNATION_SCHEDULES_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{cluster}"),
    }
}

/// The replacement capacity raised for an interrupted instance of a Spotwise spot group.
pub fn capacity_replacement(tenant: &TenantId, cluster: &ClusterId, instance_id: &str) -> Key {
    Key::new(
        cluster_partition(tenant, cluster),
        format!("{}{instance_id}", prefix::REPLACEMENT),
    )
}

/// The rollout of a cluster's recommendation `revision`.
pub fn rollout(tenant: &TenantId, cluster: &ClusterId, revision: u64) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}#{revision:010}", prefix::ROLLOUT),
    )
}

pub fn rollouts_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::ROLLOUT)
}

/// The GSI1 partition listing the rollouts the scheduler advances (unfinished, or waiting to
/// try spot again), across tenants.
pub const ACTIVE_ROLLOUTS_PARTITION: &str = "ACTIVE_ROLLOUT";

pub fn active_rollouts_index(tenant: &TenantId, cluster: &ClusterId, revision: u64) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: ACTIVE_ROLLOUTS_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{cluster}#{revision:010}"),
    }
}

/// One right-sizing change of a cluster's workload; ids are ULIDs, so they sort by time.
pub fn resize_change(tenant: &TenantId, cluster: &ClusterId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}#{id}", prefix::RESIZE_CHANGE),
    )
}

pub fn resize_changes_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::RESIZE_CHANGE)
}

/// What a cluster remembers per workload between right-sizing changes.
pub fn resize_state(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::RESIZE_STATE),
    )
}

/// The GSI1 partition listing the right-sizing changes the scheduler applies and watches.
pub const ACTIVE_RESIZES_PARTITION: &str = "ACTIVE_RESIZE";

pub fn active_resizes_index(tenant: &TenantId, cluster: &ClusterId, id: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: ACTIVE_RESIZES_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{cluster}#{id}"),
    }
}

/// The object key of a cluster's usage history (gzip JSON). Outside `tenants/`, whose
/// objects expire after two days, so an agent that is down for a weekend does not cost the
/// cluster its 14 days of history; the bucket expires these after 15 days without a write.
pub fn usage_history_object(tenant: &TenantId, cluster: &ClusterId) -> String {
    format!(
        "usage-history/{}clusters/{cluster}.json.gz",
        tenant_objects_prefix(tenant)
    )
}

/// Sort-key prefix of a cluster's past sleeps; they sort by when they began.
pub fn sleeps_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::SLEEP)
}

pub fn sleep(tenant: &TenantId, cluster: &ClusterId, asleep_since: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{asleep_since}", sleeps_prefix(cluster)),
    )
}

/// A scheduled run (cron) of the tenant's.
pub fn scheduled_run(tenant: &TenantId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", prefix::SCHEDULE),
    )
}

/// The GSI1 partition of active schedules, sorted by their next run time, so the scheduler
/// reads exactly the due ones.
pub const DUE_SCHEDULES_PARTITION: &str = "DUE_SCHEDULE";

/// `next_run` must be UTC RFC 3339 with a fixed width, so the order of the strings is the
/// order of the times.
pub fn due_schedules_index(next_run: &str, tenant: &TenantId, id: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: DUE_SCHEDULES_PARTITION.into(),
        gsi1sk: format!("{next_run}#T#{tenant}#{id}"),
    }
}

/// Shards of the agent liveness index, so no index partition takes every agent's writes.
pub const AGENT_LIVENESS_SHARDS: u8 = 8;

/// The GSI1 partition of one liveness shard, sorted by the window of each agent's last heartbeat.
pub fn agent_liveness_partition(shard: u8) -> String {
    format!("AGENT_LIVENESS#{shard}")
}

/// An agent's entry in the liveness index. It lives in the cluster partition, so unlinking
/// removes it, and is rewritten only when the agent's heartbeat window moves.
pub fn agent_liveness(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(cluster_partition(tenant, cluster), "LIVENESS")
}

/// `window` is the fixed-width UTC start of the heartbeat window (see `runs::sortable`); the
/// shard is fixed by tenant and cluster (FNV-1a, stable across processes).
pub fn agent_liveness_index(window: &str, tenant: &TenantId, cluster: &ClusterId) -> Gsi1Key {
    let name = format!("{tenant}#{cluster}");
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Gsi1Key {
        gsi1pk: agent_liveness_partition((hash % u64::from(AGENT_LIVENESS_SHARDS)) as u8),
        gsi1sk: format!("{window}#T#{name}"),
    }
}

/// Sort-key prefix of one schedule's runs; run ids sort by start time.
pub fn runs_prefix(schedule: &str) -> String {
    format!("{}{schedule}#", prefix::RUN)
}

pub fn run(tenant: &TenantId, schedule: &str, run_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{run_id}", runs_prefix(schedule)),
    )
}

/// An API key, found by the prefix every key starts with: authentication needs no tenant.
/// A silence of a cluster's agent, by when it began.
pub fn agent_silence(tenant: &TenantId, cluster: &ClusterId, from: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}#{from}", prefix::AGENT_SILENCE),
    )
}

pub fn agent_silences_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::AGENT_SILENCE)
}

pub fn agent_monitored(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::AGENT_MONITORED),
    )
}

/// The tenant's status page settings.
pub fn status_page_of(tenant: &TenantId) -> Key {
    Key::new(tenant_partition(tenant), "STATUS_PAGE")
}

/// A public status page, by its random id.
pub fn status_page(id: &str) -> Key {
    Key::new(format!("STATUSPAGE#{id}"), "PAGE")
}

/// A console user, by the user pool's `sub`: found from a token without knowing the tenant.
pub fn user(sub: &str) -> Key {
    Key::new(format!("USER#{sub}"), "USER")
}

/// The GSI1 partition listing one tenant's users, by email.
pub fn users_partition(tenant: &TenantId) -> String {
    format!("USERS#T#{tenant}")
}

pub fn users_index(tenant: &TenantId, email: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: users_partition(tenant),
        gsi1sk: email.to_owned(),
    }
}

pub fn api_key(prefix: &str) -> Key {
    Key::new(format!("APIKEY#{prefix}"), "KEY")
}

/// The GSI1 partition listing one tenant's API keys.
pub fn api_keys_partition(tenant: &TenantId) -> String {
    format!("APIKEYS#T#{tenant}")
}

pub fn api_keys_index(tenant: &TenantId, prefix: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: api_keys_partition(tenant),
        gsi1sk: prefix.to_owned(),
    }
}

/// What the cluster's agent last said about itself (heartbeat).
pub fn agent_status(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{cluster}", prefix::AGENT_STATUS),
    )
}

/// Sort-key prefix of a cluster's recent events (kept 24 hours); ids sort by time.
pub fn cluster_events_prefix(cluster: &ClusterId) -> String {
    format!("{}{cluster}#", prefix::CLUSTER_EVENT)
}

pub fn cluster_event(tenant: &TenantId, cluster: &ClusterId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", cluster_events_prefix(cluster)),
    )
}

/// A notification in the tenant's feed, kept 30 days; ids sort by time.
pub fn notification(tenant: &TenantId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", prefix::NOTIFICATION),
    )
}

/// A notification endpoint (webhook) of a tenant.
pub fn webhook(tenant: &TenantId, id: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("{}{id}", prefix::WEBHOOK))
}

/// One delivery attempt to an endpoint, kept 30 days; ids sort by time.
pub fn webhook_delivery(tenant: &TenantId, endpoint: &str, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", webhook_deliveries_prefix(endpoint)),
    )
}

pub fn webhook_deliveries_prefix(endpoint: &str) -> String {
    format!("{}{endpoint}#", prefix::WEBHOOK_DELIVERY)
}

/// An endpoint's failed deliveries since its last success.
pub fn webhook_failures(tenant: &TenantId, endpoint: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{endpoint}", prefix::WEBHOOK_FAILURES),
    )
}

/// The token bucket that rate-limits an endpoint.
pub fn webhook_bucket(tenant: &TenantId, endpoint: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{endpoint}", prefix::WEBHOOK_BUCKET),
    )
}

pub fn silence(tenant: &TenantId, id: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("{}{id}", prefix::SILENCE))
}

pub fn maintenance_window(tenant: &TenantId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", prefix::MAINTENANCE),
    )
}

/// Cross-tenant interruption count of one pool for the UTC day of `at`.
pub fn pool_interruptions(pool: &PoolKey, at: OffsetDateTime) -> Key {
    Key::new(
        pool_partition(pool),
        format!("{}{}", prefix::POOL_INTERRUPTIONS, utc_day(at)),
    )
}

/// The sort keys of a pool's daily interruption counts from the day of `since` on are those
/// at or above this bound (and under [`prefix::POOL_INTERRUPTIONS`]).
pub fn pool_interruptions_from(since: OffsetDateTime) -> String {
    format!("{}{}", prefix::POOL_INTERRUPTIONS, utc_day(since))
}

/// Present (until its TTL) while a pool should not receive new spot capacity.
pub fn pool_cooldown(pool: &PoolKey) -> Key {
    Key::new(pool_partition(pool), "COOLDOWN")
}

/// Daily counters of a function's outcomes (`STATS#interruption`, `DAY#2026-11-22`).
pub fn daily_stats(function: &str, at: OffsetDateTime) -> Key {
    Key::new(
        format!("STATS#{function}"),
        format!("{}{}", prefix::DAY, utc_day(at)),
    )
}

/// GSI1 entry listing the actions issued for one node.
pub fn node_actions_index(
    tenant: &TenantId,
    cluster: &ClusterId,
    node_name: &str,
    action_id: &str,
) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: node_actions_partition(tenant, cluster, node_name),
        gsi1sk: action_id.to_owned(),
    }
}

pub fn node_actions_partition(tenant: &TenantId, cluster: &ClusterId, node_name: &str) -> String {
    format!("NODEACTIONS#T#{tenant}#{cluster}#{node_name}")
}

/// Where an EC2 instance runs ([`InstanceLocation`](spotwise_core::domain::InstanceLocation)):
/// instance ids are unique across AWS, and the item names its tenant and cluster.
pub fn instance(instance_id: &str) -> Key {
    Key::new(format!("INSTANCE#{instance_id}"), "LOCATION")
}

/// The GSI1 partition that lists every linked account across tenants.
pub const LINKED_ACCOUNTS_PARTITION: &str = "LINKED_ACCOUNT";

/// GSI1 entry listing every linked account across tenants, for the discovery fan-out.
pub fn linked_accounts_index(tenant: &TenantId, account_id: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: LINKED_ACCOUNTS_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{account_id}"),
    }
}

/// GSI1 partition listing a region's current pools, so one query reads them all.
pub fn region_pools_partition(region: &str) -> String {
    format!("POOLS#{region}")
}

pub fn region_pools_index(pool: &PoolKey) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: region_pools_partition(&pool.region),
        gsi1sk: format!("{}#{}", pool.zone, pool.instance_type),
    }
}

pub mod prefix {
    //! Sort-key prefixes, grouped by the partition they live in. A listing reads one prefix, so
    //! within a partition no prefix may begin another kind's sort keys, or the listing would read
    //! (and fail to decode) both; the tests check every pair.

    // Tenant partition (`T#<tenant>`).
    pub const ACCOUNT: &str = "ACCOUNT#";
    pub const DISCOVERY_RUN: &str = "DISCOVERY#";
    pub const CLUSTER: &str = "CLUSTER#";
    pub const NODEGROUP: &str = "NODEGROUP#";
    pub const AUDIT: &str = "AUDIT#";
    pub const ACTION: &str = "ACTION#";
    pub const POLICY: &str = "POLICY#";
    pub const RECOMMENDATION: &str = "REC#";
    pub const COST: &str = "COST#";
    pub const COST_BASELINE: &str = "COSTBASE#";
    pub const SAVINGS_REPORT: &str = "SAVINGSREPORT#";
    pub const HIBERNATION_STATE: &str = "HIBERNATION#";
    pub const HIBERNATION_SCHEDULE: &str = "HIBSCHEDULE#";
    pub const SLEEP: &str = "SLEEP#";
    pub const ROLLOUT: &str = "ROLLOUT#";
    pub const REPLACEMENT: &str = "REPLACEMENT#";
    pub const POD_HISTORY: &str = "PODHIST#";
    pub const NODE_TEMPLATE: &str = "NODETEMPLATE#";
    pub const SCHEDULE: &str = "SCHEDULE#";
    pub const RUN: &str = "RUN#";
    pub const AGENT_STATUS: &str = "AGENT#";
    pub const AGENT_SILENCE: &str = "SILENT#";
    pub const AGENT_MONITORED: &str = "MONITORED#";
    pub const CLUSTER_EVENT: &str = "EVENT#";
    pub const NOTIFICATION: &str = "NOTIFICATION#";
    pub const WEBHOOK: &str = "WEBHOOK#";
    pub const WEBHOOK_DELIVERY: &str = "WHLOG#";
    pub const WEBHOOK_FAILURES: &str = "WHFAIL#";
    pub const WEBHOOK_BUCKET: &str = "WHBUCKET#";
    pub const SILENCE: &str = "SILENCE#";
    pub const MAINTENANCE: &str = "MAINTENANCE#";
    pub const RESIZE_CHANGE: &str = "RESIZE#";
    pub const RESIZE_STATE: &str = "RESIZESTATE#";

    // Cluster partition (`C#<tenant>#<cluster>`).
    pub const NODE: &str = "NODE#";
    pub const INSTANCE_SIGNALS: &str = "ISIGNALS#";

    // Pool partition (`POOL#<region>#<zone>#<type>`).
    pub const POOL_INTERRUPTIONS: &str = "INTERRUPTIONS#";

    // Daily statistics partition (`STATS#<function>`).
    pub const DAY: &str = "DAY#";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_keys_put_the_dimension_before_the_period() {
        let t = TenantId::new("t1").unwrap();
        let c = ClusterId::new("c1").unwrap();
        let day = cost(&t, &c, CostGranularity::Day, "namespace", "2026-11-24");
        assert_eq!(day, Key::new("T#t1", "COST#c1#D#namespace#2026-11-24"));
        assert!(day.sk.starts_with(&format!(
            "{}2026-11",
            cost_prefix(&c, CostGranularity::Day, "namespace")
        )));
    }

    #[test]
    fn tenant_items_share_the_tenant_partition() {
        let t = TenantId::new("t1").unwrap();
        let c = ClusterId::new("c1").unwrap();
        assert_eq!(
            account(&t, "123456789012"),
            Key::new("T#t1", "ACCOUNT#123456789012")
        );
        assert_eq!(cluster(&t, &c), Key::new("T#t1", "CLUSTER#c1"));
        assert!(audit(&t, "01J").sk.starts_with(prefix::AUDIT));
    }

    /// Every sort key that shares a partition: the listed prefixes, and the keys of single items
    /// there (which a prefix must not match either).
    fn partitions() -> [(&'static str, Vec<&'static str>, Vec<Key>); 4] {
        let t = TenantId::new("t1").unwrap();
        let c = ClusterId::new("c1").unwrap();
        let pool = PoolKey {
            region: "us-east-1".into(),
            zone: "use1-az1".into(),
            instance_type: "m5.large".into(),
        };
        [
            (
                "tenant",
                vec![
                    prefix::ACCOUNT,
                    prefix::DISCOVERY_RUN,
                    prefix::CLUSTER,
                    prefix::NODEGROUP,
                    prefix::AUDIT,
                    prefix::ACTION,
                    prefix::POLICY,
                    prefix::RECOMMENDATION,
                    prefix::COST,
                    prefix::COST_BASELINE,
                    prefix::SAVINGS_REPORT,
                    prefix::HIBERNATION_STATE,
                    prefix::HIBERNATION_SCHEDULE,
                    prefix::SLEEP,
                    prefix::ROLLOUT,
                    prefix::POD_HISTORY,
                    prefix::NODE_TEMPLATE,
                    prefix::SCHEDULE,
                    prefix::RUN,
                    prefix::AGENT_STATUS,
                    prefix::AGENT_SILENCE,
                    prefix::AGENT_MONITORED,
                    prefix::CLUSTER_EVENT,
                    prefix::NOTIFICATION,
                    prefix::WEBHOOK,
                    prefix::WEBHOOK_DELIVERY,
                    prefix::WEBHOOK_FAILURES,
                    prefix::WEBHOOK_BUCKET,
                    prefix::SILENCE,
                    prefix::MAINTENANCE,
                    prefix::RESIZE_CHANGE,
                    prefix::RESIZE_STATE,
                ],
                vec![tenant(&t), external_id(&t), status_page_of(&t)],
            ),
            (
                "cluster",
                vec![prefix::NODE, prefix::REPLACEMENT],
                vec![
                    cluster_secret(&t, &c),
                    snapshot_head(&t, &c),
                    instance_signals(&t, &c, "i-12345678"),
                ],
            ),
            (
                "pool",
                vec![prefix::POOL_INTERRUPTIONS],
                vec![pool_current(&pool), pool_cooldown(&pool)],
            ),
            ("stats", vec![prefix::DAY], vec![]),
        ]
    }

    #[test]
    fn no_prefix_begins_another_sort_key_of_its_partition() {
        for (partition, prefixes, fixed) in partitions() {
            for (i, a) in prefixes.iter().enumerate() {
                for (j, b) in prefixes.iter().enumerate() {
                    assert!(
                        i == j || !b.starts_with(a),
                        "{partition}: {a} is a prefix of {b}"
                    );
                }
                for key in &fixed {
                    assert!(
                        !key.sk.starts_with(a),
                        "{partition}: {a} is a prefix of {}",
                        key.sk
                    );
                }
            }
        }
    }

    #[test]
    fn keys_of_each_partition_use_its_listed_prefixes() {
        let t = TenantId::new("t1").unwrap();
        let c = ClusterId::new("c1").unwrap();
        let at = time::macros::datetime!(2026-11-22 23:59:59 -02:00);
        let pool = PoolKey {
            region: "us-east-1".into(),
            zone: "use1-az1".into(),
            instance_type: "m5.large".into(),
        };
        assert_eq!(utc_day(at), "2026-11-23", "days are UTC days");
        assert!(
            discovery_run(&t, "111122223333", "r1")
                .sk
                .starts_with(prefix::DISCOVERY_RUN)
        );
        assert_eq!(node(&t, &c, "n1").pk, cluster_partition(&t, &c));
        assert_eq!(
            pool_interruptions(&pool, at),
            Key::new(
                "POOL#us-east-1#use1-az1#m5.large",
                "INTERRUPTIONS#2026-11-23"
            )
        );
        assert!(pool_interruptions(&pool, at).sk >= pool_interruptions_from(at));
        assert_eq!(daily_stats("interruption", at).sk, "DAY#2026-11-23");
    }

    #[test]
    fn pool_key_layout() {
        let k = pool_current(&PoolKey {
            region: "us-east-1".into(),
            zone: "use1-az1".into(),
            instance_type: "m5.large".into(),
        });
        assert_eq!(k, Key::new("POOL#us-east-1#use1-az1#m5.large", "CUR"));
    }
}
