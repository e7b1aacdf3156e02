//! Domain types shared by the functions, the API and the agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{ClusterId, TenantId};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What an API key may do within its tenant. Ordered: each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }

    /// The role as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who a key acts for. Agent keys are bound to exactly one cluster and reach only agent routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    User { role: Role },
    Agent { cluster_id: ClusterId },
}

/// A person in a tenant, who signs in with the user pool. `id` is the pool's `sub`; the role
/// here, not the token's groups, is what the API enforces, so changes apply at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tenant_id: TenantId,
    pub email: String,
    pub role: Role,
    /// Who invited the user, as the audit log names them.
    pub invited_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    /// Whether signing in asks for a code from the user's authenticator app.
    #[serde(default)]
    pub mfa: bool,
}

/// A tenant's public status page, once an admin opted in. It is found by `id`, random and
/// unguessable, never by the tenant's id, and shows only agent health, uptime and savings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusPage {
    pub id: String,
    pub tenant_id: TenantId,
    #[serde(with = "time::serde::rfc3339")]
    pub enabled_at: OffsetDateTime,
}

/// An interval in which a cluster's agent did not report, from its last heartbeat before the
/// silence to the first after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSilence {
    pub cluster_id: ClusterId,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
}

/// When a cluster's agent first reported: uptime counts from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentMonitored {
    pub cluster_id: ClusterId,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// A stored API key: only the SHA-256 of the secret is kept; the prefix identifies it in lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub prefix: String,
    pub secret_sha256: String,
    pub principal: Principal,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// An IAM role ARN, checked for shape: `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleArn {
    arn: String,
    account_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "role_arn {value:?} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>): {reason}"
)]
pub struct RoleArnError {
    pub value: String,
    pub reason: &'static str,
}

impl RoleArn {
    pub fn parse(value: &str) -> Result<Self, RoleArnError> {
        let err = |reason| RoleArnError {
            value: value.to_owned(),
            reason,
        };
        let parts: Vec<&str> = value.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(err("expected six ':'-separated parts"));
        };
        if arn != "arn" || !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") {
            return Err(err("unknown partition"));
        }
        if service != "iam" || !region.is_empty() {
            return Err(err("not a global IAM ARN"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("account id must be 12 digits"));
        }
        match resource.strip_prefix("role/") {
            Some(name) if !name.is_empty() && !name.ends_with('/') => {}
            _ => return Err(err("resource must be role/<name>")),
        }
        Ok(Self {
            arn: value.to_owned(),
            account_id: account.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RoleArn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RoleArn {}

impl TryFrom<String> for RoleArn {
    type Error = RoleArnError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RoleArn> for String {
    fn from(value: RoleArn) -> Self {
        value.arn
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum AccountHealth {
    Pending,
    Healthy,
    Unhealthy { reason: String },
}

/// A customer AWS account linked through a cross-account role that requires our ExternalId.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    pub tenant_id: TenantId,
    pub account_id: String,
    pub role_arn: RoleArn,
    pub external_id: String,
    pub regions: Vec<String>,
    pub health: AccountHealth,
    #[serde(with = "time::serde::rfc3339")]
    pub linked_at: OffsetDateTime,
    /// Whether the account's interruption signals reach Spotwise, as last checked.
    #[serde(default)]
    pub event_forwarding: Option<EventForwarding>,
}

/// The interruption events of a linked account, as linking and validation find them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventForwarding {
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    /// Spotwise's interruption bus admits the account's events.
    pub admitted: bool,
    /// What is missing, one sentence each (the region first); empty when all is in place.
    pub gaps: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    #[serde(alias = "SPOT")]
    Spot,
    // Kubernetes labels spell it `on-demand` (Karpenter) or `ON_DEMAND` (EKS node groups).
    #[serde(alias = "on_demand", alias = "ON_DEMAND", alias = "ondemand")]
    OnDemand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cluster {
    pub tenant_id: TenantId,
    pub id: ClusterId,
    pub account_id: String,
    pub region: String,
    pub name: String,
    pub arn: String,
    pub kubernetes_version: Option<String>,
    pub status: String,
    /// The cluster's own agent queue, once the agent is installed.
    #[serde(default)]
    pub agent_queue_url: Option<String>,
    /// Set when discovery no longer sees the cluster; history is kept.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub vanished_at: Option<OffsetDateTime>,
}

/// An EKS managed node group, as discovery last saw it (hibernation scales these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nodegroup {
    pub cluster_id: ClusterId,
    pub name: String,
    pub capacity_type: CapacityType,
    pub instance_types: Vec<String>,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_size: i32,
    pub status: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub vanished_at: Option<OffsetDateTime>,
}

/// Schedulable capacity or requests. Memory in MiB and CPU in millicores, as Kubernetes counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_m: u64,
    pub mem_mib: u64,
    #[serde(default)]
    pub pods: u32,
    #[serde(default)]
    pub gpus: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Taint {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub key: String,
    #[serde(default)]
    pub value: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^(NoSchedule|PreferNoSchedule|NoExecute)$")
    )]
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub name: String,
    pub instance_id: Option<String>,
    pub instance_type: String,
    pub zone: String,
    /// The zone's account-independent id (`use1-az1`); zone names differ between accounts, so
    /// cross-tenant pool statistics use this.
    #[serde(default)]
    pub zone_id: Option<String>,
    pub capacity_type: CapacityType,
    pub allocatable: Resources,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub unschedulable: bool,
    /// Set when EC2 reports the instance stopping or gone; the record is kept for history.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub departed_at: Option<OffsetDateTime>,
}

/// Where an EC2 instance runs, kept by discovery beside each node under the instance id alone,
/// so the interruption handler finds it with one strongly consistent read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceLocation {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub node_name: String,
    pub instance_type: String,
    pub zone: String,
    #[serde(default)]
    pub zone_id: Option<String>,
    /// The managed node group the instance belongs to (its `eks:nodegroup-name` tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodegroup: Option<String>,
}

impl InstanceLocation {
    pub fn of(node: &Node) -> Self {
        Self {
            tenant_id: node.tenant_id.clone(),
            cluster_id: node.cluster_id.clone(),
            node_name: node.name.clone(),
            instance_type: node.instance_type.clone(),
            zone: node.zone.clone(),
            zone_id: node.zone_id.clone(),
            nodegroup: node.labels.get("eks:nodegroup-name").cloned(),
        }
    }
}

/// What users set of a node template: the API's request body, and the stored template's
/// settings, so the two cannot drift.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeTemplateSpec {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 63))]
    pub name: String,
    /// Families allowed (`m5`, `c7g`); empty allows any.
    #[serde(default)]
    pub instance_families: Vec<String>,
    /// Types never used; `*` matches any run of characters (`t2.*`, `*.metal`).
    #[serde(default)]
    pub exclude_instance_types: Vec<String>,
    #[serde(default)]
    pub architectures: Vec<Arch>,
    #[serde(default)]
    pub capacity_types: Vec<CapacityType>,
    /// Zone names (`us-east-1a`); empty allows any.
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub min_vcpus: Option<u32>,
    #[serde(default)]
    pub max_vcpus: Option<u32>,
    #[serde(default)]
    pub min_memory_mib: Option<u64>,
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
    /// Labels the template's nodes carry, for workloads to select.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints the template's nodes carry; only tolerating workloads are planned onto them.
    #[serde(default)]
    pub taints: Vec<Taint>,
}

/// What nodes a cluster's plans may use, and the labels and taints they carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeTemplate {
    pub id: String,
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    #[serde(flatten)]
    pub spec: NodeTemplateSpec,
}

/// A secret encrypted with its own data key, stored with that key as KMS encrypted it
/// (envelope encryption, `spotwise_aws::secrets`). Hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub data_key: String,
    pub nonce: String,
    /// AES-256-GCM ciphertext and tag.
    pub ciphertext: String,
}

/// A secret as an item keeps it: sealed, or in plain text in items written before secrets were
/// sealed (read for one release, and sealed when the item is next written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredSecret {
    Sealed(Sealed),
    Plain(String),
}

/// The HMAC key an agent shares with the platform, sealed. Stored apart from the cluster record
/// so listing clusters never reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecret {
    pub sealed: Sealed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node_name: Option<String>,
    pub requests: Resources,
    pub owner: Option<OwnerRef>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    X86_64,
    Arm64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub arch: Arch,
    #[serde(default)]
    pub gpus: u32,
    pub max_pods: u32,
}

/// Identifies one spot capacity pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PoolKey {
    pub region: String,
    pub zone: String,
    pub instance_type: String,
}

/// Price and risk of one spot pool (region, zone id, instance type), as normalised by the
/// scraper and read by the optimizer. Observed interruptions are counted beside it, in the same
/// partition, by the interruption handler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    #[serde(flatten)]
    pub key: PoolKey,
    /// Latest spot price, USD per hour.
    pub spot_price_hr: f64,
    /// Time-weighted mean over the last 30 days (the latest price when no history is known).
    pub spot_price_avg_30d: f64,
    /// Time-weighted standard deviation over the mean, 30 days.
    pub spot_price_volatility: f64,
    pub on_demand_price_hr: Option<f64>,
    /// Spot Advisor interruption band, 0 (<5%) to 4 (>20%).
    pub interruption_band: Option<u8>,
    pub advisor_savings_pct: Option<i16>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    pub max_pods: u32,
    pub arch: Arch,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A price moving less than this share (0.5%) is not a change a plan sees: plans rank pools
/// by price, and no ranking turns on less.
pub const POOL_PRICE_TOLERANCE: f64 = 0.005;
/// The spot price volatility (a coefficient of variation) moving less than this is not a change.
pub const POOL_VOLATILITY_TOLERANCE: f64 = 0.005;

impl Pool {
    /// Whether `other` tells a plan what `self` does: the same shape, interruption band and
    /// on-demand availability, prices within [`POOL_PRICE_TOLERANCE`] and volatility within
    /// [`POOL_VOLATILITY_TOLERANCE`]. The 30-day average and the advisor's savings figure are
    /// not planned with, so their drift alone does not rewrite a pool.
    pub fn plan_equivalent(&self, other: &Pool) -> bool {
        let price_close = |a: f64, b: f64| {
            let scale = a.abs().max(b.abs());
            scale == 0.0 || (a - b).abs() / scale < POOL_PRICE_TOLERANCE
        };
        self.key == other.key
            && (
                self.vcpus,
                self.memory_mib,
                self.gpus,
                self.max_pods,
                self.arch,
            ) == (
                other.vcpus,
                other.memory_mib,
                other.gpus,
                other.max_pods,
                other.arch,
            )
            && self.interruption_band == other.interruption_band
            && price_close(self.spot_price_hr, other.spot_price_hr)
            && match (self.on_demand_price_hr, other.on_demand_price_hr) {
                (Some(a), Some(b)) => price_close(a, b),
                (a, b) => a == b,
            }
            && (self.spot_price_volatility - other.spot_price_volatility).abs()
                < POOL_VOLATILITY_TOLERANCE
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Store recommendations only.
    Recommend,
    /// Also enqueue agent actions within the disruption budget.
    Auto,
}

/// What a rebalance recommendation (elevated risk, no notice yet) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RebalanceResponse {
    /// Stop new pods landing on the node; nothing is evicted.
    Cordon,
    /// Move the pods off now, before an interruption notice.
    Drain,
    /// Only tell the tenant.
    Notify,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    pub mode: PolicyMode,
    /// Spot Advisor interruption band allowed: 0 (<5%) to 4 (>20%).
    #[cfg_attr(feature = "openapi", schema(maximum = 4))]
    pub max_interruption_band: u8,
    /// Spot capacity must spread over at least this many pools (type x zone). The default, 6,
    /// is two types in each of three zones: one pool's reclaim then takes a sixth of the spot
    /// nodes, at a cost premium the plan benchmark puts under 1%.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 50))]
    pub min_spot_pools: u32,
    /// Namespaces whose pods are never moved (at most 100 names).
    #[cfg_attr(feature = "openapi", schema(max_items = 100))]
    pub excluded_namespaces: Vec<String>,
    /// Share of each workload kept on on-demand capacity, in percent.
    #[cfg_attr(feature = "openapi", schema(maximum = 100))]
    pub on_demand_base_pct: u8,
    /// Most nodes disrupted at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_disrupted_nodes: u32,
    #[serde(default = "default_rebalance")]
    pub rebalance: RebalanceResponse,
    /// Pod labels cost is broken down by; empty means the usual ones (`team`,
    /// `app.kubernetes.io/name`, ...).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 10))]
    pub cost_labels: Vec<String>,
    /// Plans launch no burstable (`t*`) types, spot or on-demand: pods that request most of a
    /// burstable node's cpu are throttled once its credits run out.
    #[serde(default = "default_true")]
    pub exclude_burstable: bool,
    /// Plans launch no types EC2 lists as previous generation (m3, c3, r3, i2, ...).
    #[serde(default)]
    pub exclude_previous_generation: bool,
    /// How approved plans are realised: `auto` steers Karpenter when the cluster runs it
    /// (its agent reports a NodePool of the customer's) and uses managed node groups otherwise.
    #[serde(default)]
    pub rollout_backend: RolloutBackend,
    /// Container requests from observed usage.
    #[serde(default)]
    pub right_sizing: crate::rightsizing::RightSizingSettings,
}

/// What a rollout creates capacity with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RolloutBackend {
    #[default]
    Auto,
    ManagedNodeGroups,
    Karpenter,
}

fn default_rebalance() -> RebalanceResponse {
    RebalanceResponse::Cordon
}

fn default_true() -> bool {
    true
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mode: PolicyMode::Recommend,
            max_interruption_band: 2,
            min_spot_pools: 6,
            excluded_namespaces: vec!["kube-system".into()],
            on_demand_base_pct: 0,
            max_disrupted_nodes: 1,
            rebalance: RebalanceResponse::Cordon,
            cost_labels: Vec::new(),
            exclude_burstable: true,
            exclude_previous_generation: false,
            rollout_backend: RolloutBackend::Auto,
            right_sizing: crate::rightsizing::RightSizingSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// The platform's view of a cluster's agent, rewritten by every heartbeat. While the agent
/// reports it sits in the silent-agents index by its last heartbeat, so the scheduler finds the
/// agents that stopped reporting without reading the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentStatus {
    pub tenant_id: TenantId,
    pub cluster_id: ClusterId,
    pub agent_version: String,
    pub dry_run: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub last_heartbeat_at: OffsetDateTime,
    /// Set when the platform declared the agent offline and told the tenant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub offline_since: Option<OffsetDateTime>,
}

/// The envelope every producer puts on the notifications queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notification {
    pub tenant_id: TenantId,
    pub event_type: String,
    pub severity: Severity,
    pub cluster_id: Option<ClusterId>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub links: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Notifications with the same key inside the dedup window are delivered once.
    pub dedup_key: String,
}

/// One mutating call or platform decision, kept per tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    pub id: String,
    pub tenant_id: TenantId,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arn_parses_account_and_rejects_lookalikes() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/spotwise/SpotwiseAccess").unwrap();
        assert_eq!(arn.account_id(), "123456789012");
        for bad in [
            "arn:aws:iam::12345678901:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:sts::123456789012:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:evil:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
            "123456789012",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
        let err = RoleArn::parse("nope").unwrap_err().to_string();
        assert!(err.starts_with("role_arn \"nope\""), "{err}");
    }

    /// The local run's seed data must stay readable as the domain types it stands for.
    #[test]
    fn local_seed_items_decode_as_domain_types() {
        let seed: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/local/seed.json")).unwrap();
        for item in seed["items"].as_array().unwrap() {
            let mut body = item.as_object().unwrap().clone();
            for reserved in ["pk", "sk", "gsi1pk", "gsi1sk", "ttl", "version"] {
                body.remove(reserved);
            }
            // The local stack seals `$seal` values with its KMS key as it writes them.
            if let Some(sealed) = body.get_mut("sealed") {
                assert!(sealed["$seal"]["plaintext_hex"].is_string(), "{sealed}");
                *sealed = serde_json::json!({"data_key": "", "nonce": "", "ciphertext": ""});
            }
            let body = serde_json::Value::Object(body);
            let sk = item["sk"].as_str().unwrap();
            let decoded = match sk.split('#').next().unwrap() {
                "TENANT" => serde_json::from_value::<Tenant>(body).map(drop),
                "ACCOUNT" => serde_json::from_value::<Account>(body).map(drop),
                "CLUSTER" => serde_json::from_value::<Cluster>(body).map(drop),
                "NODE" => serde_json::from_value::<Node>(body).map(drop),
                "LOCATION" => serde_json::from_value::<InstanceLocation>(body).map(drop),
                "SECRET" => serde_json::from_value::<ClusterSecret>(body).map(drop),
                other => panic!("seed item kind {other} has no test"),
            };
            assert!(decoded.is_ok(), "{sk}: {decoded:?}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Operator));
    }

    #[test]
    fn capacity_type_uses_kubernetes_spelling() {
        assert_eq!(
            serde_json::to_string(&CapacityType::OnDemand).unwrap(),
            "\"on-demand\""
        );
    }

    #[test]
    fn pool_flattens_its_key_and_is_rewritten_only_for_a_change_a_plan_sees() {
        let pool = Pool {
            key: PoolKey {
                region: "us-east-1".into(),
                zone: "use1-az1".into(),
                instance_type: "m5.large".into(),
            },
            spot_price_hr: 0.035,
            spot_price_avg_30d: 0.036,
            spot_price_volatility: 0.05,
            on_demand_price_hr: Some(0.096),
            interruption_band: Some(3),
            advisor_savings_pct: Some(66),
            vcpus: 2,
            memory_mib: 8192,
            gpus: 0,
            max_pods: 29,
            arch: Arch::X86_64,
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&pool).unwrap();
        assert_eq!(json["instance_type"], "m5.large");
        assert_eq!(serde_json::from_value::<Pool>(json).unwrap(), pool);
        let later = Pool {
            updated_at: OffsetDateTime::now_utc(),
            ..pool.clone()
        };
        assert!(pool.plan_equivalent(&later));
        let changed = |change: fn(&mut Pool)| {
            let mut other = later.clone();
            change(&mut other);
            pool.plan_equivalent(&other)
        };
        // Within tolerance, or not planned with: not a change.
        assert!(changed(|p| p.spot_price_hr = 0.035_1));
        assert!(changed(|p| p.spot_price_volatility = 0.054));
        assert!(changed(|p| p.spot_price_avg_30d = 0.05));
        assert!(changed(|p| p.advisor_savings_pct = Some(70)));
        // Beyond it, or a discrete value: a change.
        assert!(!changed(|p| p.spot_price_hr = 0.035_2));
        assert!(!changed(|p| p.on_demand_price_hr = Some(0.1)));
        assert!(!changed(|p| p.on_demand_price_hr = None));
        assert!(!changed(|p| p.spot_price_volatility = 0.056));
        assert!(!changed(|p| p.interruption_band = Some(2)));
        assert!(!changed(|p| p.max_pods = 58));
    }
}
