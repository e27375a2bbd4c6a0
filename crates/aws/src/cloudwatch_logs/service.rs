//! The CloudWatch Logs calls: PutLogEvents, and creating what is missing.
//!
//! Puts are optimistic: a stream is created only when a put answers `ResourceNotFoundException`
//! (CreateLogStream; if the group is missing too and `auto_create_group` is on, CreateLogGroup
//! with `log_group_class`, `new_log_group_tags` and then PutRetentionPolicy for
//! `log_retention_days`). `ResourceAlreadyExistsException` counts as success, so several agents
//! (or workers) racing to create the same stream are fine. Streams known to exist are cached,
//! so creation happens once per stream per process; a cached stream deleted behind our back is
//! created again on its next `ResourceNotFoundException`.
//!
//! `ResourceNotFoundException` is never given up on: a missing stream is created (unless
//! `auto_create_stream` is off), a missing group is created with `auto_create_group`; when
//! logferry may not create it, the failure is transient (an operator creates the group or
//! stream, and the records go then). This matches Fluent Bit 5.1, whose `cloudwatch_logs`
//! returns `FLB_RETRY` when the group is missing and `auto_create_group` is off.
//!
//! Puts to one stream are serialized ([`CloudWatchService::stream_lock`]): with several
//! `Workers`, events of one stream still arrive one call at a time, in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatchlogs::types::LogGroupClass;
use aws_sdk_cloudwatchlogs::Client;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::config::CloudWatchLogsSettings;
use super::request_builder::{put_body, Destination, Event};
use super::retry::Rejected;
use crate::client::LazyClient;
use crate::error::AwsError;
use crate::retry::{to_aws_error, with_auto_retry};

/// Stream locks kept before unused ones are pruned.
const LOCKS_PRUNE_AT: usize = 1024;
/// Request body buffers kept for reuse (one per concurrent call is enough).
const BODIES_KEPT: usize = 4;

/// Talks to CloudWatch Logs for one output instance.
pub struct CloudWatchService {
    client: LazyClient<Client>,
    settings: Arc<CloudWatchLogsSettings>,
    ready: Mutex<HashSet<Destination>>,
    groups: Mutex<HashSet<String>>,
    locks: Mutex<HashMap<Destination, Arc<tokio::sync::Mutex<()>>>>,
    bodies: Mutex<Vec<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

enum PutError {
    NotFound,
    Other(AwsError),
}

impl CloudWatchService {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: Arc<CloudWatchLogsSettings>) -> Self {
        CloudWatchService {
            client: LazyClient::new(settings.aws.clone()),
            settings,
            ready: Mutex::new(HashSet::new()),
            groups: Mutex::new(HashSet::new()),
            locks: Mutex::new(HashMap::new()),
            bodies: Mutex::new(Vec::new()),
        }
    }

    /// The lock that serializes puts to `dest`.
    pub fn stream_lock(&self, dest: &Destination) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.locks);
        if locks.len() >= LOCKS_PRUNE_AT {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(locks.entry(dest.clone()).or_default())
    }

    /// Whether `dest` is known to exist.
    pub fn is_ready(&self, dest: &Destination) -> bool {
        lock(&self.ready).contains(dest)
    }

    /// Sends one call's worth of sorted events to `dest` (their messages escaped in `text`,
    /// see [`Encoded`](super::request_builder::Encoded)), creating the stream (and group) when
    /// missing. Returns what the service refused individually.
    pub async fn put(
        &self,
        dest: &Destination,
        events: &[Event],
        text: &[u8],
    ) -> Result<Rejected, AwsError> {
        let mut body = lock(&self.bodies).pop().unwrap_or_default();
        body.clear();
        put_body(&mut body, dest, events, text);
        let body = Bytes::from(body);
        let res = self.put_creating(dest, events.len(), &body).await;
        // The request is gone: take the buffer back for the next call when nothing else holds it.
        if let Ok(b) = body.try_into_mut() {
            let mut pool = lock(&self.bodies);
            if pool.len() < BODIES_KEPT {
                pool.push(Vec::from(b));
            }
        }
        res
    }

    /// A put of `body`, creating the stream (and group) once when the first put says missing.
    async fn put_creating(
        &self,
        dest: &Destination,
        events: usize,
        body: &Bytes,
    ) -> Result<Rejected, AwsError> {
        match self.put_once(dest, events, body).await {
            Ok(r) => return Ok(r),
            Err(PutError::Other(e)) => return Err(e),
            Err(PutError::NotFound) => {}
        }
        lock(&self.ready).remove(dest);
        if !self.settings.auto_create_stream {
            return Err(AwsError::Transient(format!(
                "log stream {dest} does not exist and auto_create_stream is off; retried until it is created"
            )));
        }
        self.create_stream(dest).await?;
        match self.put_once(dest, events, body).await {
            Ok(r) => Ok(r),
            Err(PutError::Other(e)) => Err(e),
            Err(PutError::NotFound) => Err(AwsError::Transient(format!(
                "PutLogEvents: log stream {dest} not found right after it was created"
            ))),
        }
    }

    /// One PutLogEvents through the SDK (endpoint, credentials, signing, retries, errors), whose
    /// body is replaced by `body` before it is signed: the SDK's own serializer would escape
    /// every message a second time, which was a fifth of the output's CPU.
    async fn put_once(
        &self,
        dest: &Destination,
        events: usize,
        body: &Bytes,
    ) -> Result<Rejected, PutError> {
        let client = self.client.get().await;
        let header = self.settings.log_format_header.clone();
        let res = with_auto_retry(self.settings.aws.auto_retry_requests, || {
            let header = header.clone();
            let body = body.clone();
            client
                .put_log_events()
                .log_group_name(&dest.group)
                .log_stream_name(&dest.stream)
                .set_log_events(Some(Vec::new()))
                .customize()
                .mutate_request(move |req| {
                    req.headers_mut()
                        .insert("content-length", body.len().to_string());
                    *req.body_mut() = SdkBody::from(body.clone());
                    if let Some(h) = &header {
                        req.headers_mut().insert("x-amzn-logs-format", h.clone());
                    }
                })
                .send()
        })
        .await;
        match res {
            Ok(out) => {
                lock(&self.ready).insert(dest.clone());
                Ok(Rejected::from_info(out.rejected_log_events_info(), events))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Err(PutError::NotFound)
            }
            Err(e) => Err(PutError::Other(to_aws_error("PutLogEvents", &e))),
        }
    }

    /// Creates `dest`'s stream, and its group when missing and allowed.
    async fn create_stream(&self, dest: &Destination) -> Result<(), AwsError> {
        match self.create_stream_once(dest).await? {
            true => return Ok(()),
            false if !self.settings.auto_create_group => {
                return Err(AwsError::Transient(format!(
                    "log group {} does not exist and auto_create_group is off; retried until it is created",
                    dest.group
                )))
            }
            false => {}
        }
        self.create_group(&dest.group).await?;
        match self.create_stream_once(dest).await? {
            true => Ok(()),
            false => Err(AwsError::Transient(format!(
                "CreateLogStream: log group {} not found right after it was created",
                dest.group
            ))),
        }
    }

    /// `Ok(false)` when the group does not exist.
    async fn create_stream_once(&self, dest: &Destination) -> Result<bool, AwsError> {
        let client = self.client.get().await;
        let res = with_auto_retry(self.settings.aws.auto_retry_requests, || {
            client
                .create_log_stream()
                .log_group_name(&dest.group)
                .log_stream_name(&dest.stream)
                .send()
        })
        .await;
        match res {
            Ok(_) => {
                tracing::info!(message = "created log stream", group = %dest.group, stream = %dest.stream);
                Ok(true)
            }
            Err(e) => match e.as_service_error() {
                Some(s) if s.is_resource_already_exists_exception() => Ok(true),
                Some(s) if s.is_resource_not_found_exception() => {
                    lock(&self.groups).remove(&dest.group);
                    Ok(false)
                }
                _ => Err(to_aws_error("CreateLogStream", &e)),
            },
        }
    }

    async fn create_group(&self, group: &str) -> Result<(), AwsError> {
        if lock(&self.groups).contains(group) {
            return Ok(());
        }
        let client = self.client.get().await;
        let s = &self.settings;
        let tags: Option<HashMap<String, String>> =
            (!s.group_tags.is_empty()).then(|| s.group_tags.iter().cloned().collect());
        let res = with_auto_retry(s.aws.auto_retry_requests, || {
            client
                .create_log_group()
                .log_group_name(group)
                .set_log_group_class(s.group_class.as_deref().map(LogGroupClass::from))
                .set_tags(tags.clone())
                .send()
        })
        .await;
        match res {
            Ok(_) => {
                tracing::info!(message = "created log group", group);
                if let Some(days) = s.retention_days {
                    let r = client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(days)
                        .send()
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(
                            message = "could not set the retention of a new log group",
                            group,
                            days,
                            error = %crate::retry::describe("PutRetentionPolicy", &e)
                        );
                    }
                }
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) => {}
            Err(e) => return Err(to_aws_error("CreateLogGroup", &e)),
        }
        lock(&self.groups).insert(group.to_string());
        Ok(())
    }
}
