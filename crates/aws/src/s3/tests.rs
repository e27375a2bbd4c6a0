//! Unit tests of the `s3` options.

use std::path::Path;

use logferry_core::config::{Section, SectionKind, Span};

use super::config::{settings_from_entries, ObjectCompression};
use super::PLUGIN;

fn settings(kv: &[(&str, &str)]) -> Result<super::S3Settings, String> {
    let mut s = Section::new(SectionKind::Output, Span::command_line());
    s.push("region", "us-east-1", Span::command_line());
    for (k, v) in kv {
        s.push(*k, *v, Span::command_line());
    }
    let entries: Vec<_> = s.entries.iter().collect();
    settings_from_entries(&s, &entries, Path::new("/etc/logferry")).map_err(|e| e.to_string())
}

#[test]
fn names_options_and_checks() {
    assert!(PLUGIN.is("s3"));
    assert!(PLUGIN.options.iter().all(|o| !o.doc.trim().is_empty()));
    for key in [
        "bucket",
        "total_file_size",
        "upload_chunk_size",
        "upload_timeout",
        "s3_key_format",
        "use_put_object",
        "compression",
        "content_type",
        "store_dir",
    ] {
        assert!(PLUGIN.options.iter().any(|o| o.is(key)), "{key}");
    }
    assert!(settings(&[])
        .unwrap_err()
        .contains("bucket: missing required key"));
    assert!(settings(&[("bucket", "b"), ("upload_chunk_size", "1M")])
        .unwrap_err()
        .contains("upload_chunk_size"));
    assert!(settings(&[
        ("bucket", "b"),
        ("upload_chunk_size", "1M"),
        ("use_put_object", "on")
    ])
    .is_ok());
    assert!(settings(&[("bucket", "b"), ("compression", "arrow")])
        .unwrap_err()
        .contains("compression"));
    assert!(settings(&[("bucket", "b"), ("s3_key_format", "%Q")])
        .unwrap_err()
        .contains("s3_key_format"));
    let s = settings(&[
        ("bucket", "b"),
        ("compression", "zstd"),
        ("store_dir", "buf"),
    ])
    .unwrap();
    assert_eq!(s.compression, ObjectCompression::Zstd);
    assert_eq!(s.store_dir, Path::new("/etc/logferry/buf"));
    assert_eq!(s.total_file_size, 100 * 1024 * 1024);
    assert_eq!(s.upload_timeout, std::time::Duration::from_secs(600));
}
