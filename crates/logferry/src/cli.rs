//! The command line, with Fluent Bit's flags: `-c`, `-R`, `-i/-F/-o` with `-p key=value`,
//! `-m MATCH` and `-t TAG` applying to the plugin named last, `-f`, `-l`, `-v`/`-q`,
//! `--dry-run`, `-H`/`-P`, `-Y`. Order matters for `-p`/`-m`/`-t`, so the flags are read with
//! their positions and replayed in order into config sections.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};
use logferry_core::config::{ConfigError, Section, SectionKind, Span};

/// What the command line asks for.
#[derive(Debug, Default)]
pub struct Cli {
    pub config: Option<PathBuf>,
    pub parsers: Vec<PathBuf>,
    /// Sections built from `-i/-F/-o` and their `-p/-m/-t`, in order.
    pub sections: Vec<Section>,
    /// `[SERVICE]` overrides (`-f`, `-l`, `-H`, `-P`, `-Y`).
    pub service: Vec<(String, String)>,
    pub verbosity: i8,
    pub dry_run: bool,
    /// `-h` given after `-i/-F/-o NAME`: show that plugin's options.
    pub help_plugin: Option<(SectionKind, String)>,
}

/// The clap definition; `plugins_help` is appended to `--help`.
pub fn command(plugins_help: String) -> Command {
    Command::new("logferry")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A Fluent Bit compatible log agent for Kubernetes: reads Fluent Bit configs as they are.")
        .disable_help_flag(true)
        .after_help(plugins_help)
        .arg(Arg::new("config").short('c').long("config").value_name("FILE").help("configuration file (classic .conf or YAML)"))
        .arg(Arg::new("parser").short('R').long("parser").value_name("FILE").action(ArgAction::Append).help("parsers file to load"))
        .arg(Arg::new("input").short('i').long("input").value_name("INPUT").action(ArgAction::Append).help("add an input plugin"))
        .arg(Arg::new("filter").short('F').long("filter").value_name("FILTER").action(ArgAction::Append).help("add a filter plugin"))
        .arg(Arg::new("output").short('o').long("output").value_name("OUTPUT").action(ArgAction::Append).help("add an output plugin"))
        .arg(Arg::new("prop").short('p').long("prop").value_name("KEY=VALUE").action(ArgAction::Append).help("set a property of the last plugin"))
        .arg(Arg::new("match").short('m').long("match").value_name("MATCH").action(ArgAction::Append).help("set Match of the last filter or output"))
        .arg(Arg::new("tag").short('t').long("tag").value_name("TAG").action(ArgAction::Append).help("set Tag of the last input"))
        .arg(Arg::new("flush").short('f').long("flush").value_name("SECONDS").help("flush interval in seconds (default 1)"))
        .arg(Arg::new("log_file").short('l').long("log_file").value_name("FILE").help("write the agent's log to FILE"))
        .arg(Arg::new("http").short('H').long("http").action(ArgAction::SetTrue).help("enable the HTTP monitoring server"))
        .arg(Arg::new("port").short('P').long("port").value_name("PORT").help("HTTP server port (default 2020)"))
        .arg(Arg::new("hot_reload").short('Y').long("enable-hot-reload").action(ArgAction::SetTrue).help("allow reloading the config"))
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::Count).help("more logging (-vv for trace)"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).help("log errors only"))
        .arg(Arg::new("dry_run").short('D').long("dry-run").action(ArgAction::SetTrue).help("check the configuration and exit"))
        .arg(Arg::new("help").short('h').long("help").action(ArgAction::SetTrue).help("print help (after -i/-F/-o NAME: that plugin's options)"))
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
        ..Cli::default()
    };
    if let Some(f) = m.get_one::<String>("flush") {
        cli.service.push(("Flush".into(), f.clone()));
    }
    if let Some(l) = m.get_one::<String>("log_file") {
        cli.service.push(("Log_File".into(), l.clone()));
    }
    if m.get_flag("http") {
        cli.service.push(("HTTP_Server".into(), "On".into()));
    }
    if let Some(p) = m.get_one::<String>("port") {
        cli.service.push(("HTTP_Port".into(), p.clone()));
    }
    if m.get_flag("hot_reload") {
        cli.service.push(("Hot_Reload".into(), "On".into()));
    }

    // Every positional-sensitive flag with its index, replayed in order.
    let mut events: Vec<(usize, &str, String)> = Vec::new();
    for id in ["input", "filter", "output", "prop", "match", "tag", "help"] {
        if id == "help" {
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
            "prop" => "-p",
            "match" => "-m",
            "tag" => "-t",
            _ => "",
        };
        let span = Span::argument(flag, &v);
        match id {
            "input" | "filter" | "output" => {
                let kind = match id {
                    "input" => SectionKind::Input,
                    "filter" => SectionKind::Filter,
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
                    .find(|s| s.kind != SectionKind::Input)
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
            _ => {}
        }
    }
    // Fluent Bit's command line routes everything when no -m is given.
    let span = Span::command_line();
    for s in &mut cli.sections {
        if s.kind != SectionKind::Input
            && s.get("match").is_none()
            && s.get("match_regex").is_none()
        {
            s.push("Match", "*", span.clone());
        }
    }
    Ok(cli)
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
    fn help_after_plugin_names_it() {
        let cli = parse(&["-i", "dummy", "-h"]);
        assert_eq!(
            cli.help_plugin,
            Some((SectionKind::Input, "dummy".to_string()))
        );
    }
}
