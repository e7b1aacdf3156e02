//! Where a cluster's money goes and what Spotwise saved: cost allocation over pods (OpenCost's
//! model, exact decimal sums), tables by namespace, workload, pod, node and label that merge
//! from hours into days and months, savings against on-demand prices and the pre-Spotwise
//! baseline, trends with forecasts and anomaly flags, ranked opportunities and the monthly
//! report. No AWS dependency.

pub mod allocate;
pub mod breakdown;
pub mod inputs;
pub mod money;
pub mod opportunities;
pub mod report;
pub mod trends;

pub use allocate::{Allocation, NodeInput, PodInput, Weights, allocate};
pub use breakdown::{Baseline, CostTable, Dimension, Savings, Summary};
pub use money::CostLine;
