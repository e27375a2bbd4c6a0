//! A minimal msgpack encoder for `file`'s `msgpack` format: each record as Fluent Bit's chunk
//! format v2, `[[TIME, METADATA], BODY]`, where TIME is the forward protocol's `EventTime`
//! (ext type 0: big-endian u32 seconds, u32 nanoseconds) and METADATA is an empty map (logferry
//! records carry no metadata). Integers use the smallest encoding, as msgpack-c does.

use logferry_core::{Map, Record, Value};

/// Appends one record.
pub fn write_record(out: &mut Vec<u8>, r: &Record) {
    out.push(0x92); // fixarray(2)
    out.push(0x92);
    out.extend_from_slice(&[0xd7, 0x00]); // fixext8, type 0
    out.extend_from_slice(&(r.time.secs() as u32).to_be_bytes());
    out.extend_from_slice(&r.time.subsec_nanos().to_be_bytes());
    out.push(0x80); // empty metadata map
    write_map(out, &r.body);
}

fn write_map(out: &mut Vec<u8>, m: &Map) {
    let n = m.len();
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    for (k, v) in m.iter() {
        write_str(out, k);
        write_value(out, v);
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_uint(out: &mut Vec<u8>, u: u64) {
    if u < 128 {
        out.push(u as u8);
    } else if u <= 0xff {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        return write_uint(out, i as u64);
    }
    if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Str(s) => write_str(out, s),
        Value::Array(a) => {
            let n = a.len();
            if n < 16 {
                out.push(0x90 | n as u8);
            } else if n <= 0xffff {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            for v in a {
                write_value(out, v);
            }
        }
        Value::Map(m) => write_map(out, m),
        Value::SharedMap(m) => write_map(out, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::EventTime;

    #[test]
    fn record_bytes() {
        let mut body = Map::new();
        body.insert("a", 1i64);
        body.insert("b", -33i64);
        body.insert(
            "c",
            Value::Array(vec![Value::Null, Value::Bool(true), Value::UInt(300)]),
        );
        let r = Record::new(EventTime::from_parts(1, 2), body);
        let mut out = Vec::new();
        write_record(&mut out, &r);
        assert_eq!(
            out,
            [
                0x92, 0x92, 0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x83, 0xa1, b'a', 0x01, 0xa1,
                b'b', 0xd0, 0xdf, 0xa1, b'c', 0x93, 0xc0, 0xc3, 0xcd, 0x01, 0x2c,
            ]
        );
    }
}
