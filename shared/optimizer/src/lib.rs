//! The Spotwise planning engine: pure functions from pods, offerings and policy to a plan.
//!
//! - [`eligibility`]: which workloads may run on spot, from policy and workload metadata;
//! - [`packing`]: placing pods on the cheapest mix of nodes, spot pools ranked by price and risk
//!   and spread for diversification, under the pods' affinity, anti-affinity, topology spread
//!   and volume zones ([`constraints`], [`zones`]);
//! - [`consolidation`]: which current nodes to drain, in waves under a disruption budget;
//! - [`rightsizing`] and [`usage`]: container requests from 14 days of usage percentiles;
//! - [`plan`]: all of it together, every figure explained;
//! - [`kube`] and [`catalog`]: a `kubectl get -o json` snapshot and the shipped price data as input.

pub mod catalog;
pub mod consolidation;
pub mod constraints;
pub mod eligibility;
pub mod history;
pub mod kube;
pub mod lp;
pub mod model;
pub mod packing;
pub mod plan;
pub mod recommendation;
pub mod resize;
pub mod rightsizing;
pub mod rollout;
pub mod synth;
pub mod template;
pub mod usage;
pub mod zones;

pub use model::{Offering, PlanInput, PlanPolicy, PodSpec};
pub use plan::{Plan, plan};
