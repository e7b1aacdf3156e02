//! Talking to the Spotwise API with the agent key: action results (never lost: kept in a local
//! buffer, on disk when a path is given, until the API has them), heartbeats, cluster
//! snapshots, and whether an action was cancelled before it is executed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use spotwise_core::action::{ActionStatus, Amendment};
use spotwise_core::messages::{
    ActionReport, Heartbeat, Rejection, SnapshotStored, SnapshotUpload, SnapshotUploadRequest,
};
use spotwise_core::snapshot::Snapshot;
use spotwise_core::snapshot_codec::{self, CodecError, MAX_COMPRESSED_BYTES};
use tracing::{info, warn};

use crate::metrics::Metrics;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A snapshot PUT to S3 carries up to 32 MiB.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Results kept while the API is unreachable; beyond this the oldest are dropped (and counted).
const MAX_BUFFERED: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("API request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("API answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("snapshot not encoded: {0}")]
    Encode(#[from] CodecError),
    #[error("snapshot is {size} bytes compressed, over the {MAX_COMPRESSED_BYTES}-byte limit")]
    TooLarge { size: usize },
    #[error("snapshot upload to storage answered {status}: {body}")]
    Upload { status: StatusCode, body: String },
}

/// What became of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotSent {
    Uploaded {
        stored: SnapshotStored,
        bytes: usize,
    },
    /// The platform has this snapshot already.
    Unchanged,
}

/// What the platform says of an action: its status, and what later signals about the node
/// added to it while it was in flight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ActionState {
    pub status: ActionStatus,
    #[serde(default)]
    pub amendment: Option<Amendment>,
}

/// The platform's answer on whether an action is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusCheck {
    Known(ActionState),
    /// The platform does not know the action, or not for this agent's key (404, 401, 403):
    /// it is not current, whatever its signature says.
    Refused(StatusCode),
    /// No usable answer: connection failure, timeout, throttling, a 5xx.
    Unreachable(String),
}

/// One result waiting for the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingResult {
    pub action_id: String,
    pub report: ActionReport,
}

pub struct Reporter {
    http: reqwest::Client,
    base_url: String,
    key: String,
    buffer: Mutex<VecDeque<PendingResult>>,
    buffer_file: Option<PathBuf>,
    metrics: std::sync::Arc<Metrics>,
    /// One flush at a time, so a result is never posted twice by two flushes racing.
    flushing: tokio::sync::Mutex<()>,
}

impl Reporter {
    /// `buffer_file` keeps undelivered results across restarts; what it holds is loaded now.
    pub fn new(
        base_url: &str,
        key: String,
        buffer_file: Option<PathBuf>,
        metrics: std::sync::Arc<Metrics>,
    ) -> Result<Self, ReportError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("spotwise-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let buffered: VecDeque<PendingResult> = buffer_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(|text| {
                text.lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .collect()
            })
            .unwrap_or_default();
        if !buffered.is_empty() {
            info!(
                results = buffered.len(),
                "undelivered results loaded from the buffer"
            );
        }
        metrics.set_pending(buffered.len());
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            buffer: Mutex::new(buffered),
            buffer_file,
            metrics,
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn pending(&self) -> Vec<PendingResult> {
        self.buffer
            .lock()
            .map(|b| b.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn persist(&self, buffer: &VecDeque<PendingResult>) {
        self.metrics.set_pending(buffer.len());
        let Some(path) = &self.buffer_file else {
            return;
        };
        let text: String = buffer
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|line| line + "\n")
            .collect();
        // Written aside and renamed, so a crash mid-write never leaves half a buffer.
        let partial = path.with_extension("partial");
        if let Err(err) =
            std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path))
        {
            warn!(path = %path.display(), error = %err, "result buffer not saved");
        }
    }

    /// Keeps a result and tries to deliver everything buffered.
    pub async fn result(&self, action_id: &str, report: ActionReport) {
        if let Ok(mut buffer) = self.buffer.lock() {
            if buffer.len() >= MAX_BUFFERED {
                buffer.pop_front();
                self.metrics.dropped_result();
            }
            buffer.push_back(PendingResult {
                action_id: action_id.to_owned(),
                report,
            });
            self.persist(&buffer);
        }
        self.flush().await;
    }

    /// Delivers buffered results in order; stops at the first the API does not take, to retry
    /// later. A result the API refuses for good (a 4xx other than throttling or an
    /// authentication problem, which a rotated key mends) is dropped, since retrying cannot help.
    /// A flush already under way picks up what is buffered meanwhile, so this one returns.
    pub async fn flush(&self) -> usize {
        let Ok(_flushing) = self.flushing.try_lock() else {
            return 0;
        };
        let mut delivered = 0;
        loop {
            let Some(next) = self.buffer.lock().ok().and_then(|b| b.front().cloned()) else {
                return delivered;
            };
            let url = format!(
                "{}/v1/agent/actions/{}/result",
                self.base_url, next.action_id
            );
            let sent = self.send(self.http.post(&url).json(&next.report)).await;
            match sent {
                Ok(_) => delivered += 1,
                Err(ReportError::Status { status, body })
                    if status.is_client_error()
                        && !matches!(
                            status,
                            StatusCode::TOO_MANY_REQUESTS
                                | StatusCode::UNAUTHORIZED
                                | StatusCode::FORBIDDEN
                        ) =>
                {
                    warn!(action_id = %next.action_id, %status, %body, "result refused by the API; dropped");
                }
                Err(err) => {
                    self.metrics.report_failed();
                    warn!(action_id = %next.action_id, error = %err, "result not delivered; kept for later");
                    return delivered;
                }
            }
            if let Ok(mut buffer) = self.buffer.lock() {
                if buffer.front() == Some(&next) {
                    buffer.pop_front();
                }
                self.persist(&buffer);
            }
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ReportError> {
        let response = request.bearer_auth(&self.key).send().await?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(ReportError::Status {
                status,
                body: body.chars().take(300).collect(),
            })
        }
    }

    pub async fn heartbeat(
        &self,
        dry_run: bool,
        rejected: &[Rejection],
    ) -> Result<(), ReportError> {
        let beat = Heartbeat {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            dry_run,
            rejected: rejected.to_vec(),
        };
        let url = format!("{}/v1/agent/heartbeat", self.base_url);
        self.send(self.http.post(url).json(&beat)).await.map(drop)
    }

    /// Sends a snapshot: asks for an upload with its digest, PUTs the gzip body straight to
    /// storage through the presigned URL (without the agent key), then confirms it.
    pub async fn snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotSent, ReportError> {
        let encoded = snapshot_codec::encode(snapshot)?;
        let size = encoded.gzip.len();
        if size as u64 > MAX_COMPRESSED_BYTES {
            return Err(ReportError::TooLarge { size });
        }
        let request = SnapshotUploadRequest {
            sha256: encoded.sha256,
            size: size as u64,
        };
        let url = format!("{}/v1/agent/snapshot-uploads", self.base_url);
        let ticket: SnapshotUpload = self
            .send(self.http.post(url).json(&request))
            .await?
            .json()
            .await?;
        let (upload_id, url, headers) = match ticket {
            SnapshotUpload::Unchanged { .. } => return Ok(SnapshotSent::Unchanged),
            SnapshotUpload::Upload {
                upload_id,
                url,
                headers,
                ..
            } => (upload_id, url, headers),
        };
        let mut put = self.http.put(url).timeout(UPLOAD_TIMEOUT);
        for (name, value) in &headers {
            // The body sets its own length; a second header would make the request invalid.
            if !name.eq_ignore_ascii_case("content-length") {
                put = put.header(name, value);
            }
        }
        let response = put.body(encoded.gzip).send().await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(ReportError::Upload {
                status,
                body: body.chars().take(300).collect(),
            });
        }
        let url = format!(
            "{}/v1/agent/snapshot-uploads/{upload_id}/confirm",
            self.base_url
        );
        let stored: SnapshotStored = self.send(self.http.post(url)).await?.json().await?;
        Ok(SnapshotSent::Uploaded {
            stored,
            bytes: size,
        })
    }

    /// What the platform says of an action, before it runs and while a drain runs.
    pub async fn action_status(&self, action_id: &str) -> StatusCheck {
        let url = format!("{}/v1/agent/actions/{action_id}", self.base_url);
        match self.send(self.http.get(url)).await {
            Ok(response) => match response.json::<ActionState>().await {
                Ok(state) => StatusCheck::Known(state),
                Err(e) => StatusCheck::Unreachable(format!("unreadable answer: {e}")),
            },
            Err(ReportError::Status { status, .. })
                if status.is_client_error()
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::REQUEST_TIMEOUT =>
            {
                StatusCheck::Refused(status)
            }
            Err(e) => StatusCheck::Unreachable(e.to_string()),
        }
    }
}
