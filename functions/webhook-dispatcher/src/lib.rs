//! Notification dispatcher: every notification any function enqueues lands here. Each is
//! validated, deduplicated on its dedup key within a window, and kept in the tenant's
//! notification feed (listed by the API) for 30 days.

use std::convert::Infallible;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use spotwise_aws::store::{Claim, Item, PutCondition};
use spotwise_aws::{Store, StoreError};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::Notification;
use spotwise_core::keys::{self, Key};
use spotwise_core::{Classify, Disposition, TenantId};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch};
use time::OffsetDateTime;
use tracing::info;

const FEED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const CONCURRENCY: usize = 10;

pub struct Config {
    pub common: CommonConfig,
    /// Notifications with the same dedup key inside this window are kept once.
    pub dedup_window: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            dedup_window: env.seconds_or("NOTIFICATION_DEDUP_SECONDS", Duration::from_secs(600))?,
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub dedup_window: Duration,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Self {
        Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            dedup_window: config.dedup_window,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("notification is invalid: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Classify for DispatchError {
    fn disposition(&self) -> Disposition {
        match self {
            DispatchError::Body(_) | DispatchError::Invalid(_) => Disposition::NonRetryable,
            DispatchError::Store(e) => e.disposition(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Stored { id: String },
    Suppressed,
}

pub fn feed_key(tenant: &TenantId, id: &str) -> Key {
    Key::new(keys::tenant_partition(tenant), format!("NOTIFICATION#{id}"))
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

pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(process_batch(event, CONCURRENCY, |message| handle_message(deps, message)).await)
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), DispatchError> {
    let notification: Notification = parse_body(&message, "notification")?;
    dispatch(deps, &notification, OffsetDateTime::now_utc())
        .await
        .map(|_| ())
}

pub async fn dispatch(
    deps: &Deps,
    n: &Notification,
    now: OffsetDateTime,
) -> Result<Outcome, DispatchError> {
    validate(n)?;
    let dedup = keys::idempotency("notification", &format!("{}#{}", n.tenant_id, n.dedup_key));
    if deps.store.claim(&dedup, deps.dedup_window, now).await? == Claim::AlreadyClaimed {
        info!(tenant = %n.tenant_id, dedup_key = %n.dedup_key, "notification suppressed as duplicate");
        return Ok(Outcome::Suppressed);
    }
    let id = ulid::Ulid::new().to_string();
    let item = Item::new(feed_key(&n.tenant_id, &id), n.clone()).expiring_at(now + FEED_RETENTION);
    if let Err(err) = deps.store.put(&item, PutCondition::IfAbsent).await {
        // Release the dedup claim so the redelivered message is stored, not suppressed.
        let _ = deps.store.delete(&dedup).await;
        return Err(err.into());
    }
    info!(tenant = %n.tenant_id, event_type = %n.event_type, severity = ?n.severity, %id, "notification stored");
    Ok(Outcome::Stored { id })
}

#[cfg(test)]
mod tests {
    use spotwise_aws::store::Query;
    use spotwise_testkit::{LocalStack, fixture};

    use super::*;

    async fn deps(stack: &LocalStack) -> Deps {
        let config = Config::from_env(&Env::from_map(
            stack.function_env("WebhookDispatcherFunction"),
        ))
        .unwrap();
        Deps::new(&stack.sdk_config().await, &config)
    }

    fn sample() -> (SqsEvent, Notification) {
        let event: SqsEvent =
            serde_json::from_str(&fixture("events/webhook-dispatcher/sqs-notification.json"))
                .unwrap();
        let n = serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        (event, n)
    }

    #[tokio::test]
    async fn notification_is_stored_once_within_the_dedup_window() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        let (event, n) = sample();
        assert!(
            handle_batch(&deps, event.clone())
                .await
                .unwrap()
                .batch_item_failures
                .is_empty()
        );
        assert!(
            handle_batch(&deps, event)
                .await
                .unwrap()
                .batch_item_failures
                .is_empty()
        );

        let feed = deps
            .store
            .query_all::<Notification>(
                &Query::partition(keys::tenant_partition(&n.tenant_id)).prefix("NOTIFICATION#"),
            )
            .await
            .unwrap();
        assert_eq!(feed.len(), 1);
        assert_eq!(feed[0].body, n);
        assert!(feed[0].ttl.is_some());

        // After the window the same key is a new notification.
        let later = OffsetDateTime::now_utc() + deps.dedup_window + Duration::from_secs(1);
        assert!(matches!(
            dispatch(&deps, &n, later).await.unwrap(),
            Outcome::Stored { .. }
        ));
    }

    #[tokio::test]
    async fn invalid_notifications_fail_alone_with_a_reason() {
        let stack = LocalStack::start();
        let deps = deps(&stack).await;
        let (mut event, mut n) = sample();
        n.title = "  ".into();
        assert!(matches!(
            dispatch(&deps, &n, OffsetDateTime::now_utc()).await,
            Err(DispatchError::Invalid("title is empty"))
        ));

        let mut bad = event.records[0].clone();
        bad.message_id = Some("bad".into());
        bad.body = Some(r#"{"tenant_id":"t1"}"#.into());
        event.records.push(bad);
        let response = handle_batch(&deps, event).await.unwrap();
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["bad"]);
    }
}
