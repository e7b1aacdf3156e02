//! AWS plumbing shared by the Lambda functions: SDK configuration that honours
//! `AWS_ENDPOINT_URL`, cross-account role assumption with ExternalId, the single-table DynamoDB
//! store, and SQS queues.

pub mod accounts;
pub mod actions;
pub mod audit;
pub mod cross_account;
pub mod error;
pub mod queue;
pub mod runs;
pub mod sdk;
pub mod snapshots;
pub mod store;

pub use error::AwsFailure;
pub use queue::Queue;
pub use store::{Claim, Item, Page, PutCondition, Query, Store, StoreError};
