//! Whether a failure is worth retrying is part of every error's contract.

/// What the caller should do with a failed unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient (throttling, timeouts, 5xx): the same input may succeed later.
    Retryable,
    /// The input itself is wrong or refers to something that does not exist: retrying cannot help.
    NonRetryable,
}

/// Implemented by every library error enum so batch handlers can decide retry vs dead-letter.
pub trait Classify {
    fn disposition(&self) -> Disposition;

    fn is_retryable(&self) -> bool {
        self.disposition() == Disposition::Retryable
    }
}
