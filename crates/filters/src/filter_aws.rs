//! `aws` filter: adds the EC2 instance's metadata to every record (Fluent Bit's `filter_aws`
//! with `src/aws/flb_aws_imds.c`, the filter AWS for Fluent Bit's Container Insights configs
//! use).
//!
//! Options and defaults, as documented: `imds_version` (`v2`, or `v1`), `az` and
//! `ec2_instance_id` (on), `ec2_instance_type`, `private_ip`, `vpc_id`, `ami_id`,
//! `account_id`, `hostname`, `tags_enabled`, `enable_entity` (off), `tags_include` /
//! `tags_exclude` (comma-separated tag keys; not both) and `retry_interval_s` (300). The keys
//! are appended after the record's own, in Fluent Bit's order: `az`, `ec2_instance_id`,
//! `ec2_instance_type`, `private_ip`, `vpc_id`, `ami_id`, `account_id`, `hostname`, then the
//! instance's tags (each under its own key), then with `enable_entity`
//! `aws_entity_ec2_instance_id` and `aws_entity_account_id`. A key the record already has is
//! appended again, as Fluent Bit does.
//!
//! The metadata is read from the instance metadata service (IMDS) once and kept. IMDSv2: a
//! token from `PUT /latest/api/token` (`X-aws-ec2-metadata-token-ttl-seconds: 21600`), then
//! GETs with `X-aws-ec2-metadata-token`; a 401 gets a new token and the GET is tried again.
//! IMDSv1: GETs without a token. Where the docs are silent this follows Fluent Bit 5.1's code:
//! - the paths: `meta-data/instance-id/`, `placement/availability-zone/`, `instance-type/`,
//!   `local-ipv4/`, `ami-id/`, `hostname/`, `mac/` then `network/interfaces/macs/<mac>/vpc-id/`,
//!   `dynamic/instance-identity/document/` (its `accountId`; `NULL` with an error logged when
//!   it has none), and `meta-data/tags/instance` (one key a line) then each tag's value;
//! - each item (and the tags as one item) is fetched on its own: what failed is tried again at
//!   most every `retry_interval_s` seconds (0: at every chunk), while records pass without the
//!   keys not fetched yet; the tags answering 404 (no tags, or tags not enabled in the
//!   instance's metadata options) count as fetched, with none, and a warning;
//! - a connection or answer takes at most 1 second.
//!
//! Where logferry differs (docs/configuration.md):
//! - Fluent Bit fetches at start, blocking, and then while filtering, blocking the pipeline for
//!   up to a second a request. logferry fetches in a background task started by the first
//!   chunk, which waits for it at most [`FIRST_WAIT`] (so that with a working IMDS the first
//!   records have their metadata too); later attempts never hold records back;
//! - when a connection fails or IMDSv2 gives no token, the other items due in that attempt
//!   are not tried (they would fail the same way) and wait for the next;
//! - `tags_include` with `tags_exclude` is a config error at start; Fluent Bit fails only once
//!   it has read the instance's tags;
//! - the IMDS address is `169.254.169.254:80` unless the AWS SDKs' variable
//!   `AWS_EC2_METADATA_SERVICE_ENDPOINT` (`http://host:port`) says otherwise: Fluent Bit has no
//!   such setting; it is how tests point the filter at a local server;
//! - Fluent Bit also sets the config variables `${aws.az}`, ...; logferry expands variables
//!   when it reads the config, before any filter runs, so it does not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use logferry_core::config::{ConfigError, Entry, Section};
use logferry_core::{options, Record, Str, Value};
use logferry_engine::{BuildContext, Filter, FilterPlugin};
use tokio::task::JoinHandle;

options! {
    /// Options of the `aws` filter.
    pub struct AwsOptions for "aws filter" {
        /// Instance metadata service version: `v1` or `v2`.
        pub imds_version: String = ["imds_version"] Some("v2"),
        /// Add the availability zone (`az`).
        pub az: bool = ["az"] Some("true"),
        /// Add the instance ID (`ec2_instance_id`).
        pub ec2_instance_id: bool = ["ec2_instance_id"] Some("true"),
        /// Add the instance type (`ec2_instance_type`).
        pub ec2_instance_type: bool = ["ec2_instance_type"] Some("false"),
        /// Add the private IPv4 address (`private_ip`).
        pub private_ip: bool = ["private_ip"] Some("false"),
        /// Add the VPC ID (`vpc_id`).
        pub vpc_id: bool = ["vpc_id"] Some("false"),
        /// Add the AMI ID (`ami_id`).
        pub ami_id: bool = ["ami_id"] Some("false"),
        /// Add the account ID (`account_id`).
        pub account_id: bool = ["account_id"] Some("false"),
        /// Add the instance's hostname (`hostname`).
        pub hostname: bool = ["hostname"] Some("false"),
        /// Add the instance's tags, each under its own key.
        pub tags_enabled: bool = ["tags_enabled"] Some("false"),
        /// Comma-separated tag keys to add (the others are not).
        pub tags_include: Option<String> = ["tags_include"] None,
        /// Comma-separated tag keys not to add.
        pub tags_exclude: Option<String> = ["tags_exclude"] None,
        /// Least seconds between two attempts to fetch an item that failed.
        pub retry_interval_s: u64 = ["retry_interval_s"] Some("300"),
        /// Also add `aws_entity_ec2_instance_id` and `aws_entity_account_id`.
        pub enable_entity: bool = ["enable_entity"] Some("false"),
    }
}

/// The registry entry.
pub static PLUGIN: FilterPlugin = FilterPlugin {
    name: "aws",
    aliases: &[],
    description: "Add AWS Metadata",
    options: AwsOptions::OPTIONS,
    default_workers: 0,
    build,
};

/// The AWS SDKs' variable for the IMDS address, honoured here too.
pub const ENDPOINT_VAR: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// The IMDS address when the variable is not set.
const DEFAULT_ENDPOINT: &str = "169.254.169.254:80";
/// Fluent Bit's IMDS timeout (connect, and each answer).
const TIMEOUT: Duration = Duration::from_secs(1);
/// How long the first chunk waits for the first fetch.
pub const FIRST_WAIT: Duration = Duration::from_secs(3);
/// The largest IMDS answer read.
const MAX_BODY: usize = 1 << 20;
/// The token lifetime asked for (Fluent Bit's: 6 hours, the most IMDS allows).
const TOKEN_TTL: &str = "21600";

/// One item of metadata, in the order Fluent Bit fetches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    InstanceId,
    AccountId,
    InstanceType,
    PrivateIp,
    VpcId,
    AmiId,
    Hostname,
    Az,
    Tags,
}

const ITEMS: [Item; 9] = [
    Item::InstanceId,
    Item::AccountId,
    Item::InstanceType,
    Item::PrivateIp,
    Item::VpcId,
    Item::AmiId,
    Item::Hostname,
    Item::Az,
    Item::Tags,
];

impl Item {
    fn index(self) -> usize {
        self as usize
    }

    /// The record key (tags have one per tag).
    fn key(self) -> &'static str {
        match self {
            Item::InstanceId => "ec2_instance_id",
            Item::AccountId => "account_id",
            Item::InstanceType => "ec2_instance_type",
            Item::PrivateIp => "private_ip",
            Item::VpcId => "vpc_id",
            Item::AmiId => "ami_id",
            Item::Hostname => "hostname",
            Item::Az => "az",
            Item::Tags => "tags",
        }
    }

    /// The single path of an item read with one GET.
    fn path(self) -> Option<&'static str> {
        Some(match self {
            Item::InstanceId => "/latest/meta-data/instance-id/",
            Item::AccountId => "/latest/dynamic/instance-identity/document/",
            Item::InstanceType => "/latest/meta-data/instance-type/",
            Item::PrivateIp => "/latest/meta-data/local-ipv4/",
            Item::AmiId => "/latest/meta-data/ami-id/",
            Item::Hostname => "/latest/meta-data/hostname/",
            Item::Az => "/latest/meta-data/placement/availability-zone/",
            Item::VpcId | Item::Tags => return None,
        })
    }
}

/// The order the keys are appended in (Fluent Bit's), tags aside.
const KEY_ORDER: [Item; 8] = [
    Item::Az,
    Item::InstanceId,
    Item::InstanceType,
    Item::PrivateIp,
    Item::VpcId,
    Item::AmiId,
    Item::AccountId,
    Item::Hostname,
];

/// Which tags go into records.
#[derive(Clone, Debug)]
enum TagSelect {
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl TagSelect {
    fn keeps(&self, key: &str) -> bool {
        match self {
            TagSelect::All => true,
            TagSelect::Include(l) => l.iter().any(|k| k == key),
            TagSelect::Exclude(l) => !l.iter().any(|k| k == key),
        }
    }
}

/// What was fetched so far, and when each item was last tried.
#[derive(Debug, Default)]
struct Fetched {
    values: [Option<String>; 9],
    tags: Option<Vec<(String, String)>>,
    tried: [Option<Instant>; 9],
    /// Bumped at every change, so the filter rebuilds its keys only then.
    generation: u64,
}

impl Fetched {
    fn done(&self, item: Item) -> bool {
        match item {
            Item::Tags => self.tags.is_some(),
            other => self.values[other.index()].is_some(),
        }
    }
}

/// Why an IMDS request failed.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    #[error("cannot reach the instance metadata service at {0}: {1}")]
    Unreachable(String, String),
    #[error("the instance metadata service answered {0} to {1}")]
    Status(u16, String),
    #[error("the instance metadata service gave no IMDSv2 token: {0}")]
    Token(String),
}

impl ImdsError {
    fn is_not_found(&self) -> bool {
        matches!(self, ImdsError::Status(404, _))
    }
}

/// A client of the instance metadata service.
#[derive(Debug)]
pub struct Imds {
    /// `host:port`.
    addr: String,
    v2: bool,
    token: Mutex<Option<String>>,
}

/// An answer: status and body.
struct Answer {
    status: u16,
    body: Bytes,
}

impl Imds {
    pub fn new(addr: String, v2: bool) -> Self {
        Imds {
            addr,
            v2,
            token: Mutex::new(None),
        }
    }

    async fn request(
        &self,
        method: http::Method,
        path: &str,
        header: Option<(&'static str, &str)>,
    ) -> Result<Answer, ImdsError> {
        let unreachable = |e: String| ImdsError::Unreachable(self.addr.clone(), e);
        let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&self.addr))
            .await
            .map_err(|_| unreachable("connect timed out".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let host = self.addr.strip_suffix(":80").unwrap_or(&self.addr);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, host);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| unreachable(e.to_string()))?;
        let answer = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        let out = tokio::time::timeout(TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err(unreachable("no answer within 1s".into())));
        driver.abort();
        out
    }

    /// A new IMDSv2 token.
    async fn refresh_token(&self) -> Result<String, ImdsError> {
        let a = self
            .request(
                http::Method::PUT,
                "/latest/api/token",
                Some(("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)),
            )
            .await?;
        if a.status != 200 || a.body.is_empty() {
            return Err(ImdsError::Token(format!(
                "PUT /latest/api/token answered {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            )));
        }
        let token = String::from_utf8_lossy(&a.body).trim().to_string();
        if let Ok(mut t) = self.token.lock() {
            *t = Some(token.clone());
        }
        Ok(token)
    }

    /// GETs one path: IMDSv2 with the token (a new one on 401), IMDSv1 without.
    pub async fn get(&self, path: &str) -> Result<String, ImdsError> {
        let mut a = if self.v2 {
            let held = self.token.lock().ok().and_then(|t| t.clone());
            let token = match held {
                Some(t) => t,
                None => self.refresh_token().await?,
            };
            let a = self
                .request(
                    http::Method::GET,
                    path,
                    Some(("X-aws-ec2-metadata-token", &token)),
                )
                .await?;
            if a.status == 401 {
                let token = self.refresh_token().await?;
                self.request(
                    http::Method::GET,
                    path,
                    Some(("X-aws-ec2-metadata-token", &token)),
                )
                .await?
            } else {
                a
            }
        } else {
            self.request(http::Method::GET, path, None).await?
        };
        if a.status != 200 {
            return Err(ImdsError::Status(a.status, path.to_string()));
        }
        let body = std::mem::take(&mut a.body);
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The IMDS address: `AWS_EC2_METADATA_SERVICE_ENDPOINT` (`http://host:port`) when set.
pub fn endpoint_from(var: Option<&str>) -> Result<String, String> {
    let Some(v) = var.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_ENDPOINT.to_string());
    };
    let Some(rest) = v.strip_prefix("http://") else {
        return Err(format!(
            "{ENDPOINT_VAR}={v}: only an http:// endpoint is supported"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("{ENDPOINT_VAR}={v}: no host"));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

fn build(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
) -> Result<Box<dyn Filter>, ConfigError> {
    let var = std::env::var(ENDPOINT_VAR).ok();
    let endpoint = endpoint_from(var.as_deref()).map_err(|r| ConfigError::at(&section.span, r))?;
    build_with(ctx, section, entries, endpoint)
}

/// Builds the filter against the IMDS at `endpoint` (`host:port`).
pub(crate) fn build_with(
    ctx: &BuildContext,
    section: &Section,
    entries: &[&Entry],
    endpoint: String,
) -> Result<Box<dyn Filter>, ConfigError> {
    let o = AwsOptions::from_entries(&section.span, entries, &[])?;
    let span_of = |name: &str| {
        entries
            .iter()
            .rev()
            .find(|e| e.key.eq_ignore_ascii_case(name))
            .map_or(section.span.clone(), |e| e.span.clone())
    };
    let v2 = match o.imds_version.trim().to_ascii_lowercase().as_str() {
        "v2" => true,
        "v1" => false,
        other => {
            return Err(ConfigError::key(
                &span_of("imds_version"),
                "imds_version",
                format!("invalid value '{other}': valid values are 'v1' and 'v2'"),
            ))
        }
    };
    let list = |v: &Option<String>| -> Option<Vec<String>> {
        v.as_deref().filter(|s| !s.is_empty()).map(|s| {
            s.split(',')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
    };
    let tags = match (list(&o.tags_include), list(&o.tags_exclude)) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                &span_of("tags_exclude"),
                "tags_exclude",
                "tags_include and tags_exclude cannot both be set",
            ))
        }
        (Some(i), None) => TagSelect::Include(i),
        (None, Some(e)) => TagSelect::Exclude(e),
        (None, None) => TagSelect::All,
    };
    let mut shown = [false; 9];
    for (item, on) in [
        (Item::InstanceId, o.ec2_instance_id),
        (Item::AccountId, o.account_id),
        (Item::InstanceType, o.ec2_instance_type),
        (Item::PrivateIp, o.private_ip),
        (Item::VpcId, o.vpc_id),
        (Item::AmiId, o.ami_id),
        (Item::Hostname, o.hostname),
        (Item::Az, o.az),
        (Item::Tags, o.tags_enabled),
    ] {
        shown[item.index()] = on;
    }
    // What is fetched: what is shown, and the two items entity keys need.
    let mut wanted: Vec<Item> = ITEMS.iter().copied().filter(|i| shown[i.index()]).collect();
    if o.enable_entity {
        for i in [Item::InstanceId, Item::AccountId] {
            if !wanted.contains(&i) {
                wanted.push(i);
            }
        }
        wanted.sort_by_key(|i| i.index());
    }
    Ok(Box::new(AwsFilter {
        imds: Arc::new(Imds::new(endpoint, v2)),
        fetched: Arc::new(Mutex::new(Fetched::default())),
        wanted: Arc::from(wanted),
        shown,
        tags: Arc::new(tags),
        entity: o.enable_entity,
        retry: Duration::from_secs(o.retry_interval_s),
        task: None,
        waited: false,
        keys: Vec::new(),
        generation: u64::MAX,
        instance: ctx.instance.clone(),
    }))
}

/// The filter.
pub struct AwsFilter {
    imds: Arc<Imds>,
    fetched: Arc<Mutex<Fetched>>,
    wanted: Arc<[Item]>,
    shown: [bool; 9],
    tags: Arc<TagSelect>,
    entity: bool,
    retry: Duration,
    task: Option<JoinHandle<()>>,
    /// Whether the first chunk has waited for the first fetch.
    waited: bool,
    /// The pairs appended to every record, from `fetched` at `generation`.
    keys: Vec<(Str, Value)>,
    generation: u64,
    instance: String,
}

impl AwsFilter {
    /// Starts a fetch when something wanted is missing, is due, and none is running.
    fn maybe_fetch(&mut self) {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let now = Instant::now();
        let due: Vec<Item> = match self.fetched.lock() {
            Ok(f) => self
                .wanted
                .iter()
                .copied()
                .filter(|i| !f.done(*i))
                .filter(|i| f.tried[i.index()].is_none_or(|t| now.duration_since(t) >= self.retry))
                .collect(),
            Err(_) => return,
        };
        if due.is_empty() {
            return;
        }
        self.task = Some(tokio::spawn(fetch(
            Arc::clone(&self.imds),
            Arc::clone(&self.fetched),
            due,
            Arc::clone(&self.tags),
            self.instance.clone(),
        )));
    }

    /// Rebuilds the appended pairs when the fetched metadata changed.
    fn refresh_keys(&mut self) {
        let Ok(f) = self.fetched.lock() else { return };
        if f.generation == self.generation {
            return;
        }
        self.generation = f.generation;
        self.keys.clear();
        for item in KEY_ORDER {
            if self.shown[item.index()] {
                if let Some(v) = &f.values[item.index()] {
                    self.keys
                        .push((Str::from(item.key()), Value::from(v.as_str())));
                }
            }
        }
        if self.shown[Item::Tags.index()] {
            for (k, v) in f.tags.iter().flatten() {
                self.keys
                    .push((Str::from(k.as_str()), Value::from(v.as_str())));
            }
        }
        if self.entity {
            if let (Some(id), Some(account)) = (
                &f.values[Item::InstanceId.index()],
                &f.values[Item::AccountId.index()],
            ) {
                self.keys.push((
                    Str::from("aws_entity_ec2_instance_id"),
                    Value::from(id.as_str()),
                ));
                self.keys.push((
                    Str::from("aws_entity_account_id"),
                    Value::from(account.as_str()),
                ));
            }
        }
    }
}

/// Fetches the `due` items in order; stops at a connection failure or a refused token (the
/// rest would fail the same way), marking them tried.
async fn fetch(
    imds: Arc<Imds>,
    fetched: Arc<Mutex<Fetched>>,
    due: Vec<Item>,
    tags: Arc<TagSelect>,
    instance: String,
) {
    let mark = |items: &[Item]| {
        if let Ok(mut f) = fetched.lock() {
            let now = Instant::now();
            for i in items {
                f.tried[i.index()] = Some(now);
            }
        }
    };
    for (n, item) in due.iter().copied().enumerate() {
        mark(&[item]);
        let result = fetch_item(&imds, item, &tags).await;
        match result {
            Ok(Fetch::Value(v)) => {
                if let Ok(mut f) = fetched.lock() {
                    f.values[item.index()] = Some(v);
                    f.generation += 1;
                }
            }
            Ok(Fetch::Tags(t)) => {
                if let Ok(mut f) = fetched.lock() {
                    f.tags = Some(t);
                    f.generation += 1;
                }
            }
            Err(e) => {
                tracing::error!(filter = %instance, item = item.key(), "failed to get EC2 metadata: {e}");
                if matches!(e, ImdsError::Unreachable(..) | ImdsError::Token(..)) {
                    mark(&due[n..]);
                    return;
                }
            }
        }
    }
}

enum Fetch {
    Value(String),
    Tags(Vec<(String, String)>),
}

async fn fetch_item(imds: &Imds, item: Item, tags: &TagSelect) -> Result<Fetch, ImdsError> {
    match item {
        Item::VpcId => {
            let mac = imds.get("/latest/meta-data/mac/").await?;
            let path = format!(
                "/latest/meta-data/network/interfaces/macs/{}/vpc-id/",
                encode_segment(mac.trim())
            );
            Ok(Fetch::Value(imds.get(&path).await?))
        }
        Item::AccountId => {
            let doc = imds.get(Item::AccountId.path().unwrap_or_default()).await?;
            let id = serde_json::from_str::<serde_json::Value>(&doc)
                .ok()
                .and_then(|d| {
                    d.get("accountId")
                        .and_then(|a| a.as_str())
                        .map(str::to_string)
                });
            Ok(Fetch::Value(id.unwrap_or_else(|| {
                tracing::error!("accountId is undefined in the EC2 instance identity document");
                "NULL".to_string()
            })))
        }
        Item::Tags => {
            let list = match imds.get("/latest/meta-data/tags/instance").await {
                Ok(l) => l,
                Err(e) if e.is_not_found() => {
                    tracing::warn!(
                        "EC2 instance metadata tag request returned 404: the instance likely has \
                         no tags, or tags are not enabled in its metadata options"
                    );
                    return Ok(Fetch::Tags(Vec::new()));
                }
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for key in list.split('\n').map(|k| k.trim_end_matches('\r')) {
                if key.is_empty() || !tags.keeps(key) {
                    continue;
                }
                let path = format!("/latest/meta-data/tags/instance/{}", encode_segment(key));
                let value = imds.get(&path).await?;
                out.push((key.to_string(), value));
            }
            Ok(Fetch::Tags(out))
        }
        other => Ok(Fetch::Value(
            imds.get(other.path().unwrap_or_default()).await?,
        )),
    }
}

/// Percent-encodes what a path segment cannot hold as it is (tag keys may hold spaces; a MAC
/// address's colons stay).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Filter for AwsFilter {
    async fn filter(&mut self, _tag: &str, records: &mut Vec<Record>) {
        if self.generation == u64::MAX || !self.all_done() {
            self.maybe_fetch();
            if !self.waited {
                self.waited = true;
                if let Some(task) = self.task.as_mut() {
                    let _ = tokio::time::timeout(FIRST_WAIT, task).await;
                }
            }
        }
        self.refresh_keys();
        if self.keys.is_empty() {
            return;
        }
        for r in records.iter_mut() {
            for (k, v) in &self.keys {
                r.body.push(k.clone(), v.clone());
            }
        }
    }
}

impl AwsFilter {
    fn all_done(&self) -> bool {
        self.fetched
            .lock()
            .map(|f| self.wanted.iter().all(|i| f.done(*i)))
            .unwrap_or(true)
    }
}

impl Drop for AwsFilter {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use logferry_core::config::{Config, Entry, Section, SectionKind};
    use logferry_core::Value;
    use logferry_engine::{BuildContext, Filter};
    use tokio::net::TcpListener;

    use super::{build_with, endpoint_from, Imds, ImdsError};
    use crate::testing::{records, span};

    /// The local IMDS's state: what it serves, the tokens it issued, and every request.
    #[derive(Default)]
    struct ImdsState {
        data: HashMap<String, (u16, String)>,
        tokens: Vec<String>,
        /// Answer GETs without a token (IMDSv1); IMDSv2-only instances answer 401.
        v1_allowed: bool,
        /// Answer token requests with 403 (IMDSv2 turned off, or a proxy in the way).
        refuse_tokens: bool,
        /// (method, path, whether a token was sent, status).
        log: Vec<(String, String, bool, u16)>,
    }

    type Shared = Arc<Mutex<ImdsState>>;

    /// An instance's metadata, at the paths Fluent Bit requests.
    fn instance() -> ImdsState {
        let mut data = HashMap::new();
        let mut put = |p: &str, v: &str| {
            data.insert(p.to_string(), (200, v.to_string()));
        };
        put("/latest/meta-data/instance-id/", "i-0c862eca9038f5aae");
        put(
            "/latest/meta-data/placement/availability-zone/",
            "us-west-2c",
        );
        put("/latest/meta-data/instance-type/", "t2.medium");
        put("/latest/meta-data/local-ipv4/", "172.31.6.59");
        put("/latest/meta-data/mac/", "0e:49:61:0f:c3:11");
        put(
            "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id/",
            "vpc-7ea11c06",
        );
        put("/latest/meta-data/ami-id/", "ami-0841edc20334f9287");
        put(
            "/latest/dynamic/instance-identity/document/",
            r#"{"accountId":"111122223333","region":"us-west-2","instanceId":"i-0c862eca9038f5aae"}"#,
        );
        put(
            "/latest/meta-data/hostname/",
            "ip-172-31-6-59.us-west-2.compute.internal",
        );
        put(
            "/latest/meta-data/tags/instance",
            "Name\nproject\ndepartment\nteam name",
        );
        put(
            "/latest/meta-data/tags/instance/Name",
            "fluent-bit-docs-example",
        );
        put("/latest/meta-data/tags/instance/project", "fluentbit");
        put("/latest/meta-data/tags/instance/department", "it");
        put("/latest/meta-data/tags/instance/team name", "logs");
        ImdsState {
            data,
            ..ImdsState::default()
        }
    }

    /// Percent-decodes a request path (tag keys with spaces arrive encoded).
    fn decode(path: &str) -> String {
        let b = path.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b[i], hex) {
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// IMDS as AWS documents it: `PUT /latest/api/token` with a TTL header of 1..=21600 gives
    /// a token; a GET without a valid token gets 401 (unless IMDSv1 is allowed).
    fn answer(state: &Shared, req: &http::Request<hyper::body::Incoming>) -> (u16, String) {
        let mut s = state.lock().unwrap();
        let path = decode(req.uri().path());
        let token = req
            .headers()
            .get("x-aws-ec2-metadata-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (status, body) = if req.method() == http::Method::PUT {
            let ttl = req
                .headers()
                .get("x-aws-ec2-metadata-token-ttl-seconds")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            match (path.as_str(), ttl) {
                ("/latest/api/token", _) if s.refuse_tokens => (403, "Forbidden".to_string()),
                ("/latest/api/token", Some(1..=21600)) => {
                    let t = format!("token-{}", s.tokens.len() + 1);
                    s.tokens.push(t.clone());
                    (200, t)
                }
                ("/latest/api/token", _) => (400, "bad ttl".to_string()),
                _ => (405, String::new()),
            }
        } else {
            let valid = match &token {
                Some(t) => s.tokens.contains(t),
                None => s.v1_allowed,
            };
            if !valid {
                (401, String::new())
            } else {
                s.data
                    .get(&path)
                    .cloned()
                    .unwrap_or((404, "Not Found".to_string()))
            }
        };
        s.log
            .push((req.method().to_string(), path, token.is_some(), status));
        (status, body)
    }

    /// Serves the local IMDS on `listener` until the test ends.
    fn serve(listener: TcpListener, state: Shared) {
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (status, body) = answer(&state, &req);
                        async move {
                            http::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }

    async fn start(state: ImdsState) -> (String, Shared) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Mutex::new(state));
        serve(listener, Arc::clone(&shared));
        (addr, shared)
    }

    fn build(endpoint: &str, entries: &[(&str, &str)]) -> Box<dyn Filter> {
        try_build(endpoint, entries).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_build(endpoint: &str, entries: &[(&str, &str)]) -> Result<Box<dyn Filter>, String> {
        let mut section = Section::new(SectionKind::Filter, span(1));
        for (i, (k, v)) in entries.iter().enumerate() {
            section.push(*k, *v, span(i as u32 + 2));
        }
        let ctx = BuildContext::standalone("aws.0", Config::default()).unwrap();
        let refs: Vec<&Entry> = section.entries.iter().collect();
        build_with(&ctx, &section, &refs, endpoint.to_string()).map_err(|e| e.to_string())
    }

    async fn run(f: &mut dyn Filter, input: &str) -> String {
        let mut recs = records(input);
        f.filter("app", &mut recs).await;
        let bodies: Vec<Value> = recs.into_iter().map(|r| Value::Map(r.body)).collect();
        serde_json::to_string(&bodies).unwrap()
    }

    fn gets(state: &Shared) -> usize {
        state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|l| l.0 == "GET")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn defaults_add_az_and_instance_id_through_imdsv2_once() {
        let (addr, state) = start(instance()).await;
        let mut f = build(&addr, &[]);
        assert_eq!(
            run(f.as_mut(), r#"[{"log":"a"},{"log":"b"}]"#).await,
            r#"[{"log":"a","az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"},{"log":"b","az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"}]"#
        );
        {
            let s = state.lock().unwrap();
            // A token first, then every GET with it.
            assert_eq!(s.log[0].0, "PUT");
            assert_eq!(s.log[0].1, "/latest/api/token");
            assert!(s.log[1..].iter().all(|l| l.0 == "GET" && l.2 && l.3 == 200));
            assert_eq!(s.log.len(), 3, "{:?}", s.log);
        }
        // Cached: later chunks ask nothing more.
        run(f.as_mut(), r#"{"log":"c"}"#).await;
        run(f.as_mut(), r#"{"log":"d"}"#).await;
        assert_eq!(state.lock().unwrap().log.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_local_imds_refuses_gets_without_a_token() {
        let (addr, _state) = start(instance()).await;
        let v1 = Imds::new(addr.clone(), false);
        match v1.get("/latest/meta-data/instance-id/").await {
            Err(ImdsError::Status(401, _)) => {}
            other => panic!("expected 401, got {other:?}"),
        }
        let v2 = Imds::new(addr, true);
        assert_eq!(
            v2.get("/latest/meta-data/instance-id/").await.unwrap(),
            "i-0c862eca9038f5aae"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_option_in_fluent_bits_key_order_with_tags() {
        let (addr, _state) = start(instance()).await;
        let mut f = build(
            &addr,
            &[
                ("hostname", "true"),
                ("account_id", "true"),
                ("ami_id", "true"),
                ("vpc_id", "true"),
                ("private_ip", "true"),
                ("ec2_instance_type", "true"),
                ("tags_enabled", "true"),
                ("enable_entity", "true"),
            ],
        );
        // As the docs' example record shows, then the tags, then the entity keys.
        assert_eq!(
            run(f.as_mut(), r#"{"message":"dummy"}"#).await,
            concat!(
                r#"[{"message":"dummy","az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae","#,
                r#""ec2_instance_type":"t2.medium","private_ip":"172.31.6.59","vpc_id":"vpc-7ea11c06","#,
                r#""ami_id":"ami-0841edc20334f9287","account_id":"111122223333","#,
                r#""hostname":"ip-172-31-6-59.us-west-2.compute.internal","#,
                r#""Name":"fluent-bit-docs-example","project":"fluentbit","department":"it","team name":"logs","#,
                r#""aws_entity_ec2_instance_id":"i-0c862eca9038f5aae","aws_entity_account_id":"111122223333"}]"#
            )
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tags_include_and_exclude_as_in_the_docs() {
        let (addr, state) = start(instance()).await;
        let mut f = build(
            &addr,
            &[
                ("tags_enabled", "true"),
                ("tags_include", "department,project"),
            ],
        );
        assert_eq!(
            run(f.as_mut(), r#"{"log":"fluentbit is awesome"}"#).await,
            r#"[{"log":"fluentbit is awesome","az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae","project":"fluentbit","department":"it"}]"#
        );
        // Only the included tags' values are read.
        assert!(!state
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.1.ends_with("/Name")));
        let mut f = build(
            &addr,
            &[
                ("tags_enabled", "true"),
                ("tags_exclude", "department"),
                ("az", "false"),
                ("ec2_instance_id", "off"),
            ],
        );
        assert_eq!(
            run(f.as_mut(), r#"{"log":"aws is awesome"}"#).await,
            r#"[{"log":"aws is awesome","Name":"fluent-bit-docs-example","project":"fluentbit","team name":"logs"}]"#
        );
        let e = try_build(&addr, &[("tags_include", "a"), ("tags_exclude", "b")])
            .err()
            .unwrap();
        assert!(e.starts_with("test.conf:3: tags_exclude:"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn imdsv1_asks_no_token() {
        let mut st = instance();
        st.v1_allowed = true;
        let (addr, state) = start(st).await;
        let mut f = build(&addr, &[("imds_version", "v1")]);
        assert_eq!(
            run(f.as_mut(), r#"{"a":1}"#).await,
            r#"[{"a":1,"az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"}]"#
        );
        let s = state.lock().unwrap();
        assert!(s.log.iter().all(|l| l.0 == "GET" && !l.2), "{:?}", s.log);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_expired_token_is_renewed_on_401() {
        let mut st = instance();
        st.data.insert(
            "/latest/meta-data/instance-type/".into(),
            (500, "try later".into()),
        );
        let (addr, state) = start(st).await;
        let mut f = build(
            &addr,
            &[("ec2_instance_type", "on"), ("retry_interval_s", "0")],
        );
        let first = run(f.as_mut(), r#"{"a":1}"#).await;
        assert_eq!(
            first,
            r#"[{"a":1,"az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"}]"#
        );
        {
            let mut s = state.lock().unwrap();
            s.tokens.clear(); // the token expired
            s.data.insert(
                "/latest/meta-data/instance-type/".into(),
                (200, "t2.medium".into()),
            );
            s.log.clear();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run(f.as_mut(), r#"{"a":1}"#).await;
            if out.contains("t2.medium") {
                break;
            }
            assert!(Instant::now() < deadline, "never fetched again: {out}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = state.lock().unwrap();
        let seen: Vec<(String, u16)> = s.log.iter().map(|l| (l.0.clone(), l.3)).collect();
        assert_eq!(
            seen,
            [
                ("GET".to_string(), 401),
                ("PUT".to_string(), 200),
                ("GET".to_string(), 200)
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_imds_is_unreachable_records_pass_and_it_is_retried_after_the_interval() {
        // A port nobody listens on (yet).
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let mut f = build(&addr, &[("retry_interval_s", "1")]);
        let started = Instant::now();
        assert_eq!(run(f.as_mut(), r#"{"a":1}"#).await, r#"[{"a":1}]"#);
        assert!(started.elapsed() < Duration::from_secs(3));
        let listener = TcpListener::bind(&addr).await.unwrap();
        let state = Arc::new(Mutex::new(instance()));
        serve(listener, Arc::clone(&state));
        // Within the interval nothing is asked.
        assert_eq!(run(f.as_mut(), r#"{"a":2}"#).await, r#"[{"a":2}]"#);
        assert_eq!(state.lock().unwrap().log.len(), 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run(f.as_mut(), r#"{"a":3}"#).await;
            if out.contains("us-west-2c") {
                assert_eq!(
                    out,
                    r#"[{"a":3,"az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"}]"#
                );
                break;
            }
            assert!(Instant::now() < deadline, "never retried");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_token_stops_the_attempt_and_records_pass() {
        let mut st = instance();
        st.refuse_tokens = true;
        let (addr, state) = start(st).await;
        let mut f = build(&addr, &[("ec2_instance_type", "on")]);
        assert_eq!(run(f.as_mut(), r#"{"a":1}"#).await, r#"[{"a":1}]"#);
        let s = state.lock().unwrap();
        let seen: Vec<(&str, u16)> = s.log.iter().map(|l| (l.0.as_str(), l.3)).collect();
        assert_eq!(seen, [("PUT", 403)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_tags_is_404_and_counts_as_fetched() {
        let mut st = instance();
        st.data.retain(|k, _| !k.contains("/tags/"));
        let (addr, state) = start(st).await;
        let mut f = build(
            &addr,
            &[("tags_enabled", "true"), ("retry_interval_s", "0")],
        );
        assert_eq!(
            run(f.as_mut(), r#"{"a":1}"#).await,
            r#"[{"a":1,"az":"us-west-2c","ec2_instance_id":"i-0c862eca9038f5aae"}]"#
        );
        let n = gets(&state);
        run(f.as_mut(), r#"{"a":1}"#).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        run(f.as_mut(), r#"{"a":1}"#).await;
        assert_eq!(gets(&state), n);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_identity_document_without_account_id_gives_null_text() {
        let mut st = instance();
        st.data.insert(
            "/latest/dynamic/instance-identity/document/".into(),
            (200, r#"{"region":"us-west-2"}"#.into()),
        );
        let (addr, _state) = start(st).await;
        let mut f = build(
            &addr,
            &[
                ("account_id", "true"),
                ("az", "false"),
                ("ec2_instance_id", "false"),
            ],
        );
        assert_eq!(
            run(f.as_mut(), r#"{"a":1}"#).await,
            r#"[{"a":1,"account_id":"NULL"}]"#
        );
    }

    #[test]
    fn config_errors_and_the_endpoint_variable() {
        let e = try_build("127.0.0.1:9", &[("imds_version", "v3")])
            .err()
            .unwrap();
        assert!(e.starts_with("test.conf:2: imds_version:"), "{e}");
        assert!(try_build("127.0.0.1:9", &[("imds_version", "V1")]).is_ok());
        assert_eq!(endpoint_from(None).unwrap(), "169.254.169.254:80");
        assert_eq!(endpoint_from(Some("")).unwrap(), "169.254.169.254:80");
        assert_eq!(
            endpoint_from(Some("http://127.0.0.1:1338")).unwrap(),
            "127.0.0.1:1338"
        );
        assert_eq!(endpoint_from(Some("http://imds/")).unwrap(), "imds:80");
        assert_eq!(
            endpoint_from(Some("http://[fd00:ec2::254]")).unwrap(),
            "[fd00:ec2::254]:80"
        );
        assert_eq!(
            endpoint_from(Some("http://[fd00:ec2::254]:8080/x")).unwrap(),
            "[fd00:ec2::254]:8080"
        );
        assert!(endpoint_from(Some("https://x")).is_err());
    }
}
