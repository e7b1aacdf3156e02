//! The Spotwise agent runs inside a customer's cluster. It long-polls its own cluster's queue,
//! verifies every action (cluster id, expiry, HMAC signature with the cluster secret) and only
//! then changes the cluster through the Kubernetes API.

mod drain;
mod execute;
mod lifecycle;
mod worker;

use std::path::PathBuf;

use spotwise_core::ClusterId;
use spotwise_core::action::AgentAction;
use spotwise_core::config::{ConfigError, Env};
use time::OffsetDateTime;
use tracing::{info, warn};

pub use execute::ExecuteError;
pub use worker::QueueWorker;

pub struct AgentConfig {
    pub cluster_id: ClusterId,
    pub queue_url: String,
    pub secret_file: PathBuf,
    pub dry_run: bool,
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
        })
    }
}

/// What became of one queued action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        action_id: String,
        detail: String,
    },
    /// Dry-run mode: verified, not executed.
    WouldDo {
        action_id: String,
        detail: String,
    },
    /// Not executed and never will be (unreadable, wrong cluster, expired, bad signature,
    /// unsupported). The message is removed.
    Rejected {
        reason: String,
    },
    /// Execution failed; `retryable` failures stay on the queue for another attempt.
    Failed {
        action_id: String,
        reason: String,
        retryable: bool,
    },
}

pub struct Agent {
    cluster_id: ClusterId,
    secret: Vec<u8>,
    kube: kube::Client,
    autoscaling: Option<aws_sdk_autoscaling::Client>,
    dry_run: bool,
}

impl Agent {
    pub fn new(cluster_id: ClusterId, secret: Vec<u8>, kube: kube::Client, dry_run: bool) -> Self {
        Self {
            cluster_id,
            secret,
            kube,
            autoscaling: None,
            dry_run,
        }
    }

    /// Completes Auto Scaling termination hooks after drains (and heartbeats them during).
    pub fn with_autoscaling(mut self, client: aws_sdk_autoscaling::Client) -> Self {
        self.autoscaling = Some(client);
        self
    }

    /// Verifies and executes one message body.
    pub async fn handle(&self, body: &str, now: OffsetDateTime) -> Outcome {
        let action: AgentAction = match serde_json::from_str(body) {
            Ok(action) => action,
            Err(e) => return reject(format!("unreadable action: {e}")),
        };
        if let Err(e) = action.verify(&self.cluster_id, &self.secret, now) {
            return reject(e.to_string());
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
            Ok(detail) => {
                info!(action_id = %action.action_id, kind = ?action.kind, %detail, "action done");
                Outcome::Done {
                    action_id: action.action_id,
                    detail,
                }
            }
            Err(err @ (ExecuteError::Unsupported(_) | ExecuteError::InvalidParams(_))) => {
                reject(format!("action {}: {err}", action.action_id))
            }
            Err(err) => {
                let retryable = err.is_retryable();
                warn!(action_id = %action.action_id, error = %err, retryable, "action failed");
                Outcome::Failed {
                    action_id: action.action_id,
                    reason: err.to_string(),
                    retryable,
                }
            }
        }
    }
}

fn reject(reason: String) -> Outcome {
    warn!(%reason, "action rejected");
    Outcome::Rejected { reason }
}
