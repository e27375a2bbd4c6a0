//! The `logferry` binary as a user runs it: `--dry-run` on good and bad configs (every error
//! names file:line:key), the seed's ConfigMap, `--help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn logferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logferry"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("logferry runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shared() -> std::path::PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../../shared")
}

/// (config, the error it must give: `{f}` stands for the file, then `:line: key: reason` prefix)
const BAD: &[(&str, &str)] = &[
    ("[INPUT]\n    Name dumy\n", "{f}:2: Name: unknown input plugin 'dumy' (did you mean 'dummy'?)"),
    ("[INPUT]\n    Name  tail\n    Pathh /x\n", "{f}:3: Pathh: unknown key for tail input (did you mean 'Path'?)"),
    ("[INPUT]\n    Name tail\n    Path /x\n    Mem_Buf_Limt 5MB\n", "{f}:4: Mem_Buf_Limt: unknown key for tail input (did you mean 'Mem_Buf_Limit'?)"),
    ("[INPUT]\n    Name tail\n    Path /x\n    Mem_Buf_Limit lots\n", "{f}:4: Mem_Buf_Limit: expected a size"),
    ("[INPUT]\n    Name tail\n    Path /x\n    Read_from_Head maybe\n", "{f}:4: Read_from_Head: expected On/Off"),
    ("[INPUT]\n    Name tail\n    Path /x\n    Refresh_Interval soon\n", "{f}:4: Refresh_Interval: expected a time"),
    ("[SERVICE]\n    Flush often\n[INPUT]\n    Name dummy\n", "{f}:2: Flush: expected a number, got 'often'"),
    ("[SERVICE]\n    Flsh 1\n[INPUT]\n    Name dummy\n", "{f}:2: Flsh: unknown key for service (did you mean 'Flush'?)"),
    ("[SERVICE]\n    HTTP_Port http\n[INPUT]\n    Name dummy\n", "{f}:2: HTTP_Port: expected an integer"),
    ("[INPUT]\n    Tag x\n", "{f}:1: [INPUT] section without a Name"),
    ("[INPUT]\n    Name dummy\n[OUTPUT]\n    Name stdot\n    Match *\n", "{f}:4: Name: unknown output plugin 'stdot' (did you mean 'stdout'?)"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name rewrite_tag\n    Match *\n    Rule $a ^x$ y\n", "{f}:6: Rule: expected '$KEY REGEX NEW_TAG KEEP'"),
    ("[INPUT]\n    Name tail\n    Tag x\n", "{f}:1: Path: missing required key for tail input"),
    ("[INPUT]\n    Name tail\n    Path /x\n    DB.sync sometimes\n", "{f}:4: db.sync: unsupported value 'sometimes'"),
    ("[INPUT]\n    Name tail\n    Path /x\n    multiline.parser javva\n", "{f}:4: multiline.parser: unknown multiline parser 'javva'"),
    ("[INPUT]\n    Name tail\n    Path /x\n    Parser nginxx\n", "{f}:4: Parser: unknown parser 'nginxx'"),
    ("[PARSER]\n    Name x\n    Format regex\n    Regex (?<a\n[INPUT]\n    Name dummy\n", "{f}:4: Regex:"),
    ("[INPUT]\n    Name dummy\n[OUTPUT]\n    Name stdout\n    Match_Regex (\n", "{f}:5: Match_Regex: invalid regular expression"),
    ("[INPUT]\n    Name dummy\n[OUTPUT]\n    Name stdout\n    Match *\n    Retry_Limit often\n", "{f}:6: Retry_Limit: expected a number, no_limits, False or no_retries"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name grep\n    Match *\n    Regex log (\n", "{f}:6: Regex:"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name nest\n    Match *\n    Operation nest\n    Wildcard a*\n", "{f}:6: Nest_under: operation 'nest' needs Nest_under"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name modify\n    Match *\n    Rename onlyone\n", "{f}:6: Rename:"),
    ("[SERVICE]\n    Parsers_File missing-parsers.conf\n[INPUT]\n    Name dummy\n", "{f}:2: Parsers_File: cannot read"),
    ("[INPTU]\n    Name dummy\n", "{f}:1: unknown section [INPTU] (did you mean [INPUT]?)"),
    // Every Fluent Bit 5.1 plugin name logferry lacks is "not yet available", not "unknown".
    ("[INPUT]\n    Name cpu\n", "{f}:2: Name: input plugin 'cpu' is not yet available in logferry"),
    ("[INPUT]\n    Name mqtt\n", "{f}:2: Name: input plugin 'mqtt' is not yet available in logferry"),
    ("[INPUT]\n    Name syslog\n", "{f}:1: Path: unix modes need Path"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name wasm\n    Match *\n", "{f}:4: Name: filter plugin 'wasm' is not yet available in logferry"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name lua\n    Match *\n    script missing.lua\n    call f\n", "{f}:6: script: cannot access script"),
    ("[INPUT]\n    Name dummy\n[FILTER]\n    Name throttle\n    Match *\n    Rate none\n", "{f}:6: Rate: "),
    ("[INPUT]\n    Name dummy\n[OUTPUT]\n    Name datadog\n    Match *\n", "{f}:4: Name: output plugin 'datadog' is not yet available in logferry"),
    ("[INPUT]\n    Name dummy\n[OUTPUT]\n    Name kafka\n    Match *\n", "{f}:4: Name: output plugin 'kafka' is not yet available in logferry"),
    ("[SERVICE]\n    Flush 0\n[INPUT]\n    Name dummy\n", "{f}:2: Flush: invalid flush value '0'"),
    ("[SERVICE]\n    Log_Level debgu\n[INPUT]\n    Name dummy\n", "{f}:2: Log_Level: expected off, error, warn, info, debug or trace, got 'debgu'"),
    ("[INPUT]\n    Name dummy\n   Tag x\n", "{f}:3: invalid indentation level"),
];

#[test]
fn every_bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    assert!(BAD.len() >= 20);
    for (i, (conf, want)) in BAD.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.conf"));
        std::fs::write(&f, conf).unwrap();
        let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
        let err = text(&out.stderr);
        let want = want.replace("{f}", &f.display().to_string());
        assert!(!out.status.success(), "case {i} must fail: {conf}");
        assert!(
            err.lines()
                .any(|l| l.trim_start_matches("[error] ").starts_with(&want)),
            "case {i}: want a line starting with\n  {want}\ngot:\n{err}"
        );
    }
}

#[test]
fn dry_run_of_the_seed_configmap_succeeds() {
    let conf = shared().join("conformance/seed-nginx/fluent-bit.conf");
    assert!(
        conf.exists(),
        "{} is missing: this test reads the seed's ConfigMap from the shared conformance fixtures",
        conf.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(logferry()
        .arg("--dry-run")
        .arg("-c")
        .arg(&conf)
        .env("LOG_DIR", dir.path())
        .env("STATE_DIR", dir.path())
        .env("PARSERS_FILE", "")
        .env("KUBE_URL", "https://127.0.0.1:1")
        .env("KUBE_TAG_PREFIX", "kube.")
        .env("CLOUDWATCH_ENDPOINT", "http://127.0.0.1:1"));
    let err = text(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("[error]")).collect();
    assert!(
        errors.is_empty(),
        "the seed's ConfigMap is fully available: {err}"
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "configuration test is successful");
}

#[test]
fn dry_run_of_a_good_config_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("good.conf");
    std::fs::write(
        &f,
        "[SERVICE]\n    Flush 1\n[INPUT]\n    Name tail\n    Path /var/log/containers/*.log\n    Parser docker\n    Docker_Mode On\n[OUTPUT]\n    Name stdout\n    Match *\n",
    )
    .unwrap();
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "configuration test is successful");
}

/// A configuration check changes nothing on disk: an agent running with the same
/// configuration may be writing to the s3 output's `store_dir` (a real start there removes
/// upload leftovers and cuts partial lines), and a missing `store_dir` is not created.
#[test]
fn dry_run_leaves_the_s3_store_dir_as_it_found_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("buf").join("my-bucket");
    std::fs::create_dir_all(&store).unwrap();
    let leftover = store.join(format!("x{}", ".upload.tmp"));
    std::fs::write(&leftover, b"half an upload").unwrap();
    let conf = |store_dir: &str| {
        format!(
            "[INPUT]\n    Name dummy\n[OUTPUT]\n    Name s3\n    Match *\n    bucket my-bucket\n    region us-east-1\n    store_dir {store_dir}\n    total_file_size 1M\n"
        )
    };
    let f = dir.path().join("s3.conf");
    std::fs::write(&f, conf("buf")).unwrap();
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&leftover).unwrap(), b"half an upload");

    std::fs::write(&f, conf("missing")).unwrap();
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !dir.path().join("missing").exists(),
        "store_dir created by a dry run"
    );
}

/// What is accepted but not applied is said, with file, line and key, and is no error.
#[test]
fn dry_run_warns_of_what_is_accepted_but_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("notes.conf");
    std::fs::write(
        &f,
        "[SERVICE]\n    storage.keep.rejected On\n[INPUT]\n    Name dummy\n    storage.type memrb\n[FILTER]\n    Name multiline\n    multiline.parser java\n    emitter_mem_buf_limit 20M\n[FILTER]\n    Name grep\n    Regex log x\n[OUTPUT]\n    Name stdout\n    Match *\n    Log_Suppress_Interval 10\n[SERVICE]\n    Daemon Off\n    flush.adaptive On\n",
    )
    .unwrap();
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let f = f.display();
    for want in [
        format!("[warn] {f}:2: storage.keep.rejected: accepted but not applied: the dead-letter store needs storage.path"),
        format!("[warn] {f}:5: storage.type: 'memrb' is accepted but not applied"),
        format!("[warn] {f}:9: emitter_mem_buf_limit: accepted but not applied"),
        format!("[warn] {f}:6: NO match rule for multiline.0 filter instance, unloading"),
        format!("[warn] {f}:10: NO match rule for grep.1 filter instance, unloading"),
        format!("[warn] {f}:16: Log_Suppress_Interval: accepted but not applied: repeated log lines are not suppressed"),
        format!("[warn] {f}:19: flush.adaptive: accepted but not applied"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(!err.contains("Daemon"), "Daemon Off changes nothing: {err}");
    assert_eq!(text(&out.stdout).trim(), "configuration test is successful");
}

/// Writes `lines` as a config file and gives the 1-based line of each `(line, …)` pick.
fn config_lines(dir: &Path, name: &str, lines: &[&str]) -> std::path::PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    f
}

fn line_of(lines: &[&str], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.trim() == needle)
        .unwrap_or_else(|| panic!("{needle} not in the config"))
        + 1
}

/// Fluent Bit stops at the first bad value; a dry run here lists every mistake of every section
/// at once, each with file, line and key. Values are checked as Fluent Bit checks them: it
/// refuses `Flush 0` ("invalid flush value") and an unknown `Log_Level`.
#[test]
fn dry_run_reports_every_error_of_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "[SERVICE]",
        "    Flush 0",
        "    Log_Level debgu",
        "[INPUT]",
        "    Name tail",
        "    Path /nowhere/*.log",
        "    Mem_Buf_Limit lots",
        "    Skip_Long_Lines maybe",
        "    Refresh_Intervl 5",
        "    Log_Level verbose",
        "[OUTPUT]",
        "    Name s3",
        "    Match *",
        "    bucket logs",
        "    region us-east-1",
        "    format parquet",
        "    Retry_Limit many",
    ];
    let f = config_lines(dir.path(), "bad.conf", &lines);
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let fd = f.display();
    let wants = [
        ("Flush 0", "Flush: invalid flush value '0'"),
        (
            "Log_Level debgu",
            "Log_Level: expected off, error, warn, info, debug or trace, got 'debgu'",
        ),
        ("Mem_Buf_Limit lots", "Mem_Buf_Limit: expected a size"),
        ("Skip_Long_Lines maybe", "Skip_Long_Lines: "),
        (
            "Refresh_Intervl 5",
            "Refresh_Intervl: unknown key for tail input (did you mean 'Refresh_Interval'?)",
        ),
        (
            "Log_Level verbose",
            "Log_Level: expected off, error, warn, info, debug or trace, got 'verbose'",
        ),
        (
            "format parquet",
            "format: 'parquet' is not yet available in logferry (json_lines is)",
        ),
        ("Retry_Limit many", "Retry_Limit: expected a number"),
    ];
    for (line, want) in wants {
        let want = format!("[error] {fd}:{}: {want}", line_of(&lines, line));
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(
        err.contains(&format!(
            "configuration test failed: {} error(s)",
            wants.len()
        )),
        "{err}"
    );
}

/// A mistake in a parser is reported once: the plugins that name the parser are not also told
/// it is unknown.
#[test]
fn a_broken_parser_is_not_also_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "[MULTILINE_PARSER]",
        "    Name my_ml",
        "    Type regex",
        "    Flush_Timeot 1000",
        "    Rule \"start_state\" \"/^\\d/\" \"cont\"",
        "    Rule \"cont\" \"/^\\s/\" \"cont\"",
        "[INPUT]",
        "    Name tail",
        "    Path /nowhere/*.log",
        "    multiline.parser my_ml",
    ];
    let f = config_lines(dir.path(), "ml.conf", &lines);
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    let err = text(&out.stderr);
    let want = format!(
        "[error] {}:4: Flush_Timeot: unknown key for multiline parser (did you mean 'Flush_Timeout'?)",
        f.display()
    );
    assert!(err.contains(&want), "missing {want:?} in\n{err}");
    assert!(!err.contains("unknown multiline parser"), "{err}");
    assert!(
        err.contains("configuration test failed: 1 error(s)"),
        "{err}"
    );
}

/// A command-line mistake quotes the argument it came from, not a file and line 0.
#[test]
fn command_line_errors_quote_the_argument() {
    let out = run(logferry().args([
        "-i",
        "dumy",
        "-o",
        "stdout",
        "-p",
        "format=yaml",
        "--dry-run",
    ]));
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "[error] command line (-i dumy): Name: unknown input plugin 'dumy' (did you mean 'dummy'?)",
        "[error] command line (-p format=yaml): format: unknown format 'yaml'",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
    assert!(!err.contains(":0:"), "{err}");
}

/// Plugin keys that are accepted and not applied are each a warning, at start and in
/// `--dry-run`, with file, line and why; set to their harmless value they say nothing.
#[test]
fn dry_run_warns_of_plugin_keys_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        "[INPUT]",
        "    Name tail",
        "    Path /nowhere/*.log",
        "    Docker_Mode_Parser first",
        "    Parser_1 second",
        "    File_Cache_Advise On",
        "    Log_Level debug",
        "[INPUT]",
        "    Name stdin",
        "    thread.ring_buffer.capacity 1024",
        "[OUTPUT]",
        "    Name file",
        "    Match *",
        "    Path /tmp",
        "    rotate On",
        "    enable_strftime Off",
        "[OUTPUT]",
        "    Name cloudwatch_logs",
        "    Match *",
        "    region us-east-1",
        "    log_group_name g",
        "    log_stream_prefix p-",
        "    tls On",
        "    tls.verify Off",
        "    net.keepalive Off",
        "    credentials_endpoint http://169.254.170.2/creds",
        "[OUTPUT]",
        "    Name kinesis_firehose",
        "    Match *",
        "    region us-east-1",
        "    delivery_stream s",
        "    simple_aggregation On",
    ];
    let f = config_lines(dir.path(), "notes.conf", &lines);
    let out = run(logferry().arg("--dry-run").arg("-c").arg(&f));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let fd = f.display();
    for (line, want) in [
        (
            "Docker_Mode_Parser first",
            "Docker_Mode_Parser: accepted but not applied",
        ),
        (
            "Parser_1 second",
            "Parser_1: accepted but not applied: it belongs to the old multiline mode",
        ),
        (
            "Log_Level debug",
            "Log_Level: accepted but not applied: one log level applies to the whole agent",
        ),
        (
            "thread.ring_buffer.capacity 1024",
            "thread.ring_buffer.capacity: accepted but not applied",
        ),
        (
            "rotate On",
            "rotate: accepted but not applied: files are not rotated by logferry yet",
        ),
        (
            "tls.verify Off",
            "tls.verify: accepted but not applied: certificates are always verified",
        ),
        (
            "net.keepalive Off",
            "net.keepalive: accepted but not applied",
        ),
        (
            "credentials_endpoint http://169.254.170.2/creds",
            "credentials_endpoint: accepted but not applied",
        ),
        (
            "simple_aggregation On",
            "simple_aggregation: accepted but not applied",
        ),
    ] {
        let want = format!("[warn] {fd}:{}: {want}", line_of(&lines, line));
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    for quiet in ["File_Cache_Advise", "enable_strftime", ": tls:"] {
        assert!(
            !err.contains(quiet),
            "{quiet} is set to its harmless value: {err}"
        );
    }
    assert_eq!(text(&out.stdout).trim(), "configuration test is successful");
}

#[test]
fn help_lists_plugins_and_a_plugins_options() {
    let out = run(logferry().arg("--help"));
    let s = text(&out.stdout);
    assert!(out.status.success());
    for p in [
        "tail",
        "dummy",
        "stdin",
        "grep",
        "modify",
        "record_modifier",
        "nest",
        "stdout",
        "file",
        "null",
    ] {
        assert!(s.contains(&format!("  {p} ")), "--help lacks {p}:\n{s}");
    }
    let out = run(logferry().args(["-i", "tail", "-h"]));
    let s = text(&out.stdout);
    assert!(
        s.contains("Rotate_Wait") && s.contains("(default: 5)"),
        "{s}"
    );
    assert!(
        s.contains("Mem_Buf_Limit"),
        "shared keys are listed too:\n{s}"
    );
}

fn repo_root() -> std::path::PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../..")
}

/// Run from another directory, the quick start's relative Path matches nothing: tail says so at
/// start (in the log, not only in --dry-run) instead of printing nothing.
#[test]
fn quickstart_from_another_directory_warns_that_path_matches_no_file() {
    let elsewhere = tempfile::tempdir().unwrap();
    let conf = repo_root().join("examples/quickstart/fluent-bit.conf");
    let out = run(logferry()
        .current_dir(elsewhere.path())
        .arg("-c")
        .arg(&conf));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(text(&out.stdout).is_empty(), "no file, no record");
    let want = format!(
        "{}:14: Path: matches no file yet (relative patterns are read from the working directory, {}",
        conf.display(),
        elsewhere.path().display()
    );
    assert!(err.contains(&want), "missing {want:?} in\n{err}");
    // From the repository root it matches, and says nothing about it.
    let out = run(logferry().current_dir(repo_root()).arg("-c").arg(&conf));
    assert!(
        !text(&out.stderr).contains("matches no file"),
        "{}",
        text(&out.stderr)
    );
}

/// The README's quick start, in both formats: same records, and it ends by itself.
#[test]
fn quickstart_runs_and_classic_and_yaml_print_the_same_records() {
    let mut outputs = Vec::new();
    for conf in [
        "examples/quickstart/fluent-bit.conf",
        "examples/quickstart/fluent-bit.yaml",
    ] {
        let out = run(logferry().current_dir(repo_root()).args(["-c", conf]));
        assert!(out.status.success(), "{conf}: {}", text(&out.stderr));
        outputs.push(text(&out.stdout));
    }
    assert_eq!(outputs[0], outputs[1], "classic and YAML differ");
    let records: Vec<serde_json::Value> = outputs[0]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "{}", outputs[0]);
    let seed = records
        .iter()
        .find(|r| r["time"] == "2019-12-19T17:41:12.70630778Z")
        .expect("the seed's line")
        .clone();
    // The seed's record (../shared/conformance/seed-nginx), compared as its README says, after
    // removing what this example adds (`cluster` from modify, `date` from stdout's json_lines).
    assert_eq!(
        seed["date"], 1576777272.0,
        "record time from the nginx parser"
    );
    let mut seed = seed;
    let obj = seed.as_object_mut().unwrap();
    assert_eq!(obj.remove("cluster"), Some(serde_json::json!("quickstart")));
    obj.remove("date");
    let expected_path = shared().join("conformance/seed-nginx/expected-record.json");
    let text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: this test compares with the seed's shared conformance record",
            expected_path.display()
        )
    });
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    logferry_kubernetes::testing::assert_matches_seed_record(seed.clone(), &expected);
    let app = records
        .iter()
        .find(|r| r["kubernetes"]["container_name"] == "app")
        .expect("the app's record");
    assert_eq!(
        app["data"]["metadata"]["source"], "mobile",
        "JSON log merged under data"
    );
}
