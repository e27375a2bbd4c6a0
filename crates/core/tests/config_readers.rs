//! Integration tests of the classic and YAML config readers: reader-level errors with their
//! file:line, includes, variables, the two formats reading to the same sections, and the
//! conformance seed's config.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use logferry_core::config::{Config, Section, SectionKind, Vars};

/// Writes `files` (relative path, content) under a fresh temp dir.
fn write_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn fixture(name: &str) -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// (kind, lowercased key, value) for every entry, section by section.
fn shape(sections: &[Section]) -> Vec<(SectionKind, Vec<(String, String)>)> {
    sections
        .iter()
        .map(|s| {
            let entries = s
                .entries
                .iter()
                .map(|e| (e.key.to_ascii_lowercase(), e.value.clone()))
                .collect();
            (s.kind, entries)
        })
        .collect()
}

/// A bad config: its files, the file to load (the first one), and the exact start of the
/// error message, where `{dir}` stands for the temp dir.
struct Bad {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    expected: &'static str,
}

const BAD: &[Bad] = &[
    // ---- classic ----
    Bad {
        name: "classic unknown section, with suggestion",
        files: &[("main.conf", "[SERVICE]\n    Flush 1\n[INPTU]\n    Name dummy\n")],
        expected: "{dir}/main.conf:3: unknown section [INPTU] (did you mean [INPUT]?)",
    },
    Bad {
        name: "classic unknown section, no near miss",
        files: &[("main.conf", "\n[STREAM_TASK]\n    Name x\n")],
        expected: "{dir}/main.conf:2: unknown section [STREAM_TASK]\n",
    },
    Bad {
        name: "classic entry not indented",
        files: &[("main.conf", "[INPUT]\n    Name dummy\nTag x\n")],
        expected: "{dir}/main.conf:3: invalid indentation level",
    },
    Bad {
        name: "classic entries indented differently",
        files: &[("main.conf", "[INPUT]\n    Name dummy\n\n  Tag x\n")],
        expected: "{dir}/main.conf:4: invalid indentation level",
    },
    Bad {
        name: "classic tab after spaces (mixed indentation)",
        files: &[("main.conf", "[OUTPUT]\n    Name stdout\n\tMatch *\n")],
        expected: "{dir}/main.conf:3: invalid indentation level",
    },
    Bad {
        name: "classic extra indentation",
        files: &[("main.conf", "[OUTPUT]\n  Name stdout\n    Match *\n")],
        expected: "{dir}/main.conf:3: invalid indentation level",
    },
    Bad {
        name: "classic key without value",
        files: &[("main.conf", "[OUTPUT]\n    Name stdout\n    Match\n")],
        expected: "{dir}/main.conf:3: Match: each key must have a value",
    },
    Bad {
        name: "classic key followed by blanks only",
        files: &[("main.conf", "[SERVICE]\n    Flush   \r\n")],
        expected: "{dir}/main.conf:2: Flush: each key must have a value",
    },
    Bad {
        name: "classic entry before any section",
        files: &[("main.conf", "# comment\n    Name dummy\n[INPUT]\n")],
        expected: "{dir}/main.conf:2: entry before any section",
    },
    Bad {
        name: "classic bad header",
        files: &[("main.conf", "[INPUT\n    Name dummy\n")],
        expected: "{dir}/main.conf:1: bad header definition",
    },
    Bad {
        name: "classic indented header",
        files: &[("main.conf", "[INPUT]\n    Name dummy\n    [OUTPUT]\n")],
        expected: "{dir}/main.conf:3: section header [OUTPUT] must not be indented",
    },
    Bad {
        name: "classic missing include",
        files: &[("main.conf", "[SERVICE]\n    Flush 1\n\n@INCLUDE nope.conf\n")],
        expected: "{dir}/main.conf:4: @INCLUDE: cannot read {dir}/nope.conf",
    },
    Bad {
        name: "classic include without a file",
        files: &[("main.conf", "@INCLUDE\n")],
        expected: "{dir}/main.conf:1: @INCLUDE: missing the file to include",
    },
    Bad {
        name: "classic include cycle",
        files: &[
            ("main.conf", "@INCLUDE a.conf\n"),
            ("a.conf", "[INPUT]\n    Name dummy\n@INCLUDE main.conf\n"),
        ],
        expected: "{dir}/a.conf:3: @INCLUDE: include cycle: {dir}/main.conf -> {dir}/a.conf -> {dir}/main.conf",
    },
    Bad {
        name: "classic self include",
        files: &[("main.conf", "@INCLUDE main.conf\n")],
        expected: "{dir}/main.conf:1: @INCLUDE: include cycle",
    },
    Bad {
        name: "classic error inside an included file names that file",
        files: &[
            ("main.conf", "@INCLUDE sub/inc.conf\n"),
            ("sub/inc.conf", "[FILTER]\n    Name grep\n      Regex a b\n"),
        ],
        expected: "{dir}/sub/inc.conf:3: invalid indentation level",
    },
    Bad {
        name: "classic unknown command",
        files: &[("main.conf", "@INCLUDES x.conf\n")],
        expected: "{dir}/main.conf:1: @INCLUDES: unknown command (expected @INCLUDE or @SET) (did you mean '@INCLUDE'?)",
    },
    Bad {
        name: "classic @SET without =",
        files: &[("main.conf", "@SET LOG_DIR /var/log\n")],
        expected: "{dir}/main.conf:1: @SET: expected KEY=VALUE",
    },
    // ---- YAML ----
    Bad {
        name: "yaml unknown top-level key, with suggestion",
        files: &[("main.yaml", "service:\n  flush: 1\npipelines:\n  inputs: []\n")],
        expected: "{dir}/main.yaml:3: pipelines: unknown key for the top level (did you mean 'pipeline'?)",
    },
    Bad {
        name: "yaml unknown pipeline key, with suggestion",
        files: &[("main.yaml", "pipeline:\n  inputs: []\n  output:\n    - name: stdout\n")],
        expected: "{dir}/main.yaml:3: output: unknown key for pipeline (did you mean 'outputs'?)",
    },
    Bad {
        name: "yaml syntax error: unclosed flow list",
        files: &[("main.yaml", "service:\n  flush: 1\npipeline:\n  inputs: [\n")],
        expected: "{dir}/main.yaml:5: YAML syntax error",
    },
    Bad {
        name: "yaml syntax error: bad indentation",
        files: &[("main.yaml", "service:\n  flush: 1\n log_level: info\n")],
        expected: "{dir}/main.yaml:3: YAML syntax error",
    },
    Bad {
        name: "yaml pipeline not a map",
        files: &[("main.yaml", "pipeline:\n  - inputs\n")],
        expected: "{dir}/main.yaml:1: pipeline: expected a map of inputs, filters and outputs, found a list",
    },
    Bad {
        name: "yaml inputs not a list",
        files: &[("main.yaml", "pipeline:\n  inputs:\n    name: dummy\n")],
        expected: "{dir}/main.yaml:2: inputs: expected a list of maps, found a map",
    },
    Bad {
        name: "yaml input item not a map",
        files: &[("main.yaml", "pipeline:\n  outputs:\n    - stdout\n")],
        expected: "{dir}/main.yaml:3: outputs: expected a map for each item, found a scalar",
    },
    Bad {
        name: "yaml service not a map",
        files: &[("main.yaml", "service: on\n")],
        expected: "{dir}/main.yaml:1: service: expected a map, found a scalar",
    },
    Bad {
        name: "yaml key without value",
        files: &[("main.yaml", "pipeline:\n  inputs:\n    - name: tail\n      path:\n")],
        expected: "{dir}/main.yaml:4: path: each key must have a value",
    },
    Bad {
        name: "yaml env not a map",
        files: &[("main.yaml", "env:\n  - A=1\n")],
        expected: "{dir}/main.yaml:1: env: expected a map of variables, found a list",
    },
    Bad {
        name: "yaml top level not a map",
        files: &[("main.yaml", "# c\n- service\n")],
        expected: "{dir}/main.yaml:2: the top level must be a map",
    },
    Bad {
        name: "yaml includes not a list",
        files: &[("main.yaml", "includes: other.yaml\n")],
        expected: "{dir}/main.yaml:1: includes: expected a list of files, found a scalar",
    },
    Bad {
        name: "yaml missing include",
        files: &[("main.yaml", "service:\n  flush: 1\nincludes:\n  - missing.yaml\n")],
        expected: "{dir}/main.yaml:4: includes: cannot read {dir}/missing.yaml",
    },
    Bad {
        name: "yaml include cycle",
        files: &[
            ("main.yaml", "includes:\n  - b.yaml\n"),
            ("b.yaml", "pipeline:\n  inputs:\n    - name: dummy\nincludes:\n  - main.yaml\n"),
        ],
        expected: "{dir}/b.yaml:5: includes: include cycle: {dir}/main.yaml -> {dir}/b.yaml -> {dir}/main.yaml",
    },
    Bad {
        name: "yaml include cycle through a classic file",
        files: &[
            ("main.yaml", "includes:\n  - c.conf\n"),
            ("c.conf", "@INCLUDE main.yaml\n"),
        ],
        expected: "{dir}/c.conf:1: @INCLUDE: include cycle",
    },
    Bad {
        name: "yaml including a bad classic file names the classic file",
        files: &[
            ("main.yaml", "includes:\n  - c.conf\n"),
            ("c.conf", "[INPUT]\n    Name dummy\n    Tag\n"),
        ],
        expected: "{dir}/c.conf:3: Tag: each key must have a value",
    },
    Bad {
        name: "yaml multiline rule missing next_state",
        files: &[(
            "main.yaml",
            "multiline_parsers:\n  - name: m\n    rules:\n      - state: start_state\n        regex: /a/\n",
        )],
        expected: "{dir}/main.yaml:4: rules: a rule needs state, regex and next_state; 'next_state' is missing",
    },
    Bad {
        name: "yaml multiline rule unknown key",
        files: &[(
            "main.yaml",
            "multiline_parsers:\n  - name: m\n    rules:\n      - state: a\n        regexp: /a/\n        next_state: b\n",
        )],
        expected: "{dir}/main.yaml:5: regexp: unknown key for a multiline rule (did you mean 'regex'?)",
    },
];

#[test]
fn bad_configs_name_file_line_and_key() {
    assert!(BAD.len() >= 20);
    let mut failures = Vec::new();
    for case in BAD {
        let dir = write_tree(case.files);
        let dir_text = dir.path().display().to_string();
        let main = dir.path().join(case.files[0].0);
        let expected = case.expected.replace("{dir}", &dir_text);
        // A trailing newline in `expected` means "the whole message".
        let (expected, whole) = match expected.strip_suffix('\n') {
            Some(e) => (e.to_string(), true),
            None => (expected, false),
        };
        match Config::load_with(&main, &mut Vars::empty()) {
            Ok(c) => failures.push(format!(
                "{}: expected an error, read {} sections",
                case.name,
                c.sections.len()
            )),
            Err(e) => {
                let msg = e.to_string();
                let ok = if whole {
                    msg == expected
                } else {
                    msg.starts_with(&expected)
                };
                if !ok {
                    failures.push(format!(
                        "{}:\n  expected: {expected}\n  got:      {msg}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn classic_includes_globs_and_relative_paths() {
    let dir = write_tree(&[
        (
            "etc/fluent-bit.conf",
            "\
[SERVICE]
    Flush 1
@INCLUDE inputs/*.conf
@INCLUDE outputs/stdout.conf
[FILTER]
  Name grep
  Regex log error
",
        ),
        ("etc/inputs/20-b.conf", "[INPUT]\n    Name b\n"),
        ("etc/inputs/10-a.conf", "[INPUT]\n    Name a\n"),
        ("etc/inputs/readme.txt", "[INPUT]\n    Name not-included\n"),
        // Relative to the including file (outputs/), not to the main file.
        ("etc/outputs/stdout.conf", "@INCLUDE common/match.conf\n"),
        (
            "etc/outputs/common/match.conf",
            "[OUTPUT]\n    Name stdout\n    Match *\n",
        ),
    ]);
    let main = dir.path().join("etc/fluent-bit.conf");
    let config = Config::load_with(&main, &mut Vars::empty()).unwrap();
    let names: Vec<(SectionKind, &str)> = config
        .sections
        .iter()
        .map(|s| (s.kind, s.name().unwrap_or("")))
        .collect();
    assert_eq!(
        names,
        [
            (SectionKind::Service, ""),
            (SectionKind::Input, "a"),
            (SectionKind::Input, "b"),
            (SectionKind::Output, "stdout"),
            (SectionKind::Filter, "grep"),
        ]
    );
    // Spans name the file each section was written in.
    let out = &config.sections[3];
    assert_eq!(
        &*out.span.file,
        dir.path().join("etc/outputs/common/match.conf")
    );
    assert_eq!(out.get("Match").unwrap().span.line, 3);
    assert_eq!(&*config.sections[4].span.file, main.as_path());
    assert_eq!(config.sections[4].span.line, 5);
    // Each section sets its own indentation: two spaces here, four in the others.
    assert_eq!(config.sections[4].value("regex"), Some("log error"));
}

#[test]
fn classic_set_and_variables_from_vars() {
    let dir = write_tree(&[
        (
            "main.conf",
            "\
@SET TAG_PREFIX=kube.
@SET DB_FILE=${STATE_DIR}/flb.db
@INCLUDE input.conf
[OUTPUT]
    Name  http
    Host  ${HOST}
    Port  ${UNSET_VAR}
",
        ),
        (
            "input.conf",
            "[INPUT]\n    Name tail\n    Path ${LOG_DIR}/*.log\n    Tag  ${TAG_PREFIX}*\n    DB   ${DB_FILE}\n",
        ),
    ]);
    let mut vars = Vars::empty();
    vars.set("LOG_DIR", "/logs");
    vars.set("STATE_DIR", "/state");
    vars.set("HOST", "collector.local");
    let config = Config::load_with(&dir.path().join("main.conf"), &mut vars).unwrap();
    let input = config.sections(SectionKind::Input).next().unwrap();
    assert_eq!(input.value("path"), Some("/logs/*.log"));
    assert_eq!(input.value("tag"), Some("kube.*"));
    assert_eq!(input.value("db"), Some("/state/flb.db"));
    let output = config.sections(SectionKind::Output).next().unwrap();
    assert_eq!(output.value("host"), Some("collector.local"));
    // An unset variable expands to the empty string, as in Fluent Bit.
    assert_eq!(output.value("port"), Some(""));
    assert_eq!(vars.get("TAG_PREFIX").as_deref(), Some("kube."));
}

#[test]
fn yaml_env_includes_and_variables() {
    let dir = write_tree(&[
        (
            "main.yaml",
            "\
env:
  FLUSH: 2
  OUT_DIR: ${BASE}/out
service:
  flush: ${FLUSH}
includes:
  - parts/inputs.yaml
  - parts/filters.conf
pipeline:
  outputs:
    - name: file
      path: ${OUT_DIR}
",
        ),
        (
            "parts/inputs.yaml",
            "pipeline:\n  inputs:\n    - name: tail\n      path: ${LOG_DIR}/*.log\n",
        ),
        (
            "parts/filters.conf",
            "[FILTER]\n    Name grep\n    Regex log ${FLUSH}\n",
        ),
    ]);
    let mut vars = Vars::empty();
    vars.set("BASE", "/srv");
    vars.set("LOG_DIR", "/logs");
    let config = Config::load_with(&dir.path().join("main.yaml"), &mut vars).unwrap();
    let got: Vec<_> = config
        .sections
        .iter()
        .map(|s| {
            (
                s.kind,
                s.entries
                    .iter()
                    .map(|e| e.value.as_str())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (SectionKind::Service, vec!["2"]),
            (SectionKind::Input, vec!["tail", "/logs/*.log"]),
            (SectionKind::Filter, vec!["grep", "log 2"]),
            (SectionKind::Output, vec!["file", "/srv/out"]),
        ]
    );
    assert_eq!(
        &*config.sections[1].span.file,
        dir.path().join("parts/inputs.yaml")
    );
    assert_eq!(config.sections[1].span.line, 3);
}

#[test]
fn classic_and_yaml_read_to_the_same_sections() {
    let mut vars = Vars::empty();
    let classic = Config::load_with(&fixture("equivalent.conf"), &mut vars).unwrap();
    let yaml = Config::load_with(&fixture("equivalent.yaml"), &mut vars).unwrap();
    let kinds: Vec<SectionKind> = classic.sections.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            SectionKind::Service,
            SectionKind::Input,
            SectionKind::Filter,
            SectionKind::Output,
            SectionKind::Parser,
            SectionKind::MultilineParser,
        ]
    );
    let (c, y) = (shape(&classic.sections), shape(&yaml.sections));
    for (i, (cs, ys)) in c.iter().zip(&y).enumerate() {
        assert_eq!(cs, ys, "section {i} differs");
    }
    assert_eq!(c.len(), y.len());

    // Spot checks that the fixtures hold what the brief asks for.
    let input = &classic.sections[1];
    let repeated: Vec<&str> = input
        .entries
        .iter()
        .filter(|e| e.key.eq_ignore_ascii_case("multiline.parser"))
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(repeated, ["docker", "cri"]);
    assert_eq!(
        classic.sections[2].entries[3].value,
        "team logs # not a comment"
    );
    let rules: Vec<&str> = yaml.sections[5]
        .entries
        .iter()
        .filter(|e| e.key == "rule")
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(
        rules,
        [
            r#""start_state" "/^[a-zA-Z]+ [0-9]+ [0-9:]+ .*/" "cont""#,
            r#""cont" "/^[ ]+at .*/" "cont""#
        ]
    );
    assert_eq!(
        classic.sections[0].value("parsers_file"),
        Some("parsers.conf")
    );
}

#[test]
fn seed_nginx_config() {
    let path =
        Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance/seed-nginx/fluent-bit.conf");
    assert!(
        path.exists(),
        "{} is missing: this test reads the seed's ConfigMap from the shared conformance fixtures",
        path.display()
    );
    let mut vars = Vars::empty();
    for (k, v) in [
        ("LOG_DIR", "/logs"),
        ("STATE_DIR", "/state"),
        ("KUBE_TAG_PREFIX", "kube.logs."),
        ("KUBE_URL", "https://127.0.0.1:6443"),
        ("KUBE_CA_FILE", "/certs/ca.crt"),
        ("KUBE_TOKEN_FILE", "/certs/token"),
        ("CLOUDWATCH_ENDPOINT", "http://127.0.0.1:5000"),
        ("PARSERS_FILE", "parsers.conf"),
    ] {
        vars.set(k, v);
    }
    let config = Config::load_with(&path, &mut vars).unwrap();
    let count = |k| config.sections(k).count();
    assert_eq!(
        [
            count(SectionKind::Service),
            count(SectionKind::Input),
            count(SectionKind::Filter),
            count(SectionKind::Output)
        ],
        [1, 1, 1, 1]
    );
    assert_eq!(config.sections.len(), 4);

    let service = config.sections(SectionKind::Service).next().unwrap();
    assert_eq!(service.value("Parsers_File"), Some("parsers.conf"));

    let input = config.sections(SectionKind::Input).next().unwrap();
    let expect_input = [
        ("Name", "tail"),
        ("Tag", "kube.*"),
        ("Path", "/logs/*.log"),
        ("DB", "/state/flb_kube.db"),
        ("Parser", "docker"),
        ("Docker_Mode", "On"),
        ("Mem_Buf_Limit", "5MB"),
        ("Skip_Long_Lines", "On"),
        ("Refresh_Interval", "10"),
    ];
    let got: Vec<(&str, &str)> = input
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(got, expect_input);

    let filter = config.sections(SectionKind::Filter).next().unwrap();
    assert_eq!(filter.name(), Some("kubernetes"));
    assert_eq!(filter.value("match"), Some("kube.*"));
    assert_eq!(filter.value("kube_url"), Some("https://127.0.0.1:6443"));
    assert_eq!(filter.value("kube_ca_file"), Some("/certs/ca.crt"));
    assert_eq!(filter.value("kube_token_file"), Some("/certs/token"));
    assert_eq!(filter.value("kube_tag_prefix"), Some("kube.logs."));
    assert_eq!(filter.value("merge_log"), Some("On"));
    assert_eq!(filter.value("merge_log_key"), Some("data"));
    assert_eq!(filter.value("k8s-logging.parser"), Some("On"));
    assert_eq!(filter.value("k8s-logging.exclude"), Some("On"));
    assert_eq!(filter.entries.len(), 10);

    let output = config.sections(SectionKind::Output).next().unwrap();
    let got: Vec<(&str, &str)> = output
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("Name", "cloudwatch"),
            ("Match", "**"),
            ("region", "us-east-2"),
            ("log_group_name", "fluentbit-cloudwatch"),
            ("log_stream_prefix", "fluentbit-"),
            ("auto_create_group", "true"),
            ("endpoint", "http://127.0.0.1:5000"),
        ]
    );
    // Lines point at the file as written.
    assert_eq!(input.span.line, 12);
    assert_eq!(output.get("endpoint").unwrap().span.line, 42);
}
