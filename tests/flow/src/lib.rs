//! The whole Spotwise flow on the local stack, with the real handlers, the real API over HTTP
//! and the real agent against a simulated cluster:
//!
//! link an account (moto STS) with two EKS clusters (moto EKS/EC2) → discovery → pricing
//! scrape (the shipped real feeds) → install the agent and upload its snapshot of a cluster
//! generated from the real instance catalogue → optimize → approve → the agent executes the
//! first wave → a spot interruption warning → the agent drains the node → notifications
//! delivered, signed, to a loopback webhook receiver → hourly cost and the month's savings
//! report.
//!
//! [`run`] returns what each step produced, so the demo prints it and the tests assert on it.

pub mod cluster;
pub mod costday;
pub mod html;
pub mod recorder;
pub mod rightsize;
pub mod sim;
pub mod synthetic;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_ec2::types::{Placement, ResourceType, Tag, TagSpecification};
use aws_sdk_eks::types::{CapacityTypes, NodegroupScalingConfig, VpcConfigRequest};
use serde_json::{Value, json};
use spotwise_agent::{Agent, Metrics, Outcome, QueueWorker, Reporter, read_cluster_secret};
use spotwise_core::config::Env;
use spotwise_core::domain::RoleArn;
use spotwise_core::messages::{DiscoverAccount, OptimizeRequest, ScheduleTrigger};
use spotwise_core::snapshot::Snapshot;
use spotwise_core::{ClusterId, TenantId};
use spotwise_testkit::LocalStack;
use spotwise_testkit::kube::FakeKube;
use spotwise_testkit::receiver::Receiver;
use time::OffsetDateTime;

pub const ACCOUNT: &str = "111122223333";
pub use spotwise_optimizer::plan::HOURS_PER_MONTH;
pub const REGION: &str = "us-east-1";
const ROLE: &str = "arn:aws:iam::111122223333:role/SpotwiseAccess";
pub const AGENT_ROLE: &str = "arn:aws:iam::111122223333:role/SpotwiseAgent";
const WEBHOOK_SECRET: &str = "whsec_flow_0123456789abcdef";

/// One group of identical EC2 instances of a simulated cluster.
#[derive(Debug, Clone)]
pub struct Group {
    pub nodegroup: &'static str,
    pub instance_type: &'static str,
    pub count: i32,
    pub spot: bool,
}

/// The production cluster the agent runs in: on-demand general-purpose and compute nodes
/// sized for a peak long gone, plus a small spot group.
pub const PROD: &[Group] = &[
    Group {
        nodegroup: "general",
        instance_type: "m5.2xlarge",
        count: 4,
        spot: false,
    },
    Group {
        nodegroup: "compute",
        instance_type: "c5.2xlarge",
        count: 2,
        spot: false,
    },
    Group {
        nodegroup: "spot",
        instance_type: "m5.large",
        count: 2,
        spot: true,
    },
];
const STAGING: &[Group] = &[Group {
    nodegroup: "general",
    instance_type: "m5.large",
    count: 2,
    spot: false,
}];

/// A 200-node production cluster for the rollout's scale figures (`spotwise-rollout-scale`).
pub const LARGE: &[Group] = &[
    Group {
        nodegroup: "general",
        instance_type: "m5.2xlarge",
        count: 120,
        spot: false,
    },
    Group {
        nodegroup: "compute",
        instance_type: "c5.2xlarge",
        count: 60,
        spot: false,
    },
    Group {
        nodegroup: "spot",
        instance_type: "m5.large",
        count: 20,
        spot: true,
    },
];

/// The simulated production cluster: its node groups, and its company's workloads `replicas`
/// times over with requests divided by `divisor`; rollouts drain `max_disrupted_nodes` at once.
#[derive(Debug, Clone)]
pub struct Shape {
    pub groups: &'static [Group],
    pub replicas: u32,
    pub divisor: u32,
    pub max_disrupted_nodes: u32,
    /// The groups are Karpenter NodePools, not managed node groups.
    pub karpenter: bool,
}

impl Shape {
    /// The demo's 8-node cluster.
    pub fn demo() -> Self {
        Shape {
            groups: PROD,
            replicas: 1,
            divisor: 1,
            max_disrupted_nodes: 1,
            karpenter: false,
        }
    }

    /// The demo's cluster, run by Karpenter.
    pub fn karpenter() -> Self {
        Shape {
            karpenter: true,
            ..Shape::demo()
        }
    }

    /// 200 nodes and about 3,200 pods.
    pub fn large() -> Self {
        Shape {
            groups: LARGE,
            replicas: 130,
            divisor: 4,
            max_disrupted_nodes: 20,
            karpenter: false,
        }
    }
}

/// An EC2 instance of the simulated cluster, as moto launched it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub node: String,
    pub instance_type: String,
    pub zone: String,
    pub nodegroup: String,
    pub spot: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Name and wall time of each step.
    pub steps: Vec<(String, Duration)>,
    pub clusters_discovered: Vec<String>,
    pub nodes_discovered: usize,
    pub pools: usize,
    pub cluster_id: String,
    pub tenant_id: String,
    /// The cluster's agent queue.
    pub queue_url: String,
    /// The production cluster's instances, in launch order.
    pub instances: Vec<Instance>,
    pub snapshot_nodes: usize,
    pub snapshot_pods: usize,
    /// The recommendation as the API shows it.
    pub recommendation: Value,
    /// Node mix before, as (instance type, capacity type) → nodes.
    pub mix_before: BTreeMap<(String, String), u32>,
    /// The rollout of the approved recommendation as the API shows it at its end.
    pub rollout: Value,
    /// From approval to the rollout's end.
    pub rollout_time: Duration,
    /// Node mix after the rollout, as (instance type, capacity type) → nodes.
    pub mix_after: BTreeMap<(String, String), u32>,
    /// Pods left Pending after the rollout.
    pub pods_pending: usize,
    /// Evictions during the rollout, and every budget they or a node removal broke.
    pub evictions: u32,
    pub pdb_violations: Vec<String>,
    /// What the agent did with each action it received after the rollout, in order.
    pub executed: Vec<String>,
    pub interrupted_instance: String,
    pub interrupted_node: String,
    pub interruption_handled: Duration,
    pub interruption_drain: String,
    /// Nodes the interrupted node's group launched before the drain started.
    pub replacement_nodes: Vec<String>,
    /// Pods Pending once the interrupted node was drained.
    pub pods_after_interruption: usize,
    /// The interrupted node's group after the reclaim, and before the interruption (nodes).
    pub group_after_reclaim: (usize, usize),
    pub node_after_drain: Value,
    pub webhooks_received: usize,
    pub webhooks_verified: usize,
    pub webhook_event_types: BTreeMap<String, usize>,
    pub hour_cost: Value,
    pub namespace_costs: Vec<(String, f64)>,
    pub savings_report: Value,
    /// Right-sizing as the API showed it once a weekday of usage was in.
    pub rightsizing_ready: Value,
    /// Right-sizing after the changes: recommendations, and the changes with how they ended.
    pub rightsizing: Value,
    /// What the kept changes free per month, valued at the plan's prices.
    pub rightsizing_saving: f64,
    /// The plan's monthly cost before and after the right-sizing changes.
    pub plan_before_rightsizing: f64,
    pub plan_after_rightsizing: f64,
    /// Per workload changed, its template's and its pods' resources in the simulated cluster.
    pub rightsized: BTreeMap<String, Value>,
    /// The right-sizing actions in the audit log, newest first.
    pub rightsizing_audit: Vec<String>,
}

impl Report {
    fn step(&mut self, name: &str, started: Instant) {
        self.steps.push((name.to_owned(), started.elapsed()));
    }

    pub fn monthly(&self, field: &str) -> f64 {
        self.recommendation["summary"][field]
            .as_f64()
            .unwrap_or(0.0)
    }

    /// The rollout's `before`, `planned` or `realised` cost, per month.
    pub fn monthly_figure(&self, which: &str) -> f64 {
        self.rollout[which]["cost_hr"].as_f64().unwrap_or(0.0) * HOURS_PER_MONTH
    }

    /// What the demo prints with `--json`: the figures a script compares runs by.
    pub fn figures(&self) -> Value {
        let rollout = &self.rollout;
        json!({
            "cluster_id": self.cluster_id,
            "monthly_before": self.monthly_figure("before"),
            "monthly_planned": self.monthly_figure("planned"),
            "monthly_realised": self.monthly_figure("realised"),
            "realised_to_planned": if self.monthly_figure("planned") > 0.0 {
                self.monthly_figure("realised") / self.monthly_figure("planned")
            } else {
                0.0
            },
            "nodes_before": rollout["before"]["nodes"],
            "nodes_planned": rollout["planned"]["nodes"],
            "nodes_realised": rollout["realised"]["nodes"],
            "spot_nodes_planned": rollout["planned"]["spot_nodes"],
            "spot_nodes_realised": rollout["realised"]["spot_nodes"],
            "pods_pending": self.pods_pending,
            "evictions": self.evictions,
            "pdb_violations": self.pdb_violations.len(),
            "rollout_status": rollout["status"],
            "rollout_reason": rollout["reason"],
            "rollout_seconds": self.rollout_time.as_secs_f64(),
            "rollout_aws_calls": rollout["aws_calls"],
            "interruption_handled_ms": self.interruption_handled.as_secs_f64() * 1000.0,
            "webhooks_received": self.webhooks_received,
            "webhooks_verified": self.webhooks_verified,
            "savings_report_realised": self.savings_report["realised_total"],
            "rightsizing_kept_monthly_saving": self.rightsizing_saving,
            "plan_before_rightsizing": self.plan_before_rightsizing,
            "plan_after_rightsizing": self.plan_after_rightsizing,
        })
    }

    /// Actions the agent finished (not refused, not failed).
    pub fn executed_ok(&self) -> usize {
        self.executed
            .iter()
            .filter(|e| e.starts_with("done"))
            .count()
    }
}

/// A function's environment on the local stack, as template.yaml sets it, in dev mode.
pub fn env(stack: &LocalStack, logical: &str, extra: &[(&str, String)]) -> Env {
    let mut vars = stack.function_env(logical);
    vars.insert("SPOTWISE_DEV_MODE".into(), "true".into());
    for (name, value) in extra {
        vars.insert((*name).into(), value.clone());
    }
    Env::from_map(vars)
}

/// The API function served over real HTTP on loopback, as users and agents reach it; stopped
/// when dropped.
pub struct ApiServer {
    state: api::AppState,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiServer {
    pub async fn start(stack: &LocalStack, sdk: &aws_config::SdkConfig) -> anyhow::Result<Self> {
        Self::start_with_clock(stack, sdk, api::Clock::default()).await
    }

    /// The API with the agent routes going by `clock`.
    pub async fn start_with_clock(
        stack: &LocalStack,
        sdk: &aws_config::SdkConfig,
        clock: api::Clock,
    ) -> anyhow::Result<Self> {
        let config = api::Config::from_env(&env(
            stack,
            "ApiFunction",
            &[
                ("API_RATE_PER_MINUTE", "100000".into()),
                ("API_RATE_BURST", "10000".into()),
            ],
        ))?;
        let mut state = api::AppState::new(sdk, &config)?;
        state.clock = clock;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = api::app(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            state,
            base,
            server,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The API function's clients (table, vault), for assertions on what no response shows.
    pub fn state(&self) -> &api::AppState {
        &self.state
    }

    /// A new tenant and a client holding its first admin key.
    pub async fn tenant(&self, tenant: &TenantId, name: &str) -> anyhow::Result<Api> {
        let admin =
            api::auth::bootstrap(&self.state.store, tenant, name, OffsetDateTime::now_utc())
                .await?
                .secret;
        Ok(self.client(admin))
    }

    /// A client calling with `key`.
    pub fn client(&self, key: String) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            key,
        }
    }
}

/// One caller of the API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    /// Sends a snapshot as the agent does (the agent's own reporter: upload ticket, presigned
    /// PUT to the local S3, confirmation), with this client's key.
    pub async fn upload_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> anyhow::Result<spotwise_agent::report::SnapshotSent> {
        let reporter = spotwise_agent::report::Reporter::new(
            &self.base,
            self.key.clone(),
            None,
            spotwise_agent::metrics::Metrics::new(),
        )?;
        Ok(reporter.snapshot(snapshot).await?)
    }

    /// The status and the JSON body (`null` when empty), whatever the status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{method} {path}: {text}"))?
        };
        Ok((status, body))
    }

    /// The body of a successful answer; any other status is an error that says what came back.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, body) = self.send(method.clone(), path, body).await?;
        if !status.is_success() {
            bail!("{method} {path}: {status} {body}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// Runs the whole flow on `stack` (a fresh one: the flow creates everything it uses).
/// Everything a rollout acts on and through: the API, the agent in its simulated cluster, the
/// simulated cloud under it, and the scheduler that advances rollouts.
pub struct Rig {
    pub server: ApiServer,
    pub api: Api,
    pub receiver: Receiver,
    pub sdk: aws_config::SdkConfig,
    pub customer: aws_config::SdkConfig,
    pub tenant: TenantId,
    pub cluster: ClusterId,
    pub fake: FakeKube,
    pub agent: Agent,
    pub worker: QueueWorker,
    pub reporter: std::sync::Arc<Reporter>,
    pub cloud: sim::SimCloud,
    pub scheduler: scheduler::Deps,
    pub optimizer: optimizer::Deps,
    /// What the agent's usage recorder keeps between snapshots.
    pub usage: std::sync::Mutex<spotwise_agent::usage::UsageRecorder>,
    /// The recommendation the optimizer made.
    pub revision: u64,
    /// Karpenter, not EKS and Auto Scaling, launches and removes the cluster's nodes.
    pub karpenter: bool,
    work: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The flow up to a stored recommendation: link, discover, price, install the agent in a
/// simulated cluster on a simulated cloud, snapshot, optimize.
pub async fn setup(stack: &LocalStack, report: &mut Report) -> anyhow::Result<Rig> {
    setup_shaped(stack, report, &Shape::demo()).await
}

/// [`setup`] on a cluster of the given shape.
pub async fn setup_shaped(
    stack: &LocalStack,
    report: &mut Report,
    shape: &Shape,
) -> anyhow::Result<Rig> {
    let sdk = stack.sdk_config().await;
    let tenant = TenantId::new("acme")?;
    let now = OffsetDateTime::now_utc();

    // The API, served on loopback, and the tenant's first admin key.
    let started = Instant::now();
    // The agent routes go by the round's time, which rollout tests move ahead.
    let server = ApiServer::start_with_clock(stack, &sdk, api::Clock::set_by_caller(now)).await?;
    let api = server.tenant(&tenant, "Acme").await?;
    let receiver = Receiver::start().await;
    api.post(
        "/v1/webhooks",
        // A burst above the default 10, for the flow's dozen events within seconds.
        json!({"name": "ops", "kind": "generic", "url": receiver.url("spotwise"), "secret": WEBHOOK_SECRET, "burst": 30}),
    )
    .await?;

    // Link the customer's account; its two EKS clusters and their instances.
    let customer = link_account(&api, &sdk).await?;
    let instances = create_cluster_with(&customer, "prod", shape.groups, !shape.karpenter).await?;
    create_cluster(&customer, "staging", STAGING).await?;
    report.step("link account, two EKS clusters", started);

    let started = Instant::now();
    let discovery = discovery::Deps::new(
        &sdk,
        &discovery::Config::from_env(&env(stack, "DiscoveryFunction", &[]))?,
    );
    let run = discovery::discover_account(
        &discovery,
        &DiscoverAccount {
            tenant_id: tenant.clone(),
            account_id: ACCOUNT.into(),
            run_id: "flow".into(),
            scheduled: None,
        },
        now,
    )
    .await?;
    report.nodes_discovered = run.nodes;
    let clusters = api.get("/v1/clusters").await?;
    report.clusters_discovered = clusters["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    let cluster = ClusterId::new(format!("{ACCOUNT}.{REGION}.prod"))?;
    report.cluster_id = cluster.to_string();
    report.tenant_id = tenant.to_string();
    report.instances.clone_from(&instances);
    report.step("discovery", started);

    let started = Instant::now();
    let scraper_config = scraper_config(stack)?;
    let scraper = pricing_scraper::Deps::new(&sdk, &scraper_config)?;
    // The hourly fan-out, then the region's message, as Lambda delivers it.
    let trigger: ScheduleTrigger = serde_json::from_value(json!({"job": "pricing-scraper"}))?;
    pricing_scraper::handle(
        &scraper,
        &scraper_config,
        pricing_scraper::ScraperEvent::Schedule(trigger),
    )
    .await?;
    let regions = stack.poll(&scraper_config.scrape_queue_url).await;
    let Ok(scraped) =
        pricing_scraper::handle_batch(&scraper, &scraper_config, regions.clone()).await;
    anyhow::ensure!(
        scraped.batch_item_failures.is_empty(),
        "the region's scrape failed"
    );
    stack
        .settle(&scraper_config.scrape_queue_url, &regions, &scraped)
        .await;
    report.pools = pricing_scraper::stored_pools(&scraper.store, REGION)
        .await?
        .len();
    report.step("pricing scrape", started);

    // The agent: installed through the API, reading its secret and key as the manifest mounts
    // them, in a cluster generated from the real instance catalogue.
    let started = Instant::now();
    let installed = api
        .post(
            &format!("/v1/clusters/{cluster}/agent"),
            json!({"agent_role_arn": AGENT_ROLE}),
        )
        .await?;
    let work = std::env::temp_dir().join(format!(
        "spotwise-flow-{}-{}",
        std::process::id(),
        now.unix_timestamp_nanos()
    ));
    std::fs::create_dir_all(&work)?;
    let secret_file = work.join("cluster-secret");
    std::fs::write(
        &secret_file,
        format!(
            "{}\n",
            installed["cluster_secret"]
                .as_str()
                .context("cluster_secret")?
        ),
    )?;
    let queue_url = installed["queue_url"]
        .as_str()
        .context("queue_url")?
        .to_owned();
    report.queue_url.clone_from(&queue_url);
    let agent_key = installed["agent_key"]
        .as_str()
        .context("agent_key")?
        .to_owned();
    let catalogue = cluster::catalogue()?;
    let mut kube_state =
        cluster::generate_scaled(&instances, &catalogue, shape.replicas, shape.divisor)?;
    if shape.karpenter {
        cluster::karpenterize(&mut kube_state, shape.groups);
    }
    let fake = FakeKube::start(kube_state).await?;
    let kube = kube::Client::try_from(kube::Config::new(fake.url.parse()?))?;
    let metrics = Metrics::new();
    let reporter = std::sync::Arc::new(Reporter::new(
        server.base(),
        agent_key,
        Some(work.join("results.jsonl")),
        metrics.clone(),
    )?);
    let agent = Agent::new(
        cluster.clone(),
        read_cluster_secret(&secret_file)?,
        kube.clone(),
        false,
    )
    .with_reporter(reporter.clone())
    .with_metrics(metrics);
    reporter.heartbeat(false, &[]).await?;
    let snapshot = spotwise_agent::snapshot::collect(&kube).await?;
    report.snapshot_nodes = snapshot.nodes.len();
    report.snapshot_pods = snapshot.pods.len() + snapshot.daemon_pods.len();
    for node in &snapshot.nodes {
        // As the plan names it (`on-demand`, `spot`).
        let capacity = serde_json::to_value(node.capacity_type)?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *report
            .mix_before
            .entry((node.instance_type.clone(), capacity))
            .or_default() += 1;
    }
    reporter.snapshot(&snapshot).await?;
    report.step("agent installed, snapshot uploaded", started);

    let started = Instant::now();
    let policy_path = format!("/v1/clusters/{cluster}/policy");
    let mut policy = api.get(&policy_path).await?;
    if policy["max_disrupted_nodes"] != json!(shape.max_disrupted_nodes) {
        policy["max_disrupted_nodes"] = json!(shape.max_disrupted_nodes);
        api.put(&policy_path, policy).await?;
    }
    let optimizer = optimizer::Deps::new(
        &sdk,
        &optimizer::Config::from_env(&env(stack, "OptimizerFunction", &[]))?,
    );
    let planned = optimizer::optimize(
        &optimizer,
        &OptimizeRequest {
            tenant_id: tenant.clone(),
            cluster_id: cluster.clone(),
            trigger: "flow".into(),
            scheduled: None,
        },
        now,
    )
    .await?;
    let optimizer::Outcome::Planned { revision, .. } = planned else {
        bail!("the cluster was not planned: {planned:?}");
    };
    report.recommendation = api
        .get(&format!(
            "/v1/clusters/{cluster}/recommendations/{revision}"
        ))
        .await?;
    report.step("optimize", started);

    // EKS and Auto Scaling under the cluster, and Kubernetes' controllers and scheduler in it.
    let mut cloud = sim::SimCloud::new(&customer, "prod", fake.state.clone(), catalogue).await?;
    fake.state().simulate = true;
    let scheduler = scheduler::Deps::new(
        &sdk,
        &scheduler::Config::from_env(&env(stack, "SchedulerFunction", &[]))?,
    );
    if shape.karpenter {
        // Karpenter, not EKS, launches this cluster's nodes, from the region's offerings.
        let offerings = spotwise_store::rollouts::offerings(
            &scheduler.store,
            &tenant,
            &cluster,
            &snapshot,
            REGION,
        )
        .await?;
        if let Some(karpenter) = fake.state().karpenter.as_mut() {
            karpenter.offerings = cluster::karpenter_offerings(&offerings);
        }
    } else {
        cloud.reconcile().await?;
    }
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let worker = QueueWorker::new(sqs, &queue_url).with_wait_seconds(1);
    Ok(Rig {
        server,
        api,
        receiver,
        sdk,
        customer,
        tenant,
        cluster,
        fake,
        agent,
        worker,
        reporter,
        cloud,
        scheduler,
        optimizer,
        usage: std::sync::Mutex::default(),
        revision,
        karpenter: shape.karpenter,
        work,
    })
}

impl Rig {
    /// Approves the optimizer's recommendation through the API; returns what it answered.
    pub async fn approve(&self) -> anyhow::Result<Value> {
        self.api
            .post(
                &format!(
                    "/v1/clusters/{}/recommendations/{}/approve",
                    self.cluster, self.revision
                ),
                json!({}),
            )
            .await
    }

    /// Approves the recommendation and drives its rollout to the end, into `report`.
    pub async fn realise(&mut self, report: &mut Report) -> anyhow::Result<()> {
        let started = Instant::now();
        report.recommendation = self.approve().await?;
        let approved_at = Instant::now();
        report.rollout = self.drive(40, |_| OffsetDateTime::now_utc()).await?;
        report.rollout_time = approved_at.elapsed();
        report.mix_after = self.mix();
        let cluster = self.fake.state();
        report.pods_pending = cluster.pending().len();
        report.pdb_violations.clone_from(&cluster.pdb_violations);
        report.evictions = cluster.evictions;
        drop(cluster);
        let what = if self.karpenter {
            "approve: NodePools, migrate, Karpenter launches and removes, verify"
        } else {
            "approve: provision, migrate, release, verify"
        };
        report.step(what, started);
        Ok(())
    }

    pub fn rollout_path(&self) -> String {
        format!(
            "/v1/clusters/{}/recommendations/{}/rollout",
            self.cluster, self.revision
        )
    }

    /// One look by everyone: EKS and Auto Scaling act, the agent sends a snapshot, the
    /// scheduler advances the rollout as of `now`, and the agent carries out what it was sent.
    /// Returns the rollout as the API shows it.
    pub async fn round(&mut self, now: OffsetDateTime) -> anyhow::Result<Value> {
        if self.karpenter {
            self.fake.state().consolidate();
        } else {
            self.cloud.reconcile().await?;
        }
        self.upload_snapshot(now).await?;
        let key = spotwise_store::keys::rollout(&self.tenant, &self.cluster, self.revision);
        scheduler::rollout::advance(&self.scheduler, &key, now).await?;
        execute_all(&self.worker, &self.agent).await?;
        self.api.get(&self.rollout_path()).await
    }

    /// The agent carries out everything on its queue; a line per outcome.
    pub async fn execute(&self) -> anyhow::Result<Vec<String>> {
        execute_all(&self.worker, &self.agent).await
    }

    /// The agent's snapshot of the simulated cluster, uploaded as the agent does at `at`.
    pub async fn upload_snapshot(&self, at: OffsetDateTime) -> anyhow::Result<()> {
        self.server.state().clock.set(at);
        let snapshot = self.sample(at).await?;
        self.reporter.snapshot(&snapshot).await?;
        Ok(())
    }

    /// The agent's snapshot at `at`, its usage recorded hour by hour as the agent does.
    pub async fn sample(&self, at: OffsetDateTime) -> anyhow::Result<Snapshot> {
        let mut snapshot = spotwise_agent::snapshot::collect(&self.kube_client()?).await?;
        self.usage
            .lock()
            .map_err(|_| anyhow::anyhow!("usage recorder poisoned"))?
            .record(&mut snapshot, at.unix_timestamp());
        Ok(snapshot)
    }

    /// Rounds until the rollout ends, at most `rounds`; `now` gives each round's time.
    pub async fn drive(
        &mut self,
        rounds: usize,
        now: impl Fn(usize) -> OffsetDateTime,
    ) -> anyhow::Result<Value> {
        let mut rollout = Value::Null;
        for round in 0..rounds {
            rollout = self.round(now(round)).await?;
            if matches!(
                rollout["status"].as_str(),
                Some("completed" | "rolled_back" | "cancelled" | "failed")
            ) && rollout["failure"].is_null()
            {
                break;
            }
        }
        Ok(rollout)
    }

    pub fn kube_client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(kube::Config::new(
            self.fake.url.parse()?,
        ))?)
    }

    /// The cluster's nodes as (instance type, capacity type) → count, as the plan names them.
    pub fn mix(&self) -> BTreeMap<(String, String), u32> {
        let mut mix = BTreeMap::new();
        for node in self.fake.state().nodes.values() {
            let labels = &node["metadata"]["labels"];
            *mix.entry((
                labels["node.kubernetes.io/instance-type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                labels["karpenter.sh/capacity-type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
            .or_default() += 1;
        }
        mix
    }
}

/// The flow on the demo's cluster run by Karpenter: approve, and the rollout until it ends.
pub async fn run_karpenter(stack: &LocalStack) -> anyhow::Result<(Report, Rig)> {
    let mut report = Report::default();
    let mut rig = setup_shaped(stack, &mut report, &Shape::karpenter()).await?;
    rig.realise(&mut report).await?;
    Ok((report, rig))
}

/// An admin of the demo tenant, signed in once: the URL that opens the console signed in as
/// them (the local stack's dev mode only), their email and password.
pub async fn demo_console(rig: &Rig) -> anyhow::Result<(String, String, String)> {
    let email = "demo@acme.example";
    let temporary = api::users::temporary_password();
    api::users::add_person(
        rig.server.state(),
        &rig.tenant,
        email,
        spotwise_core::domain::Role::Admin,
        &temporary,
        "spotwise-demo",
    )
    .await
    .map_err(|e| anyhow::anyhow!("adding the demo's admin: {e:?}"))?;
    let anonymous = rig.server.client(String::new());
    let first = anonymous
        .post(
            "/v1/session",
            json!({"username": email, "password": temporary}),
        )
        .await?;
    let password = api::users::temporary_password();
    let signed = anonymous
        .post(
            "/v1/session/challenge",
            json!({"username": email, "session": first["session"], "new_password": password}),
        )
        .await?;
    let token = signed["id_token"].as_str().context("no ID token")?;
    Ok((
        format!("{}/console/session?token={token}", rig.server.base()),
        email.to_owned(),
        password,
    ))
}

/// The whole flow; what each step produced.
pub async fn run(stack: &LocalStack) -> anyhow::Result<Report> {
    Ok(run_steps(stack, true).await?.0)
}

/// [`run`], keeping the rig (its API server, agent and simulated cluster) for what comes next:
/// the console's browser tests and `spotwise-demo --console`.
pub async fn run_kept(stack: &LocalStack) -> anyhow::Result<(Report, Rig)> {
    run_steps(stack, true).await
}

/// The whole flow but right-sizing, for tests about the other steps' state.
pub async fn run_without_right_sizing(stack: &LocalStack) -> anyhow::Result<Report> {
    Ok(run_steps(stack, false).await?.0)
}

async fn run_steps(stack: &LocalStack, right_sizing: bool) -> anyhow::Result<(Report, Rig)> {
    let mut report = Report::default();
    let mut rig = setup(stack, &mut report).await?;
    let cluster = rig.cluster.clone();
    let tenant = rig.tenant.clone();
    let sdk = rig.sdk.clone();
    let now = OffsetDateTime::now_utc();

    rig.realise(&mut report).await?;
    let fake = &rig.fake;
    let agent = &rig.agent;
    let worker = &rig.worker;
    let api = &rig.api;
    let receiver = &rig.receiver;
    let sqs = aws_sdk_sqs::Client::new(&sdk);

    // A spot interruption warning for a spot node of a group the rollout created.
    let started = Instant::now();
    let (node, instance) = fake
        .state()
        .nodes
        .values()
        .filter(|n| n["metadata"]["labels"]["karpenter.sh/capacity-type"] == "spot")
        .filter(|n| {
            n["metadata"]["labels"]["eks.amazonaws.com/nodegroup"]
                .as_str()
                .is_some_and(|g| g.starts_with("spotwise-"))
        })
        .find_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_owned(),
                n["spec"]["providerID"]
                    .as_str()?
                    .rsplit('/')
                    .next()?
                    .to_owned(),
            ))
        })
        .context("the rollout left no spot node of its own")?;
    report.interrupted_instance.clone_from(&instance);
    report.interrupted_node.clone_from(&node);
    // Discovery indexes the new instances, as its schedule would.
    discovery::discover_account(
        &discovery::Deps::new(
            &sdk,
            &discovery::Config::from_env(&env(stack, "DiscoveryFunction", &[]))?,
        ),
        &DiscoverAccount {
            tenant_id: tenant.clone(),
            account_id: ACCOUNT.into(),
            run_id: "flow-after-rollout".into(),
            scheduled: None,
        },
        OffsetDateTime::now_utc(),
    )
    .await?;
    let interruption = interruption::Deps::new(
        &sdk,
        &interruption::Config::from_env(&env(stack, "InterruptionFunction", &[]))?,
    );
    let event = spot_warning(&instance, OffsetDateTime::now_utc())?;
    let interruption_queue = stack.resource("InterruptionQueue").to_owned();
    sqs.send_message()
        .queue_url(&interruption_queue)
        .message_body(event.to_string())
        .send()
        .await?;
    let batch = stack.poll(&interruption_queue).await;
    let handling = Instant::now();
    let response = interruption::handle_batch(&interruption, batch.clone())
        .await
        .unwrap_or_else(|never| match never {});
    report.interruption_handled = handling.elapsed();
    stack.settle(&interruption_queue, &batch, &response).await;
    if !response.batch_item_failures.is_empty() {
        bail!(
            "the interruption event failed: {:?}",
            response.batch_item_failures
        );
    }
    // Replacement before loss: the node's group was raised at once, so EKS launches a node
    // before the agent starts the drain.
    let group = fake.node(&node)["metadata"]["labels"]["eks.amazonaws.com/nodegroup"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let in_group = |kube: &FakeKube| -> Vec<String> {
        kube.state()
            .nodes
            .iter()
            .filter(|(_, n)| {
                n["metadata"]["labels"]["eks.amazonaws.com/nodegroup"] == group.as_str()
            })
            .map(|(name, _)| name.clone())
            .collect()
    };
    let before_raise = in_group(fake);
    rig.cloud.reconcile().await?;
    report.replacement_nodes = in_group(&rig.fake)
        .into_iter()
        .filter(|n| !before_raise.contains(n))
        .collect();
    let drain = execute_all(worker, agent).await?;
    report.interruption_drain = drain.join("; ");
    report.executed.extend(drain);
    report.node_after_drain = fake.node(&node);
    report.pods_after_interruption = fake.state().pending().len();
    // EC2 reclaims the instance; its group comes back to its size.
    aws_sdk_ec2::Client::new(&rig.customer)
        .terminate_instances()
        .instance_ids(&instance)
        .send()
        .await?;
    let gone = state_change(&instance, "terminated", OffsetDateTime::now_utc())?;
    sqs.send_message()
        .queue_url(&interruption_queue)
        .message_body(gone.to_string())
        .send()
        .await?;
    let batch = stack.poll(&interruption_queue).await;
    let response = interruption::handle_batch(&interruption, batch.clone())
        .await
        .unwrap_or_else(|never| match never {});
    stack.settle(&interruption_queue, &batch, &response).await;
    rig.cloud.reconcile().await?;
    report.group_after_reclaim = (in_group(&rig.fake).len(), before_raise.len());
    report.step("spot interruption, replacement, drain, reclaim", started);

    if right_sizing {
        Box::pin(rig.right_size(&mut report)).await?;
    }

    let started = Instant::now();
    let cost = cost::Deps::new(
        &sdk,
        &cost::Config::from_env(&env(stack, "CostFunction", &[]))?,
    );
    cost::sample(&cost, &tenant, &cluster, OffsetDateTime::now_utc()).await?;
    let month = format!("{:04}-{:02}", now.year(), u8::from(now.month()));
    cost::report(&cost, &tenant, &cluster, &month, OffsetDateTime::now_utc()).await?;
    let hours = api
        .get(&format!(
            "/v1/clusters/{cluster}/costs?granularity=hour&dimension=summary"
        ))
        .await?;
    report.hour_cost = hours["items"]
        .as_array()
        .and_then(|i| i.last())
        .cloned()
        .unwrap_or(Value::Null);
    let namespaces = api
        .get(&format!(
            "/v1/clusters/{cluster}/costs?granularity=hour&dimension=namespace"
        ))
        .await?;
    if let Some(lines) = namespaces["items"]
        .as_array()
        .and_then(|i| i.last())
        .and_then(|p| p["table"]["lines"].as_object())
    {
        report.namespace_costs = lines
            .iter()
            .map(|(name, line)| (name.clone(), decimal(&line["cost"])))
            .collect();
        report
            .namespace_costs
            .sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    report.savings_report = api
        .get(&format!("/v1/clusters/{cluster}/savings-reports/{month}"))
        .await?;
    report.step("hourly cost, savings report", started);

    let started = Instant::now();
    let dispatcher = webhook_dispatcher::Deps::new(
        &sdk,
        &webhook_dispatcher::Config::from_env(&env(stack, "WebhookDispatcherFunction", &[]))?,
    )?;
    for queue in ["NotificationsQueue", "DeliveriesQueue"] {
        let url = stack.resource(queue).to_owned();
        loop {
            let batch = stack.poll(&url).await;
            if batch.records.is_empty() {
                break;
            }
            let response = webhook_dispatcher::handle_batch(&dispatcher, batch.clone())
                .await
                .unwrap_or_else(|never| match never {});
            stack.settle(&url, &batch, &response).await;
            if !response.batch_item_failures.is_empty() {
                bail!("{queue}: {:?}", response.batch_item_failures);
            }
        }
    }
    let received = receiver.requests();
    report.webhooks_received = received.len();
    let now_s = OffsetDateTime::now_utc().unix_timestamp();
    for request in &received {
        let signature = request
            .headers
            .get("x-spotwise-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if spotwise_notify::sign::verify(
            WEBHOOK_SECRET.as_bytes(),
            signature,
            &request.body,
            now_s,
            300,
        )
        .is_ok()
        {
            report.webhooks_verified += 1;
        }
        if let Ok(body) = serde_json::from_slice::<Value>(&request.body)
            && let Some(kind) = body["event_type"].as_str()
        {
            *report
                .webhook_event_types
                .entry(kind.to_owned())
                .or_default() += 1;
        }
    }
    report.step("notifications delivered", started);
    Ok((report, rig))
}

fn decimal(value: &Value) -> f64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0.0),
        other => other.as_f64().unwrap_or(0.0),
    }
}

/// Polls the agent's queue until it is empty; a line per outcome.
async fn execute_all(worker: &QueueWorker, agent: &Agent) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let outcomes = worker.poll_once(agent).await?;
        if outcomes.is_empty() {
            return Ok(lines);
        }
        lines.extend(outcomes.iter().map(describe));
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Done { detail, .. } => format!("done: {detail}"),
        Outcome::WouldDo { detail, .. } => format!("dry run: {detail}"),
        Outcome::Rejected { reason, .. } => format!("rejected: {reason}"),
        Outcome::Cancelled { action_id } => format!("cancelled: {action_id}"),
        Outcome::Duplicate { action_id } => format!("duplicate: {action_id}"),
        Outcome::Failed { reason, .. } => format!("failed: {reason}"),
    }
}

/// The shipped EventBridge spot interruption warning (`events/eventbridge/`), for `instance`
/// of the flow's account, sent at `at` under an id of its own.
fn spot_warning(instance: &str, at: OffsetDateTime) -> anyhow::Result<Value> {
    let path =
        spotwise_testkit::repo_root().join("events/eventbridge/spot-interruption-warning.json");
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    event["id"] = json!(format!("flow-{instance}-{}", at.unix_timestamp_nanos()));
    event["account"] = json!(ACCOUNT);
    event["time"] = json!(spotwise_core::rfc3339(at));
    event["region"] = json!(REGION);
    event["resources"] = json!([format!("arn:aws:ec2:{REGION}:instance/{instance}")]);
    event["detail"]["instance-id"] = json!(instance);
    Ok(event)
}

/// The shipped EC2 state-change notification for `instance` entering `state`.
fn state_change(instance: &str, state: &str, at: OffsetDateTime) -> anyhow::Result<Value> {
    let path = spotwise_testkit::repo_root().join("events/eventbridge/instance-state-change.json");
    let mut event: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    event["id"] = json!(format!(
        "flow-{instance}-{state}-{}",
        at.unix_timestamp_nanos()
    ));
    event["account"] = json!(ACCOUNT);
    event["time"] = json!(spotwise_core::rfc3339(at));
    event["region"] = json!(REGION);
    event["resources"] = json!([format!("arn:aws:ec2:{REGION}:instance/{instance}")]);
    event["detail"]["instance-id"] = json!(instance);
    event["detail"]["state"] = json!(state);
    Ok(event)
}

/// The scraper reading the shipped feeds (the emulator has no Pricing API), for the flow's region.
pub fn scraper_config(stack: &LocalStack) -> anyhow::Result<pricing_scraper::Config> {
    let data = |file: &str| {
        spotwise_testkit::repo_root()
            .join("data")
            .join(file)
            .display()
            .to_string()
    };
    Ok(pricing_scraper::Config::from_env(&env(
        stack,
        "PricingScraperFunction",
        &[
            ("SPOT_ADVISOR_SOURCE", data("spot-advisor-data.json")),
            ("SPOT_PRICE_SOURCE", data("spot-prices-spotjs.json")),
            ("ON_DEMAND_PRICE_SOURCE", data("on-demand-prices.json")),
            ("CATALOGUE_SOURCE", data("ec2-instance-types.json")),
            ("SCRAPE_REGIONS", REGION.into()),
        ],
    ))?)
}

/// Links the customer's account ([`ACCOUNT`]) to the caller's tenant through the API; returns
/// the SDK configuration of the customer's role, as Spotwise assumes it.
pub async fn link_account(
    api: &Api,
    sdk: &aws_config::SdkConfig,
) -> anyhow::Result<aws_config::SdkConfig> {
    let issued = api.post("/v1/accounts/external-id", json!({})).await?;
    let external_id = issued["external_id"]
        .as_str()
        .context("external_id")?
        .to_owned();
    api.post(
        "/v1/accounts",
        json!({"role_arn": ROLE, "regions": [REGION]}),
    )
    .await?;
    Ok(
        spotwise_aws::cross_account::CrossAccount::new(sdk.clone(), "spotwise-flow")
            .config_for(&RoleArn::parse(ROLE)?, &external_id)
            .await?
            .to_builder()
            .region(aws_config::Region::new(REGION))
            .build(),
    )
}

/// An EKS cluster with one managed node group per group, and its instances, tagged as EKS tags
/// them, spread over three zones.
pub async fn create_cluster(
    customer: &aws_config::SdkConfig,
    name: &str,
    groups: &[Group],
) -> anyhow::Result<Vec<Instance>> {
    create_cluster_with(customer, name, groups, true).await
}

/// [`create_cluster`], with the groups as managed node groups or (`managed_node_groups`
/// false) as Karpenter NodePools, whose instances EKS knows nothing of.
pub async fn create_cluster_with(
    customer: &aws_config::SdkConfig,
    name: &str,
    groups: &[Group],
    managed_node_groups: bool,
) -> anyhow::Result<Vec<Instance>> {
    let eks = aws_sdk_eks::Client::new(customer);
    let ec2 = aws_sdk_ec2::Client::new(customer);
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let subnets = node_subnets(&ec2, name, &zones).await?;
    eks.create_cluster()
        .name(name)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/eks-cluster"))
        .resources_vpc_config(
            VpcConfigRequest::builder()
                .set_subnet_ids(Some(subnets.clone()))
                .build(),
        )
        .send()
        .await?;
    let mut instances = Vec::new();
    for group in groups {
        if managed_node_groups {
            eks.create_nodegroup()
                .cluster_name(name)
                .nodegroup_name(group.nodegroup)
                .node_role(format!("arn:aws:iam::{ACCOUNT}:role/eks-node"))
                .set_subnets(Some(subnets.clone()))
                .capacity_type(if group.spot {
                    CapacityTypes::Spot
                } else {
                    CapacityTypes::OnDemand
                })
                .instance_types(group.instance_type)
                .scaling_config(
                    NodegroupScalingConfig::builder()
                        .min_size(1)
                        .max_size(group.count * 2)
                        .desired_size(group.count)
                        .build(),
                )
                .send()
                .await?;
        }
        let owner_tag = if managed_node_groups {
            "eks:nodegroup-name"
        } else {
            "karpenter.sh/nodepool"
        };
        for index in 0..group.count {
            let at = usize::try_from(index).unwrap_or(0) % zones.len();
            let zone = zones[at];
            let mut tags = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (key, value) in [
                ("eks:cluster-name", name),
                (owner_tag, group.nodegroup),
                (&format!("kubernetes.io/cluster/{name}") as &str, "owned"),
            ] {
                tags = tags.tags(Tag::builder().key(key).value(value).build());
            }
            let mut launch = ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .instance_type(group.instance_type.into())
                .min_count(1)
                .max_count(1)
                .subnet_id(&subnets[at])
                .placement(Placement::builder().availability_zone(zone).build())
                .tag_specifications(tags.build());
            if group.spot {
                launch = launch.instance_market_options(
                    aws_sdk_ec2::types::InstanceMarketOptionsRequest::builder()
                        .market_type(aws_sdk_ec2::types::MarketType::Spot)
                        .build(),
                );
            }
            let launched = launch.send().await?;
            for i in launched.instances() {
                instances.push(Instance {
                    id: i.instance_id().context("instance id")?.to_owned(),
                    node: i.private_dns_name().context("private DNS name")?.to_owned(),
                    instance_type: group.instance_type.to_owned(),
                    zone: zone.to_owned(),
                    nodegroup: group.nodegroup.to_owned(),
                    spot: group.spot,
                });
            }
        }
    }
    Ok(instances)
}

/// A VPC of the cluster's own with one node subnet in each zone, in zone order.
async fn node_subnets(
    ec2: &aws_sdk_ec2::Client,
    cluster: &str,
    zones: &[&str],
) -> anyhow::Result<Vec<String>> {
    let octet = if cluster == "prod" { 10 } else { 20 };
    let vpc = ec2
        .create_vpc()
        .cidr_block(format!("10.{octet}.0.0/16"))
        .send()
        .await?
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("vpc id")?
        .to_owned();
    let mut subnets = Vec::new();
    for (i, zone) in zones.iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .availability_zone(*zone)
            .cidr_block(format!("10.{octet}.{}.0/20", i * 16))
            .send()
            .await?;
        subnets.push(
            subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .context("subnet id")?
                .to_owned(),
        );
    }
    Ok(subnets)
}
