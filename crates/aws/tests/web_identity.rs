//! Credentials from a web identity token file (EKS IRSA: `AWS_WEB_IDENTITY_TOKEN_FILE` +
//! `AWS_ROLE_ARN`) through moto's STS, with no static keys in the environment. Its own test
//! binary, because it sets process-wide environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::time::Duration;

use logferry_aws::cloudwatch_logs::{config, CloudWatchLogsOutput};
use logferry_core::EventTime;
use logferry_engine::{FlushResult, Output};
use util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_token_file_credentials_through_sts() {
    let moto = Moto::start();
    let proxy = Proxy::start(moto.port, None).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2dmZXJyeSJ9.c2ln").unwrap();
    // The only credentials source: the token file and role (moto.start() set dummy keys).
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa");
    std::env::set_var("AWS_ROLE_SESSION_NAME", "logferry-test");
    std::env::set_var("AWS_ENDPOINT_URL_STS", proxy.endpoint());

    let group = unique("irsa");
    let s = section(&[
        ("region", REGION),
        ("log_group_name", &group),
        ("log_stream_name", "s"),
        ("auto_create_group", "true"),
        ("endpoint", &proxy.endpoint()),
    ]);
    let settings = config::settings_from_entries(&s, &entries(&s)).unwrap();
    let out = CloudWatchLogsOutput::new(settings, metrics(), "cloudwatch_logs.0".into());
    let t = EventTime(EventTime::now().0 - Duration::from_secs(1).as_nanos() as i64);
    let b = batch("t", vec![record(t, "via irsa")]);
    assert_eq!(out.flush(&b).await, FlushResult::Ok);

    let sts = proxy.calls("AssumeRoleWithWebIdentity");
    assert_eq!(
        sts.len(),
        1,
        "{:?}",
        proxy.seen().iter().map(Seen::operation).collect::<Vec<_>>()
    );
    let form = String::from_utf8_lossy(&sts[0].body).to_string();
    assert!(
        form.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Firsa"),
        "{form}"
    );
    let put = proxy.calls("PutLogEvents").pop().unwrap();
    let key = put.access_key().unwrap();
    assert!(
        key.starts_with("ASIA"),
        "signed with the web identity session's key, got {key}"
    );
    let events = read_events(&logs_client(&moto.endpoint()), &group, "s").await;
    assert_eq!(events.len(), 1);
}
