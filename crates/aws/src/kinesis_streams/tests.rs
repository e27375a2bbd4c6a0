//! Unit tests of the `kinesis_streams` options and encoding.

use logferry_core::config::{Section, SectionKind, Span};
use logferry_core::{EventTime, Map, Record, Value};

use super::config::settings_from_entries;
use super::service::{KinesisEncoder, LIMITS};
use super::PLUGIN;
use crate::kinesis_core::batch::split;
use crate::kinesis_core::sink::{Encoded, Encoder};

fn settings(kv: &[(&str, &str)]) -> Result<super::KinesisSettings, String> {
    let mut s = Section::new(SectionKind::Output, Span::command_line());
    s.push("region", "us-east-1", Span::command_line());
    for (k, v) in kv {
        s.push(*k, *v, Span::command_line());
    }
    let entries: Vec<_> = s.entries.iter().collect();
    settings_from_entries(&s, &entries).map_err(|e| e.to_string())
}

#[test]
fn names_options_and_checks() {
    assert!(PLUGIN.is("kinesis_streams") && PLUGIN.is("kinesis"));
    assert!(PLUGIN.options.iter().all(|o| !o.doc.trim().is_empty()));
    for key in [
        "stream",
        "partition_key",
        "time_key",
        "log_key",
        "aggregation",
        "compression",
    ] {
        assert!(PLUGIN.options.iter().any(|o| o.is(key)), "{key}");
    }
    assert!(settings(&[])
        .unwrap_err()
        .contains("stream: missing required key"));
    assert!(settings(&[("stream", "s"), ("compression", "snappy")]).is_err());
    assert!(settings(&[("stream", "s"), ("compression", "zlib")]).is_ok());
}

#[test]
fn partition_keys_from_accessors_and_go_arrows() {
    let mut k = Map::new();
    k.insert("pod_name", "web");
    let mut m = Map::new();
    m.insert("kubernetes", Value::Map(k));
    m.insert("log", "x");
    let mut chunk = logferry_core::Chunk::new("t".into(), vec![Record::new(EventTime(0), m)]);
    chunk.pack();
    let b = logferry_engine::Batch::new("t".into(), vec![std::sync::Arc::new(chunk)]);
    for pk in ["$kubernetes['pod_name']", "kubernetes->pod_name"] {
        let s = settings(&[("stream", "s"), ("partition_key", pk), ("log_key", "log")]).unwrap();
        let mut enc = Encoded::default();
        KinesisEncoder::new(&s).encode("t", &b.view(), &mut enc);
        assert_eq!(enc.key(0), Some("web"), "{pk}");
        assert_eq!(enc.blob(0), b"x");
    }
}

#[test]
fn split_at_500_records_and_5_mib() {
    let lens = |sizes: &[usize]| {
        split(sizes, LIMITS)
            .iter()
            .map(|r| r.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(lens(&[1; 501]), [500, 1]);
    assert_eq!(lens(&[655_360; 9]), [8, 1]);
}
