//! AWS plumbing shared by the Lambda functions: SDK configuration that honours
//! `AWS_ENDPOINT_URL`, cross-account role assumption with ExternalId, SQS queues, and SDK errors
//! reduced to what a handler branches on. Nothing here knows a table key or a domain workflow.

pub mod cross_account;
pub mod error;
pub mod queue;
pub mod sdk;

pub use error::AwsFailure;
pub use queue::Queue;
