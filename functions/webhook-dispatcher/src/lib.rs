//! Notification dispatcher. Two kinds of message reach it, told apart by the queue their
//! record's `eventSourceARN` names:
//!
//! - a [`Notification`] from any function, on the notifications queue: validated, deduplicated
//!   on its dedup key within a window, checked against the tenant's silences and maintenance
//!   windows, kept in the tenant's feed (30 days) with where it went or what suppressed it,
//!   and fanned out as one [`DeliveryRequest`] per matching endpoint ([`route`]);
//! - a [`DeliveryRequest`], on the deliveries queue: rate-limited per endpoint, rendered for
//!   the endpoint's kind, posted, logged, and on failure retried later by hiding the message
//!   (SQS visibility), so no invocation sleeps ([`deliver`]).

pub mod deliver;
pub mod route;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use spotwise_aws::queue::QueueError;
use spotwise_aws::{Queue, SealError, Vault};
use spotwise_core::config::{CommonConfig, ConfigError, Env};
use spotwise_core::domain::Notification;
use spotwise_core::messages::DeliveryRequest;
use spotwise_core::{Classify, Disposition};
use spotwise_lambda::sqs::{BodyError, parse_body, process_batch_by};
use spotwise_notify::deliver::{ClientError, Deliverer, REQUEST_TIMEOUT};
use spotwise_notify::ssrf::{SystemLookup, TargetPolicy};
use spotwise_store::{Store, StoreError};
use time::OffsetDateTime;

const CONCURRENCY: usize = 10;

pub struct Config {
    pub common: CommonConfig,
    pub notifications_queue_url: String,
    pub deliveries_queue_url: String,
    pub deliveries_dlq_url: String,
    pub limits: Limits,
    /// The KMS key endpoint URLs and secrets are sealed with.
    pub secrets_key_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Notifications with the same dedup key inside this window are kept once.
    pub dedup_window: Duration,
    /// Attempts per delivery; after the last one the request goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Failed deliveries in a row after which an endpoint is disabled.
    pub disable_after: u32,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(env)?,
            notifications_queue_url: env.required("NOTIFICATIONS_QUEUE_URL")?,
            deliveries_queue_url: env.required("DELIVERIES_QUEUE_URL")?,
            deliveries_dlq_url: env.required("DELIVERIES_DLQ_URL")?,
            secrets_key_id: env.required("SECRETS_KEY_ID")?,
            limits: Limits {
                dedup_window: env
                    .seconds_or("NOTIFICATION_DEDUP_SECONDS", Duration::from_secs(600))?,
                max_attempts: env.parse_or("WEBHOOK_MAX_ATTEMPTS", 8_u32)?.max(1),
                disable_after: env.parse_or("WEBHOOK_DISABLE_AFTER", 5_u32)?.max(1),
            },
        })
    }
}

pub struct Deps {
    pub store: Store,
    pub notifications: Queue,
    pub deliveries: Queue,
    pub dead_letters: Queue,
    pub deliverer: Deliverer,
    pub limits: Limits,
    pub vault: Vault,
}

impl Deps {
    pub fn new(sdk: &SdkConfig, config: &Config) -> Result<Self, ClientError> {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Ok(Self {
            store: Store::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.common.table_name,
            ),
            notifications: Queue::new(sqs.clone(), &config.notifications_queue_url),
            deliveries: Queue::new(sqs.clone(), &config.deliveries_queue_url),
            dead_letters: Queue::new(sqs, &config.deliveries_dlq_url),
            deliverer: Deliverer::new(
                TargetPolicy {
                    dev_mode: config.common.dev_mode,
                },
                Arc::new(SystemLookup),
                REQUEST_TIMEOUT,
            )?,
            limits: config.limits,
            vault: Vault::new(sdk, &config.secrets_key_id),
        })
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
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Not a fault: the message was hidden until its next attempt and must stay on the queue.
    #[error("delivery attempt {attempt} failed ({reason}); next attempt in {delay:?}")]
    RetryScheduled {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    #[error("the rate limiter of endpoint {0} stayed contended")]
    Contended(String),
    #[error("record from {0:?}, which is neither the notifications nor the deliveries queue")]
    UnknownSource(String),
}

impl Classify for DispatchError {
    fn disposition(&self) -> Disposition {
        match self {
            DispatchError::Body(_)
            | DispatchError::Invalid(_)
            | DispatchError::UnknownSource(_) => Disposition::NonRetryable,
            DispatchError::Store(e) => e.disposition(),
            DispatchError::Queue(e) => e.disposition(),
            DispatchError::Seal(e) => e.disposition(),
            DispatchError::RetryScheduled { .. } | DispatchError::Contended(_) => {
                Disposition::Retryable
            }
        }
    }
}

/// Deliveries to one endpoint go one after another, so they do not contend for its rate
/// limiter; notifications and other endpoints' deliveries run alongside.
pub async fn handle_batch(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Infallible> {
    Ok(
        process_batch_by(event, CONCURRENCY, endpoint_of, |message| {
            handle_message(deps, message)
        })
        .await,
    )
}

/// The endpoint a delivery request names, the key deliveries are serialised by; a
/// notification names none.
fn endpoint_of(message: &SqsMessage) -> Option<String> {
    message
        .body
        .as_deref()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|value| value.get("endpoint_id")?.as_str().map(str::to_owned))
}

async fn handle_message(deps: &Deps, message: SqsMessage) -> Result<(), DispatchError> {
    let now = OffsetDateTime::now_utc();
    let source = message.event_source_arn.as_deref().unwrap_or_default();
    if deps.deliveries.is_source_of(source) {
        let request: DeliveryRequest = parse_body(&message, "delivery request")?;
        let attempt = request.prior_attempts + receive_count(&message);
        let receipt = message.receipt_handle.as_deref().unwrap_or_default();
        deliver::deliver(deps, &request, attempt, receipt, now)
            .await
            .map(drop)
    } else if deps.notifications.is_source_of(source) {
        let notification: Notification = parse_body(&message, "notification")?;
        route::dispatch(deps, &notification, now).await.map(drop)
    } else {
        Err(DispatchError::UnknownSource(source.to_owned()))
    }
}

/// How many times SQS has handed this message out, this time included.
fn receive_count(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|count| count.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests;
