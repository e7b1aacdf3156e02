//! The queue side: long-poll, hand each message to the agent, delete what is finished.

use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::SdkError;
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::types::Message;
use time::OffsetDateTime;
use tracing::{error, info, warn};

use crate::{Agent, Outcome};

/// SQS long-poll maximum: one request per 20 s when the queue is idle.
const WAIT_SECONDS: i32 = 20;
const BATCH: i32 = 10;
const ERROR_PAUSE: Duration = Duration::from_secs(5);
/// While an action runs, its message is hidden again this often, for this long (seconds).
const EXTEND_EVERY: Duration = Duration::from_secs(20);
const EXTEND_BY: i32 = 60;

pub type ReceiveError = SdkError<ReceiveMessageError>;

pub struct QueueWorker {
    sqs: Client,
    queue_url: String,
    wait_seconds: i32,
    extend_every: Duration,
}

impl QueueWorker {
    pub fn new(sqs: Client, queue_url: impl Into<String>) -> Self {
        Self {
            sqs,
            queue_url: queue_url.into(),
            wait_seconds: WAIT_SECONDS,
            extend_every: EXTEND_EVERY,
        }
    }

    /// A shorter long-poll, for tests.
    pub fn with_wait_seconds(mut self, seconds: i32) -> Self {
        self.wait_seconds = seconds;
        self
    }

    /// How often the messages in hand are hidden again while an action runs (20 s), shorter
    /// for tests.
    pub fn with_extend_every(mut self, every: Duration) -> Self {
        self.extend_every = every;
        self
    }

    /// Polls until `shutdown` completes. An action in hand is finished (Kubernetes gives the pod
    /// its termination grace period); the rest of its batch is handed back to the queue at once.
    pub async fn run(&self, agent: &Agent, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let received = tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = self.receive(agent) => received,
            };
            let messages = match received {
                Ok(messages) => messages,
                Err(err) => {
                    error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "queue poll failed");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            for (index, message) in messages.iter().enumerate() {
                self.process(agent, message, &messages[index + 1..]).await;
                let stopping = tokio::select! {
                    biased;
                    () = &mut shutdown => true,
                    () = std::future::ready(()) => false,
                };
                if stopping {
                    self.release(&messages[index + 1..]).await;
                    info!("shutting down");
                    return;
                }
            }
        }
        info!("shutting down");
    }

    /// One receive and the handling of everything it returned.
    pub async fn poll_once(&self, agent: &Agent) -> Result<Vec<Outcome>, ReceiveError> {
        let messages = self.receive(agent).await?;
        let mut outcomes = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            outcomes.push(self.process(agent, message, &messages[index + 1..]).await);
        }
        Ok(outcomes)
    }

    async fn receive(&self, agent: &Agent) -> Result<Vec<Message>, ReceiveError> {
        let received = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .wait_time_seconds(self.wait_seconds)
            .max_number_of_messages(BATCH)
            .send()
            .await?;
        agent.metrics().polled(OffsetDateTime::now_utc());
        Ok(received.messages.unwrap_or_default())
    }

    /// Handles one message and deletes it unless the failure is worth another attempt.
    /// `waiting` are the batch's messages still to come: they stay hidden too.
    async fn process(&self, agent: &Agent, message: &Message, waiting: &[Message]) -> Outcome {
        let handling = agent.handle(
            message.body().unwrap_or_default(),
            OffsetDateTime::now_utc(),
        );
        tokio::pin!(handling);
        // A drain can outlast the queue's visibility timeout; keep the message, and the rest
        // of its batch, hidden while it runs so no other receive starts them again. A running
        // action also counts as liveness.
        let outcome = loop {
            tokio::select! {
                outcome = &mut handling => break outcome,
                () = tokio::time::sleep(self.extend_every) => {
                    for handle in std::iter::once(message).chain(waiting).filter_map(Message::receipt_handle) {
                        self.extend(handle, EXTEND_BY).await;
                    }
                    agent.metrics().polled(OffsetDateTime::now_utc());
                }
            }
        };
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
        outcome
    }

    /// Makes received but unstarted messages visible again, for the next agent to take.
    async fn release(&self, messages: &[Message]) {
        for message in messages {
            if let Some(handle) = message.receipt_handle() {
                self.extend(handle, 0).await;
            }
        }
    }

    async fn extend(&self, receipt_handle: &str, seconds: i32) {
        let extended = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await;
        if let Err(err) = extended {
            warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&err), "could not change the message's visibility");
        }
    }
}
