//! Errors of the AWS outputs: settings that cannot work (reported as configuration errors by
//! `build`) and failed calls, already classified as transient or permanent by [`crate::retry`].

/// What went wrong talking to AWS, or setting up to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// An option's value cannot work; `key` is the Fluent Bit key at fault.
    #[error("{key}: {reason}")]
    Setting { key: &'static str, reason: String },
    /// A call failed in a way that may pass later (throttling, 5xx, timeouts, network).
    #[error("{0}")]
    Transient(String),
    /// A call failed in a way that retrying will not fix (other 4xx, bad input).
    #[error("{0}")]
    Permanent(String),
}

impl AwsError {
    /// A setting error about `key`.
    pub fn setting(key: &'static str, reason: impl Into<String>) -> Self {
        AwsError::Setting {
            key,
            reason: reason.into(),
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, AwsError::Transient(_))
    }
}
