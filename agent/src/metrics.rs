//! `/metrics` (Prometheus text format) and `/healthz` (the queue was polled recently).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use time::OffsetDateTime;

use crate::Outcome;

/// A poll older than this makes the agent unhealthy (a long-poll takes 20 s).
const HEALTHY_WITHIN_SECONDS: i64 = 120;

#[derive(Default)]
pub struct Metrics {
    done: AtomicU64,
    dry_run: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    duplicate: AtomicU64,
    results_pending: AtomicU64,
    results_dropped: AtomicU64,
    report_failures: AtomicU64,
    heartbeat_failures: AtomicU64,
    snapshots: AtomicU64,
    snapshot_failures: AtomicU64,
    /// Unix seconds of the last successful receive; 0 before the first.
    last_poll: AtomicI64,
    started: AtomicI64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let metrics = Self::default();
        metrics.started.store(
            OffsetDateTime::now_utc().unix_timestamp(),
            Ordering::Relaxed,
        );
        Arc::new(metrics)
    }

    pub fn outcome(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Done { .. } => &self.done,
            Outcome::WouldDo { .. } => &self.dry_run,
            Outcome::Rejected { .. } => &self.rejected,
            Outcome::Failed { .. } => &self.failed,
            Outcome::Cancelled { .. } => &self.cancelled,
            Outcome::Duplicate { .. } => &self.duplicate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn polled(&self, at: OffsetDateTime) {
        self.last_poll.store(at.unix_timestamp(), Ordering::Relaxed);
    }

    pub fn set_pending(&self, pending: usize) {
        self.results_pending.store(
            u64::try_from(pending).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn dropped_result(&self) {
        self.results_dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn report_failed(&self) {
        self.report_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn heartbeat_failed(&self) {
        self.heartbeat_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, ok: bool) {
        let counter = if ok {
            &self.snapshots
        } else {
            &self.snapshot_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Healthy while the queue is being polled (or within the grace after start).
    pub fn healthy(&self, now: OffsetDateTime) -> bool {
        let last = self
            .last_poll
            .load(Ordering::Relaxed)
            .max(self.started.load(Ordering::Relaxed));
        now.unix_timestamp() - last <= HEALTHY_WITHIN_SECONDS
    }

    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        out.push_str("# HELP spotwise_agent_actions_total Actions handled, by outcome.\n");
        out.push_str("# TYPE spotwise_agent_actions_total counter\n");
        for (outcome, counter) in [
            ("done", &self.done),
            ("dry_run", &self.dry_run),
            ("rejected", &self.rejected),
            ("failed", &self.failed),
            ("cancelled", &self.cancelled),
            ("duplicate", &self.duplicate),
        ] {
            let _ = writeln!(
                out,
                "spotwise_agent_actions_total{{outcome=\"{outcome}\"}} {}",
                get(counter)
            );
        }
        for (name, help, kind, value) in [
            (
                "spotwise_agent_results_pending",
                "Results not yet delivered to the API.",
                "gauge",
                get(&self.results_pending),
            ),
            (
                "spotwise_agent_results_dropped_total",
                "Results dropped because the buffer was full.",
                "counter",
                get(&self.results_dropped),
            ),
            (
                "spotwise_agent_report_failures_total",
                "Failed attempts to deliver a result.",
                "counter",
                get(&self.report_failures),
            ),
            (
                "spotwise_agent_heartbeat_failures_total",
                "Heartbeats the API did not take.",
                "counter",
                get(&self.heartbeat_failures),
            ),
            (
                "spotwise_agent_snapshots_total",
                "Cluster snapshots uploaded.",
                "counter",
                get(&self.snapshots),
            ),
            (
                "spotwise_agent_snapshot_failures_total",
                "Cluster snapshots that failed.",
                "counter",
                get(&self.snapshot_failures),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP spotwise_agent_last_poll_timestamp_seconds Last successful queue receive.\n\
             # TYPE spotwise_agent_last_poll_timestamp_seconds gauge\n\
             spotwise_agent_last_poll_timestamp_seconds {}",
            self.last_poll.load(Ordering::Relaxed)
        );
        out
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

async fn render(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    if metrics.healthy(OffsetDateTime::now_utc()) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "queue not polled recently")
    }
}
