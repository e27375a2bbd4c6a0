//! Request bodies of PutRecordBatch and PutRecords, written from the encoded items.
//!
//! The items already hold their blobs base64-encoded ([`Encoded`]), so a body is those pieces
//! copied between the JSON punctuation: no SDK model objects, no copy of each blob into a
//! `Blob`, no second base64 pass by the SDK's serializer. The bytes are the ones the SDK
//! writes for the same records (members in its order, no spaces; the tests compare them).
//! The call still goes through the SDK (endpoint, credentials, SigV4 signing, retries,
//! errors, the answer's parsing): the body is set by the operation's
//! `customize().mutate_request(...)` hook, which runs before signing, so the signature covers
//! this body. Body buffers are taken back after each call and reused.

use std::sync::Mutex;

use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;

use super::sink::Encoded;
use crate::encode::escape_json_str;

/// Body buffers kept for reuse (one per concurrent call is enough).
const BODIES_KEPT: usize = 4;

/// Request body buffers reused from call to call.
#[derive(Debug, Default)]
pub struct BodyPool {
    bodies: Mutex<Vec<Vec<u8>>>,
}

impl BodyPool {
    /// An empty buffer (a kept one when there is one).
    pub fn take(&self) -> Vec<u8> {
        let mut b = self.lock().pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Takes `body` back once nothing else holds it (the request is gone).
    pub fn give(&self, body: Bytes) {
        if let Ok(b) = body.try_into_mut() {
            let mut pool = self.lock();
            if pool.len() < BODIES_KEPT {
                pool.push(Vec::from(b));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        match self.bodies.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Replaces the SDK's serialized body of `req` with `body` (for `mutate_request`).
pub fn set_body(req: &mut HttpRequest, body: &Bytes) {
    req.headers_mut()
        .insert("content-length", body.len().to_string());
    *req.body_mut() = SdkBody::from(body.clone());
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_json_str(out, s.as_bytes());
    out.push(b'"');
}

/// `{"Data":"…"}` entries of `items`, comma-separated, with `"PartitionKey":"…"` when
/// `keys`.
fn records(out: &mut Vec<u8>, enc: &Encoded, items: &[usize], keys: bool) {
    out.push(b'[');
    for (n, &i) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        out.extend_from_slice(enc.data(i));
        out.push(b'"');
        if keys {
            out.extend_from_slice(b",\"PartitionKey\":");
            json_str(out, enc.key(i).unwrap_or_default());
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// PutRecordBatch: `{"DeliveryStreamName":"…","Records":[{"Data":"…"},…]}`.
pub fn firehose(out: &mut Vec<u8>, stream: &str, enc: &Encoded, items: &[usize]) {
    let data: usize = items.iter().map(|&i| enc.data(i).len() + 12).sum();
    out.reserve(data + stream.len() + 40);
    out.extend_from_slice(b"{\"DeliveryStreamName\":");
    json_str(out, stream);
    out.extend_from_slice(b",\"Records\":");
    records(out, enc, items, false);
    out.push(b'}');
}

/// PutRecords: `{"Records":[{"Data":"…","PartitionKey":"…"},…],"StreamName":"…"}`.
pub fn kinesis(out: &mut Vec<u8>, stream: &str, enc: &Encoded, items: &[usize]) {
    let data: usize = items
        .iter()
        .map(|&i| enc.data(i).len() + enc.key(i).map_or(0, str::len) + 30)
        .sum();
    out.reserve(data + stream.len() + 30);
    out.extend_from_slice(b"{\"Records\":");
    records(out, enc, items, true);
    out.extend_from_slice(b",\"StreamName\":");
    json_str(out, stream);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde_json::json;

    fn encoded(blobs: &[(&[u8], Option<&str>)]) -> Encoded {
        let mut enc = Encoded::default();
        for (i, (blob, key)) in blobs.iter().enumerate() {
            enc.push(blob, *key, &[i]);
        }
        enc
    }

    #[test]
    fn bodies_are_serde_jsons_with_base64_data() {
        let blobs: [(&[u8], Option<&str>); 4] = [
            (b"{\"log\":\"x\"}\n", Some("k\"1\\\u{1}é")),
            (&[0, 0xff, 0x80, b'"', b'\\', 10], Some("")),
            (b"", Some("k")),
            (b"ab", Some("日本")),
        ];
        let enc = encoded(&blobs);
        let b64 = |d: &[u8]| STANDARD.encode(d);
        let mut out = Vec::new();
        kinesis(&mut out, "s\"tream", &enc, &[0, 1, 2, 3]);
        let want = json!({
            "Records": blobs.iter().map(|(d, k)| json!({"Data": b64(d), "PartitionKey": k.unwrap()})).collect::<Vec<_>>(),
            "StreamName": "s\"tream",
        });
        assert_eq!(out, serde_json::to_vec(&want).unwrap());
        out.clear();
        firehose(&mut out, "fh", &enc, &[3, 1]);
        let want = json!({
            "DeliveryStreamName": "fh",
            "Records": [{"Data": b64(blobs[3].0)}, {"Data": b64(blobs[1].0)}],
        });
        assert_eq!(out, serde_json::to_vec(&want).unwrap());
        assert_eq!(enc.blob(1), blobs[1].0);
        assert_eq!(enc.items[1].size(), 6);
        assert_eq!(enc.items[3].size(), 2 + "日本".len());
    }

    /// Items' base64 (base64-simd, vector code for long blobs) is the `base64` crate's, for
    /// every length from 0 to 300 bytes (each remainder of 3, and past each vector width),
    /// one item after another in the shared buffer.
    #[test]
    fn items_hold_the_base64_of_their_blobs_at_every_length() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 167 + 13) as u8).collect();
        let mut enc = Encoded::default();
        for n in 0..=bytes.len() {
            enc.push(&bytes[..n], None, &[n]);
        }
        for n in 0..=bytes.len() {
            assert_eq!(enc.data(n), STANDARD.encode(&bytes[..n]).as_bytes(), "{n}");
            assert_eq!(enc.items[n].size(), n);
            assert_eq!(enc.blob(n), &bytes[..n]);
        }
    }

    #[test]
    fn buffers_come_back_when_nothing_else_holds_them() {
        let pool = BodyPool::default();
        let mut b = pool.take();
        b.extend_from_slice(b"body");
        let cap = b.capacity();
        let bytes = Bytes::from(b);
        let held = bytes.clone();
        pool.give(bytes);
        assert!(
            pool.take().capacity() < cap,
            "still held elsewhere: not kept"
        );
        drop(held);
        let mut b = pool.take();
        b.extend_from_slice(&[0; 100]);
        let cap = b.capacity();
        pool.give(Bytes::from(b));
        let again = pool.take();
        assert!(again.is_empty() && again.capacity() >= cap);
    }
}
