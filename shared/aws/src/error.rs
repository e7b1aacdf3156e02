//! Turning SDK errors into something a handler can act on.

use std::error::Error as StdError;
use std::fmt::Debug;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use spotwise_core::{Classify, Disposition};

/// Error codes AWS uses for transient service-side conditions.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "InternalServerError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "TransactionInProgressException",
];

/// A failed AWS call, reduced to what callers branch on and what operators need to read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
pub struct AwsFailure {
    pub operation: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub retryable: bool,
}

impl AwsFailure {
    pub fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
        R: Debug,
    {
        let code = err.code().map(str::to_owned);
        let retryable = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(_) => code
                .as_deref()
                .is_some_and(|c| RETRYABLE_CODES.contains(&c)),
            _ => false,
        };
        Self {
            operation,
            message: DisplayErrorContext(&err).to_string(),
            code,
            retryable,
        }
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl Classify for AwsFailure {
    fn disposition(&self) -> Disposition {
        if self.retryable {
            Disposition::Retryable
        } else {
            Disposition::NonRetryable
        }
    }
}
