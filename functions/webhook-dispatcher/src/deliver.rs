//! One delivery request: one notification to one endpoint, one attempt per receive.

use std::time::Duration;

use serde::Deserialize;
use spotwise_core::domain::{Notification, Severity};
use spotwise_core::messages::DeliveryRequest;
use spotwise_notify::deliver::{Delivery, Verdict};
use spotwise_notify::endpoint::Endpoint;
use spotwise_notify::format::{EndpointKind, render};
use spotwise_notify::record::{DeliveryOutcome, DeliveryRecord};
use spotwise_notify::routing::{Bucket, retry_delay};
use spotwise_store::StoreError;
use spotwise_store::keys;
use spotwise_store::webhooks::{self, StoredEndpoint};
use spotwise_store::{Item, PutCondition};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{Deps, DispatchError};

const LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// An idle endpoint's bucket is full again long before this; the item can go.
const BUCKET_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Read-modify-write rounds before a contended item is left to a redelivery.
const CAS_TRIES: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Over the endpoint's rate: re-queued to arrive when a token is free.
    RateLimited {
        wait: Duration,
    },
    /// Refused for good; counts as a failed delivery.
    Rejected {
        reason: String,
    },
    /// The last attempt failed: the request went to the dead-letter queue.
    Failed {
        reason: String,
    },
    /// The endpoint was deleted or disabled since the notification was routed.
    Skipped {
        reason: &'static str,
    },
}

#[derive(Debug, Default, Deserialize)]
struct FailureCount {
    #[serde(default)]
    failures: i64,
}

/// Attempt number `attempt` (1-based) of `request`. A failure that may succeed later hides the
/// message (`receipt`) for a backoff and returns [`DispatchError::RetryScheduled`], which
/// leaves it on the queue.
pub async fn deliver(
    deps: &Deps,
    request: &DeliveryRequest,
    attempt: u32,
    receipt: &str,
    now: OffsetDateTime,
) -> Result<Outcome, DispatchError> {
    let tenant = &request.tenant_id;
    let endpoint_key = keys::webhook(tenant, &request.endpoint_id);
    let failures_key = keys::webhook_failures(tenant, &request.endpoint_id);
    let (endpoint, failures) = tokio::try_join!(
        deps.store.get::<StoredEndpoint>(&endpoint_key),
        deps.store.get::<FailureCount>(&failures_key),
    )?;
    let Some(stored) = endpoint.map(|item| item.body) else {
        info!(%tenant, endpoint = %request.endpoint_id, "endpoint deleted; delivery dropped");
        return Ok(Outcome::Skipped {
            reason: "endpoint deleted",
        });
    };
    if !stored.route.enabled {
        info!(%tenant, endpoint = %stored.id, "endpoint disabled; delivery dropped");
        return Ok(Outcome::Skipped {
            reason: "endpoint disabled",
        });
    }
    if let Err(wait) = take_token(deps, &stored, now).await? {
        // Not an attempt: the new message carries the attempts made so far.
        let later = DeliveryRequest {
            prior_attempts: attempt.saturating_sub(1),
            ..request.clone()
        };
        deps.deliveries.send_after(&later, wait).await?;
        info!(%tenant, endpoint = %stored.id, wait_ms = wait.as_millis() as u64, "endpoint over its rate; delivery re-queued");
        return Ok(Outcome::RateLimited { wait });
    }
    // Opened only for a delivery that goes out now.
    let endpoint = webhooks::open(&deps.vault, stored).await?;

    let body = render(
        endpoint.route.kind,
        &request.notification,
        endpoint.template().as_ref(),
    )
    .to_string()
    .into_bytes();
    let secret =
        (endpoint.route.kind == EndpointKind::Generic).then_some(endpoint.secret.as_bytes());
    let delivery = deps
        .deliverer
        .post(&endpoint.url, body, secret, &request.notification_id, now)
        .await;
    let last = attempt >= deps.limits.max_attempts;
    let outcome = match &delivery.verdict {
        Verdict::Delivered => DeliveryOutcome::Delivered,
        Verdict::Retry { .. } if !last => DeliveryOutcome::Retrying,
        Verdict::Retry { .. } => DeliveryOutcome::Failed,
        Verdict::Rejected { .. } => DeliveryOutcome::Rejected,
    };
    record(deps, request, attempt, outcome, &delivery, now).await;

    match delivery.verdict {
        Verdict::Delivered => {
            info!(%tenant, endpoint = %endpoint.id, attempt, status = delivery.status, latency_ms = delivery.latency.as_millis() as u64, "delivered");
            if failures.is_some_and(|f| f.body.failures != 0) {
                deps.store.delete(&failures_key).await?;
            }
            Ok(Outcome::Delivered)
        }
        Verdict::Retry { retry_after } if !last => {
            let delay = retry_delay(attempt, retry_after, &mut rand::rng());
            deps.deliveries.delay(receipt, delay).await?;
            Err(DispatchError::RetryScheduled {
                attempt,
                delay,
                reason: delivery.snippet,
            })
        }
        Verdict::Retry { .. } => {
            // Replayable from the dead-letter queue with a fresh set of attempts.
            let replay = DeliveryRequest {
                prior_attempts: 0,
                ..request.clone()
            };
            deps.dead_letters.send(&replay, None).await?;
            warn!(%tenant, endpoint = %endpoint.id, attempt, reason = %delivery.snippet, "delivery failed on its last attempt; sent to the dead-letter queue");
            count_failure(deps, &endpoint, &delivery.snippet, now).await?;
            Ok(Outcome::Failed {
                reason: delivery.snippet,
            })
        }
        Verdict::Rejected { reason } => {
            warn!(%tenant, endpoint = %endpoint.id, attempt, %reason, "delivery rejected; not retried");
            count_failure(deps, &endpoint, &reason, now).await?;
            Ok(Outcome::Rejected { reason })
        }
    }
}

/// Takes a token from the endpoint's bucket, or says how long until one is free. Read and
/// written under the item's version, so concurrent deliveries cannot both take the last one.
async fn take_token<S>(
    deps: &Deps,
    endpoint: &Endpoint<S>,
    now: OffsetDateTime,
) -> Result<Result<(), Duration>, DispatchError> {
    let key = keys::webhook_bucket(&endpoint.tenant_id, &endpoint.id);
    for _ in 0..CAS_TRIES {
        let stored = deps.store.get::<Bucket>(&key).await?;
        let fresh = stored.is_none();
        let mut item =
            stored.unwrap_or_else(|| Item::new(key.clone(), Bucket::full(endpoint.burst, now)));
        let taken = item
            .body
            .take(endpoint.rate_per_minute, endpoint.burst, now);
        if taken.is_err() {
            return Ok(taken);
        }
        item = item.expiring_at(now + BUCKET_RETENTION);
        let written = if fresh {
            deps.store.put(&item, PutCondition::IfAbsent).await
        } else {
            deps.store.update_versioned(&item).await.map(drop)
        };
        match written {
            Ok(()) => return Ok(Ok(())),
            Err(StoreError::StaleVersion { .. } | StoreError::AlreadyExists { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(DispatchError::Contended(endpoint.id.clone()))
}

/// Keeps the attempt in the endpoint's delivery log. A log write that fails is only logged:
/// failing the message would send the notification again.
async fn record(
    deps: &Deps,
    request: &DeliveryRequest,
    attempt: u32,
    outcome: DeliveryOutcome,
    delivery: &Delivery,
    now: OffsetDateTime,
) {
    let entry = DeliveryRecord {
        endpoint_id: request.endpoint_id.clone(),
        notification_id: request.notification_id.clone(),
        event_type: request.notification.event_type.clone(),
        attempt,
        outcome,
        status: delivery.status,
        latency_ms: u64::try_from(delivery.latency.as_millis()).unwrap_or(u64::MAX),
        response: delivery.snippet.clone(),
        at: now,
    };
    let key = keys::webhook_delivery(
        &request.tenant_id,
        &request.endpoint_id,
        &ulid::Ulid::new().to_string(),
    );
    let item = Item::new(key, entry).expiring_at(now + LOG_RETENTION);
    if let Err(err) = deps.store.put(&item, PutCondition::Always).await {
        warn!(endpoint = %request.endpoint_id, error = %err, "delivery log entry not written");
    }
}

/// Counts a failed delivery; at the limit, disables the endpoint and tells the tenant through
/// its other endpoints.
async fn count_failure(
    deps: &Deps,
    endpoint: &Endpoint,
    reason: &str,
    now: OffsetDateTime,
) -> Result<(), DispatchError> {
    let failures = deps
        .store
        .increment(
            &keys::webhook_failures(&endpoint.tenant_id, &endpoint.id),
            "failures",
            1,
            None,
        )
        .await?;
    if failures < i64::from(deps.limits.disable_after) {
        return Ok(());
    }
    let key = keys::webhook(&endpoint.tenant_id, &endpoint.id);
    for _ in 0..CAS_TRIES {
        let Some(mut item) = deps.store.get::<StoredEndpoint>(&key).await? else {
            return Ok(());
        };
        if !item.body.route.enabled {
            return Ok(());
        }
        item.body.route.enabled = false;
        item.body.disabled_reason = Some(format!(
            "{failures} failed deliveries in a row; the last: {reason}"
        ));
        match deps.store.update_versioned(&item).await {
            Ok(_) => {
                warn!(tenant = %endpoint.tenant_id, endpoint = %endpoint.id, failures, "endpoint disabled");
                deps.notifications
                    .send(&disabled_notice(endpoint, failures, reason, now), None)
                    .await?;
                return Ok(());
            }
            Err(StoreError::StaleVersion { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(DispatchError::Contended(endpoint.id.clone()))
}

fn disabled_notice(
    endpoint: &Endpoint,
    failures: i64,
    reason: &str,
    now: OffsetDateTime,
) -> Notification {
    Notification {
        tenant_id: endpoint.tenant_id.clone(),
        event_type: "webhook_disabled".into(),
        severity: Severity::Warning,
        cluster_id: None,
        labels: [("endpoint_id".to_owned(), endpoint.id.clone())].into(),
        title: format!("Webhook \"{}\" was disabled", endpoint.name),
        body: format!(
            "{failures} deliveries to {} failed in a row (the last: {reason}). \
             Fix the receiver, then enable the endpoint again.",
            endpoint.redacted_url()
        ),
        links: Vec::new(),
        occurred_at: now,
        dedup_key: format!("webhook_disabled#{}#{}", endpoint.id, now.unix_timestamp()),
    }
}
