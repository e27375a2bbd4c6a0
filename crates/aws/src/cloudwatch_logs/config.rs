//! Options of the `cloudwatch_logs` output and their checks.
//!
//! Names: Fluent Bit's C plugin (`log_group_template`, `log_stream_template`, …) plus AWS for
//! Fluent Bit's Go plugin (`cloudwatch`), whose `log_group_name`/`log_stream_name` may hold
//! `$(…)` templates with `default_log_group_name`/`default_log_stream_name` as fallbacks,
//! `auto_create_stream` and `new_log_group_tags`. Keys of either plugin that logferry does not
//! act on are accepted and say so in their doc line.

use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::common::NotApplied;
use logferry_filters::record_accessor::RecordAccessor;

use crate::client::AwsSettings;
use crate::error::AwsError;
use crate::options::{key_error, names, split_entries, AwsOptions};
use crate::template::Template;

options! {
    /// Options of the `cloudwatch_logs` output besides the shared AWS ones.
    pub struct CloudWatchLogsOptions for "cloudwatch_logs output" {
        /// Log group to send to; the fallback when log_group_template cannot be filled.
        pub log_group_name: Option<String> = ["log_group_name"] None,
        /// Log group from a template with record accessors ($kubernetes['namespace_name'], $TAG).
        pub log_group_template: Option<String> = ["log_group_template"] None,
        /// Log stream to send to (not with log_stream_prefix).
        pub log_stream_name: Option<String> = ["log_stream_name"] None,
        /// Log stream named this prefix followed by the tag (not with log_stream_name).
        pub log_stream_prefix: Option<String> = ["log_stream_prefix"] None,
        /// Log stream from a template with record accessors; falls back to name or prefix.
        pub log_stream_template: Option<String> = ["log_stream_template"] None,
        /// Create the log group when it does not exist.
        pub auto_create_group: bool = ["auto_create_group"] Some("false"),
        /// Create the log stream when it does not exist (AWS for Fluent Bit's Go plugin).
        pub auto_create_stream: bool = ["auto_create_stream"] Some("true"),
        /// Retention in days of log groups this output creates; 0 keeps events forever.
        pub log_retention_days: u32 = ["log_retention_days"] Some("0"),
        /// Class of log groups this output creates: STANDARD, INFREQUENT_ACCESS or DELIVERY.
        pub log_group_class: Option<String> = ["log_group_class"] None,
        /// Tags of log groups this output creates, as key=value,key=value (Go plugin).
        pub new_log_group_tags: Option<String> = ["new_log_group_tags"] None,
        /// Send only this key's value (strings raw, other values as JSON), not the whole record.
        pub log_key: Option<String> = ["log_key"] None,
        /// json (default) or json/emf: events in Embedded Metric Format.
        pub log_format: Option<String> = ["log_format"] None,
        /// With json/emf: CloudWatch metric namespace for the records' numeric fields.
        pub metric_namespace: Option<String> = ["metric_namespace"] None,
        /// With metric_namespace: dimension keys, ',' within a set and ';' between sets.
        pub metric_dimensions: Option<String> = ["metric_dimensions"] None,
        /// Log group used when a $(…) template in log_group_name cannot be filled (Go plugin).
        pub default_log_group_name: Option<String> = ["default_log_group_name"] None,
        /// Log stream used when a $(…) template in log_stream_name cannot be filled (Go plugin).
        pub default_log_stream_name: Option<String> = ["default_log_stream_name"] None,
        /// Accepted, no effect: the SDK chain finds ECS and EKS credential endpoints itself.
        pub credentials_endpoint: Option<String> = ["credentials_endpoint"] None,
        /// Accepted, no effect: entities are not added to PutLogEvents calls.
        pub add_entity: bool = ["add_entity"] Some("false"),
        /// logferry only: templates may read only $kubernetes[...] (the kubernetes filter's metadata) and the tag, never keys a pod's log can set.
        pub trusted_templates: bool = ["trusted_templates"] Some("false"),
    }
}

/// Keys accepted and not applied (each set one is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "credentials_endpoint",
        None,
        "the AWS SDK's provider chain finds ECS and EKS credential endpoints itself",
    ),
    NotApplied::new(
        "add_entity",
        Some("false"),
        "entities are not added to PutLogEvents calls",
    ),
];

/// Retention periods CloudWatch Logs accepts (PutRetentionPolicy).
pub const RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// How the log stream is named when no template applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamName {
    /// `log_stream_name`.
    Fixed(String),
    /// `log_stream_prefix` followed by the tag.
    Prefix(String),
    /// Nothing: a record whose template cannot be filled is dropped (counted).
    None,
}

/// A group or stream name: an optional template and what to use when it cannot be filled.
#[derive(Clone, Debug)]
pub struct NameRule<F> {
    pub template: Option<Template>,
    pub fallback: F,
}

/// EMF metric settings (`metric_namespace`, `metric_dimensions`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmfMetrics {
    pub namespace: String,
    /// Dimension sets, each a list of keys.
    pub dimensions: Vec<Vec<String>>,
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct CloudWatchLogsSettings {
    pub aws: AwsSettings,
    pub group: NameRule<Option<String>>,
    pub stream: NameRule<StreamName>,
    pub auto_create_group: bool,
    pub auto_create_stream: bool,
    /// Retention of created groups, when set.
    pub retention_days: Option<i32>,
    pub group_class: Option<String>,
    pub group_tags: Vec<(String, String)>,
    pub log_key: Option<RecordAccessor>,
    /// The `x-amzn-logs-format` header value (`json/emf`), when set.
    pub log_format_header: Option<String>,
    pub metrics: Option<EmfMetrics>,
}

fn template(key: &'static str, text: &str) -> Result<Template, AwsError> {
    Template::parse(text).map_err(|r| AwsError::setting(key, r))
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl CloudWatchLogsSettings {
    /// Checks the options.
    pub fn new(aws: &AwsOptions, o: &CloudWatchLogsOptions) -> Result<Self, AwsError> {
        let aws = AwsSettings::from_options(aws)?;
        Self::with_aws(aws, o)
    }

    /// Checks the plugin's options with shared settings already resolved.
    pub fn with_aws(aws: AwsSettings, o: &CloudWatchLogsOptions) -> Result<Self, AwsError> {
        let group = match (
            non_empty(&o.log_group_name),
            non_empty(&o.log_group_template),
        ) {
            (Some(name), _) if name.contains("$(") => NameRule {
                template: Some(template("log_group_name", &name)?),
                fallback: non_empty(&o.default_log_group_name),
            },
            (name, Some(t)) => NameRule {
                template: Some(template("log_group_template", &t)?),
                fallback: name,
            },
            (Some(name), None) => NameRule {
                template: None,
                fallback: Some(name),
            },
            (None, None) => {
                return Err(AwsError::setting(
                    "log_group_name",
                    "missing: set log_group_name (or log_group_template)",
                ))
            }
        };
        let name = non_empty(&o.log_stream_name);
        let prefix = o.log_stream_prefix.clone().filter(|p| !p.is_empty());
        if name.is_some() && prefix.is_some() {
            return Err(AwsError::setting(
                "log_stream_prefix",
                "log_stream_name and log_stream_prefix cannot both be set",
            ));
        }
        let stream = match (name, prefix, non_empty(&o.log_stream_template)) {
            (Some(n), _, _) if n.contains("$(") => NameRule {
                template: Some(template("log_stream_name", &n)?),
                fallback: non_empty(&o.default_log_stream_name)
                    .map_or(StreamName::None, StreamName::Fixed),
            },
            (n, p, t) => {
                let fallback = match (n, p) {
                    (Some(n), _) => StreamName::Fixed(n),
                    (None, Some(p)) => StreamName::Prefix(p),
                    (None, None) => StreamName::None,
                };
                if t.is_none() && fallback == StreamName::None {
                    return Err(AwsError::setting(
                        "log_stream_name",
                        "missing: set log_stream_name or log_stream_prefix (or log_stream_template)",
                    ));
                }
                NameRule {
                    template: t.map(|t| template("log_stream_template", &t)).transpose()?,
                    fallback,
                }
            }
        };
        if o.trusted_templates {
            for (key, t) in [
                ("log_group_template", group.template.as_ref()),
                ("log_stream_template", stream.template.as_ref()),
            ] {
                if let Some(t) = t {
                    t.check_trusted(key)
                        .map_err(|r| AwsError::setting("trusted_templates", r))?;
                }
            }
        }
        let retention_days = match o.log_retention_days {
            0 => None,
            d if RETENTION_DAYS.contains(&d) => i32::try_from(d).ok(),
            d => {
                return Err(AwsError::setting(
                    "log_retention_days",
                    format!("{d} is not a retention CloudWatch Logs accepts ({RETENTION_DAYS:?})"),
                ))
            }
        };
        let group_class = match non_empty(&o.log_group_class) {
            None => None,
            Some(c) => {
                let up = c.to_ascii_uppercase();
                if !["STANDARD", "INFREQUENT_ACCESS", "DELIVERY"].contains(&up.as_str()) {
                    return Err(AwsError::setting(
                        "log_group_class",
                        format!("'{c}': expected STANDARD, INFREQUENT_ACCESS or DELIVERY"),
                    ));
                }
                Some(up)
            }
        };
        let group_tags = match non_empty(&o.new_log_group_tags) {
            None => Vec::new(),
            Some(t) => parse_tags(&t).map_err(|r| AwsError::setting("new_log_group_tags", r))?,
        };
        let log_key = non_empty(&o.log_key)
            .map(|k| RecordAccessor::parse_key(&k))
            .transpose()
            .map_err(|r| AwsError::setting("log_key", r))?;
        let log_format_header = match non_empty(&o.log_format) {
            None => None,
            Some(f) if f.eq_ignore_ascii_case("json") => None,
            Some(f) if f.eq_ignore_ascii_case("json/emf") => Some("json/emf".to_string()),
            Some(f) => {
                return Err(AwsError::setting(
                    "log_format",
                    format!("'{f}': expected json or json/emf"),
                ))
            }
        };
        let metrics = match non_empty(&o.metric_namespace) {
            None => None,
            Some(_) if log_format_header.is_none() => {
                return Err(AwsError::setting(
                    "metric_namespace",
                    "metric_namespace needs log_format json/emf",
                ))
            }
            Some(namespace) => Some(EmfMetrics {
                namespace,
                dimensions: non_empty(&o.metric_dimensions)
                    .map(|d| parse_dimensions(&d))
                    .unwrap_or_default(),
            }),
        };
        Ok(CloudWatchLogsSettings {
            aws,
            group,
            stream,
            auto_create_group: o.auto_create_group,
            auto_create_stream: o.auto_create_stream,
            retention_days,
            group_class,
            group_tags,
            log_key,
            log_format_header,
            metrics,
        })
    }
}

/// `key=value,key=value`.
fn parse_tags(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("'{t}': expected key=value")),
        })
        .collect()
}

/// `a,b;c`: sets of dimension keys.
fn parse_dimensions(s: &str) -> Vec<Vec<String>> {
    s.split(';')
        .map(|set| {
            set.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|set| !set.is_empty())
        .collect()
}

/// Reads and checks the section's entries; errors name file:line and the key.
pub fn settings_from_entries(
    section: &Section,
    entries: &[&Entry],
) -> Result<CloudWatchLogsSettings, ConfigError> {
    let (aws_entries, own) = split_entries(entries);
    let aws = AwsOptions::from_entries(&section.span, &aws_entries, &[])?;
    let opts =
        CloudWatchLogsOptions::from_entries(&section.span, &own, &names(AwsOptions::OPTIONS))?;
    CloudWatchLogsSettings::new(&aws, &opts).map_err(|e| match e {
        AwsError::Setting { key, reason } => key_error(section, entries, key, reason),
        other => ConfigError::at(&section.span, other.to_string()),
    })
}
