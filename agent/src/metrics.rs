//! `/metrics` (OpenMetrics text, `prometheus-client`) and `/healthz` (the queue was polled recently).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;

use crate::Outcome;

/// A poll older than this makes the agent unhealthy (a long-poll takes 20 s).
const HEALTHY_WITHIN_SECONDS: i64 = 120;

/// Every `outcome` label value, exposed from the start so each series exists at 0.
const OUTCOMES: [&str; 6] = [
    "done",
    "dry_run",
    "rejected",
    "failed",
    "cancelled",
    "duplicate",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The agent's metrics. Names and help are given without the `spotwise_agent_` prefix, the
/// counters' `_total` suffix and a closing period: the registry and its encoder add them.
pub struct Metrics {
    registry: Registry,
    actions: Family<OutcomeLabel, Counter>,
    results_pending: Gauge<u64, AtomicU64>,
    results_dropped: Counter,
    report_failures: Counter,
    heartbeat_failures: Counter,
    snapshots: Counter,
    snapshot_failures: Counter,
    /// Unix seconds of the last successful receive; 0 before the first.
    last_poll: Gauge,
    /// Unix seconds at construction, the health grace before the first poll.
    started: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spotwise_agent");
        let actions = Family::<OutcomeLabel, Counter>::default();
        for outcome in OUTCOMES {
            actions.get_or_create_owned(&OutcomeLabel { outcome });
        }
        registry.register("actions", "Actions handled, by outcome", actions.clone());
        let results_pending = Gauge::default();
        registry.register(
            "results_pending",
            "Results not yet delivered to the API",
            results_pending.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let results_dropped = counter(
            &mut registry,
            "results_dropped",
            "Results dropped because the buffer was full",
        );
        let report_failures = counter(
            &mut registry,
            "report_failures",
            "Failed attempts to deliver a result",
        );
        let heartbeat_failures = counter(
            &mut registry,
            "heartbeat_failures",
            "Heartbeats the API did not take",
        );
        let snapshots = counter(&mut registry, "snapshots", "Cluster snapshots uploaded");
        let snapshot_failures = counter(
            &mut registry,
            "snapshot_failures",
            "Cluster snapshots that failed",
        );
        let last_poll = Gauge::default();
        registry.register(
            "last_poll_timestamp_seconds",
            "Last successful queue receive",
            last_poll.clone(),
        );
        Self {
            registry,
            actions,
            results_pending,
            results_dropped,
            report_failures,
            heartbeat_failures,
            snapshots,
            snapshot_failures,
            last_poll,
            started: OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn outcome(&self, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Done { .. } => "done",
            Outcome::WouldDo { .. } => "dry_run",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled { .. } => "cancelled",
            Outcome::Duplicate { .. } => "duplicate",
        };
        self.actions.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn polled(&self, at: OffsetDateTime) {
        self.last_poll.set(at.unix_timestamp());
    }

    pub fn set_pending(&self, pending: usize) {
        self.results_pending
            .set(u64::try_from(pending).unwrap_or(u64::MAX));
    }

    pub fn dropped_result(&self) {
        self.results_dropped.inc();
    }

    pub fn report_failed(&self) {
        self.report_failures.inc();
    }

    pub fn heartbeat_failed(&self) {
        self.heartbeat_failures.inc();
    }

    pub fn snapshot(&self, ok: bool) {
        if ok {
            self.snapshots.inc();
        } else {
            self.snapshot_failures.inc();
        }
    }

    /// Healthy while the queue is being polled (or within the grace after start).
    pub fn healthy(&self, now: OffsetDateTime) -> bool {
        let last = self.last_poll.get().max(self.started);
        now.unix_timestamp() - last <= HEALTHY_WITHIN_SECONDS
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Only the writer can fail, and writing to a String does not.
        let _ = encode(&mut out, &self.registry);
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
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
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
