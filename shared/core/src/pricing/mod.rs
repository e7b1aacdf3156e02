//! Price and risk feeds, normalised into pools. Parsing is pure so it is fast to test and
//! benchmark; the scraper function only fetches bytes and stores results.

pub mod advisor;
pub mod catalogue;
pub mod ondemand;
pub mod pools;
pub mod spot;

/// A feed that could not be read, naming the source and, for JSON, the position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct FeedError {
    pub source_name: String,
    pub reason: String,
}

impl FeedError {
    pub fn new(source_name: &str, reason: impl Into<String>) -> Self {
        Self {
            source_name: source_name.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn json(source_name: &str, err: &serde_json::Error) -> Self {
        Self::new(
            source_name,
            format!(
                "invalid JSON at line {}, column {}: {err}",
                err.line(),
                err.column()
            ),
        )
    }
}

/// Prices arrive as decimal strings with up to 10 places; six keep every cent of a month's cost
/// and stop float noise from looking like a change.
pub fn round_price(price: f64) -> f64 {
    (price * 1e6).round() / 1e6
}
