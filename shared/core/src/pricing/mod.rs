//! Price and risk feeds, normalised. Parsing is pure so it is fast to test and benchmark.

pub mod advisor;
