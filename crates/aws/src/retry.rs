//! The one error classifier every AWS output shares, and the bounded waits used inside a flush.
//!
//! Rules (one place, so every output retries the same things):
//! - timeouts, dispatch (connection, I/O) failures and unparsable responses → [`Class::Network`];
//! - HTTP 429, throttling error codes (`ThrottlingException`, `Throttling`, `SlowDown`,
//!   `ProvisionedThroughputExceededException`, `LimitExceededException`, …) → [`Class::Throttled`];
//! - HTTP 5xx and server-side codes (`ServiceUnavailableException`, `InternalFailure`, …) →
//!   [`Class::Server`];
//! - expired credentials or signatures (`ExpiredToken`, `RequestExpired`) and a request that
//!   could not be built (usually: no credentials yet) → [`Class::Credentials`];
//! - any other 4xx → [`Class::Permanent`], reported as an error with the service's reason.
//!
//! SDK retries are disabled ([`crate::client`]); the engine retries whole batches with full
//! jitter, and [`crate::progress`] keeps a retried batch from resending what was accepted.

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use rand::Rng;

use crate::error::AwsError;

/// What kind of failure a call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// The service asked us to slow down.
    Throttled,
    /// The service failed (5xx).
    Server,
    /// No answer: timeout, connection or I/O failure, unreadable response.
    Network,
    /// Credentials missing or expired; they may be refreshed.
    Credentials,
    /// The request itself is refused; sending it again will not help.
    Permanent,
}

impl Class {
    /// Whether the same call may succeed later.
    pub fn is_retryable(self) -> bool {
        self != Class::Permanent
    }
}

/// Error codes that mean "slow down" across AWS services.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Error codes of transient server-side failures (some come with a 4xx status).
const SERVER_CODES: &[&str] = &[
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "InternalServiceException",
    "InternalServiceError",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
    "OperationAbortedException",
];

/// Error codes of credentials that a refresh may fix.
const CREDENTIAL_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidIdentityToken",
];

/// Classifies a service answer by its error code and HTTP status.
pub fn classify_code(code: Option<&str>, status: u16) -> Class {
    if let Some(code) = code {
        if THROTTLING_CODES.contains(&code) {
            return Class::Throttled;
        }
        if SERVER_CODES.contains(&code) {
            return Class::Server;
        }
        if CREDENTIAL_CODES.contains(&code) {
            return Class::Credentials;
        }
    }
    match status {
        429 => Class::Throttled,
        500..=599 => Class::Server,
        _ => Class::Permanent,
    }
}

/// Classifies an SDK error.
pub fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Class {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Class::Network
        }
        SdkError::ConstructionFailure(_) => Class::Credentials,
        SdkError::ServiceError(ctx) => classify_code(ctx.err().code(), ctx.raw().status().as_u16()),
        _ => Class::Network,
    }
}

/// One line saying what failed: `PutLogEvents: ThrottlingException: Rate exceeded (HTTP 400)`.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    err: &SdkError<E, HttpResponse>,
) -> String {
    match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            format!(
                "{op}: {}: {} (HTTP {})",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("no message"),
                ctx.raw().status().as_u16()
            )
        }
        other => format!("{op}: {}", DisplayErrorContext(other)),
    }
}

/// The error of a failed call, classified.
pub fn to_aws_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    err: &SdkError<E, HttpResponse>,
) -> AwsError {
    let reason = describe(op, err);
    if classify(err).is_retryable() {
        AwsError::Transient(reason)
    } else {
        AwsError::Permanent(reason)
    }
}

/// Runs `call`, and once more at once when it failed on the network and `enabled` is set
/// (Fluent Bit's `auto_retry_requests`). Throttling and server errors are left to the engine's
/// backoff: an immediate retry would only add to the storm.
pub async fn with_auto_retry<T, E, F, Fut>(
    enabled: bool,
    mut call: F,
) -> Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    match call().await {
        Err(e) if enabled && classify(&e) == Class::Network => {
            tracing::debug!(message = "request failed on the network; retrying it once");
            call().await
        }
        r => r,
    }
}

/// Full-jitter wait before in-flush attempt `attempt` (0-based): random in
/// `[0, min(cap, base * 2^attempt)]`.
pub fn full_jitter(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let hi = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let ms = u64::try_from(hi.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_server_and_permanent() {
        assert_eq!(
            classify_code(Some("ThrottlingException"), 400),
            Class::Throttled
        );
        assert_eq!(classify_code(None, 429), Class::Throttled);
        assert_eq!(
            classify_code(Some("ProvisionedThroughputExceededException"), 400),
            Class::Throttled
        );
        assert_eq!(
            classify_code(Some("ServiceUnavailableException"), 503),
            Class::Server
        );
        assert_eq!(classify_code(None, 500), Class::Server);
        assert_eq!(classify_code(Some("InternalFailure"), 400), Class::Server);
        assert_eq!(
            classify_code(Some("ExpiredTokenException"), 400),
            Class::Credentials
        );
        assert_eq!(
            classify_code(Some("InvalidParameterException"), 400),
            Class::Permanent
        );
        assert_eq!(
            classify_code(Some("AccessDeniedException"), 400),
            Class::Permanent
        );
        assert_eq!(classify_code(None, 404), Class::Permanent);
        assert!(!Class::Permanent.is_retryable());
        assert!(Class::Network.is_retryable());
    }

    #[test]
    fn jitter_is_bounded() {
        for attempt in 0..40 {
            let w = full_jitter(attempt, Duration::from_millis(100), Duration::from_secs(2));
            assert!(w <= Duration::from_secs(2));
        }
        assert!(
            full_jitter(0, Duration::from_millis(100), Duration::from_secs(2))
                <= Duration::from_millis(100)
        );
    }
}
