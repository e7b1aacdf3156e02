//! AWS plumbing shared by the Lambda functions: SDK configuration that honours
//! `AWS_ENDPOINT_URL`, cross-account role assumption with ExternalId, SQS queues, S3 objects and presigned uploads, the interruption event bus, secrets sealed
//! with KMS (envelope encryption), and SDK errors
//! reduced to what a handler branches on. Nothing here knows a table key or a domain workflow.

pub mod bucket;
pub mod cross_account;
pub mod error;
pub mod events;
pub mod queue;
pub mod sdk;
pub mod secrets;

pub use bucket::{Bucket, ObjectError, PresignedPut};
pub use error::AwsFailure;
pub use events::InterruptionBus;
pub use queue::Queue;
pub use secrets::{SealError, SecretContext, Vault};
