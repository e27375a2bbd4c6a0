//! The HTTP server over real TCP on 127.0.0.1 (port 0): Prometheus scrapes parsed with a
//! Prometheus text parser, the JSON answers' shapes, health going unhealthy and back, the reload
//! endpoint's hand-off, 404s, and stopping. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_engine::metrics::{Metrics, PluginMetrics};
use logferry_engine::CancellationToken;
use logferry_http::{HttpOptions, HttpServer, ReloadRequest};
use serde_json::{json, Value};
use tokio::sync::mpsc;

mod common;
use common::{get, request, scrape};

const WAIT: Duration = common::WAIT;

/// A pipeline's counters: inputs dummy.0 and tail.1, filter grep.0, outputs stdout.0 and es.1.
fn pipeline() -> Arc<Metrics> {
    let m = Arc::new(Metrics::default());
    for n in ["dummy.0", "tail.1"] {
        m.inputs.lock().expect("lock").push(PluginMetrics::new(n));
    }
    m.filters
        .lock()
        .expect("lock")
        .push(PluginMetrics::new("grep.0"));
    for n in ["stdout.0", "es.1"] {
        m.outputs.lock().expect("lock").push(PluginMetrics::new(n));
    }
    m
}

fn input(m: &Metrics, i: usize) -> Arc<PluginMetrics> {
    Arc::clone(&m.inputs.lock().expect("lock")[i])
}

fn filter(m: &Metrics, i: usize) -> Arc<PluginMetrics> {
    Arc::clone(&m.filters.lock().expect("lock")[i])
}

fn output(m: &Metrics, i: usize) -> Arc<PluginMetrics> {
    Arc::clone(&m.outputs.lock().expect("lock")[i])
}

fn set(c: &AtomicU64, v: u64) {
    c.store(v, Ordering::Relaxed);
}

fn options() -> HttpOptions {
    HttpOptions {
        listen: "127.0.0.1".into(),
        port: 0,
        hostname: "test-host".into(),
        ..HttpOptions::default()
    }
}

struct Running {
    server: HttpServer,
    reloads: mpsc::Receiver<ReloadRequest>,
    stop: CancellationToken,
    addr: SocketAddr,
}

async fn start(opts: HttpOptions, metrics: &Arc<Metrics>) -> Running {
    let stop = CancellationToken::new();
    let (server, reloads) = tokio::time::timeout(
        WAIT,
        HttpServer::start(opts, Arc::clone(metrics), stop.clone()),
    )
    .await
    .expect("started in time")
    .expect("started");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    Running {
        server,
        reloads,
        stop,
        addr,
    }
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.server.stopped())
            .await
            .expect("stopped in time");
    }
}

#[tokio::test]
async fn prometheus_counters_follow_the_atomics() {
    let m = pipeline();
    let r = start(options(), &m).await;
    let (dummy, tail, grep, stdout, es) = (
        input(&m, 0),
        input(&m, 1),
        filter(&m, 0),
        output(&m, 0),
        output(&m, 1),
    );
    set(&dummy.records, 10);
    set(&dummy.bytes, 1000);
    set(&dummy.paused, 2);
    set(&tail.records, 7);
    set(&grep.records, 17);
    set(&grep.dropped_records, 3);
    set(&grep.retried_records, 1);
    set(&stdout.records, 15);
    set(&stdout.bytes, 1500);
    set(&es.errors, 4);
    set(&es.retries, 5);
    set(&es.retries_failed, 6);
    set(&es.dropped_records, 8);
    set(&es.retried_records, 9);

    for path in ["/api/v1/metrics/prometheus", "/api/v2/metrics/prometheus"] {
        let s = scrape(r.addr, path).await;
        assert_eq!(s.counter("fluentbit_input_records_total", "dummy.0"), 10.0);
        assert_eq!(s.counter("fluentbit_input_bytes_total", "dummy.0"), 1000.0);
        assert_eq!(s.counter("fluentbit_input_records_total", "tail.1"), 7.0);
        assert_eq!(s.counter("fluentbit_filter_records_total", "grep.0"), 17.0);
        assert_eq!(
            s.counter("fluentbit_filter_drop_records_total", "grep.0"),
            3.0
        );
        assert_eq!(
            s.counter("fluentbit_filter_add_records_total", "grep.0"),
            1.0
        );
        assert_eq!(
            s.counter("fluentbit_output_proc_records_total", "stdout.0"),
            15.0
        );
        assert_eq!(
            s.counter("fluentbit_output_proc_bytes_total", "stdout.0"),
            1500.0
        );
        assert_eq!(s.counter("fluentbit_output_errors_total", "es.1"), 4.0);
        assert_eq!(s.counter("fluentbit_output_retries_total", "es.1"), 5.0);
        assert_eq!(
            s.counter("fluentbit_output_retries_failed_total", "es.1"),
            6.0
        );
        assert_eq!(
            s.counter("fluentbit_output_dropped_records_total", "es.1"),
            8.0
        );
        assert_eq!(
            s.counter("fluentbit_output_retried_records_total", "es.1"),
            9.0
        );
        assert_eq!(s.counter("fluentbit_output_errors_total", "stdout.0"), 0.0);

        let (up, _) = s.plain_counter("fluentbit_uptime");
        assert!(up < 60.0);
        if path.contains("/v1/") {
            // Fluent Bit's v1 shape: no hostname, build info {version, edition} = 1, and the
            // unprefixed start time.
            let (one, labels) = s.gauge("fluentbit_build_info");
            assert_eq!(one, 1.0);
            assert_eq!(labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
            assert_eq!(labels.get("edition"), Some("logferry"));
            assert!(s.gauge("process_start_time_seconds").0 > 1.6e9);
            assert!(!s.has("logferry_input_paused_total"));
            continue;
        }
        assert_eq!(s.counter("logferry_input_paused_total", "dummy.0"), 2.0);
        let (start, labels) = s.gauge("fluentbit_build_info");
        assert!(start > 1.6e9, "start time as value: {start}");
        assert_eq!(labels.get("hostname"), Some("test-host"));
        assert_eq!(labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(labels.get("os"), Some("linux"));
        let (started, _) = s.gauge("fluentbit_process_start_time_seconds");
        assert_eq!(started, start);
        // Counters in Fluent Bit's v2, with the hostname label.
        let (_, labels) = s.plain_counter("fluentbit_uptime");
        assert_eq!(labels.get("hostname"), Some("test-host"));
        assert_eq!(s.plain_counter("fluentbit_hot_reloaded_times").0, 0.0);
        assert!(!s.has("process_start_time_seconds"));
    }

    // Counters are read at scrape time.
    PluginMetrics::add(&dummy.records, 5);
    PluginMetrics::add(&stdout.records, 5);
    PluginMetrics::add(&es.errors, 1);
    let s = scrape(r.addr, "/api/v2/metrics/prometheus").await;
    assert_eq!(s.counter("fluentbit_input_records_total", "dummy.0"), 15.0);
    assert_eq!(
        s.counter("fluentbit_output_proc_records_total", "stdout.0"),
        20.0
    );
    assert_eq!(s.counter("fluentbit_output_errors_total", "es.1"), 5.0);

    // A scraper asking for OpenMetrics gets it.
    let om = request(
        r.addr,
        "GET",
        "/api/v2/metrics/prometheus",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(om.status, 200);
    assert!(om.headers["content-type"].starts_with("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));
    assert!(om
        .body
        .contains("# TYPE fluentbit_input_records counter\nfluentbit_input_records_total{name=\"dummy.0\"} 15\n"));
    r.shutdown().await;
}

#[tokio::test]
async fn json_endpoints_have_fluent_bits_shapes() {
    let m = pipeline();
    set(&input(&m, 0).records, 3);
    set(&input(&m, 0).bytes, 300);
    set(&filter(&m, 0).dropped_records, 1);
    set(&output(&m, 1).retries, 2);
    let r = start(options(), &m).await;

    let root = get(r.addr, "/").await;
    assert_eq!(root.status, 200);
    assert!(root.headers["content-type"].starts_with("application/json"));
    let v = root.json();
    let fb = &v["fluent-bit"];
    assert_eq!(fb["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fb["edition"], "logferry");
    assert!(fb["flags"].as_array().is_some_and(|f| !f.is_empty()));
    assert_eq!(v["logferry"]["version"], env!("CARGO_PKG_VERSION"));

    let up = get(r.addr, "/api/v1/uptime").await.json();
    assert!(up["uptime_sec"].as_u64().is_some_and(|s| s < 60));
    assert!(up["uptime_hr"].as_str().is_some_and(
        |s| s.starts_with("Fluent Bit has been running:  0 day, 0 hour, 0 minute and ")
    ));

    let v = get(r.addr, "/api/v1/metrics").await.json();
    assert_eq!(v["input"]["dummy.0"], json!({"records": 3, "bytes": 300}));
    assert_eq!(v["input"]["tail.1"], json!({"records": 0, "bytes": 0}));
    assert_eq!(
        v["filter"]["grep.0"],
        json!({"drop_records": 1, "add_records": 0, "records": 0, "bytes": 0, "drop_bytes": 0})
    );
    assert_eq!(
        v["output"]["es.1"],
        json!({"proc_records": 0, "proc_bytes": 0, "errors": 0, "retries": 2,
               "retries_failed": 0, "dropped_records": 0, "retried_records": 0})
    );
    assert_eq!(
        v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["input".into(), "filter".into(), "output".into()])
    );

    // Off by default, like Fluent Bit, which does not register them.
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 404);
    assert_eq!(get(r.addr, "/api/v1/storage").await.status, 404);
    assert_eq!(get(r.addr, "/api/v1/nothing").await.status, 404);
    // Fluent Bit 5.1 serves /api/v2/health whatever Health_Check says.
    let h = get(r.addr, "/api/v2/health").await;
    assert_eq!(h.status, 200);
    assert_eq!(
        h.json(),
        json!({"status": "ok", "errors": 0, "retries_failed": 0, "error_limit": 5,
               "retry_failure_limit": 5, "period_limit": 60})
    );
    assert_eq!(get(r.addr, "/metrics").await.status, 404);

    r.server.set_options(HttpOptions {
        storage_metrics: true,
        ..options()
    });
    let v = get(r.addr, "/api/v1/storage").await.json();
    assert_eq!(v["storage_layer"]["chunks"]["total_chunks"], 0);
    assert_eq!(
        v["input_chunks"]["dummy.0"]["status"],
        json!({"overlimit": false, "mem_size": "0b", "mem_limit": "0b"})
    );
    assert_eq!(v["input_chunks"]["tail.1"]["chunks"]["busy_size"], "0b");
    r.shutdown().await;
}

/// Polls `/api/v1/health` until it answers `want`, for at most `WAIT`.
async fn health_becomes(addr: SocketAddr, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        let h = get(addr, "/api/v1/health").await;
        let body = if h.status == 200 { "ok\n" } else { "error\n" };
        assert_eq!(h.body, body);
        if h.status == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < WAIT, "health never became {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn health_fails_on_errors_within_the_period_and_recovers() {
    let m = pipeline();
    let opts = HttpOptions {
        health_check: true,
        hc_errors_count: 2,
        hc_retry_failure_count: 1,
        hc_period: Duration::from_secs(1),
        health_sample_interval: Duration::from_millis(20),
        ..options()
    };
    let r = start(opts, &m).await;
    let (stdout, es) = (output(&m, 0), output(&m, 1));
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 200);
    assert!(r.server.health().healthy);

    // Two errors are not more than HC_Errors_Count 2; the sum over outputs is.
    PluginMetrics::add(&stdout.errors, 1);
    PluginMetrics::add(&es.errors, 1);
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 200);
    PluginMetrics::add(&es.errors, 1);
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 500);
    let report = r.server.health();
    assert!(!report.healthy);
    assert_eq!(report.period_errors, 3);
    let v2 = get(r.addr, "/api/v2/health").await;
    assert_eq!(v2.status, 500);
    assert_eq!(
        v2.json(),
        json!({"status": "error", "errors": 3, "retries_failed": 0, "error_limit": 2,
               "retry_failure_limit": 1, "period_limit": 1})
    );
    // Once the errors are older than HC_Period, healthy again.
    let waited = health_becomes(r.addr, 200).await;
    assert!(waited >= Duration::from_millis(600), "{waited:?}");

    // Retry failures: more than HC_Retry_Failure_Count 1.
    PluginMetrics::add(&es.retries_failed, 2);
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 500);
    health_becomes(r.addr, 200).await;

    // A reload brings counters back to zero: the window starts over, no false alarm, no
    // negative counts.
    PluginMetrics::add(&es.errors, 10);
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 500);
    let fresh = pipeline();
    r.server.set_metrics(Arc::clone(&fresh));
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 200);
    PluginMetrics::add(&output(&fresh, 0).errors, 3);
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 500);
    r.shutdown().await;
}

#[tokio::test]
async fn health_fails_when_records_wait_and_no_output_progresses() {
    let m = pipeline();
    let opts = HttpOptions {
        health_check: true,
        hc_no_progress: Some(Duration::from_millis(300)),
        health_sample_interval: Duration::from_millis(20),
        ..options()
    };
    let r = start(opts, &m).await;
    let (dummy, stdout) = (input(&m, 0), output(&m, 0));
    // Idle is healthy, however long.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(r.addr, "/api/v1/health").await.status, 200);
    // Records come in; the outputs deliver nothing (and report no error).
    PluginMetrics::add(&dummy.records, 100);
    let waited = health_becomes(r.addr, 500).await;
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(r.server.health().stalled_for.is_some());
    // The output delivers again.
    PluginMetrics::add(&stdout.records, 100);
    health_becomes(r.addr, 200).await;
    r.shutdown().await;
}

#[tokio::test]
async fn reload_endpoint_hands_requests_to_the_binary() {
    let m = pipeline();
    let mut r = start(
        HttpOptions {
            hot_reload: true,
            ..options()
        },
        &m,
    )
    .await;
    let count = |v: Value| v["hot_reload_count"].as_u64();
    assert_eq!(count(get(r.addr, "/api/v2/reload").await.json()), Some(0));

    let done = request(r.addr, "POST", "/api/v2/reload", &[]).await;
    assert_eq!(done.status, 200);
    assert!(done.headers["content-type"].starts_with("application/json"));
    assert_eq!(done.json(), json!({"reload": "done", "status": 0}));
    let got = tokio::time::timeout(WAIT, r.reloads.recv()).await;
    assert_eq!(got.expect("request in time"), Some(ReloadRequest));

    // Until the binary says it is done, another request is refused.
    let busy = request(r.addr, "PUT", "/api/v2/reload", &[]).await;
    assert_eq!(busy.status, 400);
    assert_eq!(busy.json(), json!({"reload": "in progress", "status": -2}));
    assert!(!r.server.begin_reload(), "a SIGHUP reload waits too");

    // The binary swapped the pipeline: the server serves the new counters.
    let next = Arc::new(Metrics::default());
    let fresh = PluginMetrics::new("cpu.0");
    set(&fresh.records, 42);
    next.inputs.lock().expect("lock").push(Arc::clone(&fresh));
    r.server.reloaded(Arc::clone(&next));
    assert_eq!(r.server.hot_reload_count(), 1);
    assert_eq!(count(get(r.addr, "/api/v2/reload").await.json()), Some(1));
    let v = get(r.addr, "/api/v1/metrics").await.json();
    assert_eq!(v["input"], json!({"cpu.0": {"records": 42, "bytes": 0}}));
    let s = scrape(r.addr, "/api/v2/metrics/prometheus").await;
    assert_eq!(s.counter("fluentbit_input_records_total", "cpu.0"), 42.0);
    assert!(!s.text.contains("dummy.0"));
    assert_eq!(s.plain_counter("fluentbit_hot_reloaded_times").0, 1.0);

    // PUT works as POST; a failed reload frees the way for the next one.
    let done = request(r.addr, "PUT", "/api/v2/reload", &[]).await;
    assert_eq!(done.json(), json!({"reload": "done", "status": 0}));
    let got = tokio::time::timeout(WAIT, r.reloads.recv()).await;
    assert_eq!(got.expect("request in time"), Some(ReloadRequest));
    r.server.reload_failed();
    assert_eq!(r.server.hot_reload_count(), 1);
    assert!(r.server.begin_reload(), "SIGHUP path");
    r.server.reload_failed();

    // Other methods: 400, as Fluent Bit.
    assert_eq!(
        request(r.addr, "DELETE", "/api/v2/reload", &[])
            .await
            .status,
        400
    );
    r.shutdown().await;
}

#[tokio::test]
async fn reload_is_refused_when_hot_reload_is_off() {
    let m = pipeline();
    let mut r = start(options(), &m).await;
    for method in ["POST", "PUT"] {
        let v = request(r.addr, method, "/api/v2/reload", &[]).await;
        // Fluent Bit answers 200 with status -1.
        assert_eq!(v.status, 200);
        assert_eq!(v.json(), json!({"reload": "not enabled", "status": -1}));
    }
    assert_eq!(
        r.reloads.try_recv(),
        Err(mpsc::error::TryRecvError::Empty),
        "nothing reached the binary"
    );
    assert_eq!(
        get(r.addr, "/api/v2/reload").await.json(),
        json!({"hot_reload_count": 0})
    );
    r.shutdown().await;
}

#[derive(Debug)]
struct Extra;

impl logferry_http::Collector for Extra {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let c = prometheus_client::metrics::counter::ConstCounter::new(7u64);
        let e = encoder.encode_descriptor(
            "logferry_extra_requests",
            "Requests made.",
            None,
            c.metric_type(),
        )?;
        c.encode(e)
    }
}

#[tokio::test]
async fn other_collectors_join_both_endpoints() {
    let m = pipeline();
    let r = start(options(), &m).await;
    r.server.register_collector(Arc::new(Extra));
    for path in ["/api/v1/metrics/prometheus", "/api/v2/metrics/prometheus"] {
        let s = scrape(r.addr, path).await;
        let x = s
            .samples
            .iter()
            .find(|s| s.metric == "logferry_extra_requests_total")
            .expect("extra metric");
        assert_eq!(x.value, prometheus_parse::Value::Counter(7.0));
    }
    r.shutdown().await;
}

#[tokio::test]
async fn stops_when_cancelled_and_frees_the_port() {
    let m = pipeline();
    let r = start(options(), &m).await;
    let addr = r.addr;
    assert_eq!(get(addr, "/").await.status, 200);
    // An idle keep-alive connection must not hold the stop up.
    let _idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let t0 = Instant::now();
    r.shutdown().await;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_taken_port_is_an_error_naming_the_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = HttpServer::start(
        HttpOptions { port, ..options() },
        pipeline(),
        CancellationToken::new(),
    )
    .await
    .expect_err("port in use");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// With `storage.metrics On`, the storage layer's chunk counts are served under Fluent Bit's
/// names, in Prometheus text and in `/api/v1/storage`, from the engine's gauges.
#[tokio::test]
async fn storage_metrics_follow_the_engine_gauges() {
    let gauges: Arc<logferry_engine::storage::StorageGauges> = Arc::default();
    set(&gauges.fs_chunks, 5);
    set(&gauges.fs_chunks_up, 2);
    set(&gauges.mem_chunks, 7);
    let m = Metrics {
        storage: Some(Arc::clone(&gauges)),
        ..Metrics::default()
    };
    let tail = PluginMetrics::new("tail.0");
    let per_input = logferry_engine::storage::InputGauges::register(&tail);
    set(&per_input.chunks, 5);
    set(&per_input.up, 2);
    set(&per_input.down, 3);
    set(&per_input.busy, 1);
    set(&per_input.busy_bytes, 2048);
    set(&tail.buffer_bytes, 1024);
    set(&tail.buffer_limit, 4096);
    m.inputs.lock().expect("lock").push(tail);
    let m = Arc::new(m);
    let r = start(
        HttpOptions {
            storage_metrics: true,
            ..options()
        },
        &m,
    )
    .await;
    let text = get(r.addr, "/api/v2/metrics/prometheus").await.body;
    for line in [
        "fluentbit_storage_chunks 12\n",
        "fluentbit_storage_mem_chunks 7\n",
        "fluentbit_storage_fs_chunks 5\n",
        "fluentbit_storage_fs_chunks_up 2\n",
        "fluentbit_storage_fs_chunks_down 3\n",
        "fluentbit_input_storage_chunks{name=\"tail.0\"} 5\n",
        "fluentbit_input_storage_chunks_busy_bytes{name=\"tail.0\"} 2048\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    let v = get(r.addr, "/api/v1/storage").await.json();
    assert_eq!(
        v["storage_layer"]["chunks"],
        json!({"total_chunks": 12, "mem_chunks": 7, "fs_chunks": 5, "fs_chunks_up": 2, "fs_chunks_down": 3})
    );
    assert_eq!(
        v["input_chunks"]["tail.0"],
        json!({"status": {"overlimit": false, "mem_size": "1.0K", "mem_limit": "4.0K"},
               "chunks": {"total": 5, "up": 2, "down": 3, "busy": 1, "busy_size": "2.0K"}})
    );
    r.shutdown().await;
}

/// Fluent Bit 5.1's v2-only series: routes (appearing once used), the latency histogram,
/// filter bytes, and the cmetrics text of `/api/v2/metrics`; `/api/v1/plugins` lists what the
/// options say.
#[tokio::test]
async fn v2_series_routes_latency_and_plugins() {
    let m = pipeline();
    let opts = HttpOptions {
        plugins: logferry_http::PluginNames {
            inputs: vec!["tail".into(), "dummy".into()],
            filters: vec!["grep".into()],
            outputs: vec!["null".into()],
        },
        ..options()
    };
    let r = start(opts, &m).await;
    set(&filter(&m, 0).bytes, 77);
    set(&filter(&m, 0).dropped_bytes, 12);
    let input: Arc<str> = Arc::from("dummy.0");
    let route = m.route(&input, "stdout.0");
    set(&route.records, 5);
    set(&route.bytes, 140);
    route.latency.observe(Duration::from_millis(700));
    route.latency.observe(Duration::from_secs(40));

    let s = scrape(r.addr, "/api/v2/metrics/prometheus").await;
    assert_eq!(s.counter("fluentbit_filter_bytes_total", "grep.0"), 77.0);
    assert_eq!(
        s.counter("fluentbit_filter_drop_bytes_total", "grep.0"),
        12.0
    );
    for want in [
        "fluentbit_routing_logs_records_total{input=\"dummy.0\",output=\"stdout.0\"} 5\n",
        "fluentbit_routing_logs_bytes_total{input=\"dummy.0\",output=\"stdout.0\"} 140\n",
        "# TYPE fluentbit_output_latency_seconds histogram\n",
        "fluentbit_output_latency_seconds_bucket{le=\"0.5\",input=\"dummy.0\",output=\"stdout.0\"} 0\n",
        "fluentbit_output_latency_seconds_bucket{le=\"1.0\",input=\"dummy.0\",output=\"stdout.0\"} 1\n",
        "fluentbit_output_latency_seconds_bucket{le=\"30.0\",input=\"dummy.0\",output=\"stdout.0\"} 1\n",
        "fluentbit_output_latency_seconds_bucket{le=\"+Inf\",input=\"dummy.0\",output=\"stdout.0\"} 2\n",
        "fluentbit_output_latency_seconds_count{input=\"dummy.0\",output=\"stdout.0\"} 2\n",
        "fluentbit_output_chunk_available_capacity_percent{name=\"stdout.0\"} 100\n",
        "fluentbit_input_ring_buffer_writes_total{name=\"dummy.0\"} 0\n",
    ] {
        assert!(s.text.contains(want), "{want}in\n{}", s.text);
    }
    // No drop happened: no drop series, as in Fluent Bit.
    assert!(!s
        .text
        .contains("fluentbit_routing_logs_drop_records_total{"));
    // A route never used has no series.
    assert!(!s.text.contains("input=\"tail.1\""));

    let text = get(r.addr, "/api/v2/metrics").await;
    assert_eq!(text.status, 200);
    let line = text
        .body
        .lines()
        .find(|l| l.contains("fluentbit_routing_logs_bytes_total{"))
        .expect("routing line");
    assert!(
        line.ends_with(
            " fluentbit_routing_logs_bytes_total{input=\"dummy.0\",output=\"stdout.0\"} = 140"
        ),
        "{line}"
    );
    assert!(
        line.starts_with("20") && line.as_bytes()[10] == b'T',
        "{line}"
    );
    assert!(text.body.contains(
        "{input=\"dummy.0\",output=\"stdout.0\"} = { buckets = { 0.5=0, 1=1, 1.5=1, 2.5=1, 5=1, 10=1, 20=1, 30=1, +Inf=2 }, sum=40.7, count=2 }"
    ), "{}", text.body);

    let p = get(r.addr, "/api/v1/plugins").await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.json(),
        json!({"plugins": {"inputs": ["tail", "dummy"], "filters": ["grep"], "outputs": ["null"]}})
    );
    r.shutdown().await;
}
