//! The server in front of a real running pipeline (`dummy` input → the engine's `collect` test
//! output): counters move on the Prometheus endpoint as records flow, and health goes unhealthy
//! while the output keeps failing, then healthy again once it delivers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use logferry_core::config::SectionKind;
use logferry_engine::testing::{config, section, COLLECT};
use logferry_engine::{CancellationToken, Pipeline, Registry};
use logferry_http::{HttpOptions, HttpServer};

mod common;
use common::{get, scrape, WAIT};

fn registry() -> Registry {
    Registry {
        inputs: vec![&logferry_inputs::in_dummy::PLUGIN],
        filters: vec![],
        outputs: vec![&COLLECT],
        planned: &[],
    }
}

/// dummy (50 events/s) → collect, flushing every 50ms; `output` adds options to the output.
fn build(sink: &str, output: &[(&str, &str)]) -> Pipeline {
    let mut out = vec![("Name", "collect"), ("Match", "*"), ("sink", sink)];
    out.extend_from_slice(output);
    let cfg = config(vec![
        section(SectionKind::Service, &[("Flush", "0.05"), ("Grace", "1")]),
        section(
            SectionKind::Input,
            &[("Name", "dummy"), ("Tag", "t"), ("Rate", "50")],
        ),
        section(SectionKind::Output, &out),
    ]);
    Pipeline::build(cfg, &registry()).expect("pipeline builds")
}

struct Agent {
    server: HttpServer,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

async fn run(pipeline: Pipeline, mut opts: HttpOptions) -> Agent {
    let stop = CancellationToken::new();
    opts.listen = "127.0.0.1".into();
    opts.port = 0;
    let (server, _reloads) = HttpServer::start(opts, Arc::clone(&pipeline.metrics), stop.clone())
        .await
        .expect("server starts");
    let run = tokio::spawn({
        let stop = stop.clone();
        async move {
            pipeline.run(stop).await;
        }
    });
    Agent { server, stop, run }
}

impl Agent {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, async {
            let _ = self.run.await;
            self.server.stopped().await;
        })
        .await
        .expect("stopped in time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_records_flow() {
    let agent = run(build("http-flow", &[]), HttpOptions::default()).await;
    let addr = agent.server.local_addr();
    let t0 = Instant::now();
    let (first_in, first_out) = loop {
        let s = scrape(addr, "/api/v1/metrics/prometheus").await;
        let i = s.counter("fluentbit_input_records_total", "dummy.0");
        let o = s.counter("fluentbit_output_proc_records_total", "collect.0");
        if i > 0.0 && o > 0.0 {
            assert!(s.counter("fluentbit_input_bytes_total", "dummy.0") > 0.0);
            assert!(s.counter("fluentbit_output_proc_bytes_total", "collect.0") > 0.0);
            assert_eq!(s.counter("fluentbit_output_errors_total", "collect.0"), 0.0);
            break (i, o);
        }
        assert!(t0.elapsed() < WAIT, "records never flowed:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Later scrapes see more.
    let t0 = Instant::now();
    loop {
        let s = scrape(addr, "/api/v2/metrics/prometheus").await;
        if s.counter("fluentbit_input_records_total", "dummy.0") > first_in
            && s.counter("fluentbit_output_proc_records_total", "collect.0") > first_out
        {
            break;
        }
        assert!(t0.elapsed() < WAIT, "counters did not move:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = get(addr, "/api/v1/metrics").await.json();
    assert!(v["output"]["collect.0"]["proc_records"].as_u64() > Some(0));
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_the_output_fails_and_recovers() {
    // The first 10 flushes are refused for good (errors), then the output delivers.
    let pipeline = build("http-failing", &[("fail", "10"), ("permanent", "on")]);
    let opts = HttpOptions {
        health_check: true,
        hc_errors_count: 2,
        hc_period: Duration::from_millis(800),
        health_sample_interval: Duration::from_millis(20),
        ..HttpOptions::default()
    };
    let agent = run(pipeline, opts).await;
    let addr = agent.server.local_addr();
    let poll = |want: u16| async move {
        let t0 = Instant::now();
        loop {
            let h = get(addr, "/api/v1/health").await;
            if h.status == want {
                return;
            }
            assert!(t0.elapsed() < WAIT, "health never answered {want}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    poll(500).await;
    let s = scrape(addr, "/api/v1/metrics/prometheus").await;
    assert!(s.counter("fluentbit_output_errors_total", "collect.0") > 2.0);
    assert!(s.counter("fluentbit_output_dropped_records_total", "collect.0") > 0.0);
    poll(200).await;
    let s = scrape(addr, "/api/v1/metrics/prometheus").await;
    assert_eq!(
        s.counter("fluentbit_output_errors_total", "collect.0"),
        10.0
    );
    assert!(s.counter("fluentbit_output_proc_records_total", "collect.0") > 0.0);
    agent.shutdown().await;
}
