//! Loading the shared SDK configuration.
//!
//! `aws_config` reads region, credentials and `AWS_ENDPOINT_URL` (plus per-service
//! `AWS_ENDPOINT_URL_<SERVICE>`) from the environment, so the same binary talks to AWS in Lambda
//! and to the local emulator in development without code paths of its own.

use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Loads the configuration once per process; clients built from it share one HTTP connector and
/// one credentials cache.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The same configuration pointed at another region (discovery and scraping walk regions).
pub fn for_region(base: &SdkConfig, region: &str) -> SdkConfig {
    base.to_builder()
        .region(Region::new(region.to_owned()))
        .build()
}
