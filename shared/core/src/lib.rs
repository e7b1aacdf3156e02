//! Spotwise core: everything every function and the agent share that does not touch AWS.
//!
//! Pure logic lives here so it compiles and tests in seconds and benchmarks without I/O.

pub mod action;
pub mod config;
pub mod domain;
pub mod error;
pub mod ids;
pub mod interruption;
pub mod keys;
pub mod messages;
pub mod pricing;
pub mod telemetry;

pub use error::{Classify, Disposition};
pub use ids::{ClusterId, IdError, TenantId};
