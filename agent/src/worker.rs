//! The queue side: long-poll, hand each message to the agent, delete what is finished.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use time::OffsetDateTime;
use tracing::{error, info};

use crate::{Agent, Outcome};

/// SQS long-poll maximum: one request per 20 s when the queue is idle.
const WAIT_SECONDS: i32 = 20;
const BATCH: i32 = 10;
const ERROR_PAUSE: Duration = Duration::from_secs(5);

pub struct QueueWorker {
    sqs: Client,
    queue_url: String,
    wait_seconds: i32,
}

impl QueueWorker {
    pub fn new(sqs: Client, queue_url: impl Into<String>) -> Self {
        Self {
            sqs,
            queue_url: queue_url.into(),
            wait_seconds: WAIT_SECONDS,
        }
    }

    /// A shorter long-poll, for tests.
    pub fn with_wait_seconds(mut self, seconds: i32) -> Self {
        self.wait_seconds = seconds;
        self
    }

    /// Polls until `shutdown` completes; the batch in hand is finished first.
    pub async fn run(&self, agent: &Agent, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    info!("shutting down");
                    return;
                }
                result = self.poll_once(agent) => {
                    if let Err(err) = result {
                        error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "queue poll failed");
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
            }
        }
    }

    /// One receive and the handling of what it returned. Returns the outcomes.
    pub async fn poll_once(
        &self,
        agent: &Agent,
    ) -> Result<
        Vec<Outcome>,
        aws_sdk_sqs::error::SdkError<aws_sdk_sqs::operation::receive_message::ReceiveMessageError>,
    > {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .wait_time_seconds(self.wait_seconds)
            .max_number_of_messages(BATCH)
            .send()
            .await?;
        let mut outcomes = Vec::new();
        for message in received.messages.unwrap_or_default() {
            let outcome = agent
                .handle(
                    message.body().unwrap_or_default(),
                    OffsetDateTime::now_utc(),
                )
                .await;
            let finished = !matches!(
                outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            );
            if let (true, Some(handle)) = (finished, message.receipt_handle())
                && let Err(err) = self
                    .sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
            {
                // Redelivery is harmless: every action is idempotent.
                error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "could not delete message");
            }
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}
