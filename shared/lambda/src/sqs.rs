//! SQS batch processing with partial batch responses.
//!
//! Each message succeeds or fails on its own: a failed message is reported in
//! `batchItemFailures` and only it returns to the queue (and, after the queue's
//! maxReceiveCount, to its DLQ). The rest of the batch is deleted. The function's event source
//! mapping must enable `ReportBatchItemFailures`.

use std::fmt::Display;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures_util::StreamExt;
use futures_util::stream;
use serde::de::DeserializeOwned;
use spotwise_core::{Classify, Disposition};
use tracing::{error, warn};

/// Why a message body could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("message has no body")]
    Missing,
    #[error("message body is not a valid {expected}: {reason}")]
    Invalid {
        expected: &'static str,
        reason: String,
    },
}

impl Classify for BodyError {
    fn disposition(&self) -> Disposition {
        Disposition::NonRetryable
    }
}

/// Parses a message body as JSON of type `T`.
pub fn parse_body<T: DeserializeOwned>(
    message: &SqsMessage,
    expected: &'static str,
) -> Result<T, BodyError> {
    let body = message.body.as_deref().ok_or(BodyError::Missing)?;
    serde_json::from_str(body).map_err(|e| BodyError::Invalid {
        expected,
        reason: e.to_string(),
    })
}

/// Handles every message with at most `concurrency` in flight and reports the failures.
///
/// Non-retryable failures are reported too: the message then reaches the DLQ after the queue's
/// receive limit, where it can be inspected and replayed, instead of being lost.
pub async fn process_batch<F, Fut, E>(
    event: SqsEvent,
    concurrency: usize,
    handle: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Classify + Display,
{
    process_batch_by(event, concurrency, |m| m.message_id.clone(), handle).await
}

/// Like [`process_batch`], but messages with the same `key` are handled one after another, in
/// batch order (groups run concurrently), for work that contends on a shared item.
pub async fn process_batch_by<K, F, Fut, E>(
    event: SqsEvent,
    concurrency: usize,
    key: K,
    handle: F,
) -> SqsBatchResponse
where
    K: Fn(&SqsMessage) -> Option<String>,
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Classify + Display,
{
    let mut groups: Vec<(Option<String>, Vec<SqsMessage>)> = Vec::new();
    for message in event.records {
        let group_key = key(&message);
        match groups
            .iter_mut()
            .find(|(k, _)| group_key.is_some() && *k == group_key)
        {
            Some((_, group)) => group.push(message),
            None => groups.push((group_key, vec![message])),
        }
    }
    let handle = &handle;
    let outcomes: Vec<(String, Result<(), E>)> = stream::iter(groups)
        .map(|(_, group)| async move {
            let mut outcomes = Vec::with_capacity(group.len());
            for message in group {
                let id = message.message_id.clone().unwrap_or_default();
                outcomes.push((id, handle(message).await));
            }
            outcomes
        })
        .buffer_unordered(concurrency.max(1))
        .flat_map(stream::iter)
        .collect()
        .await;

    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in outcomes {
        if let Err(err) = outcome {
            match err.disposition() {
                Disposition::Retryable => {
                    warn!(%message_id, error = %err, "message failed; will be retried")
                }
                Disposition::NonRetryable => {
                    error!(%message_id, error = %err, "message cannot be processed; it will go to the DLQ")
                }
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = message_id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom(Disposition);

    impl Classify for Boom {
        fn disposition(&self) -> Disposition {
            self.0
        }
    }

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m
    }

    #[tokio::test]
    async fn only_failed_messages_are_reported() {
        let mut event = SqsEvent::default();
        event.records = vec![
            message("a", "ok"),
            message("b", "retry"),
            message("c", "poison"),
        ];
        let response = process_batch(event, 2, |m| async move {
            match m.body.as_deref() {
                Some("retry") => Err(Boom(Disposition::Retryable)),
                Some("poison") => Err(Boom(Disposition::NonRetryable)),
                _ => Ok(()),
            }
        })
        .await;
        let mut failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        failed.sort_unstable();
        assert_eq!(failed, ["b", "c"]);
    }

    #[tokio::test]
    async fn messages_with_one_key_run_one_after_another_and_other_keys_alongside() {
        use std::sync::Mutex;
        let mut event = SqsEvent::default();
        event.records = ["e1", "e2", "e1", "e1", "e2", "e3"]
            .iter()
            .enumerate()
            .map(|(i, key)| message(&format!("m{i}"), key))
            .collect();
        // (key, started or finished) in the order they happened.
        let log: Mutex<Vec<(String, bool)>> = Mutex::default();
        let response = process_batch_by(
            event,
            4,
            |m| m.body.clone(),
            |m| {
                let log = &log;
                async move {
                    let key = m.body.unwrap_or_default();
                    log.lock().unwrap().push((key.clone(), true));
                    tokio::task::yield_now().await;
                    log.lock().unwrap().push((key, false));
                    Ok::<(), Boom>(())
                }
            },
        )
        .await;
        assert!(response.batch_item_failures.is_empty());
        let log = log.into_inner().unwrap();
        let mut running: std::collections::HashMap<String, u32> = Default::default();
        let mut keys_at_once = 0;
        for (key, started) in &log {
            let n = running.entry(key.clone()).or_default();
            if *started {
                *n += 1;
                assert_eq!(*n, 1, "{key} ran twice at once: {log:?}");
            } else {
                *n -= 1;
            }
            keys_at_once = keys_at_once.max(running.values().filter(|n| **n > 0).count());
        }
        assert!(keys_at_once > 1, "different keys run alongside: {log:?}");
        assert_eq!(log.len(), 12);
    }

    #[test]
    fn body_errors_name_the_expected_type() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Msg {
            tenant_id: String,
        }
        let err = parse_body::<Msg>(&message("a", "{}"), "optimize request").unwrap_err();
        assert!(err.to_string().contains("optimize request"), "{err}");
        assert!(err.to_string().contains("tenant_id"), "{err}");
        assert!(matches!(
            parse_body::<Msg>(&SqsMessage::default(), "x"),
            Err(BodyError::Missing)
        ));
    }
}
