//! The single-table key scheme. Every key is built here, so the layout is visible in one place.
//!
//! Tenant-owned items live in partition `T#<tenant>`; only [`TenantId`] (validated, no `#`) can
//! produce such a partition, which is what makes tenant isolation a property of the keys.

use spotwise_core::domain::PoolKey;
use spotwise_core::{ClusterId, TenantId};

/// A primary key of the table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
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

pub fn account(tenant: &TenantId, account_id: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("ACCOUNT#{account_id}"))
}

/// Which tenant linked an AWS account. An account is linked by one tenant at most, so the
/// partitions keyed by cluster id (which embeds the account) belong to exactly one tenant.
pub fn account_owner(account_id: &str) -> Key {
    Key::new(format!("AWSACCOUNT#{account_id}"), "OWNER")
}

pub fn cluster(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(tenant_partition(tenant), format!("CLUSTER#{cluster}"))
}

pub fn nodegroup(tenant: &TenantId, cluster: &ClusterId, name: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("NODEGROUP#{cluster}#{name}"),
    )
}

pub fn node(cluster: &ClusterId, node_name: &str) -> Key {
    Key::new(format!("C#{cluster}"), format!("NODE#{node_name}"))
}

pub fn pool_current(pool: &PoolKey) -> Key {
    Key::new(pool_partition(pool), "CUR")
}

/// Idempotency claims: one item per processed event id, expired by TTL.
pub fn idempotency(scope: &str, id: &str) -> Key {
    Key::new(format!("IDEMP#{scope}#{id}"), "IDEMP")
}

pub fn audit(tenant: &TenantId, event_id: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("AUDIT#{event_id}"))
}

pub fn action(tenant: &TenantId, action_id: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("ACTION#{action_id}"))
}

pub fn cluster_secret(cluster: &ClusterId) -> Key {
    Key::new(format!("C#{cluster}"), "SECRET")
}

pub fn policy(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(tenant_partition(tenant), format!("POLICY#{cluster}"))
}

/// The current snapshot of a cluster (nodes, pods, PDBs) as the agent last uploaded it: a head
/// item naming the version whose chunks are complete.
pub fn snapshot_head(cluster: &ClusterId) -> Key {
    Key::new(format!("C#{cluster}"), "SNAPSHOT")
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

/// Sort-key prefix of one snapshot version's chunks.
pub fn snapshot_chunks_prefix(version: &str) -> String {
    format!("SNAPSHOT#{version}#")
}

pub fn snapshot_chunk(cluster: &ClusterId, version: &str, index: u32) -> Key {
    Key::new(
        format!("C#{cluster}"),
        format!("{}{index:05}", snapshot_chunks_prefix(version)),
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

fn pool_partition(pool: &PoolKey) -> String {
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
    format!("COST#{cluster}#{}#{dimension}#", granularity.code())
}

/// The cluster's cost before Spotwise changed anything, for consolidation savings.
pub fn cost_baseline(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(tenant_partition(tenant), format!("COSTBASE#{cluster}"))
}

pub fn savings_report(tenant: &TenantId, cluster: &ClusterId, month: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{month}", savings_reports_prefix(cluster)),
    )
}

pub fn savings_reports_prefix(cluster: &ClusterId) -> String {
    format!("SAVINGSREPORT#{cluster}#")
}

/// Present while hibernation has the cluster asleep.
pub fn hibernation_state(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(tenant_partition(tenant), format!("HIBERNATION#{cluster}"))
}

/// Sort-key prefix of a cluster's pod history, or of one pod's (`namespace/name`).
pub fn pod_history_prefix(cluster: &ClusterId, pod: Option<&str>) -> String {
    match pod {
        Some(pod) => format!("PODHIST#{cluster}#{pod}#"),
        None => format!("PODHIST#{cluster}#"),
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
    format!("NODETEMPLATE#{cluster}#")
}

pub fn node_template(tenant: &TenantId, cluster: &ClusterId, id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{id}", node_templates_prefix(cluster)),
    )
}

/// A cluster's weekly hibernation schedule.
pub fn hibernation_schedule(tenant: &TenantId, cluster: &ClusterId) -> Key {
    Key::new(tenant_partition(tenant), format!("HIBSCHEDULE#{cluster}"))
}

/// The GSI1 partition listing every hibernation schedule across tenants, for the scheduler.
pub const HIBERNATION_SCHEDULES_PARTITION: &str = "HIBERNATION_SCHEDULE";

pub fn hibernation_schedules_index(tenant: &TenantId, cluster: &ClusterId) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: HIBERNATION_SCHEDULES_PARTITION.into(),
        gsi1sk: format!("T#{tenant}#{cluster}"),
    }
}

/// Sort-key prefix of a cluster's past sleeps; they sort by when they began.
pub fn sleeps_prefix(cluster: &ClusterId) -> String {
    format!("SLEEP#{cluster}#")
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

/// The GSI1 partition of reporting agents, sorted by their last heartbeat.
pub const AGENT_HEARTBEATS_PARTITION: &str = "AGENT_HEARTBEAT";

/// `last_heartbeat` is fixed-width UTC RFC 3339, like `due_schedules_index`.
pub fn agent_heartbeat_index(
    last_heartbeat: &str,
    tenant: &TenantId,
    cluster: &ClusterId,
) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: AGENT_HEARTBEATS_PARTITION.into(),
        gsi1sk: format!("{last_heartbeat}#T#{tenant}#{cluster}"),
    }
}

/// Sort-key prefix of one schedule's runs; run ids sort by start time.
pub fn runs_prefix(schedule: &str) -> String {
    format!("RUN#{schedule}#")
}

pub fn run(tenant: &TenantId, schedule: &str, run_id: &str) -> Key {
    Key::new(
        tenant_partition(tenant),
        format!("{}{run_id}", runs_prefix(schedule)),
    )
}

/// An API key, found by the prefix every key starts with: authentication needs no tenant.
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
    Key::new(tenant_partition(tenant), format!("AGENT#{cluster}"))
}

/// Sort-key prefix of a cluster's recent events (kept 24 hours); ids sort by time.
pub fn cluster_events_prefix(cluster: &ClusterId) -> String {
    format!("EVENT#{cluster}#")
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
    format!("WHLOG#{endpoint}#")
}

/// An endpoint's failed deliveries since its last success.
pub fn webhook_failures(tenant: &TenantId, endpoint: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("WHFAIL#{endpoint}"))
}

/// The token bucket that rate-limits an endpoint.
pub fn webhook_bucket(tenant: &TenantId, endpoint: &str) -> Key {
    Key::new(tenant_partition(tenant), format!("WHBUCKET#{endpoint}"))
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

/// Cross-tenant interruption count of one pool for one UTC day (`2026-11-22`).
pub fn pool_interruptions(pool: &PoolKey, day: &str) -> Key {
    Key::new(pool_partition(pool), format!("INTERRUPTIONS#{day}"))
}

/// Present (until its TTL) while a pool should not receive new spot capacity.
pub fn pool_cooldown(pool: &PoolKey) -> Key {
    Key::new(pool_partition(pool), "COOLDOWN")
}

/// Daily counters of a function's outcomes (`STATS#interruption`, `DAY#2026-11-22`).
pub fn daily_stats(function: &str, day: &str) -> Key {
    Key::new(format!("STATS#{function}"), format!("DAY#{day}"))
}

/// GSI1 entry listing the actions issued for one node.
pub fn node_actions_index(cluster: &ClusterId, node_name: &str, action_id: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: node_actions_partition(cluster, node_name),
        gsi1sk: action_id.to_owned(),
    }
}

pub fn node_actions_partition(cluster: &ClusterId, node_name: &str) -> String {
    format!("NODEACTIONS#{cluster}#{node_name}")
}

/// GSI1 index entry mapping an EC2 instance to the node that runs on it.
pub fn instance_index(instance_id: &str) -> Gsi1Key {
    Gsi1Key {
        gsi1pk: format!("INSTANCE#{instance_id}"),
        gsi1sk: "NODE".into(),
    }
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

/// Sort-key prefixes for listing one kind of item in a tenant's partition. No prefix may be a
/// prefix of another kind's sort keys, or a listing would read (and fail to decode) both.
pub mod prefix {
    pub const ACCOUNT: &str = "ACCOUNT#";
    pub const CLUSTER: &str = "CLUSTER#";
    pub const AUDIT: &str = "AUDIT#";
    pub const ACTION: &str = "ACTION#";
    pub const NODE: &str = "NODE#";
    pub const NODEGROUP: &str = "NODEGROUP#";
    pub const RECOMMENDATION: &str = "REC#";
    pub const NOTIFICATION: &str = "NOTIFICATION#";
    pub const WEBHOOK: &str = "WEBHOOK#";
    pub const SILENCE: &str = "SILENCE#";
    pub const MAINTENANCE: &str = "MAINTENANCE#";
    pub const SCHEDULE: &str = "SCHEDULE#";
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

    #[test]
    fn prefixes_do_not_overlap() {
        let all = [
            prefix::ACCOUNT,
            prefix::CLUSTER,
            prefix::AUDIT,
            prefix::ACTION,
            prefix::NODE,
            prefix::NODEGROUP,
            prefix::RECOMMENDATION,
            prefix::SCHEDULE,
            "HIBSCHEDULE#",
            "HIBERNATION#",
            "SLEEP#",
            "RUN#",
            "NODETEMPLATE#",
            "PODHIST#",
        ];
        for a in all {
            for b in all {
                // NODE# and NODEGROUP# live in different partitions (C#<cluster> vs T#<tenant>).
                if a != b && !(a == prefix::NODE && b == prefix::NODEGROUP) {
                    assert!(!b.starts_with(a), "{a} is a prefix of {b}");
                }
            }
        }
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
