//! Spotwise core: everything every function and the agent share that does not touch AWS.
//!
//! Pure logic lives here so it compiles and tests in seconds and benchmarks without I/O.

pub mod action;
pub mod config;
pub mod domain;
pub mod error;
pub mod ids;
pub mod interruption;
pub mod karpenter;
pub mod messages;
pub mod placement;
pub mod pricing;
pub mod rightsizing;
pub mod snapshot;
pub mod snapshot_codec;
pub mod telemetry;
pub mod uptime;

pub use error::{Classify, Disposition};

/// RFC 3339 text of a timestamp, for stored and logged values. Formatting an in-range
/// `OffsetDateTime` cannot fail; the Unix-seconds fallback only keeps this total.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}
pub use ids::{ClusterId, IdError, TenantId};
