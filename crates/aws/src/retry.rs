//! The one error classifier every AWS output shares, and the bounded waits used inside a flush.
//!
//! Issue 13: a fault an operator or the service fixes must not lose data, so it is transient,
//! and the engine retries transient failures (until delivered, by default). Rules, in one place
//! so every output retries the same things:
//! - timeouts, dispatch (connection, I/O) failures and unparsable responses → [`Class::Network`];
//! - HTTP 429, throttling error codes (`ThrottlingException`, `Throttling`, `SlowDown`,
//!   `ProvisionedThroughputExceededException`, `LimitExceededException`,
//!   `KMSThrottlingException`, …) → [`Class::Throttled`];
//! - HTTP 5xx and server-side codes (`ServiceUnavailableException`, `InternalFailure`,
//!   `InternalFailureException`, …) → [`Class::Server`];
//! - credentials and permissions an operator fixes ([`CREDENTIAL_CODES`]: `AccessDenied`,
//!   `AccessDeniedException`, `ExpiredToken(Exception)`, `UnrecognizedClientException`,
//!   `InvalidClientTokenId`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`,
//!   `InvalidSignatureException` (also "Signature expired": clock skew),
//!   `RequestTimeTooSkewed`, `MissingAuthenticationToken`, the KMS errors of Kinesis and
//!   Firehose server-side encryption (`KMSAccessDeniedException`, `KMSDisabledException`,
//!   `KMSInvalidStateException`, `KMSNotFoundException`, `KMSOptInRequired`,
//!   `InvalidKMSResourceException`), any HTTP 401/403, and a request that could not be built
//!   (usually: no credentials yet) → [`Class::Credentials`];
//! - a destination that does not exist (`ResourceNotFoundException`, S3 `NoSuchBucket`) →
//!   [`Class::NotFound`]; each output decides with [`MissingResource`] whether that is an
//!   operator fix (retried) or not;
//! - any other 4xx (`InvalidParameterException`, `ValidationException`,
//!   `SerializationException`, …) → [`Class::Permanent`], reported as an error with the
//!   service's reason.
//!
//! This matches Fluent Bit 5.1's `cloudwatch_logs`, which retries every failed PutLogEvents
//! (credentials and permissions included) except a stream that is not found.
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
    /// Credentials missing, expired or refused, or a permission missing: a refresh or an
    /// operator fixes it.
    Credentials,
    /// The destination (stream, group, bucket) does not exist; see [`MissingResource`].
    NotFound,
    /// The request itself is refused; sending it again will not help.
    Permanent,
}

impl Class {
    /// Whether the same call may succeed later, for an output that treats a missing
    /// destination as `missing`.
    pub fn is_retryable_with(self, missing: MissingResource) -> bool {
        match self {
            Class::Permanent => false,
            Class::NotFound => missing == MissingResource::Transient,
            _ => true,
        }
    }

    /// Whether the same call may succeed later, a missing destination being permanent.
    pub fn is_retryable(self) -> bool {
        self.is_retryable_with(MissingResource::Permanent)
    }
}

/// How an output treats a destination that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingResource {
    /// An operator creates it (a Kinesis stream, a Firehose delivery stream, an S3 bucket):
    /// retried until it exists.
    Transient,
    /// Nothing will create it: the records are given up.
    Permanent,
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
    "KMSThrottlingException",
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
    "InternalFailureException",
];

/// Error codes of credentials or permissions that a refresh or an operator fixes (IAM policy,
/// rotated keys, the node's clock, a KMS key policy or a disabled key).
pub const CREDENTIAL_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "InvalidIdentityToken",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "RequestTimeTooSkewed",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "NotAuthorized",
    "AllAccessDisabled",
    // Kinesis Data Streams server-side encryption (PutRecords).
    "KMSAccessDeniedException",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSNotFoundException",
    "KMSOptInRequired",
    // Firehose server-side encryption (PutRecordBatch).
    "InvalidKMSResourceException",
];

/// Error codes of a destination that does not exist.
const NOT_FOUND_CODES: &[&str] = &["ResourceNotFoundException", "NoSuchBucket"];

/// Classifies a service answer by its error code and HTTP status.
pub fn classify_code(code: Option<&str>, status: u16) -> Class {
    if let Some(code) = code {
        if THROTTLING_CODES.contains(&code) {
            return Class::Throttled;
        }
        if SERVER_CODES.contains(&code) {
            return Class::Server;
        }
        if CREDENTIAL_CODES.contains(&code) || code.starts_with("KMS.") {
            return Class::Credentials;
        }
        if NOT_FOUND_CODES.contains(&code) {
            return Class::NotFound;
        }
    }
    match status {
        429 => Class::Throttled,
        500..=599 => Class::Server,
        401 | 403 => Class::Credentials,
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

/// The error of a failed call, classified, a missing destination being permanent.
pub fn to_aws_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    err: &SdkError<E, HttpResponse>,
) -> AwsError {
    to_aws_error_with(op, err, MissingResource::Permanent)
}

/// The error of a failed call, classified, a missing destination treated as `missing`.
pub fn to_aws_error_with<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    err: &SdkError<E, HttpResponse>,
    missing: MissingResource,
) -> AwsError {
    let reason = describe(op, err);
    if classify(err).is_retryable_with(missing) {
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
            classify_code(Some("ValidationException"), 400),
            Class::Permanent
        );
        assert_eq!(
            classify_code(Some("SerializationException"), 400),
            Class::Permanent
        );
        assert_eq!(classify_code(None, 404), Class::Permanent);
        assert_eq!(classify_code(None, 413), Class::Permanent);
        assert_eq!(
            classify_code(Some("InternalFailureException"), 500),
            Class::Server
        );
        assert_eq!(
            classify_code(Some("KMSThrottlingException"), 400),
            Class::Throttled
        );
        assert!(!Class::Permanent.is_retryable());
        assert!(Class::Network.is_retryable());
    }

    #[test]
    fn credentials_and_permissions_an_operator_fixes_are_transient() {
        for (code, status) in [
            ("AccessDeniedException", 400),
            ("AccessDenied", 403),
            ("ExpiredToken", 400),
            ("ExpiredTokenException", 400),
            ("UnrecognizedClientException", 400),
            ("InvalidClientTokenId", 403),
            ("InvalidAccessKeyId", 403),
            ("SignatureDoesNotMatch", 403),
            ("InvalidSignatureException", 400),
            ("RequestTimeTooSkewed", 403),
            ("MissingAuthenticationToken", 403),
            ("KMSAccessDeniedException", 400),
            ("KMSDisabledException", 400),
            ("KMSInvalidStateException", 400),
            ("KMSNotFoundException", 400),
            ("KMSOptInRequired", 400),
            ("InvalidKMSResourceException", 400),
            ("KMS.AccessDeniedException", 0),
        ] {
            assert_eq!(
                classify_code(Some(code), status),
                Class::Credentials,
                "{code}"
            );
            assert!(classify_code(Some(code), status).is_retryable(), "{code}");
        }
        // A 403 without a code (an S3 HEAD has no body) is a permission too.
        assert_eq!(classify_code(None, 403), Class::Credentials);
        assert_eq!(classify_code(None, 401), Class::Credentials);
    }

    #[test]
    fn a_missing_destination_is_what_the_output_says() {
        let c = classify_code(Some("ResourceNotFoundException"), 400);
        assert_eq!(c, Class::NotFound);
        assert!(!c.is_retryable());
        assert!(!c.is_retryable_with(MissingResource::Permanent));
        assert!(c.is_retryable_with(MissingResource::Transient));
        assert_eq!(classify_code(Some("NoSuchBucket"), 404), Class::NotFound);
        assert!(!Class::Permanent.is_retryable_with(MissingResource::Transient));
        assert!(Class::Credentials.is_retryable_with(MissingResource::Permanent));
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
