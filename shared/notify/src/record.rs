//! What the dispatcher keeps: each notification in the tenant's feed with where it went (or
//! what suppressed it), and each delivery attempt in its endpoint's log.

use serde::{Deserialize, Serialize};
use spotwise_core::domain::Notification;
use time::OffsetDateTime;

/// Why a notification was kept in the feed but sent nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Suppression {
    Silence { id: String },
    Maintenance { id: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedEntry {
    pub id: String,
    pub notification: Notification,
    #[serde(default)]
    pub suppressed: Option<Suppression>,
    /// Endpoints a delivery was queued for.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed on the last attempt; the request went to the dead-letter queue.
    Failed,
    /// Refused for good (4xx other than 408/429, a redirect, a forbidden target): not retried.
    Rejected,
}

/// One attempt to deliver one notification to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryRecord {
    pub endpoint_id: String,
    pub notification_id: String,
    pub event_type: String,
    pub attempt: u32,
    pub outcome: DeliveryOutcome,
    /// HTTP status, absent when no response came (timeout, refused connection or target).
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The start of the response body, or the error.
    pub response: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}
