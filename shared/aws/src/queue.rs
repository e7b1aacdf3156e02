//! SQS queues carrying JSON messages.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures_util::StreamExt;
use serde::Serialize;
use spotwise_core::domain::Notification;
use tracing::warn;

use crate::error::AwsFailure;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message for {queue} could not be encoded: {reason}")]
    Encode { queue: String, reason: String },
    #[error("{failed} of {total} messages were not accepted by {queue}: {first_error}")]
    Partial {
        queue: String,
        failed: usize,
        total: usize,
        first_error: String,
        sender_fault: bool,
    },
    #[error(transparent)]
    Aws(#[from] AwsFailure),
}

impl spotwise_core::Classify for QueueError {
    fn disposition(&self) -> spotwise_core::Disposition {
        match self {
            QueueError::Encode { .. }
            | QueueError::Partial {
                sender_fault: true, ..
            } => spotwise_core::Disposition::NonRetryable,
            QueueError::Partial { .. } => spotwise_core::Disposition::Retryable,
            QueueError::Aws(f) => f.disposition(),
        }
    }
}

/// Ordering and deduplication for FIFO queues.
#[derive(Debug, Clone, Default)]
pub struct Fifo {
    pub group_id: String,
    pub dedup_id: String,
}

#[derive(Clone)]
pub struct Queue {
    client: Client,
    url: String,
}

impl Queue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `arn` (a record's `eventSourceARN`, `arn:aws:sqs:<region>:<account>:<name>`)
    /// names this queue: the same account and queue name as its URL's `/<account>/<name>`.
    pub fn is_source_of(&self, arn: &str) -> bool {
        let mut url = self.url.trim_end_matches('/').rsplit('/');
        let (Some(name), Some(account)) = (url.next(), url.next()) else {
            return false;
        };
        let mut arn = arn.rsplit(':');
        arn.next() == Some(name) && arn.next() == Some(account)
    }

    /// Queues a notification about something already stored. A notification that cannot be
    /// queued is logged rather than returned, so the caller does not redo what it tells of.
    pub async fn notify(&self, notification: &Notification) {
        if let Err(err) = self.send(notification, None).await {
            warn!(tenant = %notification.tenant_id, event_type = %notification.event_type,
                  error = %err, "notification not queued");
        }
    }

    fn encode<T: Serialize>(&self, message: &T) -> Result<String, QueueError> {
        serde_json::to_string(message).map_err(|e| QueueError::Encode {
            queue: self.url.clone(),
            reason: e.to_string(),
        })
    }

    /// Sends one JSON message and returns its SQS message id.
    pub async fn send<T: Serialize>(
        &self,
        message: &T,
        fifo: Option<Fifo>,
    ) -> Result<String, QueueError> {
        let body = self.encode(message)?;
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        if let Some(fifo) = fifo {
            request = request
                .message_group_id(fifo.group_id)
                .message_deduplication_id(fifo.dedup_id);
        }
        let out = request
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("sqs:SendMessage", e))?;
        Ok(out.message_id.unwrap_or_default())
    }
}

impl Queue {
    /// Sends one JSON message that becomes visible after `delay` (SQS allows at most 15
    /// minutes; longer delays are cut to that).
    pub async fn send_after<T: Serialize>(
        &self,
        message: &T,
        delay: std::time::Duration,
    ) -> Result<String, QueueError> {
        let body = self.encode(message)?;
        let seconds = i32::try_from(delay.as_secs().min(15 * 60)).unwrap_or(0);
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(seconds)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("sqs:SendMessage", e))?;
        Ok(out.message_id.unwrap_or_default())
    }

    /// Hides a received message for `by` more (at most 12 hours), so it comes back then: a
    /// retry later without anyone sleeping.
    pub async fn delay(
        &self,
        receipt_handle: &str,
        by: std::time::Duration,
    ) -> Result<(), QueueError> {
        let seconds = i32::try_from(by.as_secs().min(12 * 60 * 60)).unwrap_or(i32::MAX);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("sqs:ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Deletes the queue and every message on it; a queue already gone is no error.
    pub async fn delete(&self) -> Result<(), QueueError> {
        match self.client.delete_queue().queue_url(&self.url).send().await {
            Ok(_) => Ok(()),
            Err(err) => {
                let failure = AwsFailure::from_sdk("sqs:DeleteQueue", err);
                if failure.has_code("AWS.SimpleQueueService.NonExistentQueue")
                    || failure.has_code("QueueDoesNotExist")
                {
                    Ok(())
                } else {
                    Err(failure.into())
                }
            }
        }
    }

    /// Sends many messages to a standard queue, ten per SendMessageBatch call, up to
    /// [`SEND_CONCURRENCY`] calls at a time (a fan-out of 10,000 takes 1,000 calls). Returns how
    /// many were accepted; any rejected entry fails the call after the rest were sent.
    pub async fn send_all<T: Serialize>(&self, messages: &[T]) -> Result<usize, QueueError> {
        let batches = messages
            .chunks(SEND_BATCH_MAX)
            .map(|chunk| {
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, message)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .message_body(self.encode(message)?)
                            .build()
                            .map_err(|e| QueueError::Encode {
                                queue: self.url.clone(),
                                reason: e.to_string(),
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcomes: Vec<_> = futures_util::stream::iter(batches)
            .map(|entries| {
                self.client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries))
                    .send()
            })
            .buffer_unordered(SEND_CONCURRENCY)
            .collect()
            .await;
        let mut sent = 0;
        let mut failures: Vec<(String, bool)> = Vec::new();
        for outcome in outcomes {
            let out = outcome.map_err(|e| AwsFailure::from_sdk("sqs:SendMessageBatch", e))?;
            sent += out.successful.len();
            failures.extend(out.failed.into_iter().map(|f| {
                (
                    format!("{}: {}", f.code, f.message.unwrap_or_default()),
                    f.sender_fault,
                )
            }));
        }
        match failures.first() {
            None => Ok(sent),
            Some((first_error, sender_fault)) => Err(QueueError::Partial {
                queue: self.url.clone(),
                failed: failures.len(),
                total: messages.len(),
                first_error: first_error.clone(),
                sender_fault: *sender_fault,
            }),
        }
    }
}

/// SQS accepts at most ten entries per SendMessageBatch.
const SEND_BATCH_MAX: usize = 10;
/// SendMessageBatch calls in flight at once during a fan-out.
pub const SEND_CONCURRENCY: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(url: &str) -> Queue {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .build();
        Queue::new(Client::from_conf(config), url)
    }

    #[test]
    fn a_record_is_from_the_queue_its_arn_names() {
        let deliveries =
            queue("https://sqs.us-east-1.amazonaws.com/123456789012/spotwise-DeliveriesQueue");
        assert!(
            deliveries.is_source_of("arn:aws:sqs:us-east-1:123456789012:spotwise-DeliveriesQueue")
        );
        for other in [
            "arn:aws:sqs:us-east-1:123456789012:spotwise-NotificationsQueue",
            "arn:aws:sqs:us-east-1:210987654321:spotwise-DeliveriesQueue",
            "arn:aws:sqs:us-east-1:123456789012:spotwise-DeliveriesQueue-x",
            "spotwise-DeliveriesQueue",
            "",
        ] {
            assert!(!deliveries.is_source_of(other), "{other}");
        }
        let local = queue("http://127.0.0.1:5000/123456789012/spotwise-local-DeliveriesQueue");
        assert!(
            local.is_source_of("arn:aws:sqs:us-east-1:123456789012:spotwise-local-DeliveriesQueue")
        );
    }
}
