//! Test support: the local AWS stack.
//!
//! [`LocalStack::start`] runs `infra/local/stack.py serve` (moto_server on a free 127.0.0.1 port,
//! bootstrapped from template.yaml) and reads its description. The emulator stops when the
//! [`LocalStack`] is dropped, and also when the test process dies, because it exits as soon as
//! its standard input (held by this process) closes.

pub mod browser;
pub mod karpenter;
pub mod kube;
pub mod receiver;
pub mod records;
pub mod totp;
pub mod upload;
pub mod workloads;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde::Deserialize;
use serde::de::DeserializeOwned;

#[derive(Debug, Deserialize)]
pub struct FunctionEnv {
    pub binary: Option<String>,
    pub env: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Description {
    endpoint: String,
    region: String,
    resources: HashMap<String, String>,
    functions: HashMap<String, FunctionEnv>,
}

pub struct LocalStack {
    child: Child,
    // Dropping this closes the emulator's stdin, which stops it.
    stdin: Option<ChildStdin>,
    description: Description,
}

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A file the project ships (events, data), by path relative to the repository root.
pub fn fixture(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

fn python() -> PathBuf {
    std::env::var_os("SPOTWISE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

impl LocalStack {
    /// Starts a fresh, empty stack. Panics with instructions when the venv is missing.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a stack with template parameters overridden (`NAME=VALUE`).
    pub fn start_with(params: &[&str]) -> Self {
        let python = python();
        assert!(
            python.exists(),
            "{} not found: run `scripts/test.sh` once (it creates the project venv with moto), \
             or set SPOTWISE_PYTHON",
            python.display()
        );
        let mut command = Command::new(&python);
        command
            .arg(repo_root().join("infra/local/stack.py"))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for param in params {
            command.arg("--param").arg(param);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
        let stdin = child.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let description: Description = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.kill();
            panic!("local stack did not start (first line {line:?}): {e}")
        });
        Self {
            child,
            stdin,
            description,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.description.endpoint
    }

    /// Sends every later SDK call made through this stack (functions' environments, the SQS
    /// poller, `sdk_config`) to `endpoint`: a recording proxy in front of the emulator.
    pub fn reroute(&mut self, endpoint: &str) {
        endpoint.clone_into(&mut self.description.endpoint);
    }

    pub fn region(&self) -> &str {
        &self.description.region
    }

    /// The local physical id of a template resource: a table name or a queue URL.
    pub fn resource(&self, logical_id: &str) -> &str {
        self.description
            .resources
            .get(logical_id)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("template.yaml has no resource {logical_id}"))
    }

    pub fn table(&self) -> &str {
        self.resource("Table")
    }

    /// A function's environment as the template defines it, resolved locally, plus the endpoint
    /// and dummy credentials, ready for `Env::from_map` or a child process.
    pub fn function_env(&self, logical_id: &str) -> HashMap<String, String> {
        let function = self
            .description
            .functions
            .get(logical_id)
            .unwrap_or_else(|| panic!("template.yaml has no function {logical_id}"));
        let mut env = function.env.clone();
        env.extend(self.aws_env());
        env
    }

    /// Environment variables that point any AWS SDK at this stack.
    pub fn aws_env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("AWS_ENDPOINT_URL".into(), self.endpoint().to_owned()),
            ("AWS_REGION".into(), self.region().to_owned()),
            ("AWS_ACCESS_KEY_ID".into(), "local".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "local".into()),
        ])
    }

    /// SDK configuration for this stack (static dummy credentials, loopback endpoint).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region().to_owned()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                "local",
                "local",
                None,
                None,
                "spotwise-testkit",
            ))
            .load()
            .await
    }
}

impl LocalStack {
    /// Receives and deletes every message on a queue, decoding each body as JSON. Works for FIFO
    /// queues too: deleting a message releases the next one of its group.
    pub async fn drain<T: DeserializeOwned>(&self, queue_url: &str) -> Vec<T> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let mut messages = Vec::new();
        loop {
            let received = sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receiving from {queue_url}: {e}"))
                .messages
                .unwrap_or_default();
            if received.is_empty() {
                return messages;
            }
            for message in received {
                let body = message.body().unwrap_or_default();
                messages.push(
                    serde_json::from_str(body)
                        .unwrap_or_else(|e| panic!("message {body:?} on {queue_url}: {e}")),
                );
                if let Some(handle) = message.receipt_handle() {
                    sqs.delete_message()
                        .queue_url(queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("deleting from {queue_url}: {e}"));
                }
            }
        }
    }
}

/// The event Lambda's SQS poller builds from received messages: id, receipt handle, body,
/// system attributes and, when given, the queue's ARN.
pub fn lambda_event(received: Vec<aws_sdk_sqs::types::Message>, arn: Option<&str>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = received
        .into_iter()
        .map(|m| {
            let mut message = SqsMessage::default();
            message.message_id = m.message_id;
            message.receipt_handle = m.receipt_handle;
            message.body = m.body;
            message.event_source_arn = arn.map(str::to_owned);
            message.attributes = m
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name.as_str().to_owned(), value))
                .collect();
            message
        })
        .collect();
    event
}

impl LocalStack {
    /// What Lambda's SQS poller would hand a function: up to ten visible messages of a queue,
    /// with receipt handles and receive counts. Empty when none is visible.
    pub async fn poll(&self, queue_url: &str) -> SqsEvent {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let arn = self.queue_arn(queue_url).await;
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap_or_else(|e| panic!("receiving from {queue_url}: {e}"))
            .messages
            .unwrap_or_default();
        lambda_event(received, Some(&arn))
    }

    /// The queue's ARN, which Lambda puts on every record as `eventSourceARN`.
    pub async fn queue_arn(&self, queue_url: &str) -> String {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        sqs.get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("reading the ARN of {queue_url}: {e}"))
            .attributes
            .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_else(|| panic!("{queue_url} has no QueueArn"))
    }

    /// Messages on a queue that are (visible, hidden or delayed), without receiving any.
    pub async fn queue_depth(&self, queue_url: &str) -> (usize, usize) {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap_or_else(|e| panic!("attributes of {queue_url}: {e}"))
            .attributes
            .unwrap_or_default();
        let count = |name: QueueAttributeName| -> usize {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        )
    }

    /// What Lambda does with a batch response: deletes every message not reported as failed.
    pub async fn settle(&self, queue_url: &str, event: &SqsEvent, response: &SqsBatchResponse) {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk_config().await);
        for message in &event.records {
            let failed = response
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == message.message_id.as_ref());
            if let (false, Some(handle)) = (failed, &message.receipt_handle) {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("deleting from {queue_url}: {e}"));
            }
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
