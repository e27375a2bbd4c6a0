//! The command line, with Fluent Bit's flags: `-c`, `-R`, `-i/-F/-o/-C` with `-p key=value`,
//! `-m MATCH` and `-t TAG` applying to the plugin named last, `-f`, `-l`, `-v`/`-q`,
//! `--dry-run`, `-H`/`-P`/`-L`, `-b`, `-w`, `-Y`, `-h`/`-J`. Order matters for `-p`/`-m`/`-t`,
//! so the flags are read with their positions and replayed in order into config sections.
//!
//! Every flag of Fluent Bit 5.1's `fluent-bit --help` is accepted: those that mean something
//! for logferry do what Fluent Bit does; the others give one warning line each at start (and
//! in `--dry-run`) and are otherwise ignored, so a chart's or image's command line never stops
//! the agent.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use logferry_core::config::{ConfigError, Section, SectionKind, Span};

/// The AWS for Fluent Bit image's Go plugins, loaded there with `-e /fluent-bit/NAME.so`, and
/// the logferry output each one is (built in, under the Go plugin's name as an alias).
pub const AWS_GO_PLUGINS: &[(&str, &str)] = &[
    ("cloudwatch", "cloudwatch_logs"),
    ("firehose", "kinesis_firehose"),
    ("kinesis", "kinesis_streams"),
];

/// What the command line asks for.
#[derive(Debug, Default)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub parsers: Vec<PathBuf>,
    /// Config files read after `config`, as if `@INCLUDE`d at its end (the AWS for Fluent Bit
    /// init process's `aws_fluent_bit_init_file_N` / `_s3_N` files).
    pub includes: Vec<PathBuf>,
    /// Sections built from `-i/-F/-o/-C` and their `-p/-m/-t`, in order.
    pub sections: Vec<Section>,
    /// `[SERVICE]` overrides (`-f`, `-l`, `-H`, `-P`, `-L`, `-b`, `-Y`, ...).
    pub service: Vec<(String, String)>,
    pub verbosity: i8,
    pub dry_run: bool,
    /// `-w DIR`: the working directory, entered before any file is read (Fluent Bit changes
    /// directory after reading its flags and before loading the config).
    pub workdir: Option<PathBuf>,
    /// `-h` given after `-i/-F/-o NAME`: show that plugin's options.
    pub help_plugin: Option<(SectionKind, String)>,
    /// `-J`: the options as JSON, of every plugin (`None` inside) or of the plugin named last.
    pub help_json: Option<Option<(SectionKind, String)>>,
    /// `--aws-init`: run AWS for Fluent Bit's init steps even without `aws_fluent_bit_init_*`
    /// variables (ECS task metadata exported as variables).
    pub aws_init: bool,
    /// One line per flag accepted but not applied, shown at start and by `--dry-run`.
    pub warnings: Vec<String>,
    /// One line per flag applied in logferry's own way (`-e` of a built-in plugin).
    pub infos: Vec<String>,
}

/// The clap definition; `plugins_help` is appended to `--help`.
pub fn command(plugins_help: String) -> Command {
    let value = |id: &'static str,
                 short: char,
                 long: &'static str,
                 name: &'static str,
                 help: &'static str| {
        Arg::new(id)
            .short(short)
            .long(long)
            .value_name(name)
            .help(help)
    };
    let many = |a: Arg| a.action(ArgAction::Append);
    let flag = |id: &'static str, short: Option<char>, long: &'static str, help: &'static str| {
        let a = Arg::new(id)
            .long(long)
            .action(ArgAction::SetTrue)
            .help(help);
        match short {
            Some(c) => a.short(c),
            None => a,
        }
    };
    Command::new("logferry")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Fluent Bit compatible log agent for Kubernetes: reads Fluent Bit configs as they are.")
        .disable_help_flag(true)
        .after_help(plugins_help)
        .arg(value("storage_path", 'b', "storage_path", "PATH", "storage.path: directory of filesystem buffers"))
        .arg(value("config", 'c', "config", "FILE", "configuration file (classic .conf or YAML); default: $FLUENT_BIT_CONFIG_FILE"))
        .arg(flag("daemon", Some('d'), "daemon", "run in the background (accepted, not applied: logferry stays in the foreground)"))
        .arg(flag("supervisor", None, "supervisor", "run under a supervising parent (accepted, not applied)"))
        .arg(flag("dry_run", Some('D'), "dry-run", "check the configuration and exit"))
        .arg(value("flush", 'f', "flush", "SECONDS", "flush interval in seconds (default 1)"))
        .arg(many(value("custom", 'C', "custom", "CUSTOM", "add a custom plugin (accepted, not applied)")))
        .arg(many(value("input", 'i', "input", "INPUT", "add an input plugin")))
        .arg(many(value("filter", 'F', "filter", "FILTER", "add a filter plugin")))
        .arg(many(value("output", 'o', "output", "OUTPUT", "add an output plugin")))
        .arg(many(value("match", 'm', "match", "MATCH", "set Match of the last filter or output")))
        .arg(many(value("prop", 'p', "prop", "KEY=VALUE", "set a property of the last plugin")))
        .arg(many(value("parser", 'R', "parser", "FILE", "parsers file to load")))
        .arg(many(value("plugin", 'e', "plugin", "FILE", "external plugin: the AWS Go plugins (cloudwatch.so, firehose.so, kinesis.so) are built in; others are not loaded")))
        .arg(value("log_file", 'l', "log_file", "FILE", "write the agent's log to FILE"))
        .arg(many(value("tag", 't', "tag", "TAG", "set Tag of the last input")))
        .arg(many(value("sp_task", 'T', "sp-task", "SQL", "stream processor task (accepted, not applied: no stream processor)")))
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::Count).help("more logging (-vv for trace)"))
        .arg(value("workdir", 'w', "workdir", "DIR", "working directory, entered before any file is read"))
        .arg(flag("http", Some('H'), "http", "enable the HTTP monitoring server").alias("http_server"))
        .arg(value("http_listen", 'L', "http_listen", "ADDRESS", "HTTP server listen address (default 0.0.0.0)"))
        .arg(value("port", 'P', "port", "PORT", "HTTP server port (default 2020)").alias("http_port"))
        .arg(value("coro_stack_size", 's', "coro_stack_size", "BYTES", "coroutine stack size (accepted, not applied: no coroutines)"))
        .arg(flag("sosreport", Some('S'), "sosreport", "support report (accepted, not applied)"))
        .arg(flag("hot_reload", Some('Y'), "enable-hot-reload", "allow reloading the config"))
        .arg(flag("no_reload_safety", Some('W'), "disable-thread-safety-on-hot-reload", "Hot_Reload.Ensure_Thread_Safety Off"))
        .arg(flag("chunk_trace", Some('Z'), "enable-chunk-trace", "chunk tracing (accepted, not applied)"))
        .arg(Arg::new("trace").long("trace").value_name("PIPELINE").help("chunk trace pipeline (accepted, not applied)"))
        .arg(Arg::new("trace_input").long("trace-input").value_name("INPUT").help("chunk trace input (accepted, not applied)"))
        .arg(Arg::new("trace_output").long("trace-output").value_name("OUTPUT").help("chunk trace output (accepted, not applied)"))
        .arg(many(Arg::new("trace_output_property").long("trace-output-property").value_name("KEY=VALUE").help("chunk trace output property (accepted, not applied)")))
        .arg(flag("enable_fips", None, "enable-fips", "FIPS mode (accepted, not applied: logferry's TLS is rustls, without a FIPS module)"))
        .arg(flag("aws_init", None, "aws-init", "logferry only: do what AWS for Fluent Bit's init image does (ECS metadata variables, aws_fluent_bit_init_* files); automatic when those variables are set"))
        .arg(flag("quiet", Some('q'), "quiet", "log errors only"))
        .arg(flag("help", Some('h'), "help", "print help (after -i/-F/-o NAME: that plugin's options; exits non-zero for an unknown plugin)"))
        .arg(flag("help_json", Some('J'), "help-json", "the options as JSON (after -i/-F/-o NAME: that plugin's)"))
        .arg(Arg::new("rest").num_args(0..).hide(true).action(ArgAction::Append))
}

/// Reads the matches into a [`Cli`], replaying plugin flags in the order given.
pub fn from_matches(m: &ArgMatches) -> Result<Cli, ConfigError> {
    let mut cli = Cli {
        config: m.get_one::<String>("config").map(PathBuf::from),
        parsers: m
            .get_many::<String>("parser")
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .collect(),
        verbosity: m.get_count("verbose") as i8 - i8::from(m.get_flag("quiet")) * 2,
        dry_run: m.get_flag("dry_run"),
        workdir: m.get_one::<String>("workdir").map(PathBuf::from),
        aws_init: m.get_flag("aws_init"),
        ..Cli::default()
    };
    // Flags that set a [SERVICE] key, as Fluent Bit's do (its `-b` is `storage.path`, `-L`
    // `http_listen`, ...). Keys logferry does not apply are then noted by the pipeline build.
    for (id, key) in [
        ("flush", "Flush"),
        ("log_file", "Log_File"),
        ("port", "HTTP_Port"),
        ("http_listen", "HTTP_Listen"),
        ("storage_path", "storage.path"),
        ("coro_stack_size", "Coro_Stack_Size"),
    ] {
        if let Some(v) = m.get_one::<String>(id) {
            cli.service.push((key.into(), v.clone()));
        }
    }
    for (id, key, value) in [
        ("http", "HTTP_Server", "On"),
        ("hot_reload", "Hot_Reload", "On"),
        ("no_reload_safety", "Hot_Reload.Ensure_Thread_Safety", "Off"),
        ("daemon", "Daemon", "On"),
        ("chunk_trace", "Enable_Chunk_Trace", "On"),
        ("enable_fips", "security.fips_mode", "On"),
    ] {
        if m.get_flag(id) {
            cli.service.push((key.into(), value.into()));
        }
    }
    if m.get_flag("supervisor") {
        cli.warnings.push(
            "--supervisor: accepted but not applied: logferry runs as one process; let the orchestrator (Kubernetes, systemd) restart it".into(),
        );
    }
    if m.get_flag("sosreport") {
        cli.warnings.push(
            "-S/--sosreport: accepted but not applied: logferry prints no support report (use --dry-run and the HTTP API)".into(),
        );
    }
    for sql in m.get_many::<String>("sp_task").into_iter().flatten() {
        cli.warnings.push(format!(
            "-T/--sp-task '{sql}': accepted but not applied: logferry has no stream processor"
        ));
    }
    for id in [
        "trace",
        "trace_input",
        "trace_output",
        "trace_output_property",
    ] {
        if m.contains_id(id) && m.value_source(id).is_some() {
            cli.warnings.push(format!(
                "--{}: accepted but not applied: logferry has no chunk tracing",
                id.replace('_', "-")
            ));
        }
    }
    // Fluent Bit ignores arguments that are not options. Its image's CMD repeats the program
    // (`ENTRYPOINT ["/fluent-bit/bin/fluent-bit"]`, `CMD ["/fluent-bit/bin/fluent-bit", "-c",
    // ...]`), so the program's own name is skipped quietly; anything else gets a warning.
    for arg in m.get_many::<String>("rest").into_iter().flatten() {
        let name = std::path::Path::new(arg)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        if name != "fluent-bit" && name != "logferry" {
            cli.warnings.push(format!(
                "argument '{arg}' ignored: it is not an option (Fluent Bit ignores it too)"
            ));
        }
    }
    for file in m.get_many::<String>("plugin").into_iter().flatten() {
        let (level, line) = external_plugin(file);
        match level {
            Level::Info => cli.infos.push(line),
            Level::Warn => cli.warnings.push(line),
        }
    }

    // Every positional-sensitive flag with its index, replayed in order.
    let mut events: Vec<(usize, &str, String)> = Vec::new();
    for id in [
        "input",
        "filter",
        "output",
        "custom",
        "prop",
        "match",
        "tag",
        "help",
        "help_json",
    ] {
        if id == "help" || id == "help_json" {
            // A flag has a default (false) with an index of its own: only count it when given.
            if let (true, Some(idx)) = (m.get_flag(id), m.indices_of(id)) {
                events.extend(idx.map(|i| (i, id, String::new())));
            }
            continue;
        }
        if let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) {
            events.extend(idx.zip(vals).map(|(i, v)| (i, id, v.clone())));
        }
    }
    events.sort_by_key(|(i, _, _)| *i);
    for (_, id, v) in events {
        let flag = match id {
            "input" => "-i",
            "filter" => "-F",
            "output" => "-o",
            "custom" => "-C",
            "prop" => "-p",
            "match" => "-m",
            "tag" => "-t",
            _ => "",
        };
        let span = Span::argument(flag, &v);
        match id {
            "input" | "filter" | "output" | "custom" => {
                let kind = match id {
                    "input" => SectionKind::Input,
                    "filter" => SectionKind::Filter,
                    "custom" => SectionKind::Custom,
                    _ => SectionKind::Output,
                };
                let mut s = Section::new(kind, span.clone());
                s.push("Name", v, span.clone());
                cli.sections.push(s);
            }
            "prop" => {
                let last = cli.sections.last_mut().ok_or_else(|| {
                    ConfigError::key(&span, "-p", "no plugin before -p (use -i, -F or -o first)")
                })?;
                let (k, val) = v.split_once('=').ok_or_else(|| {
                    ConfigError::key(&span, "-p", format!("expected key=value, got '{v}'"))
                })?;
                last.push(k.trim(), val.trim(), span.clone());
            }
            "match" => {
                let last = cli
                    .sections
                    .iter_mut()
                    .rev()
                    .find(|s| matches!(s.kind, SectionKind::Filter | SectionKind::Output))
                    .ok_or_else(|| {
                        ConfigError::key(&span, "-m", "no filter or output before -m")
                    })?;
                last.push("Match", v, span.clone());
            }
            "tag" => {
                let last = cli
                    .sections
                    .iter_mut()
                    .rev()
                    .find(|s| s.kind == SectionKind::Input)
                    .ok_or_else(|| ConfigError::key(&span, "-t", "no input before -t"))?;
                last.push("Tag", v, span.clone());
            }
            "help" => {
                cli.help_plugin = cli
                    .sections
                    .last()
                    .and_then(|s| s.name().map(|n| (s.kind, n.to_string())));
                if cli.help_plugin.is_none() {
                    cli.help_plugin = Some((SectionKind::Service, String::new()));
                }
            }
            "help_json" => {
                cli.help_json = Some(
                    cli.sections
                        .last()
                        .and_then(|s| s.name().map(|n| (s.kind, n.to_string()))),
                );
            }
            _ => {}
        }
    }
    // Fluent Bit's command line routes everything when no -m is given.
    let span = Span::command_line();
    for s in &mut cli.sections {
        if matches!(s.kind, SectionKind::Filter | SectionKind::Output)
            && s.get("match").is_none()
            && s.get("match_regex").is_none()
        {
            s.push("Match", "*", span.clone());
        }
    }
    Ok(cli)
}

/// How a flag's note is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// `-e FILE`: Fluent Bit loads a shared library there. The AWS for Fluent Bit image loads its
/// three Go plugins this way; logferry has them built in, so those are an info line. Any other
/// library is not loaded (logferry has no plugin ABI): a warning, and its plugins stay unknown.
pub fn external_plugin(file: &str) -> (Level, String) {
    let stem = std::path::Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(file);
    let stem = stem.strip_suffix(".so").unwrap_or(stem);
    match AWS_GO_PLUGINS.iter().find(|(go, _)| *go == stem) {
        Some((go, builtin)) => (
            Level::Info,
            format!("-e {file}: built in: output '{go}' is logferry's {builtin}"),
        ),
        None => (
            Level::Warn,
            format!("-e {file}: accepted but not applied: logferry does not load external plugins"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let m = command(String::new())
            .try_get_matches_from(std::iter::once("logferry").chain(args.iter().copied()))
            .unwrap();
        from_matches(&m).unwrap()
    }

    #[test]
    fn props_match_and_tag_apply_to_the_last_plugin() {
        let cli = parse(&[
            "-i",
            "dummy",
            "-p",
            "dummy={\"a\":1}",
            "-t",
            "t1",
            "-i",
            "stdin",
            "-o",
            "stdout",
            "-m",
            "t*",
            "-p",
            "format=json_lines",
            "-o",
            "null",
            "-f",
            "0.5",
        ]);
        assert_eq!(cli.sections.len(), 4);
        assert_eq!(cli.sections[0].value("dummy"), Some("{\"a\":1}"));
        assert_eq!(cli.sections[0].value("tag"), Some("t1"));
        assert_eq!(cli.sections[1].value("tag"), None);
        assert_eq!(cli.sections[2].value("match"), Some("t*"));
        assert_eq!(cli.sections[2].value("format"), Some("json_lines"));
        assert_eq!(
            cli.sections[3].value("match"),
            Some("*"),
            "no -m routes everything"
        );
        assert_eq!(cli.service, vec![("Flush".to_string(), "0.5".to_string())]);
    }

    #[test]
    fn prop_before_any_plugin_is_an_error() {
        let m = command(String::new())
            .try_get_matches_from(["logferry", "-p", "a=b"])
            .unwrap();
        let e = from_matches(&m).unwrap_err();
        assert!(e.to_string().contains("-p: no plugin before -p"), "{e}");
    }

    #[test]
    fn the_images_repeated_program_name_is_skipped_and_other_arguments_warned() {
        let cli = parse(&["/fluent-bit/bin/fluent-bit", "-i", "dummy", "-o", "null"]);
        assert!(cli.warnings.is_empty(), "{:?}", cli.warnings);
        assert_eq!(cli.sections.len(), 2);
        let cli = parse(&["-i", "dummy", "stray", "-o", "null"]);
        assert_eq!(
            cli.warnings,
            vec!["argument 'stray' ignored: it is not an option (Fluent Bit ignores it too)"]
        );
    }

    #[test]
    fn service_flags_set_fluent_bits_keys() {
        let cli = parse(&[
            "-b",
            "/buf",
            "-L",
            "127.0.0.1",
            "--http_port",
            "2021",
            "--http_server",
            "-W",
        ]);
        for kv in [
            ("storage.path", "/buf"),
            ("HTTP_Listen", "127.0.0.1"),
            ("HTTP_Port", "2021"),
            ("HTTP_Server", "On"),
            ("Hot_Reload.Ensure_Thread_Safety", "Off"),
        ] {
            assert!(
                cli.service.contains(&(kv.0.to_string(), kv.1.to_string())),
                "{kv:?} not in {:?}",
                cli.service
            );
        }
    }

    #[test]
    fn external_plugins() {
        assert_eq!(external_plugin("/fluent-bit/kinesis.so").0, Level::Info);
        assert_eq!(external_plugin("cloudwatch.so").0, Level::Info);
        assert_eq!(external_plugin("/x/out_go.so").0, Level::Warn);
    }

    #[test]
    fn help_after_plugin_names_it() {
        let cli = parse(&["-i", "dummy", "-h"]);
        assert_eq!(
            cli.help_plugin,
            Some((SectionKind::Input, "dummy".to_string()))
        );
    }
}
