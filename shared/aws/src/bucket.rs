//! An S3 bucket the functions write and read objects in, and hand out presigned uploads for.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use spotwise_core::{Classify, Disposition};

use crate::AwsFailure;

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object {key} is {size} bytes, over the {max}-byte limit")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error(transparent)]
    Aws(#[from] AwsFailure),
}

impl Classify for ObjectError {
    fn disposition(&self) -> Disposition {
        match self {
            ObjectError::TooLarge { .. } => Disposition::NonRetryable,
            ObjectError::Aws(failure) => failure.disposition(),
        }
    }
}

/// A PUT someone else makes, signed by this function's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    pub url: String,
    /// Headers the PUT must carry exactly as signed.
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct Bucket {
    client: Client,
    name: String,
}

impl Bucket {
    /// Path-style addressing when an endpoint override is set (the local emulator has no
    /// per-bucket host names). Checksums only where S3 requires them, so a presigned PUT carries
    /// no checksum header the uploader would have to reproduce.
    pub fn new(sdk: &SdkConfig, name: impl Into<String>) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A PUT of exactly `size` bytes of gzip JSON to `key`, valid for `expires_in`.
    pub async fn presign_gzip_json_put(
        &self,
        key: &str,
        size: u64,
        expires_in: Duration,
    ) -> Result<PresignedPut, AwsFailure> {
        let config = PresigningConfig::expires_in(expires_in).map_err(|e| AwsFailure {
            operation: "s3:PutObject(presign)",
            code: None,
            message: e.to_string(),
            retryable: false,
        })?;
        let presigned = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type("application/json")
            .content_encoding("gzip")
            .content_length(i64::try_from(size).unwrap_or(i64::MAX))
            .presigned(config)
            .await
            .map_err(|e| AwsFailure::from_sdk("s3:PutObject(presign)", e))?;
        Ok(PresignedPut {
            url: presigned.uri().to_owned(),
            headers: presigned
                .headers()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect(),
        })
    }

    pub async fn put_gzip_json(&self, key: &str, body: Vec<u8>) -> Result<(), AwsFailure> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type("application/json")
            .content_encoding("gzip")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("s3:PutObject", e))?;
        Ok(())
    }

    /// The object's bytes; `None` when there is no such object. An object over `max` bytes is
    /// refused before its body is read.
    pub async fn get(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>, ObjectError> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => return Err(AwsFailure::from_sdk("s3:GetObject", err).into()),
        };
        let size = out
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        if size > max {
            return Err(ObjectError::TooLarge {
                key: key.to_owned(),
                size,
                max,
            });
        }
        let body = out.body.collect().await.map_err(|e| AwsFailure {
            operation: "s3:GetObject",
            code: None,
            message: format!("reading the body of {key}: {e}"),
            retryable: true,
        })?;
        let bytes = body.into_bytes();
        if bytes.len() as u64 > max {
            return Err(ObjectError::TooLarge {
                key: key.to_owned(),
                size: bytes.len() as u64,
                max,
            });
        }
        Ok(Some(bytes.to_vec()))
    }

    /// Deleting an object that is not there succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), AwsFailure> {
        self.client
            .delete_object()
            .bucket(&self.name)
            .key(key)
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("s3:DeleteObject", e))?;
        Ok(())
    }
}
