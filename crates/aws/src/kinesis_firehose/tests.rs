//! Unit tests of the `kinesis_firehose` options and limits.

use logferry_core::config::{Section, SectionKind, Span};

use super::config::settings_from_entries;
use super::service::LIMITS;
use super::PLUGIN;
use crate::kinesis_core::batch::split;
use crate::kinesis_core::record::Compression;

fn settings(kv: &[(&str, &str)]) -> Result<super::FirehoseSettings, String> {
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
    assert!(PLUGIN.is("kinesis_firehose") && PLUGIN.is("firehose"));
    assert!(PLUGIN.options.iter().all(|o| !o.doc.trim().is_empty()));
    for key in [
        "delivery_stream",
        "time_key",
        "time_key_format",
        "log_key",
        "compression",
        "role_arn",
        "endpoint",
    ] {
        assert!(PLUGIN.options.iter().any(|o| o.is(key)), "{key}");
    }
    assert!(settings(&[])
        .unwrap_err()
        .contains("delivery_stream: missing required key"));
    assert!(
        settings(&[("delivery_stream", "d"), ("compression", "arrow")])
            .unwrap_err()
            .contains("compression: 'arrow'")
    );
    assert!(
        settings(&[("delivery_stream", "d"), ("time_key_format", "%Q")])
            .unwrap_err()
            .contains("time_key_format")
    );
    let s = settings(&[("delivery_stream", "d"), ("compression", "gzip")]).unwrap();
    assert_eq!(s.format.compression, Compression::Gzip);
    assert!(s.format.newline);
}

#[test]
fn split_at_500_records_and_4_mib() {
    let lens = |sizes: &[usize]| {
        split(sizes, LIMITS)
            .iter()
            .map(|r| r.len())
            .collect::<Vec<_>>()
    };
    assert_eq!(lens(&[1; 1001]), [500, 500, 1]);
    assert_eq!(lens(&[524_288; 9]), [8, 1]);
    assert_eq!(lens(&[LIMITS.max_record_bytes; 5]), [4, 1]);
}
