//! A notification's way into the feed and out to endpoints.

use std::time::Duration;

use spotwise_core::domain::Notification;
use spotwise_core::messages::DeliveryRequest;
use spotwise_notify::record::{FeedEntry, Suppression};
use spotwise_notify::routing::{Maintenance, Silence};
use spotwise_store::keys::{self, prefix};
use spotwise_store::webhooks::StoredEndpoint;
use spotwise_store::{Item, PutCondition, Query};
use time::OffsetDateTime;
use tracing::info;

use crate::{Deps, DispatchError};

const FEED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Kept in the feed and queued for these endpoints (possibly none).
    Routed { id: String, endpoints: Vec<String> },
    /// Kept in the feed, delivered nowhere.
    Suppressed { id: String, by: Suppression },
    /// Same dedup key inside the window: dropped.
    Duplicate,
}

fn validate(n: &Notification) -> Result<(), DispatchError> {
    if n.title.trim().is_empty() {
        return Err(DispatchError::Invalid("title is empty"));
    }
    if n.event_type.trim().is_empty() {
        return Err(DispatchError::Invalid("event_type is empty"));
    }
    if n.dedup_key.trim().is_empty() {
        return Err(DispatchError::Invalid("dedup_key is empty"));
    }
    Ok(())
}

pub async fn dispatch(
    deps: &Deps,
    n: &Notification,
    now: OffsetDateTime,
) -> Result<Outcome, DispatchError> {
    validate(n)?;
    let dedup = keys::idempotency("notification", &format!("{}#{}", n.tenant_id, n.dedup_key));
    let Some(held) = deps
        .store
        .hold(dedup, deps.limits.dedup_window, now)
        .await?
    else {
        info!(tenant = %n.tenant_id, dedup_key = %n.dedup_key, "duplicate notification dropped");
        return Ok(Outcome::Duplicate);
    };
    // A failure gives the claim back, so the redelivered message is routed, not dropped.
    held.settle(store_and_fan_out(deps, n, now).await).await
}

async fn store_and_fan_out(
    deps: &Deps,
    n: &Notification,
    now: OffsetDateTime,
) -> Result<Outcome, DispatchError> {
    let partition = keys::tenant_partition(&n.tenant_id);
    let [endpoints, silences, windows] = [prefix::WEBHOOK, prefix::SILENCE, prefix::MAINTENANCE]
        .map(|kind| Query::partition(&partition).prefix(kind));
    let (endpoints, silences, windows) = tokio::try_join!(
        deps.store.query_all::<StoredEndpoint>(&endpoints),
        deps.store.query_all::<Silence>(&silences),
        deps.store.query_all::<Maintenance>(&windows),
    )?;
    let suppressed = silences
        .iter()
        .find(|s| s.body.silences(n, now))
        .map(|s| Suppression::Silence {
            id: s.body.id.clone(),
        })
        .or_else(|| {
            windows
                .iter()
                .find(|w| w.body.suppresses(n, now))
                .map(|w| Suppression::Maintenance {
                    id: w.body.id.clone(),
                })
        });
    let targets: Vec<&StoredEndpoint> = match suppressed {
        Some(_) => Vec::new(),
        None => endpoints
            .iter()
            .map(|e| &e.body)
            .filter(|e| e.route.accepts(n))
            .collect(),
    };

    let id = ulid::Ulid::new().to_string();
    let entry = FeedEntry {
        id: id.clone(),
        notification: n.clone(),
        suppressed: suppressed.clone(),
        endpoints: targets.iter().map(|e| e.id.clone()).collect(),
    };
    let feed_key = keys::notification(&n.tenant_id, &id);
    deps.store
        .put(
            &Item::new(feed_key.clone(), entry).expiring_at(now + FEED_RETENTION),
            PutCondition::IfAbsent,
        )
        .await?;

    if let Some(by) = suppressed {
        info!(tenant = %n.tenant_id, event_type = %n.event_type, %id, suppressed_by = ?by, "notification suppressed");
        return Ok(Outcome::Suppressed { id, by });
    }
    let requests: Vec<DeliveryRequest> = targets
        .iter()
        .map(|e| DeliveryRequest {
            tenant_id: n.tenant_id.clone(),
            endpoint_id: e.id.clone(),
            notification_id: id.clone(),
            notification: n.clone(),
            prior_attempts: 0,
        })
        .collect();
    if let Err(err) = deps.deliveries.send_all(&requests).await {
        let _ = deps.store.delete(&feed_key).await;
        return Err(err.into());
    }
    info!(tenant = %n.tenant_id, event_type = %n.event_type, severity = ?n.severity, %id, endpoints = requests.len(), "notification routed");
    Ok(Outcome::Routed {
        id,
        endpoints: requests.into_iter().map(|r| r.endpoint_id).collect(),
    })
}
