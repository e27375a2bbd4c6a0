//! `lua` and `aws` in a real `Pipeline` on a multi-threaded runtime: the Lua state moves with
//! the router task between threads; records are split and changed by the script, then get the
//! instance's metadata from a local IMDSv2 server that `AWS_EC2_METADATA_SERVICE_ENDPOINT`
//! points the `aws` filter at.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use logferry_core::config::{ConfigError, Entry, Section, SectionKind};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::testing::{config, section, sink, wait_until, COLLECT};
use logferry_engine::{
    BuildContext, CancellationToken, Input, InputContext, InputExit, InputPlugin, Pipeline,
    PluginError, Registry,
};

/// Emits three chunks: two records with an `x` array to split, one plain record each.
struct Chunks;

#[async_trait]
impl Input for Chunks {
    async fn run(self: Box<Self>, ctx: InputContext) -> Result<InputExit, PluginError> {
        for n in 0..3i64 {
            let mut split = Map::new();
            let parts = (0..2)
                .map(|i| {
                    let mut m = Map::new();
                    m.push("part", i as i64);
                    Value::Map(m)
                })
                .collect();
            split.push("x", Value::Array(parts));
            let mut plain = Map::new();
            plain.push("log", format!("line {n}"));
            let records = vec![
                Record::new(EventTime::now(), split),
                Record::new(EventTime::now(), plain),
            ];
            ctx.emitter.emit(ctx.tag.clone(), records, 0, None).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ctx.shutdown.cancelled().await;
        Ok(InputExit::Finished)
    }
}

fn build_chunks(
    _: &BuildContext,
    _: &Section,
    _: &[&Entry],
) -> Result<Box<dyn Input>, ConfigError> {
    Ok(Box::new(Chunks))
}

static CHUNKS: InputPlugin = InputPlugin {
    name: "chunks",
    aliases: &[],
    description: "test input",
    options: &[],
    default_workers: 1,
    build: build_chunks,
};

/// A local IMDS that only answers GETs carrying a token from `PUT /latest/api/token`.
async fn imds() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let served = Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&served);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let path = req.uri().path().to_string();
                    let token = req.headers().get("x-aws-ec2-metadata-token").cloned();
                    let (status, body) = match (req.method().as_str(), path.as_str()) {
                        ("PUT", "/latest/api/token") => (200, "tok"),
                        ("GET", _) if token.as_ref().is_none_or(|t| t != "tok") => (401, ""),
                        ("GET", "/latest/meta-data/instance-id/") => (200, "i-0abc"),
                        ("GET", "/latest/meta-data/placement/availability-zone/") => {
                            (200, "eu-west-1b")
                        }
                        _ => (404, ""),
                    };
                    log.lock()
                        .unwrap()
                        .push(format!("{} {path} {status}", req.method()));
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
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_splits_and_aws_adds_metadata_in_a_pipeline() {
    let (addr, log) = imds().await;
    // The only test in this binary: no other test reads the variable.
    std::env::set_var(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("http://{addr}"),
    );
    let registry = Registry {
        inputs: vec![&CHUNKS],
        filters: logferry_filters::PLUGINS.to_vec(),
        outputs: vec![&COLLECT],
        planned: &[],
    };
    let code = "function cb(tag, ts, record)\n\
                  if record.x ~= nil then return 2, ts, record.x end\n\
                  record.tag = tag\n\
                  return 1, ts, record\n\
                end";
    let c = config(vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "5")]),
        section(SectionKind::Input, &[("Name", "chunks"), ("Tag", "app")]),
        section(
            SectionKind::Filter,
            &[
                ("Name", "lua"),
                ("Match", "app"),
                ("call", "cb"),
                ("code", code),
            ],
        ),
        section(SectionKind::Filter, &[("Name", "aws"), ("Match", "app")]),
        section(
            SectionKind::Output,
            &[("Name", "collect"), ("Match", "app"), ("sink", "lua_aws")],
        ),
    ]);
    let p = Pipeline::build(c, &registry).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(p.run(stop.clone()));
    assert!(
        wait_until(Duration::from_secs(15), || sink("lua_aws")
            .lock()
            .unwrap()
            .len()
            == 9)
        .await,
        "got {:?}",
        sink("lua_aws").lock().unwrap()
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    let bodies: Vec<String> = sink("lua_aws")
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| serde_json::to_string(&Value::Map(r.body.clone())).unwrap())
        .collect();
    let meta = r#""az":"eu-west-1b","ec2_instance_id":"i-0abc""#;
    for n in 0..3 {
        let chunk = &bodies[n * 3..n * 3 + 3];
        assert_eq!(
            chunk,
            [
                format!(r#"{{"part":0,{meta}}}"#),
                format!(r#"{{"part":1,{meta}}}"#),
                format!(r#"{{"log":"line {n}","tag":"app",{meta}}}"#),
            ]
        );
    }
    // One token, one GET each: read once, then kept.
    assert_eq!(
        *log.lock().unwrap(),
        [
            "PUT /latest/api/token 200",
            "GET /latest/meta-data/instance-id/ 200",
            "GET /latest/meta-data/placement/availability-zone/ 200",
        ]
    );
}
