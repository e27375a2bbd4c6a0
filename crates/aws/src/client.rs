//! The one AWS client factory every output uses.
//!
//! [`AwsSettings::from_options`] checks the shared options at build time: the region (the
//! `region` option, else `AWS_REGION`, else `AWS_DEFAULT_REGION`; none is a configuration error
//! naming `region`), `endpoint` and `sts_endpoint` (a full URL; a bare host gets `https://`).
//! [`load_sdk_config`] then builds, once per output and on its first flush (it is async):
//! - credentials from the SDK's default chain — environment, shared profile (`profile` picks
//!   one; `credential_process` works), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` +
//!   `AWS_ROLE_ARN`, IRSA; its STS endpoint follows `AWS_ENDPOINT_URL_STS`), ECS task role, EKS
//!   Pod Identity, IMDSv2 — with `role_arn`/`external_id` assumed on top through STS
//!   AssumeRole at `sts_endpoint`. SSO profiles are not compiled in (build time);
//! - SDK retries disabled: the engine owns retries, and [`crate::retry`] classifies errors;
//! - bounded timeouts ([`CONNECT_TIMEOUT`], [`READ_TIMEOUT`], [`ATTEMPT_TIMEOUT`]);
//! - `endpoint` applied to the service client only (never to STS), exactly as tests against a
//!   local emulator use it; S3 switches to path-style addressing with it.
//!
//! The HTTPS client is hyper 1 with rustls on ring (no aws-lc build), plain HTTP included.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use tokio::sync::OnceCell;

use crate::error::AwsError;
use crate::options::AwsOptions;

/// Time to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without a byte from the server while reading a response. A destination that stops
/// answering holds a worker this long; after an outage the backlog moves again within it (and
/// the engine's probe), so it stays well under the 30 s recovery bound.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Time for one whole request attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Session name of STS AssumeRole sessions.
pub const SESSION_NAME: &str = "logferry";

/// The shared options, checked.
#[derive(Clone, Debug)]
pub struct AwsSettings {
    pub region: String,
    /// Service endpoint URL, scheme included.
    pub endpoint: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// STS endpoint URL for `role_arn`.
    pub sts_endpoint: Option<String>,
    pub profile: Option<String>,
    /// `extra_user_agent`, as the SDK's app name.
    pub app_name: Option<AppName>,
    pub auto_retry_requests: bool,
}

impl AwsSettings {
    /// Checks the options, reading the region from the environment when unset.
    pub fn from_options(o: &AwsOptions) -> Result<Self, AwsError> {
        Self::resolve(o, |k| std::env::var(k).ok())
    }

    /// As [`Self::from_options`], with the environment given by `env`.
    pub fn resolve(o: &AwsOptions, env: impl Fn(&str) -> Option<String>) -> Result<Self, AwsError> {
        let region = o
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                AwsError::setting(
                    "region",
                    "no region: set `region`, or AWS_REGION / AWS_DEFAULT_REGION in the environment",
                )
            })?;
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(AwsError::setting(
                "region",
                format!("'{region}' is not a region name (like us-east-1)"),
            ));
        }
        if o.external_id.is_some() && o.role_arn.is_none() {
            return Err(AwsError::setting(
                "external_id",
                "external_id is only used with role_arn, which is not set",
            ));
        }
        Ok(AwsSettings {
            region,
            endpoint: o
                .endpoint
                .as_deref()
                .map(|e| endpoint_url("endpoint", e))
                .transpose()?,
            role_arn: o.role_arn.clone(),
            external_id: o.external_id.clone(),
            sts_endpoint: o
                .sts_endpoint
                .as_deref()
                .map(|e| endpoint_url("sts_endpoint", e))
                .transpose()?,
            profile: o.profile.clone(),
            app_name: o.extra_user_agent.as_deref().map(app_name).transpose()?,
            auto_retry_requests: o.auto_retry_requests,
        })
    }

    /// Settings for tests and tools: a region and an endpoint, everything else default.
    pub fn local(region: &str, endpoint: Option<&str>) -> Self {
        AwsSettings {
            region: region.to_string(),
            endpoint: endpoint.map(str::to_string),
            role_arn: None,
            external_id: None,
            sts_endpoint: None,
            profile: None,
            app_name: None,
            auto_retry_requests: true,
        }
    }
}

/// A full URL from what the user wrote: a bare host (Fluent Bit's C plugins take one) gets
/// `https://`; anything but http(s) is refused.
fn endpoint_url(key: &'static str, raw: &str) -> Result<String, AwsError> {
    let raw = raw.trim().trim_end_matches('/');
    if raw.is_empty() {
        return Err(AwsError::setting(key, "empty endpoint"));
    }
    let url = match raw.split_once("://") {
        Some((scheme, rest)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(AwsError::setting(
                    key,
                    format!("'{raw}': the scheme must be http or https"),
                ));
            }
            if rest.is_empty() {
                return Err(AwsError::setting(key, format!("'{raw}' has no host")));
            }
            raw.to_string()
        }
        None => format!("https://{raw}"),
    };
    if url.chars().any(char::is_whitespace) {
        return Err(AwsError::setting(key, format!("'{raw}' contains spaces")));
    }
    Ok(url)
}

/// The SDK's app name from `extra_user_agent`; characters it does not allow become `-`.
fn app_name(raw: &str) -> Result<AppName, AwsError> {
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    AppName::new(clean).map_err(|e| AwsError::setting("extra_user_agent", e.to_string()))
}

/// The HTTP(S) client every AWS client shares: hyper 1 + rustls (ring).
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Timeouts of every call.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// Builds the SDK configuration for a service client (see the module docs).
pub async fn load_sdk_config(s: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(s.region.clone()))
        .http_client(http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts());
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(a) = &s.app_name {
        loader = loader.app_name(a.clone());
    }
    let mut base = loader.load().await;
    if let Some(role) = &s.role_arn {
        let mut sts = base.to_builder();
        if let Some(e) = &s.sts_endpoint {
            sts = sts.endpoint_url(e);
        }
        let mut b = AssumeRoleProvider::builder(role.clone())
            .session_name(SESSION_NAME)
            .configure(&sts.build());
        if let Some(x) = &s.external_id {
            b = b.external_id(x.clone());
        }
        let provider = b.build().await;
        base = base
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
    }
    match &s.endpoint {
        Some(e) => base.into_builder().endpoint_url(e).build(),
        None => base,
    }
}

/// A service client that [`LazyClient`] can build from an [`SdkConfig`].
pub trait ServiceClient: Clone + Send + Sync + 'static {
    /// The client for `conf` (whose endpoint is already the configured one).
    fn from_sdk_config(conf: &SdkConfig, settings: &AwsSettings) -> Self;
}

impl ServiceClient for aws_sdk_cloudwatchlogs::Client {
    fn from_sdk_config(conf: &SdkConfig, _: &AwsSettings) -> Self {
        aws_sdk_cloudwatchlogs::Client::new(conf)
    }
}

impl ServiceClient for aws_sdk_firehose::Client {
    fn from_sdk_config(conf: &SdkConfig, _: &AwsSettings) -> Self {
        aws_sdk_firehose::Client::new(conf)
    }
}

impl ServiceClient for aws_sdk_kinesis::Client {
    fn from_sdk_config(conf: &SdkConfig, _: &AwsSettings) -> Self {
        aws_sdk_kinesis::Client::new(conf)
    }
}

impl ServiceClient for aws_sdk_s3::Client {
    /// Path-style addressing with a custom `endpoint` (emulators, S3-compatible stores), and
    /// checksums only where S3 requires them (no `aws-chunked` trailers).
    fn from_sdk_config(conf: &SdkConfig, settings: &AwsSettings) -> Self {
        let b = aws_sdk_s3::config::Builder::from(conf)
            .force_path_style(settings.endpoint.is_some())
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        aws_sdk_s3::Client::from_conf(b.build())
    }
}

/// A client built once, on first use (building needs the runtime: credentials, profiles).
pub struct LazyClient<C> {
    settings: AwsSettings,
    cell: OnceCell<C>,
}

impl<C: ServiceClient> LazyClient<C> {
    /// A client for `settings`, built on the first [`Self::get`].
    pub fn new(settings: AwsSettings) -> Self {
        LazyClient {
            settings,
            cell: OnceCell::new(),
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// The client.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled first call leaves the client unbuilt for the next one.
    pub async fn get(&self) -> &C {
        self.cell
            .get_or_init(|| async {
                let conf = load_sdk_config(&self.settings).await;
                C::from_sdk_config(&conf, &self.settings)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> AwsOptions {
        let mut o = AwsOptions::defaults().unwrap();
        for (k, v) in kv {
            let v = Some(v.to_string());
            match *k {
                "region" => o.region = v,
                "endpoint" => o.endpoint = v,
                "sts_endpoint" => o.sts_endpoint = v,
                "role_arn" => o.role_arn = v,
                "external_id" => o.external_id = v,
                "extra_user_agent" => o.extra_user_agent = v,
                _ => panic!("{k}"),
            }
        }
        o
    }

    #[test]
    fn region_from_option_then_environment_else_a_clear_error() {
        let none = |_: &str| None;
        let s = AwsSettings::resolve(&opts(&[("region", "eu-west-1")]), none).unwrap();
        assert_eq!(s.region, "eu-west-1");
        let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "us-west-2".to_string());
        assert_eq!(
            AwsSettings::resolve(&opts(&[]), env).unwrap().region,
            "us-west-2"
        );
        let e = AwsSettings::resolve(&opts(&[]), none).unwrap_err();
        assert!(matches!(&e, AwsError::Setting { key: "region", .. }), "{e}");
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
        assert!(AwsSettings::resolve(&opts(&[("region", "us east")]), none).is_err());
    }

    #[test]
    fn endpoints_are_full_urls() {
        let none = |_: &str| None;
        let s = AwsSettings::resolve(
            &opts(&[
                ("region", "us-east-1"),
                ("endpoint", "http://127.0.0.1:4566/"),
                ("sts_endpoint", "sts.example.com"),
            ]),
            none,
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(s.sts_endpoint.as_deref(), Some("https://sts.example.com"));
        let e = AwsSettings::resolve(
            &opts(&[("region", "us-east-1"), ("endpoint", "ftp://x")]),
            none,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            AwsError::Setting {
                key: "endpoint",
                ..
            }
        ));
    }

    #[test]
    fn external_id_needs_role_arn_and_user_agent_is_sanitized() {
        let none = |_: &str| None;
        let e = AwsSettings::resolve(
            &opts(&[("region", "us-east-1"), ("external_id", "x")]),
            none,
        )
        .unwrap_err();
        assert!(matches!(
            e,
            AwsError::Setting {
                key: "external_id",
                ..
            }
        ));
        let s = AwsSettings::resolve(
            &opts(&[("region", "us-east-1"), ("extra_user_agent", "my agent/1")]),
            none,
        )
        .unwrap();
        assert_eq!(s.app_name.unwrap().to_string(), "my-agent-1");
    }
}
