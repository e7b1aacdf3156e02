//! The Spotwise agent runs inside a customer's cluster. It long-polls its own cluster's queue,
//! verifies every action (cluster id, expiry, HMAC signature with the cluster secret) and only
//! then changes the cluster through the Kubernetes API.

mod drain;
mod execute;
mod lifecycle;
pub mod metrics;
pub mod report;
pub mod snapshot;
pub mod usage;
mod worker;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spotwise_core::ClusterId;
use spotwise_core::action::{ActionStatus, ReceivedAction};
use spotwise_core::config::{ConfigError, Env};
use spotwise_core::messages::{
    ActionReport, MAX_REJECTION_REASON, MAX_REJECTIONS_PER_HEARTBEAT, Rejection, ReportedOutcome,
};
use time::OffsetDateTime;
use tracing::{debug, info, warn};

pub use execute::ExecuteError;
pub use metrics::Metrics;
pub use report::{ActionState, Reporter, StatusCheck};
pub use worker::QueueWorker;

pub struct AgentConfig {
    pub cluster_id: ClusterId,
    pub queue_url: String,
    pub secret_file: PathBuf,
    pub dry_run: bool,
    /// The Spotwise API the agent reports to, and the file holding its agent key.
    pub api_url: String,
    pub key_file: PathBuf,
    /// Undelivered results survive restarts here (an emptyDir in the manifest).
    pub buffer_file: PathBuf,
    pub metrics_addr: std::net::SocketAddr,
}

impl AgentConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw_cluster = env.required("SPOTWISE_CLUSTER_ID")?;
        let cluster_id = ClusterId::new(&raw_cluster).map_err(|e| ConfigError::Invalid {
            var: "SPOTWISE_CLUSTER_ID".into(),
            value: raw_cluster,
            reason: e.to_string(),
        })?;
        Ok(Self {
            cluster_id,
            queue_url: env.required("SPOTWISE_QUEUE_URL")?,
            secret_file: env
                .optional("SPOTWISE_SECRET_FILE")
                .unwrap_or_else(|| "/var/run/secrets/spotwise/cluster-secret".into())
                .into(),
            dry_run: env.flag("SPOTWISE_DRY_RUN")?,
            api_url: env.required("SPOTWISE_API_URL")?,
            key_file: env
                .optional("SPOTWISE_AGENT_KEY_FILE")
                .unwrap_or_else(|| "/var/run/secrets/spotwise/agent-key".into())
                .into(),
            buffer_file: env
                .optional("SPOTWISE_BUFFER_FILE")
                .unwrap_or_else(|| "/var/lib/spotwise/results.jsonl".into())
                .into(),
            metrics_addr: env.parse_or(
                "SPOTWISE_METRICS_ADDR",
                std::net::SocketAddr::from(([0, 0, 0, 0], 9090)),
            )?,
        })
    }
}

/// A running drain asks the platform this often whether a later signal amended it.
const AMENDMENT_POLL: Duration = Duration::from_secs(20);

/// Action ids remembered as finished, so a redelivered message is not executed twice.
const REMEMBERED_ACTIONS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading the cluster secret from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the cluster secret in {path} is not hex (store the secret exactly as the API gave it)"
    )]
    NotHex { path: String },
    #[error("the cluster secret in {path} is empty")]
    Empty { path: String },
}

/// The cluster's HMAC key from its Secret file: the hex text the API hands out, decoded, which
/// is the key the platform signs with.
pub fn read_cluster_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: shown(),
        source,
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty { path: shown() });
    }
    hex::decode(text).map_err(|_| SecretError::NotHex { path: shown() })
}

/// What became of one queued action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        action_id: String,
        detail: String,
        /// For a scale: the replica count it replaced.
        previous_replicas: Option<i32>,
    },
    /// Dry-run mode: verified, not executed.
    WouldDo { action_id: String, detail: String },
    /// Not executed and never will be (unreadable, wrong cluster, expired, bad signature,
    /// unsupported). The message is removed. `action_id` is set when the action is authentic
    /// (signed with our secret), so the rejection can be reported against it.
    Rejected {
        action_id: Option<String>,
        reason: String,
    },
    /// Withdrawn through the API before it ran.
    Cancelled { action_id: String },
    /// Already finished by this agent (a redelivered message): not executed again.
    Duplicate { action_id: String },
    /// Execution failed; `retryable` failures stay on the queue for another attempt.
    Failed {
        action_id: String,
        reason: String,
        retryable: bool,
        /// For a drain cut short by its deadline: the pods left on the node, with why.
        pods_left: BTreeMap<String, String>,
    },
}

pub struct Agent {
    cluster_id: ClusterId,
    secret: Vec<u8>,
    kube: kube::Client,
    autoscaling: Option<aws_sdk_autoscaling::Client>,
    reporter: Option<Arc<Reporter>>,
    /// How often a running drain asks the platform for amendments.
    amendment_poll: Duration,
    metrics: Arc<Metrics>,
    dry_run: bool,
    /// Ids of actions that reached a final outcome, oldest first.
    finished: Mutex<(VecDeque<String>, HashSet<String>)>,
    /// Refusals not yet told to the API; they go with the next heartbeat.
    rejections: Mutex<Vec<Rejection>>,
}

impl Agent {
    pub fn new(cluster_id: ClusterId, secret: Vec<u8>, kube: kube::Client, dry_run: bool) -> Self {
        Self {
            cluster_id,
            secret,
            kube,
            autoscaling: None,
            reporter: None,
            amendment_poll: AMENDMENT_POLL,
            metrics: Metrics::new(),
            dry_run,
            finished: Mutex::default(),
            rejections: Mutex::default(),
        }
    }

    /// How often a running drain asks the platform for amendments (20 s), shorter for tests.
    pub fn with_amendment_poll(mut self, every: Duration) -> Self {
        self.amendment_poll = every;
        self
    }

    /// Reports results to the API and asks it about cancellations before executing.
    pub fn with_reporter(mut self, reporter: Arc<Reporter>) -> Self {
        self.reporter = Some(reporter);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Completes Auto Scaling termination hooks after drains (and heartbeats them during).
    pub fn with_autoscaling(mut self, client: aws_sdk_autoscaling::Client) -> Self {
        self.autoscaling = Some(client);
        self
    }

    /// Verifies and executes one message body, then reports the result.
    pub async fn handle(&self, body: &str, now: OffsetDateTime) -> Outcome {
        let outcome = self.decide(body, now).await;
        self.metrics.outcome(&outcome);
        self.remember(&outcome);
        if let Outcome::Rejected {
            action_id: None,
            reason,
        } = &outcome
        {
            self.hold_rejection(reason, now);
        }
        if let (Some(reporter), Some((action_id, report))) = (&self.reporter, report_of(&outcome)) {
            reporter.result(action_id, report).await;
        }
        outcome
    }

    /// Keeps the id of an action that reached a final outcome.
    fn remember(&self, outcome: &Outcome) {
        let finished_id = match outcome {
            Outcome::Done { action_id, .. }
            | Outcome::WouldDo { action_id, .. }
            | Outcome::Cancelled { action_id }
            | Outcome::Rejected {
                action_id: Some(action_id),
                ..
            }
            | Outcome::Failed {
                action_id,
                retryable: false,
                ..
            } => Some(action_id),
            Outcome::Rejected {
                action_id: None, ..
            }
            | Outcome::Failed { .. }
            | Outcome::Duplicate { .. } => None,
        };
        if let (Some(id), Ok(mut finished)) = (finished_id, self.finished.lock()) {
            let (order, ids) = &mut *finished;
            if ids.insert(id.clone()) {
                order.push_back(id.clone());
                if order.len() > REMEMBERED_ACTIONS
                    && let Some(oldest) = order.pop_front()
                {
                    ids.remove(&oldest);
                }
            }
        }
    }

    /// A refusal not authentic enough to report against an action: the heartbeat carries it.
    fn hold_rejection(&self, reason: &str, at: OffsetDateTime) {
        if let Ok(mut pending) = self.rejections.lock()
            && pending.len() < MAX_REJECTIONS_PER_HEARTBEAT
        {
            pending.push(Rejection {
                reason: reason.chars().take(MAX_REJECTION_REASON).collect(),
                at,
            });
        }
    }

    fn already_finished(&self, action_id: &str) -> bool {
        self.finished
            .lock()
            .is_ok_and(|finished| finished.1.contains(action_id))
    }

    async fn decide(&self, body: &str, now: OffsetDateTime) -> Outcome {
        let received = match ReceivedAction::parse(body) {
            Ok(received) => received,
            Err(e) => return reject(None, format!("unreadable action: {e}")),
        };
        if let Err(e) = received.verify(&self.cluster_id, &self.secret, now) {
            // Signed by the platform but refused (expired): worth reporting against its id.
            let authentic = received
                .verify(&self.cluster_id, &self.secret, received.action.issued_at)
                .is_ok();
            return reject(
                authentic.then(|| received.action.action_id.clone()),
                e.to_string(),
            );
        }
        let action = received.action;
        if self.already_finished(&action.action_id) {
            info!(action_id = %action.action_id, "redelivered action already finished; not executed again");
            return Outcome::Duplicate {
                action_id: action.action_id,
            };
        }
        let mut amendment = None;
        if let Some(reporter) = &self.reporter {
            match reporter.action_status(&action.action_id).await {
                StatusCheck::Known(ActionState {
                    status: ActionStatus::Cancelled,
                    ..
                }) => {
                    info!(action_id = %action.action_id, "action cancelled through the API; not executed");
                    return Outcome::Cancelled {
                        action_id: action.action_id,
                    };
                }
                // Finished before a restart of this agent, or closed by the platform.
                StatusCheck::Known(ActionState {
                    status: ActionStatus::Succeeded | ActionStatus::Failed | ActionStatus::Closed,
                    ..
                }) => {
                    info!(action_id = %action.action_id, "action already finished on the platform; not executed again");
                    return Outcome::Duplicate {
                        action_id: action.action_id,
                    };
                }
                StatusCheck::Known(state) => amendment = state.amendment,
                StatusCheck::Refused(status) => {
                    return reject(
                        Some(action.action_id),
                        format!(
                            "the platform does not confirm this action (HTTP {}); not executed",
                            status.as_u16()
                        ),
                    );
                }
                // The node goes whatever happens; the signature's short validity bounds it.
                StatusCheck::Unreachable(reason) if action.spec.is_interruption_drain() => {
                    warn!(action_id = %action.action_id, %reason, not_after = %spotwise_core::rfc3339(action.not_after),
                        "platform unreachable; interruption drain runs within its validity");
                }
                StatusCheck::Unreachable(reason) => {
                    warn!(action_id = %action.action_id, %reason, "platform unreachable; action held until it confirms");
                    return Outcome::Failed {
                        action_id: action.action_id,
                        reason: format!(
                            "the platform could not confirm the action ({reason}); held for a later attempt"
                        ),
                        retryable: true,
                        pods_left: BTreeMap::new(),
                    };
                }
            }
        }
        if self.dry_run {
            let detail = action.spec.to_string();
            info!(action_id = %action.action_id, %detail, "dry run");
            return Outcome::WouldDo {
                action_id: action.action_id,
                detail,
            };
        }
        let amendments = execute::Amendments {
            initial: amendment,
            reporter: self.reporter.as_deref(),
            poll_every: self.amendment_poll,
        };
        match execute::run(&self.kube, self.autoscaling.as_ref(), &action, amendments).await {
            Ok(executed) => {
                info!(action_id = %action.action_id, kind = %action.kind(), detail = %executed.detail, "action done");
                Outcome::Done {
                    action_id: action.action_id,
                    detail: executed.detail,
                    previous_replicas: executed.previous_replicas,
                }
            }
            Err(err) => {
                let retryable = err.is_retryable();
                warn!(action_id = %action.action_id, error = %err, retryable, "action failed");
                let reason = err.to_string();
                let pods_left = match err {
                    ExecuteError::DrainIncomplete { pods_left, .. } => pods_left,
                    _ => BTreeMap::new(),
                };
                Outcome::Failed {
                    action_id: action.action_id,
                    reason,
                    retryable,
                    pods_left,
                }
            }
        }
    }

    /// Heartbeats every `every` on a fixed schedule (flushing undelivered results and telling
    /// the API of refused messages with it) and, independently, uploads a cluster snapshot every
    /// `snapshot_every`, until `shutdown` completes.
    pub async fn report_loop(
        &self,
        every: Duration,
        snapshot_every: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        let heartbeats = async {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let rejected = self
                    .rejections
                    .lock()
                    .map(|mut pending| std::mem::take(&mut *pending))
                    .unwrap_or_default();
                if let Err(err) = reporter.heartbeat(self.dry_run, &rejected).await {
                    self.metrics.heartbeat_failed();
                    warn!(error = %err, "heartbeat not delivered");
                    // Kept for the next heartbeat.
                    if let Ok(mut pending) = self.rejections.lock() {
                        let room = MAX_REJECTIONS_PER_HEARTBEAT.saturating_sub(pending.len());
                        pending.extend(rejected.into_iter().take(room));
                    }
                }
                reporter.flush().await;
            }
        };
        let snapshots = async {
            let mut ticks = tokio::time::interval(snapshot_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut usage = usage::UsageRecorder::default();
            loop {
                ticks.tick().await;
                let uploaded = match snapshot::collect(&self.kube).await {
                    Ok(mut snapshot) => {
                        usage.record(
                            &mut snapshot,
                            time::OffsetDateTime::now_utc().unix_timestamp(),
                        );
                        reporter
                            .snapshot(&snapshot)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    Err(err) => Err(err.to_string()),
                };
                match &uploaded {
                    Ok(report::SnapshotSent::Uploaded { stored, bytes }) => {
                        info!(snapshot_id = %stored.snapshot_id, nodes = stored.nodes, pods = stored.pods, bytes, "cluster snapshot uploaded");
                    }
                    Ok(report::SnapshotSent::Unchanged) => {
                        debug!("cluster unchanged since its last snapshot; nothing uploaded");
                    }
                    Err(err) => warn!(error = %err, "cluster snapshot not uploaded"),
                }
                self.metrics.snapshot(uploaded.is_ok());
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = heartbeats => {}
            () = snapshots => {}
        }
    }
}

/// What the API hears of an outcome; retryable failures stay on the queue and are not final.
fn report_of(outcome: &Outcome) -> Option<(&str, ActionReport)> {
    let report = |outcome, detail: &str| ActionReport {
        outcome,
        detail: detail.to_owned(),
        pods_left: BTreeMap::new(),
        previous_replicas: None,
    };
    match outcome {
        Outcome::Done {
            action_id,
            detail,
            previous_replicas,
        } => Some((
            action_id,
            ActionReport {
                previous_replicas: *previous_replicas,
                ..report(ReportedOutcome::Succeeded, detail)
            },
        )),
        Outcome::WouldDo { action_id, detail } => {
            Some((action_id, report(ReportedOutcome::DryRun, detail)))
        }
        Outcome::Failed {
            action_id,
            reason,
            retryable: false,
            pods_left,
        } => Some((
            action_id,
            ActionReport {
                pods_left: pods_left.clone(),
                ..report(ReportedOutcome::Failed, reason)
            },
        )),
        Outcome::Rejected {
            action_id: Some(action_id),
            reason,
        } => Some((
            action_id,
            report(ReportedOutcome::Failed, &format!("rejected: {reason}")),
        )),
        Outcome::Failed { .. }
        | Outcome::Rejected { .. }
        | Outcome::Cancelled { .. }
        | Outcome::Duplicate { .. } => None,
    }
}

fn reject(action_id: Option<String>, reason: String) -> Outcome {
    warn!(%reason, "action rejected");
    Outcome::Rejected { action_id, reason }
}
