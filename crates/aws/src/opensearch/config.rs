//! Options of the `opensearch` and `es` outputs (Fluent Bit 5.1's names and defaults) and their
//! checks. The two plugins share every option but `Tag_Key`'s default (`_flb-key` for
//! `opensearch`, `flb-key` for `es`) and `es`'s own `Cloud_ID`, `Cloud_Auth`, `HTTP_API_Key`
//! and `Target_Index`.

use std::path::PathBuf;

use chrono::format::{Item, StrftimeItems};
use logferry_core::config::units::{parse_bool, parse_size};
use logferry_core::config::{ByteSize, ConfigError, Entry, Section};
use logferry_core::options;
use logferry_engine::common::NotApplied;
use logferry_filters::record_accessor::RecordAccessor;

use crate::client::AwsSettings;
use crate::error::AwsError;
use crate::options::{key_error, AwsOptions};
use crate::template::Template;

options! {
    /// Options both `opensearch` and `es` take.
    pub struct SearchOptions for "opensearch/es output" {
        /// Host name or IP address of the OpenSearch / Elasticsearch node.
        pub host: String = ["host"] Some("127.0.0.1"),
        /// TCP port of the node.
        pub port: u16 = ["port"] Some("9200"),
        /// Path prefix put before /_bulk (a reverse proxy's sub-path).
        pub path: Option<String> = ["path"] None,
        /// Most bytes of a bulk response kept and read (False: unlimited).
        pub buffer_size: String = ["buffer_size"] Some("512k"),
        /// Ingest pipeline the node runs on the documents (?pipeline=).
        pub pipeline: Option<String> = ["pipeline"] None,
        /// Sign requests with AWS SigV4 (Amazon OpenSearch Service and Serverless).
        pub aws_auth: bool = ["aws_auth"] Some("off"),
        /// AWS region of the domain (required with AWS_Auth).
        pub aws_region: Option<String> = ["aws_region"] None,
        /// STS endpoint URL used with AWS_Role_ARN.
        pub aws_sts_endpoint: Option<String> = ["aws_sts_endpoint"] None,
        /// IAM role to assume (STS AssumeRole) on top of the credentials chain.
        pub aws_role_arn: Option<String> = ["aws_role_arn"] None,
        /// External ID passed to STS AssumeRole with AWS_Role_ARN.
        pub aws_external_id: Option<String> = ["aws_external_id"] None,
        /// Service name in the SigV4 signature: es (managed domains) or aoss (Serverless).
        pub aws_service_name: String = ["aws_service_name"] Some("es"),
        /// Named profile of the shared AWS config and credentials files.
        pub aws_profile: Option<String> = ["aws_profile"] None,
        /// User name for HTTP basic authentication.
        pub http_user: Option<String> = ["http_user"] None,
        /// Password of HTTP_User.
        pub http_passwd: Option<String> = ["http_passwd"] None,
        /// Index name; record accessors ($kubernetes['namespace_name']) are filled per record.
        pub index: String = ["index"] Some("fluent-bit"),
        /// Mapping type put in each action (_type), unless Suppress_Type_Name is on.
        pub type_: String = ["type"] Some("_doc"),
        /// Index per day: Logstash_Prefix, separator, the record's date (Logstash_DateFormat).
        pub logstash_format: bool = ["logstash_format"] Some("off"),
        /// First part of the index name with Logstash_Format.
        pub logstash_prefix: String = ["logstash_prefix"] Some("logstash"),
        /// Text between Logstash_Prefix and the date.
        pub logstash_prefix_separator: String = ["logstash_prefix_separator"] Some("-"),
        /// Record accessor whose value replaces Logstash_Prefix when the record has it.
        pub logstash_prefix_key: Option<String> = ["logstash_prefix_key"] None,
        /// strftime format of the date part of the index name (UTC).
        pub logstash_dateformat: String = ["logstash_dateformat"] Some("%Y.%m.%d"),
        /// Key each document gets with the record time.
        pub time_key: String = ["time_key"] Some("@timestamp"),
        /// strftime format of Time_Key (UTC); milliseconds and Z are appended.
        pub time_key_format: String = ["time_key_format"] Some("%Y-%m-%dT%H:%M:%S"),
        /// Nanoseconds instead of milliseconds in Time_Key.
        pub time_key_nanos: bool = ["time_key_nanos"] Some("off"),
        /// Add the record's tag to each document under Tag_Key.
        pub include_tag_key: bool = ["include_tag_key"] Some("off"),
        /// Give each document an _id derived from its content, so a re-sent batch does not duplicate it.
        pub generate_id: bool = ["generate_id"] Some("off"),
        /// Take each document's _id from this key of the record (Generate_ID is then ignored).
        pub id_key: Option<String> = ["id_key"] None,
        /// Bulk action: create, index, update or upsert.
        pub write_operation: String = ["write_operation"] Some("create"),
        /// Replace dots in key names with underscores.
        pub replace_dots: bool = ["replace_dots"] Some("off"),
        /// Print every bulk request body on stdout (diagnostics).
        pub trace_output: bool = ["trace_output"] Some("off"),
        /// Print the request and the response when the node reports an error (diagnostics).
        pub trace_error: bool = ["trace_error"] Some("off"),
        /// Name the Logstash index after the current time instead of the record's.
        pub current_time_index: bool = ["current_time_index"] Some("off"),
        /// Leave _type out of the actions (required by OpenSearch 2 and Elasticsearch 8).
        pub suppress_type_name: bool = ["suppress_type_name"] Some("off"),
        /// Compress request bodies: gzip.
        pub compress: Option<String> = ["compress"] None,
        /// [UPSTREAM] section for load balancing (accepted; not applied).
        pub upstream: Option<String> = ["upstream"] None,
        /// logferry only: most bytes of one bulk request body before compression.
        pub bulk_max_size: ByteSize = ["logferry.bulk_max_size"] Some("5M"),
        /// Speak HTTPS.
        pub tls: bool = ["tls"] Some("off"),
        /// Verify the node's certificate chain.
        pub tls_verify: bool = ["tls.verify"] Some("on"),
        /// Also check that the certificate names the host (or tls.vhost).
        pub tls_verify_hostname: bool = ["tls.verify_hostname"] Some("off"),
        /// Host name sent in SNI and checked in the certificate instead of Host.
        pub tls_vhost: Option<String> = ["tls.vhost"] None,
        /// PEM file of CA certificates to trust (besides the system's).
        pub tls_ca_file: Option<String> = ["tls.ca_file"] None,
        /// Directory of PEM CA certificates to trust.
        pub tls_ca_path: Option<String> = ["tls.ca_path"] None,
        /// PEM client certificate (mutual TLS).
        pub tls_crt_file: Option<String> = ["tls.crt_file"] None,
        /// PEM private key of tls.crt_file.
        pub tls_key_file: Option<String> = ["tls.key_file"] None,
        /// Password of an encrypted tls.key_file (accepted; only unencrypted keys are read).
        pub tls_key_passwd: Option<String> = ["tls.key_passwd"] None,
        /// TLS library debug level (accepted; not applied).
        pub tls_debug: Option<String> = ["tls.debug"] None,
        /// Lowest TLS version (accepted; TLS 1.2 and 1.3 are offered).
        pub tls_min_version: Option<String> = ["tls.min_version"] None,
        /// Highest TLS version (accepted; TLS 1.2 and 1.3 are offered).
        pub tls_max_version: Option<String> = ["tls.max_version"] None,
        /// Cipher list (accepted; rustls' safe defaults are used).
        pub tls_ciphers: Option<String> = ["tls.ciphers"] None,
    }
}

options! {
    /// `opensearch`'s Tag_Key.
    pub struct OpenSearchTagKey for "opensearch output" {
        /// Key of the tag with Include_Tag_Key.
        pub tag_key: String = ["tag_key"] Some("_flb-key"),
    }
}

options! {
    /// `es`'s own options.
    pub struct EsOptions for "es output" {
        /// Key of the tag with Include_Tag_Key.
        pub tag_key: String = ["tag_key"] Some("flb-key"),
        /// Elastic Cloud deployment id (name:base64 of region$es-host$kibana-host): sets Host, Port 443 and TLS.
        pub cloud_id: Option<String> = ["cloud_id"] None,
        /// Elastic Cloud user:password (basic authentication).
        pub cloud_auth: Option<String> = ["cloud_auth"] None,
        /// Base64 API key (Authorization: ApiKey), unless HTTP_User or Cloud_Auth is set.
        pub http_api_key: Option<String> = ["http_api_key"] None,
        /// Index name per record (record accessors); Index when a key is missing.
        pub target_index: Option<String> = ["target_index"] None,
    }
}

/// Keys accepted and not applied (each set one is a build note).
pub const NOT_APPLIED: &[NotApplied] = &[
    NotApplied::new(
        "upstream",
        None,
        "one node (Host, Port) is used; put a load balancer in front for several",
    ),
    NotApplied::new(
        "tls.key_passwd",
        None,
        "only unencrypted private keys are read",
    ),
    NotApplied::new("tls.debug", None, "TLS debug output is not available"),
    NotApplied::new(
        "tls.min_version",
        None,
        "TLS 1.2 and 1.3 are offered (rustls)",
    ),
    NotApplied::new(
        "tls.max_version",
        None,
        "TLS 1.2 and 1.3 are offered (rustls)",
    ),
    NotApplied::new(
        "tls.ciphers",
        None,
        "rustls' default cipher suites are used",
    ),
];

/// Bulk action of each record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOperation {
    Create,
    Index,
    Update,
    Upsert,
}

impl WriteOperation {
    /// The action's name in the bulk request.
    pub fn action(self) -> &'static str {
        match self {
            WriteOperation::Create => "create",
            WriteOperation::Index => "index",
            WriteOperation::Update | WriteOperation::Upsert => "update",
        }
    }
}

/// How each document gets its `_id`.
#[derive(Clone, Debug)]
pub enum IdSource {
    /// None: the node picks one.
    None,
    /// A hash of the document (`Generate_ID`).
    Generated,
    /// The value of a record key (`Id_Key`).
    Key(RecordAccessor),
}

/// Where each document goes.
#[derive(Clone, Debug)]
pub enum IndexName {
    /// `Index` (record accessors filled per record; the literal text when one is missing).
    Fixed {
        template: Template,
        fallback: String,
    },
    /// `Logstash_Format`: prefix (or the prefix key's value), separator, date.
    Logstash {
        prefix: String,
        prefix_key: Option<RecordAccessor>,
        separator: String,
        date_format: String,
        current_time: bool,
    },
}

/// How to reach the node and authenticate.
#[derive(Clone, Debug)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    /// Path prefix, without a trailing `/` (empty when none).
    pub path: String,
    pub pipeline: Option<String>,
    pub tls: Option<TlsSettings>,
    pub auth: Auth,
    pub gzip: bool,
    /// Most response bytes read (`None`: unlimited).
    pub buffer_size: Option<usize>,
}

impl Connection {
    /// The bulk URL.
    pub fn bulk_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut url = format!("{scheme}://{host}:{}{}/_bulk", self.port, self.path);
        if let Some(p) = &self.pipeline {
            url.push_str("?pipeline=");
            url.push_str(&percent_encode(p));
        }
        url
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// TLS options.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub verify: bool,
    pub verify_hostname: bool,
    pub vhost: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub crt_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How requests authenticate.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    Basic {
        user: String,
        password: String,
    },
    ApiKey(String),
    /// SigV4 with credentials from the AWS chain.
    SigV4 {
        aws: AwsSettings,
        service: String,
    },
}

/// The options, checked.
#[derive(Clone, Debug)]
pub struct SearchSettings {
    pub connection: Connection,
    pub index: IndexName,
    pub type_name: Option<String>,
    pub time_key: String,
    pub time_key_format: String,
    pub time_key_nanos: bool,
    pub tag_key: Option<String>,
    pub id: IdSource,
    pub write_operation: WriteOperation,
    pub replace_dots: bool,
    pub trace_output: bool,
    pub trace_error: bool,
    pub bulk_max_size: usize,
}

/// A strftime format chrono can print (an unknown specifier would make it fail at run time).
fn strftime(key: &'static str, fmt: &str) -> Result<String, AwsError> {
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(AwsError::setting(
            key,
            format!("'{fmt}' is not a strftime format chrono can print"),
        ));
    }
    Ok(fmt.to_string())
}

fn accessor(key: &'static str, raw: &str) -> Result<RecordAccessor, AwsError> {
    let raw = raw.trim();
    let text = if raw.starts_with('$') {
        raw.to_string()
    } else {
        format!("${raw}")
    };
    RecordAccessor::parse(&text).map_err(|e| AwsError::setting(key, e))
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Elastic Cloud's `Cloud_ID`: `name:base64(region$es_host$kibana_host)` → (host, port).
pub fn cloud_host(cloud_id: &str) -> Result<(String, u16), String> {
    use base64::Engine;
    let b64 = cloud_id
        .split_once(':')
        .map_or(cloud_id, |(_, rest)| rest)
        .trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not base64 after the name: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| "not UTF-8 once decoded".to_string())?;
    let mut parts = text.split('$');
    let region = parts.next().unwrap_or("");
    let es = parts
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no Elasticsearch host in it")?;
    let (region, port) = match region.rsplit_once(':') {
        Some((r, p)) => (r, p.parse::<u16>().map_err(|_| format!("bad port '{p}'"))?),
        None => (region, 443),
    };
    Ok((format!("{es}.{region}"), port))
}

impl SearchSettings {
    /// Checks the options. `es` is `None` for the `opensearch` plugin.
    pub fn new(o: &SearchOptions, tag_key: &str, es: Option<&EsOptions>) -> Result<Self, AwsError> {
        let mut host = o.host.trim().to_string();
        let mut port = o.port;
        let mut tls = o.tls;
        if let Some(id) = es.and_then(|e| nonempty(&e.cloud_id)) {
            let (h, p) = cloud_host(id).map_err(|e| AwsError::setting("cloud_id", e))?;
            host = h;
            port = p;
            tls = true;
        }
        if host.is_empty() {
            return Err(AwsError::setting("host", "empty"));
        }
        let path = match nonempty(&o.path) {
            Some(p) => format!("/{}", p.trim_matches('/')),
            None => String::new(),
        };
        let path = if path == "/" { String::new() } else { path };
        let buffer_size = match parse_bool(o.buffer_size.trim()) {
            Ok(false) => None,
            _ => Some(
                parse_size(&o.buffer_size).map_err(|e| AwsError::setting("buffer_size", e))?
                    as usize,
            ),
        };
        let gzip = match nonempty(&o.compress) {
            None => false,
            Some(c) if c.eq_ignore_ascii_case("gzip") => true,
            Some(c) => {
                return Err(AwsError::setting(
                    "compress",
                    format!("'{c}': the only compression is gzip"),
                ))
            }
        };
        let auth = if o.aws_auth {
            let service = o.aws_service_name.trim().to_string();
            if service.is_empty() {
                return Err(AwsError::setting("aws_service_name", "empty"));
            }
            let region = nonempty(&o.aws_region)
                .ok_or_else(|| AwsError::setting("aws_region", "AWS_Auth On needs AWS_Region"))?;
            let mut aws =
                AwsOptions::defaults().map_err(|e| AwsError::setting("aws_auth", e.to_string()))?;
            aws.region = Some(region.to_string());
            aws.role_arn = nonempty(&o.aws_role_arn).map(str::to_string);
            aws.external_id = nonempty(&o.aws_external_id).map(str::to_string);
            aws.sts_endpoint = nonempty(&o.aws_sts_endpoint).map(str::to_string);
            aws.profile = nonempty(&o.aws_profile).map(str::to_string);
            let aws = AwsSettings::from_options(&aws).map_err(|e| match e {
                AwsError::Setting { key, reason } => AwsError::Setting {
                    key: match key {
                        "region" => "aws_region",
                        "role_arn" => "aws_role_arn",
                        "external_id" => "aws_external_id",
                        "sts_endpoint" => "aws_sts_endpoint",
                        other => other,
                    },
                    reason,
                },
                other => other,
            })?;
            Auth::SigV4 { aws, service }
        } else if let Some(user) = nonempty(&o.http_user) {
            Auth::Basic {
                user: user.to_string(),
                password: o.http_passwd.clone().unwrap_or_default(),
            }
        } else if let Some(ca) = es.and_then(|e| nonempty(&e.cloud_auth)) {
            let (user, password) = ca
                .split_once(':')
                .ok_or_else(|| AwsError::setting("cloud_auth", "expected user:password"))?;
            Auth::Basic {
                user: user.to_string(),
                password: password.to_string(),
            }
        } else if let Some(key) = es.and_then(|e| nonempty(&e.http_api_key)) {
            Auth::ApiKey(key.to_string())
        } else {
            Auth::None
        };
        let tls = tls.then(|| TlsSettings {
            verify: o.tls_verify,
            verify_hostname: o.tls_verify_hostname,
            vhost: nonempty(&o.tls_vhost).map(str::to_string),
            ca_file: nonempty(&o.tls_ca_file).map(PathBuf::from),
            ca_path: nonempty(&o.tls_ca_path).map(PathBuf::from),
            crt_file: nonempty(&o.tls_crt_file).map(PathBuf::from),
            key_file: nonempty(&o.tls_key_file).map(PathBuf::from),
        });
        if let Some(t) = &tls {
            if t.crt_file.is_some() != t.key_file.is_some() {
                return Err(AwsError::setting(
                    "tls.crt_file",
                    "tls.crt_file and tls.key_file go together",
                ));
            }
        }
        let index = if o.logstash_format {
            IndexName::Logstash {
                prefix: o.logstash_prefix.clone(),
                prefix_key: nonempty(&o.logstash_prefix_key)
                    .map(|k| accessor("logstash_prefix_key", k))
                    .transpose()?,
                separator: o.logstash_prefix_separator.clone(),
                date_format: strftime("logstash_dateformat", &o.logstash_dateformat)?,
                current_time: o.current_time_index,
            }
        } else {
            let (key, text) = match es.and_then(|e| nonempty(&e.target_index)) {
                Some(t) => ("target_index", t.to_string()),
                None => ("index", o.index.trim().to_string()),
            };
            if text.is_empty() {
                return Err(AwsError::setting("index", "empty"));
            }
            IndexName::Fixed {
                template: Template::parse(&text).map_err(|e| AwsError::setting(key, e))?,
                fallback: o.index.trim().to_string(),
            }
        };
        let id = match nonempty(&o.id_key) {
            Some(k) => IdSource::Key(accessor("id_key", k)?),
            None if o.generate_id => IdSource::Generated,
            None => IdSource::None,
        };
        let write_operation = match o.write_operation.trim().to_ascii_lowercase().as_str() {
            "create" => WriteOperation::Create,
            "index" => WriteOperation::Index,
            "update" => WriteOperation::Update,
            "upsert" => WriteOperation::Upsert,
            other => {
                return Err(AwsError::setting(
                    "write_operation",
                    format!("'{other}': expected create, index, update or upsert"),
                ))
            }
        };
        if matches!(
            write_operation,
            WriteOperation::Update | WriteOperation::Upsert
        ) && matches!(id, IdSource::None)
        {
            return Err(AwsError::setting(
                "write_operation",
                "update and upsert need Id_Key or Generate_ID",
            ));
        }
        if o.time_key.trim().is_empty() {
            return Err(AwsError::setting("time_key", "empty"));
        }
        if o.bulk_max_size.0 == 0 {
            return Err(AwsError::setting(
                "logferry.bulk_max_size",
                "must be above 0",
            ));
        }
        Ok(SearchSettings {
            connection: Connection {
                host,
                port,
                path,
                pipeline: nonempty(&o.pipeline).map(str::to_string),
                tls,
                auth,
                gzip,
                buffer_size,
            },
            index,
            type_name: (!o.suppress_type_name).then(|| o.type_.clone()),
            time_key: o.time_key.clone(),
            time_key_format: strftime("time_key_format", &o.time_key_format)?,
            time_key_nanos: o.time_key_nanos,
            tag_key: o.include_tag_key.then(|| tag_key.to_string()),
            id,
            write_operation,
            replace_dots: o.replace_dots,
            trace_output: o.trace_output,
            trace_error: o.trace_error,
            bulk_max_size: usize::try_from(o.bulk_max_size.0).unwrap_or(usize::MAX),
        })
    }
}

/// Reads and checks a section's entries; errors name file:line and the key. `es` selects the
/// `es` plugin's option set.
pub fn settings_from_entries(
    section: &Section,
    entries: &[&Entry],
    es: bool,
) -> Result<SearchSettings, ConfigError> {
    let (shared, own): (Vec<&Entry>, Vec<&Entry>) = entries
        .iter()
        .copied()
        .partition(|e| SearchOptions::OPTIONS.iter().any(|o| o.is(&e.key)));
    let own_names: Vec<&'static str> = if es {
        crate::options::names(EsOptions::OPTIONS)
    } else {
        crate::options::names(OpenSearchTagKey::OPTIONS)
    };
    let opts = SearchOptions::from_entries(&section.span, &shared, &own_names);
    let known = crate::options::names(SearchOptions::OPTIONS);
    let checked = if es {
        let e = EsOptions::from_entries(&section.span, &own, &known);
        match (opts, e) {
            (Ok(o), Ok(e)) => Ok(SearchSettings::new(&o, &e.tag_key, Some(&e))),
            (a, b) => Err(ConfigError::many(
                a.err().into_iter().chain(b.err()).collect(),
            )),
        }
    } else {
        let t = OpenSearchTagKey::from_entries(&section.span, &own, &known);
        match (opts, t) {
            (Ok(o), Ok(t)) => Ok(SearchSettings::new(&o, &t.tag_key, None)),
            (a, b) => Err(ConfigError::many(
                a.err().into_iter().chain(b.err()).collect(),
            )),
        }
    }?;
    checked.map_err(|e| match e {
        AwsError::Setting { key, reason } => key_error(section, entries, key, reason),
        other => ConfigError::at(&section.span, other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::config::{SectionKind, Span};

    fn check(kv: &[(&str, &str)], es: bool) -> Result<SearchSettings, String> {
        let mut s = Section::new(SectionKind::Output, Span::command_line());
        for (k, v) in kv {
            s.push(*k, *v, Span::command_line());
        }
        let entries: Vec<_> = s.entries.iter().collect();
        settings_from_entries(&s, &entries, es).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_fluent_bit_5_1s() {
        let s = check(&[], false).unwrap();
        assert_eq!(s.connection.bulk_url(), "http://127.0.0.1:9200/_bulk");
        assert_eq!(s.connection.buffer_size, Some(512 * 1024));
        assert!(matches!(s.connection.auth, Auth::None));
        assert_eq!(s.type_name.as_deref(), Some("_doc"));
        assert_eq!(s.write_operation, WriteOperation::Create);
        assert!(matches!(s.id, IdSource::None));
        assert_eq!(s.time_key, "@timestamp");
        assert_eq!(s.bulk_max_size, 5 * 1024 * 1024);
    }

    #[test]
    fn url_path_pipeline_tls_and_unlimited_buffer() {
        let s = check(
            &[
                ("host", "search.local"),
                ("port", "443"),
                ("tls", "on"),
                ("path", "es/"),
                ("pipeline", "a b"),
                ("buffer_size", "False"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            s.connection.bulk_url(),
            "https://search.local:443/es/_bulk?pipeline=a%20b"
        );
        assert_eq!(s.connection.buffer_size, None);
    }

    #[test]
    fn mistakes_name_their_key() {
        let e = check(&[("compress", "zstd")], false).unwrap_err();
        assert!(e.contains("compress"), "{e}");
        let e = check(&[("aws_auth", "on")], false).unwrap_err();
        assert!(e.contains("aws_region"), "{e}");
        let e = check(&[("write_operation", "upsert")], false).unwrap_err();
        assert!(e.contains("Id_Key"), "{e}");
        let e = check(
            &[("logstash_format", "on"), ("logstash_dateformat", "%Q%")],
            false,
        )
        .unwrap_err();
        assert!(e.contains("logstash_dateformat"), "{e}");
        // es-only keys are unknown to opensearch.
        let e = check(&[("cloud_id", "x")], false).unwrap_err();
        assert!(e.contains("cloud_id"), "{e}");
        let e = check(
            &[
                ("aws_auth", "on"),
                ("aws_region", "us-east-1"),
                ("aws_external_id", "x"),
            ],
            false,
        )
        .unwrap_err();
        assert!(e.contains("aws_external_id"), "{e}");
    }

    #[test]
    fn elastic_cloud_id_and_auth() {
        use base64::Engine;
        let info = base64::engine::general_purpose::STANDARD
            .encode("us-east-1.aws.found.io$abc123$kib456");
        let s = check(
            &[
                ("cloud_id", &format!("dep:{info}")),
                ("cloud_auth", "elastic:pw"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            s.connection.bulk_url(),
            "https://abc123.us-east-1.aws.found.io:443/_bulk"
        );
        assert!(
            matches!(&s.connection.auth, Auth::Basic { user, password } if user == "elastic" && password == "pw")
        );
        let s = check(&[("http_api_key", "a2V5")], true).unwrap();
        assert!(matches!(&s.connection.auth, Auth::ApiKey(k) if k == "a2V5"));
    }

    #[test]
    fn sigv4_settings_map_to_the_aws_chain() {
        let s = check(
            &[
                ("aws_auth", "on"),
                ("aws_region", "eu-west-1"),
                ("aws_service_name", "aoss"),
                ("aws_role_arn", "arn:aws:iam::1:role/r"),
                ("aws_external_id", "x"),
                ("aws_sts_endpoint", "sts.local"),
                ("http_user", "ignored"),
            ],
            false,
        )
        .unwrap();
        let Auth::SigV4 { aws, service } = &s.connection.auth else {
            panic!("{:?}", s.connection.auth)
        };
        assert_eq!(service, "aoss");
        assert_eq!(aws.region, "eu-west-1");
        assert_eq!(aws.role_arn.as_deref(), Some("arn:aws:iam::1:role/r"));
        assert_eq!(aws.external_id.as_deref(), Some("x"));
        assert_eq!(aws.sts_endpoint.as_deref(), Some("https://sts.local"));
    }
}
