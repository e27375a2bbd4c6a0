//! Loading the configuration (file, command line, parsers files), logging, signals, and running
//! the pipeline to completion.

use std::process::ExitCode;

use logferry_core::config::{Config, ConfigError, OptSpec, Section, SectionKind, Span, Vars};
use logferry_engine::common::{FilterCommon, InputCommon, OutputCommon, ServiceOptions};
use logferry_engine::{BuildErrors, CancellationToken, Pipeline, Registry};

use crate::cli::{self, Cli};
use crate::registry;

/// Builds the whole configuration the command line describes: the `-c` file (either format),
/// `-i/-F/-o` sections, `[SERVICE]` overrides, then `-R` and `Parsers_File` parsers.
pub fn load_config(cli: &Cli) -> Result<Config, ConfigError> {
    let mut vars = Vars::from_env();
    let mut config = match &cli.config {
        Some(path) => Config::load_with(path, &mut vars)?,
        None => Config::default(),
    };
    // Extra files (the AWS init process's) come after the main file, as its `@INCLUDE`s would.
    for extra in &cli.includes {
        let more = Config::load_with(extra, &mut vars)?;
        match config.path {
            Some(_) => config.sections.extend(more.sections),
            None => config = more,
        }
    }
    config.sections.extend(cli.sections.iter().cloned());
    if !cli.service.is_empty() {
        let span = Span::command_line();
        let mut s = Section::new(SectionKind::Service, span.clone());
        for (k, v) in &cli.service {
            s.push(k.clone(), v.clone(), span.clone());
        }
        config.sections.push(s);
    }
    for p in &cli.parsers {
        config.add_parsers_file(p, &mut vars)?;
    }
    config.load_parsers_files(&mut vars)?;
    Ok(config)
}

/// Loads and builds; every error comes back, each naming file, line and key.
pub fn build(cli: &Cli, registry: &Registry) -> Result<Pipeline, BuildErrors> {
    let config = load_config(cli).map_err(|e| BuildErrors(vec![e]))?;
    Pipeline::build(config, registry)
}

fn level_filter(service_level: &str, verbosity: i8) -> tracing_subscriber::filter::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    let base: i8 = match service_level.to_ascii_lowercase().as_str() {
        "off" => -3,
        "error" => -2,
        "warn" | "warning" => -1,
        "debug" => 1,
        "trace" => 2,
        _ => 0,
    };
    match (base + verbosity).clamp(-3, 2) {
        -3 => LevelFilter::OFF,
        -2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

fn init_logging(service: &ServiceOptions, verbosity: i8) -> Result<(), String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let level = level_filter(&service.log_level, verbosity);
    let format = crate::logging::LogFormat::parse(&service.log_format)?;
    let fmt = tracing_subscriber::fmt::layer().event_format(crate::logging::Format(format));
    let fmt = match &service.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {path}: {e}"))?;
            fmt.with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .boxed()
        }
        None => fmt.with_ansi(false).with_writer(std::io::stderr).boxed(),
    };
    // The AWS SDK's runtime prints resolved identities (the access key id) in its debug
    // events: kept at info whatever Log_Level says, so credentials never reach the log.
    let sdk = tracing_subscriber::filter::Targets::new()
        .with_default(tracing_subscriber::filter::LevelFilter::TRACE)
        .with_target(
            "aws_smithy_runtime",
            tracing_subscriber::filter::LevelFilter::INFO,
        )
        .with_target(
            "aws_smithy_runtime_api",
            tracing_subscriber::filter::LevelFilter::INFO,
        );
    tracing_subscriber::registry()
        .with(level)
        .with(sdk)
        .with(fmt)
        .with(crate::logging::CountLayer)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// A plugin's shared and own options, or why there are none: `Err` names an unknown plugin
/// (with Fluent Bit's wording) or one logferry does not have yet.
fn plugin_options(
    reg: &Registry,
    kind: SectionKind,
    name: &str,
) -> Result<(&'static str, &'static [OptSpec], &'static [OptSpec]), String> {
    let (what, shared, own): (&str, &'static [OptSpec], Option<&'static [OptSpec]>) = match kind {
        SectionKind::Input => (
            "input",
            InputCommon::OPTIONS,
            reg.input(name).map(|p| p.options),
        ),
        SectionKind::Filter => (
            "filter",
            FilterCommon::OPTIONS,
            reg.filter(name).map(|p| p.options),
        ),
        SectionKind::Output => (
            "output",
            OutputCommon::OPTIONS,
            reg.output(name).map(|p| p.options),
        ),
        SectionKind::Custom => {
            return Err(format!(
                "custom plugin '{name}' is not available: logferry has no custom plugins"
            ))
        }
        other => return Err(format!("no plugin help for [{}]", other.header())),
    };
    match own {
        Some(own) => Ok((what, own, shared)),
        None if reg.is_planned(what, name) => Err(format!(
            "{what} plugin '{name}' is not yet available in logferry"
        )),
        None => Err(format!("unknown {what} plugin '{name}'")),
    }
}

/// Writes to stdout; a closed pipe (`logferry -J | head`) is not an error worth a panic.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `-i/-F/-o NAME -h`: that plugin's options; false (after an error line) when it has none.
fn print_plugin_help(reg: &Registry, kind: SectionKind, name: &str) -> bool {
    let (_, own, shared) = match plugin_options(reg, kind, name) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("[error] {e}");
            return false;
        }
    };
    let mut text = format!("{} {name}\n\n", kind.header());
    for o in own.iter().chain(shared) {
        let default = o
            .default
            .map(|d| format!(" (default: {d})"))
            .unwrap_or_default();
        text.push_str(&format!(
            "  {:<34} {:<20} {}{default}\n",
            o.name,
            o.kind,
            o.doc.trim()
        ));
    }
    print_out(&text);
    true
}

/// One plugin in `-J`'s JSON, in the shape of Fluent Bit's help schema: `type`, `name`,
/// `description`, `properties.options` with `name`, `description`, `default`, `type`.
fn plugin_json(
    what: &str,
    name: &str,
    description: &str,
    own: &[OptSpec],
    shared: &[OptSpec],
) -> serde_json::Value {
    let options: Vec<serde_json::Value> = own
        .iter()
        .chain(shared)
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "description": o.doc.trim(),
                "default": o.default,
                "type": o.kind,
            })
        })
        .collect();
    serde_json::json!({
        "type": what,
        "name": name,
        "description": description,
        "properties": { "options": options },
    })
}

/// `-J`: every plugin's options as JSON, or (after `-i/-F/-o NAME`) that plugin's. `Err` for
/// a plugin logferry does not have.
pub fn help_json(reg: &Registry, only: Option<&(SectionKind, String)>) -> Result<String, String> {
    if let Some((kind, name)) = only {
        let (what, own, shared) = plugin_options(reg, *kind, name)?;
        let description = match kind {
            SectionKind::Input => reg.input(name).map(|p| p.description),
            SectionKind::Filter => reg.filter(name).map(|p| p.description),
            _ => reg.output(name).map(|p| p.description),
        }
        .unwrap_or_default();
        return serde_json::to_string_pretty(&plugin_json(what, name, description, own, shared))
            .map_err(|e| e.to_string());
    }
    let service: Vec<serde_json::Value> = ServiceOptions::OPTIONS
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "description": o.doc.trim(),
                "default": o.default,
                "type": o.kind,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "fluent-bit": {
            "version": env!("CARGO_PKG_VERSION"),
            "schema_version": "1",
            "os": std::env::consts::OS,
            "agent": "logferry",
        },
        "service": { "type": "service", "name": "service", "properties": { "options": service } },
        "inputs": reg.inputs.iter().map(|p| plugin_json("input", p.name, p.description, p.options, InputCommon::OPTIONS)).collect::<Vec<_>>(),
        "filters": reg.filters.iter().map(|p| plugin_json("filter", p.name, p.description, p.options, FilterCommon::OPTIONS)).collect::<Vec<_>>(),
        "outputs": reg.outputs.iter().map(|p| plugin_json("output", p.name, p.description, p.options, OutputCommon::OPTIONS)).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())
}

/// Where the config comes from when `-c` is not given: `FLUENT_BIT_CONFIG_FILE` (an AWS for
/// Fluent Bit image convention), used only when the command line names no plugins either.
fn config_from_env(cli: &mut Cli) {
    if cli.config.is_some() || !cli.sections.is_empty() {
        return;
    }
    if let Some(f) = std::env::var_os("FLUENT_BIT_CONFIG_FILE").filter(|f| !f.is_empty()) {
        cli.infos.push(format!(
            "configuration from FLUENT_BIT_CONFIG_FILE: {}",
            std::path::Path::new(&f).display()
        ));
        cli.config = Some(f.into());
    }
}

/// The binary's entry point.
pub fn main() -> ExitCode {
    let reg = registry::registry();
    let matches = match cli::command(registry::plugins_help(&reg)).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let mut cli = match cli::from_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("[error] {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(only) = &cli.help_json {
        return match help_json(&reg, only.as_ref()) {
            Ok(json) => {
                print_out(&format!("{json}\n"));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("[error] {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some((kind, name)) = &cli.help_plugin {
        if kind == &SectionKind::Service {
            let _ = cli::command(registry::plugins_help(&reg)).print_help();
            return ExitCode::SUCCESS;
        }
        // Fluent Bit exits non-zero when the plugin asked about does not exist.
        return if print_plugin_help(&reg, *kind, name) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    // Fluent Bit enters the working directory before it reads the config, so relative paths
    // in `-c` and in the config resolve from there.
    if let Some(dir) = &cli.workdir {
        if let Err(e) = std::env::set_current_dir(dir) {
            eprintln!("[error] -w/--workdir {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    config_from_env(&mut cli);
    let force_init = cli.aws_init;
    if let Err(e) = crate::aws_init::apply(&mut cli, force_init) {
        eprintln!("[error] {e}");
        return ExitCode::FAILURE;
    }
    if cli.config.is_none() && cli.sections.is_empty() {
        let _ = cli::command(registry::plugins_help(&reg)).print_help();
        eprintln!("\n[error] no configuration: give -c FILE or -i/-o plugins (try: -c examples/quickstart/fluent-bit.conf)");
        return ExitCode::FAILURE;
    }
    if cli.dry_run {
        // Build as the agent would, but leave what plugins keep on disk untouched.
        logferry_engine::plugin::CHECK_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let pipeline = match build(&cli, &reg) {
        Ok(p) => p,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("[error] {e}");
            }
            if cli.dry_run {
                eprintln!("configuration test failed: {} error(s)", errors.0.len());
            }
            return ExitCode::FAILURE;
        }
    };
    if cli.dry_run {
        for line in &cli.infos {
            eprintln!("[info] {line}");
        }
        for line in &cli.warnings {
            eprintln!("[warn] {line}");
        }
        for note in &pipeline.notes {
            eprintln!("[warn] {note}");
        }
        println!("configuration test is successful");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&pipeline.service, cli.verbosity) {
        eprintln!("[error] {e}");
        return ExitCode::FAILURE;
    }
    for line in &cli.infos {
        tracing::info!("{line}");
    }
    for line in &cli.warnings {
        tracing::warn!("{line}");
    }
    log_notes(&pipeline);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("[error] cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(&cli, &reg, pipeline));
    // stdin is read on a blocking thread that may still wait for input: do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    ExitCode::SUCCESS
}

/// [`crate::memory::release_startup_pages`], logged at debug level.
fn release_startup_pages(when: &'static str) {
    match crate::memory::release_startup_pages() {
        Ok(bytes) => tracing::debug!(bytes, when, "start-up pages of the binary released"),
        Err(e) => tracing::debug!(error = %e, when, "start-up pages of the binary not released"),
    }
}

/// "logferry stopped" with the reason in words.
fn log_stopped(reason: Option<logferry_engine::StopReason>) {
    match reason {
        Some(r) => tracing::info!(reason = %r, "logferry stopped"),
        None => tracing::info!(reason = "the pipeline task failed", "logferry stopped"),
    }
}

/// Runs pipelines until a stop signal, or until the running pipeline ends by itself. A reload
/// (SIGHUP or `POST /api/v2/reload`, with `Hot_Reload On`) builds the new pipeline first; only
/// if it builds is the running one drained (its records delivered within `Grace`) and replaced,
/// so a bad config never stops the agent.
async fn run(cli: &Cli, registry: &Registry, first: Pipeline) {
    let stop = CancellationToken::new();
    let (hup_tx, mut hup_rx) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(watch_signals(stop.clone(), hup_tx));

    let mut http = None;
    let mut reloads = None;
    if first.service.http_server {
        match logferry_http::HttpServer::start(
            logferry_http::HttpOptions {
                plugins: logferry_http::PluginNames::of(registry),
                ..logferry_http::HttpOptions::from_service(&first.service)
            },
            std::sync::Arc::clone(&first.metrics),
            stop.clone(),
        )
        .await
        {
            Ok((server, rx)) => {
                http = Some(server);
                reloads = Some(rx);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    // The binary's start-up pages go before the first pipeline runs, so a backlog read at
    // start does not carry them at its peak, and again once it is up, for what its plugins'
    // start ran (src/memory.rs).
    release_startup_pages("before the pipeline runs");
    tokio::spawn(async {
        tokio::time::sleep(crate::memory::RELEASE_AFTER).await;
        release_startup_pages("the pipeline is up");
    });
    let mut next = Some(first);
    'pipelines: while let Some(pipeline) = next.take() {
        let (i, f, o) = pipeline.instance_names();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            config = %cli.config.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "command line".into()),
            inputs = %i.join(","), filters = %f.join(","), outputs = %o.join(","),
            "logferry started"
        );
        let metrics = std::sync::Arc::clone(&pipeline.metrics);
        let hot_reload = pipeline.service.hot_reload;
        let run_stop = CancellationToken::new();
        let mut handle = tokio::spawn(pipeline.run(run_stop.clone()));
        loop {
            let asked = tokio::select! {
                r = &mut handle => {
                    log_totals(&metrics);
                    log_stopped(r.ok());
                    break 'pipelines;
                }
                _ = stop.cancelled() => {
                    run_stop.cancel();
                    let r = handle.await;
                    log_totals(&metrics);
                    log_stopped(r.ok());
                    break 'pipelines;
                }
                Some(()) = hup_rx.recv() => "SIGHUP",
                Some(_) = recv_reload(&mut reloads) => "the HTTP API",
            };
            if !hot_reload {
                tracing::warn!(from = asked, "reload asked but Hot_Reload is off; ignored");
                continue;
            }
            if asked == "SIGHUP" && http.as_ref().is_some_and(|h| !h.begin_reload()) {
                tracing::warn!("a reload is already in progress");
                continue;
            }
            tracing::info!(from = asked, "reloading the configuration");
            match build(cli, registry) {
                Ok(new) => {
                    log_notes(&new);
                    run_stop.cancel();
                    let _ = handle.await;
                    log_totals(&metrics);
                    if let Some(h) = &http {
                        h.reloaded(std::sync::Arc::clone(&new.metrics));
                    }
                    tracing::info!("reload done: the new pipeline starts");
                    next = Some(new);
                    continue 'pipelines;
                }
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!("reload refused: {e}");
                    }
                    if let Some(h) = &http {
                        h.reload_failed();
                    }
                }
            }
        }
    }
    stop.cancel();
    if let Some(h) = http {
        h.stopped().await;
    }
}

/// What the configuration asks for that is accepted but not applied, once per pipeline
/// (logging starts after the pipeline is built, so the build collects them).
fn log_notes(p: &Pipeline) {
    for note in &p.notes {
        tracing::warn!("{note}");
    }
}

async fn recv_reload(
    rx: &mut Option<tokio::sync::mpsc::Receiver<logferry_http::ReloadRequest>>,
) -> Option<logferry_http::ReloadRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// One line per instance with what it moved, so a run's outcome is visible without the HTTP
/// server (the benchmark reads these lines to check its counts).
fn log_totals(m: &logferry_engine::metrics::Metrics) {
    use logferry_engine::metrics::{Metrics, PluginMetrics};
    for i in Metrics::list(&m.inputs) {
        tracing::info!(input = %i.name, records = PluginMetrics::get(&i.records), bytes = PluginMetrics::get(&i.bytes), "input totals");
    }
    for o in Metrics::list(&m.outputs) {
        tracing::info!(
            output = %o.name,
            records = PluginMetrics::get(&o.records),
            dropped = PluginMetrics::get(&o.dropped_records),
            retries = PluginMetrics::get(&o.retries),
            "output totals"
        );
    }
}

/// SIGTERM / SIGINT start a graceful stop; a second one exits at once. SIGHUP asks for a reload.
async fn watch_signals(stop: CancellationToken, hup: tokio::sync::mpsc::Sender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hangup.recv() => {
                let _ = hup.try_send(());
                continue;
            }
        }
        seen += 1;
        if seen > 1 {
            tracing::warn!("second signal: exiting now");
            std::process::exit(1);
        }
        tracing::info!("signal received: stopping within Grace");
        stop.cancel();
    }
}
