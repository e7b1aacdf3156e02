//! The Spotwise agent runs inside a customer's cluster. It long-polls its own cluster's queue,
//! verifies every action (cluster id, expiry, HMAC signature with the cluster secret) and only
//! then changes the cluster through the Kubernetes API.

mod drain;
mod execute;
mod lifecycle;
pub mod metrics;
pub mod report;
pub mod snapshot;
mod worker;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use spotwise_core::ClusterId;
use spotwise_core::action::{ActionStatus, AgentAction};
use spotwise_core::config::{ConfigError, Env};
use spotwise_core::messages::{ActionReport, ReportedOutcome};
use time::OffsetDateTime;
use tracing::{info, warn};

pub use execute::ExecuteError;
pub use metrics::Metrics;
pub use report::Reporter;
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
    metrics: Arc<Metrics>,
    dry_run: bool,
}

impl Agent {
    pub fn new(cluster_id: ClusterId, secret: Vec<u8>, kube: kube::Client, dry_run: bool) -> Self {
        Self {
            cluster_id,
            secret,
            kube,
            autoscaling: None,
            reporter: None,
            metrics: Metrics::new(),
            dry_run,
        }
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
        if let (Some(reporter), Some((action_id, report))) = (&self.reporter, report_of(&outcome)) {
            reporter.result(action_id, report).await;
        }
        outcome
    }

    async fn decide(&self, body: &str, now: OffsetDateTime) -> Outcome {
        let action: AgentAction = match serde_json::from_str(body) {
            Ok(action) => action,
            Err(e) => return reject(None, format!("unreadable action: {e}")),
        };
        if let Err(e) = action.verify(&self.cluster_id, &self.secret, now) {
            // Signed by the platform but refused (expired): worth reporting against its id.
            let authentic = action
                .verify(&self.cluster_id, &self.secret, action.issued_at)
                .is_ok();
            return reject(authentic.then(|| action.action_id.clone()), e.to_string());
        }
        if let Some(reporter) = &self.reporter
            && reporter.action_status(&action.action_id).await == Some(ActionStatus::Cancelled)
        {
            info!(action_id = %action.action_id, "action cancelled through the API; not executed");
            return Outcome::Cancelled {
                action_id: action.action_id,
            };
        }
        if self.dry_run {
            let detail = execute::describe(&action);
            info!(action_id = %action.action_id, %detail, "dry run");
            return Outcome::WouldDo {
                action_id: action.action_id,
                detail,
            };
        }
        match execute::run(&self.kube, self.autoscaling.as_ref(), &action).await {
            Ok(executed) => {
                info!(action_id = %action.action_id, kind = ?action.kind, detail = %executed.detail, "action done");
                Outcome::Done {
                    action_id: action.action_id,
                    detail: executed.detail,
                    previous_replicas: executed.previous_replicas,
                }
            }
            Err(err @ (ExecuteError::Unsupported(_) | ExecuteError::InvalidParams(_))) => reject(
                Some(action.action_id.clone()),
                format!("action {}: {err}", action.action_id),
            ),
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

    /// Heartbeats every `every` (flushing undelivered results with it) and uploads a cluster
    /// snapshot every `snapshot_every`, until `shutdown` completes.
    pub async fn report_loop(
        &self,
        every: Duration,
        snapshot_every: Duration,
        shutdown: impl Future<Output = ()>,
    ) {
        let Some(reporter) = &self.reporter else {
            return;
        };
        tokio::pin!(shutdown);
        let mut last_snapshot: Option<tokio::time::Instant> = None;
        loop {
            if let Err(err) = reporter.heartbeat(self.dry_run).await {
                self.metrics.heartbeat_failed();
                warn!(error = %err, "heartbeat not delivered");
            }
            reporter.flush().await;
            if last_snapshot.is_none_or(|at| at.elapsed() >= snapshot_every) {
                let uploaded = match snapshot::collect(&self.kube).await {
                    Ok(snapshot) => reporter
                        .snapshot(&snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                if let Err(err) = &uploaded {
                    warn!(error = %err, "cluster snapshot not uploaded");
                }
                self.metrics.snapshot(uploaded.is_ok());
                last_snapshot = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(every) => {}
            }
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
        Outcome::Failed { .. } | Outcome::Rejected { .. } | Outcome::Cancelled { .. } => None,
    }
}

fn reject(action_id: Option<String>, reason: String) -> Outcome {
    warn!(%reason, "action rejected");
    Outcome::Rejected { action_id, reason }
}
