//! The single DynamoDB table: its key scheme (every key is built in [`keys`]), the table client
//! ([`Store`]), and one repository module per aggregate.

pub mod accounts;
pub mod actions;
pub mod agents;
pub mod audit;
pub mod costs;
pub mod keys;
pub mod recommendations;
pub mod resize;
pub mod rollouts;
pub mod runs;
pub mod snapshots;
mod table;
pub mod webhooks;

pub use table::{
    Claim, GSI1_NAME, HeldClaim, Item, Page, PutCondition, Query, Store, StoreError, Write,
};
