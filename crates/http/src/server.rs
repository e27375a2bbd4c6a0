//! The axum server: routes, the shared state behind them, the health sampler, and the hot reload
//! hand-off to the binary.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use logferry_engine::metrics::Metrics;
use prometheus_client::collector::Collector;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::families;
use crate::health::{Health, HealthReport, Totals};
use crate::json;
use crate::options::HttpOptions;
use crate::prom::{self, Shared, Source};

/// A hot reload asked for through `POST`/`PUT /api/v2/reload`. The binary reloads, then calls
/// [`HttpServer::reloaded`] (or [`HttpServer::reload_failed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadRequest;

const PROMETHEUS_004: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct AppState {
    options: RwLock<HttpOptions>,
    source: Arc<Source>,
    health: Mutex<Health>,
    reloading: AtomicBool,
    reload_tx: mpsc::Sender<ReloadRequest>,
    /// Metrics other parts of logferry add ([`HttpServer::register_collector`]).
    extra: RwLock<Registry>,
}

impl AppState {
    fn options(&self) -> HttpOptions {
        self.options
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn health_lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One tick of the health window. The health lock is held while the counters are read so
    /// that a swap of the metrics cannot slip between reading and recording.
    fn sample(&self) {
        let period = self.options().hc_period;
        let mut health = self.health_lock();
        let totals = Totals::of(&self.source.metrics());
        health.record(Instant::now(), totals, period);
    }

    fn health_report(&self) -> HealthReport {
        let opts = self.options();
        let health = self.health_lock();
        let totals = Totals::of(&self.source.metrics());
        health.report(Instant::now(), totals, &opts)
    }

    fn set_metrics(&self, metrics: Arc<Metrics>) {
        let mut health = self.health_lock();
        let totals = Totals::of(&metrics);
        self.source.set_metrics(metrics);
        health.reset(Instant::now(), totals);
    }
}

/// The running server. Dropping it does not stop it: cancel the token given to
/// [`HttpServer::start`], then await [`HttpServer::stopped`].
pub struct HttpServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `options.listen:options.port` and serves until `stop` is cancelled (requests in
    /// flight then get `options.shutdown_timeout` to finish). `metrics` are the running
    /// pipeline's counters. Returns the server and the channel on which reload requests arrive
    /// (only with `Hot_Reload On`; at most one waits at a time).
    pub async fn start(
        options: HttpOptions,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> io::Result<(HttpServer, mpsc::Receiver<ReloadRequest>)> {
        let listener = tokio::net::TcpListener::bind((options.listen.as_str(), options.port))
            .await
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "HTTP server cannot listen on {}:{}: {e}",
                        options.listen, options.port
                    ),
                )
            })?;
        let addr = listener.local_addr()?;
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let source = Arc::new(Source::new(
            Arc::clone(&metrics),
            options.started_at,
            options.hostname.clone(),
        ));
        let state = Arc::new(AppState {
            health: Mutex::new(Health::new(Instant::now(), Totals::of(&metrics))),
            extra: RwLock::new(Registry::default()),
            source,
            reloading: AtomicBool::new(false),
            reload_tx,
            options: RwLock::new(options.clone()),
        });

        let sampler = {
            let state = Arc::clone(&state);
            let stop = stop.clone();
            let every = options
                .health_sample_interval
                .max(std::time::Duration::from_millis(1));
            async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => state.sample(),
                    }
                }
            }
        };

        let app = router(Arc::clone(&state));
        let grace = options.shutdown_timeout;
        let task = tokio::spawn(async move {
            let sampler = tokio::spawn(sampler);
            let serve = axum::serve(listener, app).with_graceful_shutdown({
                let stop = stop.clone();
                async move { stop.cancelled().await }
            });
            let bounded = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                r = serve => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "HTTP server failed");
                    }
                }
                _ = bounded => tracing::warn!("HTTP server: requests still running at shutdown were cut"),
            }
            let _ = sampler.await;
            tracing::debug!("HTTP server stopped");
        });
        tracing::info!(listen = %addr, "HTTP server listening");
        Ok((HttpServer { addr, state, task }, reload_rx))
    }

    /// The address it listens on (the real port when started with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points the server at other counters without counting a reload. The health window starts
    /// over, since new counters start from zero.
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        self.state.set_metrics(metrics);
    }

    /// Applies changed settings (health check and its counts, hot reload, storage metrics). The
    /// listen address, port and health sampling step stay: to change them, stop this server and
    /// start another.
    pub fn set_options(&self, options: HttpOptions) {
        *self
            .state
            .options
            .write()
            .unwrap_or_else(|e| e.into_inner()) = options;
    }

    /// Marks a reload as under way (for SIGHUP; the endpoint does it itself). Returns false when
    /// one already is: the endpoint then answers `{"reload":"in progress","status":-2}`.
    pub fn begin_reload(&self) -> bool {
        !self.state.reloading.swap(true, Ordering::AcqRel)
    }

    /// A reload finished: serve `metrics` (the new pipeline's), count it in `hot_reload_count`
    /// and `fluentbit_hot_reloaded_times`, and accept the next reload.
    pub fn reloaded(&self, metrics: Arc<Metrics>) {
        self.state.set_metrics(metrics);
        self.state.source.reloads.fetch_add(1, Ordering::Relaxed);
        self.state.reloading.store(false, Ordering::Release);
    }

    /// A reload failed (the old pipeline keeps running): accept the next one.
    pub fn reload_failed(&self) {
        self.state.reloading.store(false, Ordering::Release);
    }

    /// Reloads done so far.
    pub fn hot_reload_count(&self) -> u64 {
        self.state.source.reloads.load(Ordering::Relaxed)
    }

    /// The health verdict `/api/v1/health` would give now (whatever `Health_Check` says).
    pub fn health(&self) -> HealthReport {
        self.state.health_report()
    }

    /// Adds metrics of another part of logferry to both Prometheus endpoints; they are encoded
    /// on each scrape, after the pipeline's.
    pub fn register_collector(&self, collector: Arc<dyn Collector>) {
        self.state
            .extra
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(Box::new(Shared(collector)));
    }

    /// Waits until the server has stopped (after the stop token was cancelled).
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "HTTP server task failed");
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/api/v1/uptime", get(uptime))
        .route("/api/v1/metrics", get(metrics_json))
        .route("/api/v1/metrics/prometheus", get(prometheus_v1))
        .route("/api/v2/metrics", get(metrics_v2))
        .route("/api/v2/metrics/prometheus", get(prometheus_v2))
        .route("/api/v1/health", get(health))
        .route("/api/v2/health", get(health_v2))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/storage", get(storage))
        .route("/api/v2/reload", any(reload))
        .with_state(state)
}

type St = State<Arc<AppState>>;

async fn root() -> Json<Value> {
    Json(json::build_info())
}

async fn uptime(State(st): St) -> Json<Value> {
    Json(json::uptime(st.source.started.elapsed()))
}

async fn metrics_json(State(st): St) -> Json<Value> {
    Json(json::metrics(&st.source.metrics()))
}

/// Fluent Bit's v1 Prometheus text (derived from the v1 JSON), then other collectors'.
async fn prometheus_v1(State(st): St) -> Response {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut text = families::v1_prometheus(&st.source, now_ms);
    match extra_text(&st) {
        Ok(extra) => text.push_str(&prom::to_text_004(&extra)),
        Err(code) => return code.into_response(),
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_004)], text).into_response()
}

/// Fluent Bit's v2 metrics as Prometheus text 0.0.4, or OpenMetrics when the scraper asks for
/// it; other collectors' metrics come after the pipeline's.
async fn prometheus_v2(State(st): St, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut text = families::prometheus(&families::v2(&st.source), openmetrics);
    let extra = match extra_text(&st) {
        Ok(extra) => extra,
        Err(code) => return code.into_response(),
    };
    if openmetrics {
        text.push_str(&extra);
        if !text.ends_with("# EOF\n") {
            text.push_str("# EOF\n");
        }
        ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
    } else {
        text.push_str(&prom::to_text_004(&extra));
        ([(header::CONTENT_TYPE, PROMETHEUS_004)], text).into_response()
    }
}

/// What the registered collectors write (OpenMetrics text, `# EOF` included when any); an
/// error is a 500.
fn extra_text(st: &AppState) -> Result<String, StatusCode> {
    let reg = st.extra.read().unwrap_or_else(|e| e.into_inner());
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &reg) {
        tracing::error!(error = %e, "cannot encode metrics");
        return Err(StatusCode::INTERNAL_SERVER_ERROR);
    }
    if text == "# EOF\n" {
        text.clear();
    }
    Ok(text)
}

/// `/api/v2/metrics`: cmetrics' text format, as Fluent Bit 5.1 serves it (not JSON).
async fn metrics_v2(State(st): St) -> Response {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string();
    let text = families::cmetrics_text(&families::v2(&st.source), &now);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// `/api/v2/health`: the health verdict as JSON, 200 or 500, whether or not `Health_Check` is
/// on (Fluent Bit 5.1 serves it either way).
async fn health_v2(State(st): St) -> Response {
    let opts = st.options();
    let report = st.health_report();
    let body = Json(json!({
        "status": if report.healthy { "ok" } else { "error" },
        "errors": report.period_errors,
        "retries_failed": report.period_retry_failures,
        "error_limit": opts.hc_errors_count,
        "retry_failure_limit": opts.hc_retry_failure_count,
        "period_limit": opts.hc_period.as_secs(),
    }));
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, body).into_response()
}

/// `/api/v1/plugins`: the plugins this binary has, as Fluent Bit lists its own.
async fn plugins(State(st): St) -> Json<Value> {
    let p = st.options().plugins;
    Json(json!({
        "plugins": {
            "inputs": p.inputs,
            "filters": p.filters,
            "outputs": p.outputs,
        }
    }))
}

async fn health(State(st): St) -> Response {
    if !st.options().health_check {
        return StatusCode::NOT_FOUND.into_response();
    }
    let report = st.health_report();
    if report.healthy {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        tracing::debug!(?report, "health check: unhealthy");
        (StatusCode::INTERNAL_SERVER_ERROR, "error\n").into_response()
    }
}

async fn storage(State(st): St) -> Response {
    if !st.options().storage_metrics {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(json::storage(&st.source.metrics())).into_response()
}

/// Fluent Bit's `/api/v2/reload`: `POST`/`PUT` reload, `GET` counts, anything else is 400.
async fn reload(State(st): St, method: Method) -> Response {
    match method {
        Method::POST | Method::PUT => request_reload(&st),
        Method::GET => Json(json!({
            "hot_reload_count": st.source.reloads.load(Ordering::Relaxed)
        }))
        .into_response(),
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// Answers as Fluent Bit does: 200 `{"reload":"not enabled","status":-1}` with `Hot_Reload Off`,
/// 400 `{"reload":"in progress","status":-2}` while a reload is under way, else the request is
/// handed to the binary and the answer is 200 `{"reload":"done","status":0}`.
fn request_reload(st: &AppState) -> Response {
    if !st.options().hot_reload {
        return Json(json!({"reload": "not enabled", "status": -1})).into_response();
    }
    let in_progress = || {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"reload": "in progress", "status": -2})),
        )
            .into_response()
    };
    if st.reloading.swap(true, Ordering::AcqRel) {
        return in_progress();
    }
    match st.reload_tx.try_send(ReloadRequest) {
        Ok(()) => {
            tracing::info!("hot reload requested through the HTTP API");
            Json(json!({"reload": "done", "status": 0})).into_response()
        }
        Err(mpsc::error::TrySendError::Full(_)) => in_progress(),
        Err(mpsc::error::TrySendError::Closed(_)) => {
            st.reloading.store(false, Ordering::Release);
            tracing::error!("hot reload requested, but nothing receives reload requests");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
