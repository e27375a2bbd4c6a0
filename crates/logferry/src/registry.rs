//! The static plugin registry: every plugin this binary has, in documentation order, and the
//! Fluent Bit plugin names that logferry does not provide yet (so a config that uses one gets
//! "not yet available" instead of "unknown").

use logferry_engine::Registry;

/// Every other Fluent Bit 5.1 input, filter and output plugin, by kind: a config that names one
/// gets "not yet available in logferry" instead of "unknown" (and docs/plugins.md lists them).
pub const PLANNED: &[(&str, &str)] = &[
    ("input", "blob"),
    ("input", "calyptia_fleet"),
    ("input", "collectd"),
    ("input", "cpu"),
    ("input", "disk"),
    ("input", "docker"),
    ("input", "docker_events"),
    ("input", "ebpf"),
    ("input", "elasticsearch"),
    ("input", "event_tracing_windows"),
    ("input", "exec"),
    ("input", "exec_wasi"),
    ("input", "fluentbit_metrics"),
    ("input", "gpu_metrics"),
    ("input", "head"),
    ("input", "health"),
    ("input", "kafka"),
    ("input", "kmsg"),
    ("input", "kubernetes_events"),
    ("input", "mem"),
    ("input", "mqtt"),
    ("input", "netif"),
    ("input", "nginx_metrics"),
    ("input", "node_exporter_metrics"),
    ("input", "opentelemetry"),
    ("input", "podman_metrics"),
    ("input", "proc"),
    ("input", "process_exporter_metrics"),
    ("input", "prometheus_remote_write"),
    ("input", "prometheus_scrape"),
    ("input", "prometheus_textfile"),
    ("input", "random"),
    ("input", "serial"),
    ("input", "splunk"),
    ("input", "statsd"),
    ("input", "thermal"),
    ("input", "udp"),
    ("input", "unix_socket"),
    ("input", "windows_exporter_metrics"),
    ("input", "winevtlog"),
    ("input", "winlog"),
    ("input", "winstat"),
    ("filter", "alter_size"),
    ("filter", "checklist"),
    ("filter", "ecs"),
    ("filter", "expect"),
    ("filter", "geoip2"),
    ("filter", "log_to_metrics"),
    ("filter", "nightfall"),
    ("filter", "stdout"),
    ("filter", "sysinfo"),
    ("filter", "tensorflow"),
    ("filter", "throttle_size"),
    ("filter", "wasm"),
    ("output", "azure"),
    ("output", "azure_blob"),
    ("output", "azure_kusto"),
    ("output", "azure_logs_ingestion"),
    ("output", "bigquery"),
    ("output", "calyptia"),
    ("output", "chronicle"),
    ("output", "counter"),
    ("output", "datadog"),
    ("output", "exit"),
    ("output", "flowcounter"),
    ("output", "gcs"),
    ("output", "gelf"),
    ("output", "influxdb"),
    ("output", "kafka"),
    ("output", "kafka-rest"),
    ("output", "logdna"),
    ("output", "loki"),
    ("output", "nats"),
    ("output", "nrlogs"),
    ("output", "opentelemetry"),
    ("output", "oracle_log_analytics"),
    ("output", "pgsql"),
    ("output", "plot"),
    ("output", "prometheus_exporter"),
    ("output", "prometheus_remote_write"),
    ("output", "skywalking"),
    ("output", "slack"),
    ("output", "splunk"),
    ("output", "stackdriver"),
    ("output", "syslog"),
    ("output", "tcp"),
    ("output", "td"),
    ("output", "udp"),
    ("output", "vivo_exporter"),
    ("output", "websocket"),
];

/// Every plugin compiled into this binary.
pub fn registry() -> Registry {
    Registry {
        inputs: [&logferry_tail::PLUGIN]
            .into_iter()
            .chain(logferry_inputs::PLUGINS.iter().copied())
            .collect(),
        filters: logferry_filters::PLUGINS
            .iter()
            .copied()
            .chain([&logferry_kubernetes::PLUGIN])
            .collect(),
        outputs: logferry_outputs::PLUGINS
            .iter()
            .chain(logferry_aws::PLUGINS.iter())
            .copied()
            .collect(),
        planned: PLANNED,
    }
}

/// The plugin list shown by `--help`.
pub fn plugins_help(reg: &Registry) -> String {
    let mut s = String::new();
    let mut section = |title: &str, items: Vec<(&str, &str)>| {
        s.push_str(title);
        s.push('\n');
        for (n, d) in items {
            s.push_str(&format!("  {n:<18} {d}\n"));
        }
        s.push('\n');
    };
    section(
        "Inputs",
        reg.inputs.iter().map(|p| (p.name, p.description)).collect(),
    );
    section(
        "Filters",
        reg.filters
            .iter()
            .map(|p| (p.name, p.description))
            .collect(),
    );
    section(
        "Outputs",
        reg.outputs
            .iter()
            .map(|p| (p.name, p.description))
            .collect(),
    );
    s.push_str("Fluent Bit plugins not yet available in logferry\n");
    for kind in ["input", "filter", "output"] {
        let names: Vec<&str> = PLANNED
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| *n)
            .collect();
        s.push_str(&format!("  {kind}s: {}\n", names.join(", ")));
    }
    s
}

/// The plugin reference (`docs/plugins.md`), generated from the option declarations so it
/// cannot drift from the code; a test fails when the file is stale.
pub fn plugins_markdown(reg: &Registry) -> String {
    use logferry_core::config::OptSpec;
    use logferry_engine::common::{FilterCommon, InputCommon, OutputCommon, ServiceOptions};
    fn table(out: &mut String, opts: &[OptSpec]) {
        out.push_str("| key | type | default | what it does |\n|---|---|---|---|\n");
        for o in opts {
            let mut name = format!("`{}`", o.name);
            for a in o.aliases {
                name.push_str(&format!(" / `{a}`"));
            }
            let default = o.default.map(|d| format!("`{d}`")).unwrap_or_default();
            out.push_str(&format!(
                "| {name} | {} | {default} | {} |\n",
                o.kind,
                o.doc.trim().replace('|', "\\|")
            ));
        }
        out.push('\n');
    }
    let mut s = String::from(
        "# Plugin reference\n\n<!-- Generated from the code by `UPDATE_DOCS=1 cargo test -p logferry plugins_md`. Do not edit. -->\n\n",
    );
    s.push_str("Option names are Fluent Bit's and are matched case-insensitively. Sizes take `k`, `M`, `G` \
(1024-based); times take `s`, `m`, `h`, `d`; booleans take `On`/`Off`, `true`/`false`, `yes`/`no`.\n\n");
    s.push_str("## `[SERVICE]`\n\n");
    table(&mut s, ServiceOptions::OPTIONS);
    s.push_str("## Keys every input takes\n\n");
    table(&mut s, InputCommon::OPTIONS);
    s.push_str("## Keys every filter takes\n\n");
    table(&mut s, FilterCommon::OPTIONS);
    s.push_str("## Keys every output takes\n\n");
    table(&mut s, OutputCommon::OPTIONS);
    for (kind, list) in [
        (
            "Input",
            reg.inputs
                .iter()
                .map(|p| (p.name, p.aliases, p.description, p.options))
                .collect::<Vec<_>>(),
        ),
        (
            "Filter",
            reg.filters
                .iter()
                .map(|p| (p.name, p.aliases, p.description, p.options))
                .collect(),
        ),
        (
            "Output",
            reg.outputs
                .iter()
                .map(|p| (p.name, p.aliases, p.description, p.options))
                .collect(),
        ),
        // YAML `processors.logs` only; every filter above can be a processor too.
        (
            "Processor",
            logferry_engine::processors::PROCESSORS
                .iter()
                .map(|p| (p.name, p.aliases, p.description, p.options))
                .collect(),
        ),
    ] {
        for (name, aliases, desc, opts) in list {
            s.push_str(&format!("## {kind} `{name}`\n\n{desc}."));
            if !aliases.is_empty() {
                s.push_str(&format!(
                    " Also accepted as: {}.",
                    aliases
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            s.push_str("\n\n");
            if opts.is_empty() {
                s.push_str("No options of its own.\n\n");
            } else {
                table(&mut s, opts);
            }
        }
    }
    s.push_str(&format!(
        "## Not yet available\n\n{}\n",
        PLANNED
            .iter()
            .map(|(k, n)| format!("`{n}` ({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_md_is_up_to_date() {
        let path = std::path::Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
        )
        .join("../../docs/plugins.md");
        let want = plugins_markdown(&registry());
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/plugins.md is stale: run `UPDATE_DOCS=1 cargo test -p logferry plugins_md`"
        );
    }

    #[test]
    fn names_are_unique_and_not_also_planned() {
        let reg = registry();
        let mut seen = std::collections::HashSet::new();
        for (kind, name) in reg
            .inputs
            .iter()
            .map(|p| ("input", p.name))
            .chain(reg.filters.iter().map(|p| ("filter", p.name)))
            .chain(reg.outputs.iter().map(|p| ("output", p.name)))
        {
            assert!(seen.insert((kind, name)), "duplicate {kind} {name}");
            assert!(
                !reg.is_planned(kind, name),
                "{kind} {name} is built and also listed as planned"
            );
        }
    }

    #[test]
    fn every_option_of_every_plugin_has_a_doc_line() {
        let reg = registry();
        let specs = reg
            .inputs
            .iter()
            .map(|p| (p.name, p.options))
            .chain(reg.filters.iter().map(|p| (p.name, p.options)))
            .chain(reg.outputs.iter().map(|p| (p.name, p.options)));
        for (plugin, opts) in specs {
            for o in opts {
                assert!(
                    !o.doc.trim().is_empty(),
                    "{plugin}.{} has no doc line",
                    o.name
                );
            }
        }
    }
}
