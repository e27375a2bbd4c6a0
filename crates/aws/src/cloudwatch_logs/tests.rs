//! Unit tests of the `cloudwatch_logs` pieces that need no server: option checks, the split at
//! every PutLogEvents limit with exact counts, rejected-event arithmetic, event building.

use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;
use logferry_core::config::{Config, Section, SectionKind, Span};
use logferry_core::{EventTime, Map, Record, Value};
use logferry_engine::BuildContext;

use super::batch::{split, EVENT_OVERHEAD, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES};
use super::config::{settings_from_entries, CloudWatchLogsSettings, StreamName};
use super::request_builder::{build, Dropped, Event};
use super::retry::Rejected;
use super::PLUGIN;
use crate::encode::Skip;

fn section(kv: &[(&str, &str)]) -> Section {
    let mut s = Section::new(SectionKind::Output, Span::command_line());
    for (k, v) in kv {
        s.push(*k, *v, Span::command_line());
    }
    s
}

fn settings(kv: &[(&str, &str)]) -> Result<CloudWatchLogsSettings, String> {
    let mut all = vec![("region", "us-east-1")];
    all.extend_from_slice(kv);
    let s = section(&all);
    let entries: Vec<_> = s.entries.iter().collect();
    settings_from_entries(&s, &entries).map_err(|e| e.to_string())
}

fn events(sizes: &[usize], ts: impl Fn(usize) -> i64) -> Vec<Event> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Event {
            timestamp: ts(i),
            size: n,
            span: 0..0,
            record: i,
        })
        .collect()
}

fn lens(ranges: &[std::ops::Range<usize>]) -> Vec<usize> {
    ranges.iter().map(|r| r.len()).collect()
}

#[test]
fn every_option_has_a_doc_line_and_the_names_are_fluent_bits() {
    assert!(PLUGIN.options.iter().all(|o| !o.doc.trim().is_empty()));
    assert!(PLUGIN.is("cloudwatch_logs") && PLUGIN.is("cloudwatch") && PLUGIN.is("CloudWatch"));
    for key in [
        "region",
        "log_group_name",
        "log_group_template",
        "log_stream_name",
        "log_stream_prefix",
        "log_stream_template",
        "auto_create_group",
        "log_retention_days",
        "log_key",
        "log_format",
        "metric_namespace",
        "metric_dimensions",
        "role_arn",
        "external_id",
        "sts_endpoint",
        "endpoint",
        "profile",
        "extra_user_agent",
        "auto_retry_requests",
        "log_group_class",
    ] {
        assert!(PLUGIN.options.iter().any(|o| o.is(key)), "{key}");
    }
}

#[test]
fn the_seed_section_builds_unchanged() {
    let s = section(&[
        ("region", "us-east-1"),
        ("log_group_name", "fluent-bit-cloudwatch"),
        ("log_stream_prefix", "from-fluent-bit-"),
        ("auto_create_group", "On"),
        ("endpoint", "http://127.0.0.1:4566"),
    ]);
    let entries: Vec<_> = s.entries.iter().collect();
    let ctx = BuildContext::standalone("cloudwatch.0", Config::default()).unwrap();
    assert!((PLUGIN.build)(&ctx, &s, &entries).is_ok());
}

#[test]
fn option_mistakes_name_the_key() {
    let err = |kv: &[(&str, &str)]| settings(kv).unwrap_err();
    assert!(err(&[("log_stream_name", "s")]).contains("log_group_name: missing"));
    assert!(err(&[("log_group_name", "g")]).contains("log_stream_name: missing"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_stream_prefix", "p")
    ])
    .contains("log_stream_prefix: log_stream_name and log_stream_prefix"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_retention_days", "8")
    ])
    .contains("log_retention_days: 8 is not a retention"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_format", "xml")
    ])
    .contains("log_format"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("metric_namespace", "n")
    ])
    .contains("metric_namespace needs log_format json/emf"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_group_class", "cold")
    ])
    .contains("log_group_class"));
    assert!(err(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_stream_nam", "x")
    ])
    .contains("unknown key"));
    let ok = settings(&[
        ("log_group_name", "g"),
        ("log_stream_prefix", "p-"),
        ("log_group_class", "infrequent_access"),
        ("log_retention_days", "14"),
        ("new_log_group_tags", "team=obs, env=prod"),
        ("log_format", "json/emf"),
        ("metric_namespace", "ns"),
        ("metric_dimensions", "a,b;c"),
    ])
    .unwrap();
    assert_eq!(ok.stream.fallback, StreamName::Prefix("p-".into()));
    assert_eq!(ok.group_class.as_deref(), Some("INFREQUENT_ACCESS"));
    assert_eq!(ok.retention_days, Some(14));
    assert_eq!(
        ok.group_tags,
        [("team".into(), "obs".into()), ("env".into(), "prod".into())]
    );
    assert_eq!(ok.metrics.unwrap().dimensions, [vec!["a", "b"], vec!["c"]]);
}

#[test]
fn go_plugin_templates_in_names_fall_back_to_defaults() {
    let s = settings(&[
        ("log_group_name", "/aws/$(kubernetes['namespace_name'])"),
        ("default_log_group_name", "fallback"),
        ("log_stream_name", "$(tag)"),
    ])
    .unwrap();
    let mut k = Map::new();
    k.insert("namespace_name", "prod");
    let mut with = Map::new();
    with.insert("kubernetes", Value::Map(k));
    let t = EventTime::from_parts(1_700_000_000, 0);
    let records = [Record::new(t, with), Record::new(t, Map::new())];
    let enc = build(&s, "app", records.iter());
    let dests: Vec<String> = enc.streams.iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(dests, ["/aws/prod/app", "fallback/app"]);
}

/// Names rendered from what a pod wrote are made valid for CloudWatch Logs (group: only
/// `a-zA-Z0-9_-/.#`, 512; stream: no `:` or `*`, 512 characters); a name with nothing left
/// falls back to the static one. With `trusted_templates On`, a template reading anything but
/// `$kubernetes[...]` is refused when the output is built.
#[test]
fn rendered_names_follow_cloudwatch_rules_and_templates_can_be_confined() {
    let s = settings(&[
        ("log_group_template", "/app/$group"),
        ("log_group_name", "static"),
        ("log_stream_template", "$stream"),
        ("log_stream_name", "s"),
    ])
    .unwrap();
    let t = EventTime::from_parts(1_700_000_000, 0);
    let rec = |g: &str, st: &str| {
        let mut m = Map::new();
        m.insert("group", g);
        m.insert("stream", st);
        Record::new(t, m)
    };
    let long = "x".repeat(600);
    let records = [
        rec("../evil group:*\u{0}", "a:b*c\nd"),
        rec(&long, &long),
        rec("", ""),
    ];
    let enc = build(&s, "kube.a:b", records.iter());
    let dests: Vec<String> = enc.streams.iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(dests[0], "/app/../evil_group___/a_b_c_d");
    let (g, st) = dests[1].split_at(512);
    assert_eq!(g, format!("/app/{}", "x".repeat(507)));
    assert_eq!(st, format!("/{}", "x".repeat(512)));
    assert_eq!(
        dests[2], "/app//s",
        "an empty key renders an empty part, not an empty name"
    );
    let prefix = settings(&[("log_group_name", "g"), ("log_stream_prefix", "p-")]).unwrap();
    let enc = build(&prefix, "kube.a:b*c", records[..1].iter());
    assert_eq!(enc.streams[0].0.to_string(), "g/p-kube.a_b_c");

    let confined = |kv: &[(&str, &str)]| {
        let mut kv = kv.to_vec();
        kv.push(("trusted_templates", "On"));
        settings(&kv)
    };
    assert!(confined(&[
        ("log_group_template", "/k8s/$kubernetes['namespace_name']"),
        ("log_stream_template", "$kubernetes['pod_name'].$TAG"),
    ])
    .is_ok());
    let e = confined(&[
        ("log_group_template", "/k8s/$app"),
        ("log_stream_name", "s"),
    ])
    .unwrap_err();
    assert!(
        e.contains("trusted_templates") && e.contains("'app'"),
        "{e}"
    );
    let e = confined(&[
        ("log_group_name", "g"),
        ("log_stream_name", "$(kubernetes_namespace['x'])"),
    ])
    .unwrap_err();
    assert!(e.contains("kubernetes_namespace"), "{e}");
}

#[test]
fn records_without_log_key_or_destination_are_counted() {
    let s = settings(&[
        ("log_group_template", "$group"),
        ("log_stream_name", "s"),
        ("log_key", "log"),
    ])
    .unwrap();
    let t = EventTime::from_parts(1_700_000_000, 5_000_000);
    let mut ok = Map::new();
    ok.insert("group", "g");
    ok.insert("log", "hello");
    let mut no_key = Map::new();
    no_key.insert("group", "g");
    let mut no_group = Map::new();
    no_group.insert("log", "x");
    let records = [
        Record::new(t, ok),
        Record::new(t, no_key),
        Record::new(t, no_group),
    ];
    let enc = build(&s, "t", records.iter());
    assert_eq!(enc.events(), 1);
    let e = &enc.streams[0].1[0];
    assert_eq!((e.timestamp, e.size, e.record), (1_700_000_000_005, 5, 0));
    assert_eq!(enc.message(e), "hello");
    assert!(enc
        .skipped
        .contains(&(Dropped::Message(Skip::MissingKey), vec![1])));
    assert!(enc.skipped.contains(&(Dropped::NoGroup, vec![2])));
}

#[test]
fn oversize_messages_are_truncated_to_fit_one_call() {
    let s = settings(&[
        ("log_group_name", "g"),
        ("log_stream_name", "s"),
        ("log_key", "log"),
    ])
    .unwrap();
    let mut m = Map::new();
    m.insert("log", "é".repeat(MAX_MESSAGE_BYTES));
    let records = [Record::new(EventTime::from_parts(1, 0), m)];
    let enc = build(&s, "t", records.iter());
    assert_eq!(enc.truncated, 1);
    let e = &enc.streams[0].1[0];
    let msg = enc.message(e);
    assert!(msg.len() <= MAX_MESSAGE_BYTES && msg.len() >= MAX_MESSAGE_BYTES - 1);
    assert_eq!(e.size, msg.len());
    assert!(msg.chars().all(|c| c == 'é'));
    assert_eq!(lens(&split(&enc.streams[0].1)), [1]);
}

#[test]
fn split_at_10000_events() {
    let ev = events(&vec![1; MAX_BATCH_EVENTS * 2 + 1], |_| 0);
    assert_eq!(lens(&split(&ev)), [10_000, 10_000, 1]);
    let ev = events(&vec![1; MAX_BATCH_EVENTS], |_| 0);
    assert_eq!(lens(&split(&ev)), [10_000]);
}

#[test]
fn split_at_1048576_bytes_with_26_per_event() {
    // Exactly full: 16 × (65,510 + 26) = 1,048,576.
    let n = MAX_BATCH_BYTES / 16 - EVENT_OVERHEAD;
    assert_eq!(lens(&split(&events(&[n; 16], |_| 0))), [16]);
    assert_eq!(lens(&split(&events(&[n; 17], |_| 0))), [16, 1]);
    // One byte more in the last event overflows the call.
    let mut sizes = vec![n; 16];
    sizes[15] += 1;
    assert_eq!(lens(&split(&events(&sizes, |_| 0))), [15, 1]);
    // Empty messages still cost 26 bytes each, but 10,000 of them fit: the count limit wins.
    assert_eq!(lens(&split(&events(&[0; 10_001], |_| 0))), [10_000, 1]);
    // A single largest event fits alone.
    assert_eq!(
        lens(&split(&events(&[MAX_MESSAGE_BYTES, 1], |_| 0))),
        [1, 1]
    );
}

#[test]
fn split_below_24_hours_per_call() {
    let day = 24 * 3600 * 1000;
    let ev = events(&[1; 4], |i| [0, day - 1, day, 2 * day - 1][i]);
    assert_eq!(lens(&split(&ev)), [2, 2]);
    assert!(split(&[]).is_empty());
}

#[test]
fn rejected_info_counts_both_ends_without_double_counting() {
    let info = RejectedLogEventsInfo::builder()
        .too_old_log_event_end_index(1)
        .expired_log_event_end_index(2)
        .too_new_log_event_start_index(8)
        .build();
    let r = Rejected::from_info(Some(&info), 10);
    assert_eq!((r.too_old, r.expired, r.too_new, r.total), (2, 3, 2, 5));
    assert_eq!(r.indices(10).collect::<Vec<_>>(), [0, 1, 2, 8, 9]);
    let info = RejectedLogEventsInfo::builder()
        .too_old_log_event_end_index(0)
        .build();
    assert_eq!(Rejected::from_info(Some(&info), 3).total, 1);
    assert_eq!(
        Rejected::from_info(Some(&info), 3)
            .indices(3)
            .collect::<Vec<_>>(),
        [0]
    );
    assert_eq!(Rejected::from_info(None, 3).total, 0);
    assert_eq!(Rejected::from_info(None, 3).indices(3).count(), 0);
    let info = RejectedLogEventsInfo::builder()
        .too_old_log_event_end_index(5)
        .too_new_log_event_start_index(2)
        .build();
    let r = Rejected::from_info(Some(&info), 4);
    assert_eq!(r.total, 4);
    assert_eq!(
        r.indices(4).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "no index twice"
    );
    let info = RejectedLogEventsInfo::builder()
        .too_new_log_event_start_index(1)
        .build();
    let r = Rejected::from_info(Some(&info), 3);
    assert_eq!(r.indices(3).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn put_body_is_the_put_log_events_json_with_messages_escaped_once() {
    use super::request_builder::{put_body, Destination};
    let s = settings(&[("log_group_name", "g\"1"), ("log_stream_name", "s")]).unwrap();
    let mut a = Map::new();
    a.insert("log", "line \"one\"\n\\ é");
    a.insert("n", 7);
    let mut b = Map::new();
    b.insert("log", "\u{1}two");
    let records = [
        Record::new(EventTime::from_parts(1_700_000_000, 5_000_000), a.clone()),
        Record::new(EventTime::from_parts(1_700_000_001, 0), b.clone()),
    ];
    let enc = build(&s, "t", records.iter());
    let (dest, events) = &enc.streams[0];
    assert_eq!(
        dest,
        &Destination {
            group: "g\"1".into(),
            stream: "s".into()
        }
    );
    let mut body = Vec::new();
    put_body(&mut body, dest, events, &enc.text);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let plain = |m: &Map| {
        let mut out = Vec::new();
        crate::encode::write_json(&mut out, m).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        v,
        serde_json::json!({
            "logGroupName": "g\"1",
            "logStreamName": "s",
            "logEvents": [
                {"timestamp": 1_700_000_000_005i64, "message": plain(&a)},
                {"timestamp": 1_700_000_001_000i64, "message": plain(&b)},
            ]
        })
    );
    assert_eq!(events[0].size, plain(&a).len());
}

/// Packed chunks encoded straight from their bytes give the same events, byte for byte, as
/// the same records encoded as trees: with the seed's settings (read from packed bytes) and
/// with `log_key` (unpacked first), over a batch of packed and unpacked chunks.
#[test]
fn packed_chunks_encode_to_the_same_events_as_their_records() {
    let records = crate::test_records::varied_records(MAX_MESSAGE_BYTES);
    let b = crate::test_records::packed_batch("kube.a", &records, 70, 1);
    for kv in [
        &[("log_group_name", "g"), ("log_stream_prefix", "p-")][..],
        &[
            ("log_group_name", "g"),
            ("log_stream_name", "s"),
            ("log_key", "log"),
        ],
    ] {
        let s = settings(kv).unwrap();
        let want = build(&s, "kube.a", records.iter());
        let view = b.view();
        let got = super::request_builder::build_view(&s, "kube.a", &view, Vec::new());
        assert_eq!(got.text, want.text, "{kv:?}");
        assert_eq!(got.streams, want.streams, "{kv:?}");
        assert_eq!(got.skipped, want.skipped, "{kv:?}");
        assert_eq!(got.truncated, want.truncated, "{kv:?}");
        assert_eq!(got.events(), records.len());
        // A refused event's record is found by number, its packed chunk unpacked for it.
        // (Compared as JSON: the records hold a NaN, which is not equal to itself.)
        let json = |r: Option<&Record>| r.map(|r| serde_json::to_string(&r.body).unwrap());
        assert_eq!(json(view.get(150)), json(Some(&records[150])));
        assert_eq!(json(view.get(299)), json(Some(&records[299])));
        assert!(view.get(300).is_none());
    }
    let s = settings(&[("log_group_name", "g"), ("log_stream_prefix", "p-")]).unwrap();
    let got = build(&s, "kube.a", records.iter());
    assert_eq!(got.truncated, 1, "record 150 is cut to fit");
}
