//! Records shared by the outputs' unit tests.

use std::sync::Arc;

use logferry_core::{Chunk, EventTime, Map, Record, Tag, Value};
use logferry_engine::Batch;

/// A batch of `records` under `tag` in chunks of `per_chunk`, every chunk packed (as records
/// that waited for an output are) but the one at `plain`.
pub fn packed_batch(tag: &str, records: &[Record], per_chunk: usize, plain: usize) -> Batch {
    let tag = Tag::from(tag);
    let chunks: Vec<Arc<Chunk>> = records
        .chunks(per_chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut c = Chunk::new(tag.clone(), part.to_vec());
            if i != plain {
                c.pack();
            }
            Arc::new(c)
        })
        .collect();
    assert!(chunks.iter().any(|c| c.packed.is_some()));
    assert!(chunks.get(plain).is_none_or(|c| c.packed.is_none()));
    Batch::new(tag, chunks)
}

/// Records of every kind the pipeline makes: nested maps, a duplicate key, shared pod
/// metadata, numbers, escapes and non-ASCII text, and one (the 151st) with a `big`-byte string.
pub fn varied_records(big: usize) -> Vec<Record> {
    let mut pod = Map::new();
    pod.insert("pod_name", "web-1");
    pod.insert(
        "labels",
        Value::Map(Map(vec![("app".into(), Value::from("a\"b"))])),
    );
    let pod = Arc::new(pod);
    (0..300)
        .map(|i: i64| {
            let mut body = Map(vec![
                (
                    "log".into(),
                    Value::from(format!("line {i} \"q\" \\ \t é ✓")),
                ),
                ("n".into(), Value::Int(i - 150)),
                ("u".into(), Value::UInt(u64::MAX - i as u64)),
                ("f".into(), Value::Float(i as f64 / 7.0)),
                ("nan".into(), Value::Float(f64::NAN)),
                ("kubernetes".into(), Value::SharedMap(Arc::clone(&pod))),
                (
                    "arr".into(),
                    Value::Array(vec![
                        Value::Bool(true),
                        Value::Bool(false),
                        Value::Null,
                        Value::Map(Map(vec![("k".into(), Value::Int(i))])),
                        Value::Array(Vec::new()),
                    ]),
                ),
                (
                    "nested".into(),
                    Value::Map(Map(vec![
                        (
                            "a".into(),
                            Value::Array(vec![Value::Null, Value::Bool(i % 2 == 0)]),
                        ),
                        ("a".into(), Value::from("the last a wins")),
                    ])),
                ),
            ]);
            if i % 3 == 0 {
                body.0
                    .push(("n".into(), Value::from("a duplicate at the top")));
            }
            if i == 150 {
                body.0.push(("big".into(), Value::from("z".repeat(big))));
            }
            Record::new(EventTime(1_700_000_000_000_000_000 + i * 1_000_000), body)
        })
        .collect()
}
