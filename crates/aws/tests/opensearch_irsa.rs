//! SigV4 with credentials from a web identity token file (EKS IRSA) through moto's STS, and
//! with `AWS_Role_ARN` assumed on top of them: the test server (which runs moto in the same
//! process) verifies each signature with botocore against the session keys STS issued. Its
//! own test binary, because it sets process-wide environment variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use logferry_aws::opensearch::{config, SearchOutput};
use logferry_aws::testing::BulkServer;
use logferry_core::{EventTime, Map, Record};
use logferry_engine::{FlushResult, Output};
use util::{batch, entries, metrics, section};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_with_web_identity_credentials_through_sts() {
    logferry_aws::testing::hermetic_env();
    let srv = BulkServer::start(&["--moto", "--sigv4", "us-west-2/es"]);
    let sts = format!("http://127.0.0.1:{}", srv.moto.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsb2dmZXJyeSJ9.c2ln").unwrap();
    std::env::remove_var("AWS_ACCESS_KEY_ID");
    std::env::remove_var("AWS_SECRET_ACCESS_KEY");
    std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
    std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa");
    std::env::set_var("AWS_ROLE_SESSION_NAME", "logferry-test");
    std::env::set_var("AWS_ENDPOINT_URL_STS", &sts);

    let mut m = Map::new();
    m.insert("log", "via irsa");
    let b = batch("app", vec![Record::new(EventTime::now(), m)]);
    let port = srv.port.to_string();
    let base = [
        ("port", port.as_str()),
        ("aws_auth", "on"),
        ("aws_region", "us-west-2"),
    ];
    let s = section(&base);
    let out = SearchOutput::new(
        config::settings_from_entries(&s, &entries(&s), false).unwrap(),
        metrics(),
        "opensearch.0".into(),
    )
    .unwrap();
    assert_eq!(out.flush(&b).await, FlushResult::Ok);
    // A second flush reuses the cached session (no second STS call needed to sign).
    assert_eq!(out.flush(&b).await, FlushResult::Ok);

    // AWS_Role_ARN + AWS_External_ID on top of the web identity session, at AWS_STS_Endpoint.
    let mut kv = base.to_vec();
    kv.extend([
        ("aws_role_arn", "arn:aws:iam::123456789012:role/writer"),
        ("aws_external_id", "ext-1"),
        ("aws_sts_endpoint", sts.as_str()),
    ]);
    let s = section(&kv);
    let assumed = SearchOutput::new(
        config::settings_from_entries(&s, &entries(&s), true).unwrap(),
        metrics(),
        "es.0".into(),
    )
    .unwrap();
    assert_eq!(assumed.flush(&b).await, FlushResult::Ok);

    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    let keys: Vec<&str> = reqs
        .iter()
        .map(|r| {
            assert_eq!(r["auth"], "sigv4", "{r:?}");
            r["access_key"].as_str().unwrap()
        })
        .collect();
    assert!(keys.iter().all(|k| k.starts_with("ASIA")), "{keys:?}");
    assert_eq!(keys[0], keys[1], "the session is cached");
    assert_ne!(
        keys[0], keys[2],
        "the assumed role signs with its own session"
    );
    assert_eq!(srv.docs().len(), 3);
}
