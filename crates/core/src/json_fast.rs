//! A JSON object read straight into a [`Map`], for the common shape of application logs
//! (`Merge_Log`): no serde visitor per value, one scan per string, keys and values sliced from
//! the text. It handles the subset applications write; anything else (a `\u` escape, a raw
//! control character, numbers serde_json would read as floats from integer syntax, nesting
//! deeper than [`MAX_DEPTH`]) returns `None` and the caller takes serde_json's path, which
//! gives the same map. The map equals what `serde_json` + `Value`'s `Deserialize` make of the
//! same text (tests below and the `json_fast` fuzz target compare the two).

use crate::event::{Map, Str, Value};

/// Deeper nesting goes to serde_json (which stops at 128).
const MAX_DEPTH: usize = 64;

/// Bytes that end a plain run inside a string: the quote, the backslash, and the control
/// characters JSON does not allow raw.
static STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// What each byte after a backslash stands for in a JSON string; 0 where JSON has no such
/// short escape (`\u`, which the general parsers handle, or an invalid one).
pub static SHORT_ESCAPES: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'/' as usize] = b'/';
    t[b'n' as usize] = b'\n';
    t[b't' as usize] = b'\t';
    t[b'r' as usize] = b'\r';
    t[b'b' as usize] = 0x08;
    t[b'f' as usize] = 0x0c;
    t
};

/// The index of the first byte at or after `i` that ends a plain run ([`STOP`]): 8 bytes at a
/// time with the "has a zero byte" and "has a byte less than" word tricks, whose lowest hit is
/// exact (borrows only disturb the bits above it), then byte by byte for the last few.
#[inline]
fn plain_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    while let Some(w) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(w.try_into().ok()?);
        let hits = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while !STOP[*b.get(i)? as usize] {
        i += 1;
    }
    Some(i)
}

/// The object at the start of `text` (no leading whitespace) and the text after it.
pub fn object(text: &str) -> Option<(Map, &str)> {
    let mut pairs = Vec::with_capacity(8);
    let rest = object_into(text, &mut pairs)?;
    Some((Map(pairs), rest))
}

/// [`object`], with the object's pairs appended to `out` instead of a new map (`Merge_Log`
/// moves them into the record and reuses one buffer). On `None`, `out` may hold some of them.
pub fn object_into<'t>(text: &'t str, out: &mut Vec<(Str, Value)>) -> Option<&'t str> {
    let mut r = Reader { s: text, i: 0 };
    if r.peek()? != b'{' {
        return None;
    }
    r.pairs(0, out)?;
    Some(&text[r.i..])
}

/// The pair [`Reader::pairs`] pushes before reading a key and a value into it.
const EMPTY_PAIR: (Str, Value) = (Str::const_new(""), Value::Null);

struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Called before every token, and a log object rarely has any whitespace: one compare
    /// settles the usual case (every JSON blank is at most `' '`).
    #[inline]
    fn skip_ws(&mut self) {
        let b = self.s.as_bytes();
        while let Some(&c) = b.get(self.i) {
            if c > b' ' {
                break;
            }
            if c == b' ' || c == b'\n' || c == b'\t' || c == b'\r' {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// At `{`: the object's pairs, appended to `out`. Each pair is pushed empty first and its
    /// key and value are then read into it where it stays: a pair made on the stack and
    /// pushed was read back with wider loads than the stores that made it (store-forwarding
    /// stalls, most of this reader's cpu-clock samples on P2; docs/performance.md).
    fn pairs(&mut self, depth: usize, out: &mut Vec<(Str, Value)>) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            // From a constant: built in place, the pair's unset bytes were copied from a
            // stack slot written at other widths (a stall of its own).
            out.push(EMPTY_PAIR);
            let (k, v) = out.last_mut()?;
            self.string_into(k)?;
            self.eat(b':')?;
            self.value_into(depth, v)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// At `[`: the array's values, read in place as [`Reader::pairs`] reads pairs.
    fn array_into(&mut self, depth: usize, out: &mut Vec<Value>) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.skip_ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            out.push(Value::Null);
            self.value_into(depth, out.last_mut()?)?;
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The value here, written over `dst` (a `Null` placeholder).
    fn value_into(&mut self, depth: usize, dst: &mut Value) -> Option<()> {
        self.skip_ws();
        match self.peek()? {
            b'"' => {
                self.i += 1;
                dst.fill_null(Value::Str(Str::default()));
                match dst {
                    Value::Str(s) => self.string_into(s),
                    _ => None,
                }
            }
            b'{' => {
                dst.fill_null(Value::Map(Map(Vec::with_capacity(8))));
                match dst {
                    Value::Map(m) => self.pairs(depth + 1, &mut m.0),
                    _ => None,
                }
            }
            b'[' => {
                dst.fill_null(Value::Array(Vec::new()));
                match dst {
                    Value::Array(a) => self.array_into(depth + 1, a),
                    _ => None,
                }
            }
            b't' => self.word("true", Value::Bool(true), dst),
            b'f' => self.word("false", Value::Bool(false), dst),
            b'n' => self.word("null", Value::Null, dst),
            b'-' | b'0'..=b'9' => {
                dst.fill_null(self.number()?);
                Some(())
            }
            _ => None,
        }
    }

    fn word(&mut self, w: &str, v: Value, dst: &mut Value) -> Option<()> {
        self.s[self.i..].starts_with(w).then(|| {
            self.i += w.len();
            dst.fill_null(v);
        })
    }

    /// After the opening quote; appends the string to `dst` (empty) and leaves `i` after the
    /// closing quote. Plain runs are skipped 8 bytes at a time ([`plain_end`]): the strings of
    /// a log object are short, so a vectorized search would cost more in its call than it
    /// saves. A plain string is copied straight into `dst` (inline when it fits).
    fn string_into(&mut self, dst: &mut Str) -> Option<()> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut i = plain_end(b, start)?;
        match b[i] {
            b'"' => {
                self.i = i + 1;
                dst.push_str(self.s.get(start..i)?);
                return Some(());
            }
            b'\\' => {}
            _ => return None,
        }
        // Escapes: copy the plain runs between them (cut at ASCII, so still UTF-8).
        let mut out = String::with_capacity(i - start + 32);
        out.push_str(self.s.get(start..i)?);
        loop {
            // b[i] is a backslash.
            // `\u` (0 in the table): serde_json's path (surrogate pairs, lone surrogates).
            match SHORT_ESCAPES[usize::from(*b.get(i + 1)?)] {
                0 => return None,
                c => out.push(char::from(c)),
            }
            i += 2;
            let run = i;
            i = plain_end(b, i)?;
            out.push_str(self.s.get(run..i)?);
            match b[i] {
                b'"' => {
                    self.i = i + 1;
                    *dst = Str::from(out);
                    return Some(());
                }
                b'\\' => {}
                _ => return None,
            }
        }
    }

    /// JSON's number grammar; integers of up to 18 digits and floats on Clinger's fast path
    /// ([`Decimal::exact`]) here, anything else through serde_json's own number reader, so the
    /// value is bit for bit the same.
    fn number(&mut self) -> Option<Value> {
        let b = self.s.as_bytes();
        let start = self.i;
        let mut i = start;
        let neg = b[i] == b'-';
        if neg {
            i += 1;
        }
        let int_start = i;
        match b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(b, i)?,
            _ => return None,
        }
        let int_end = i;
        let mut float = false;
        let mut frac = int_end..int_end;
        if b.get(i) == Some(&b'.') {
            float = true;
            i = digits(b, i + 1)?;
            frac = int_end + 1..i;
        }
        let mut exp = i..i;
        let mut exp_neg = false;
        if matches!(b.get(i), Some(b'e' | b'E')) {
            float = true;
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                exp_neg = b[i] == b'-';
                i += 1;
            }
            let from = i;
            i = digits(b, i)?;
            exp = from..i;
        }
        self.i = i;
        let text = &self.s[start..i];
        if float {
            let parts = Decimal {
                int: &b[int_start..int_end],
                frac: &b[frac],
                exp: &b[exp],
                exp_neg,
            };
            return match parts.exact() {
                Some(f) => Some(Value::Float(if neg { -f } else { f })),
                None => serde_json::from_str::<f64>(text).ok().map(Value::Float),
            };
        }
        // `-0` is an integer to serde_json too, but keep the rare cases on its path.
        if int_end - int_start > 18 || (neg && text == "-0") {
            return None;
        }
        let mut n: i64 = 0;
        for &d in &b[int_start..int_end] {
            n = n * 10 + i64::from(d - b'0');
        }
        Some(Value::Int(if neg { -n } else { n }))
    }
}

/// The digits of a JSON float, for Clinger's fast path.
struct Decimal<'t> {
    int: &'t [u8],
    frac: &'t [u8],
    exp: &'t [u8],
    exp_neg: bool,
}

/// 10^0 ..= 10^22: every one exact in an `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Decimal<'_> {
    /// The magnitude when its digits, read as one integer `w`, give `w ≤ 2^53` and the decimal
    /// exponent is within ±22: then `w` and `10^|e|` are both exact and one IEEE multiply or
    /// divide rounds correctly (Clinger's fast path). That is also exactly what serde_json
    /// computes for such a number (`w as f64`, then `*` or `/` by the same power), so the value
    /// is bit for bit its own. Anything else is `None`, for serde_json's reader.
    fn exact(&self) -> Option<f64> {
        if self.int.len() + self.frac.len() > 19 || self.exp.len() > 4 {
            return None;
        }
        let mut w: u64 = 0;
        for &d in self.int.iter().chain(self.frac) {
            w = w * 10 + u64::from(d - b'0');
        }
        let mut e: i64 = 0;
        for &d in self.exp {
            e = e * 10 + i64::from(d - b'0');
        }
        if self.exp_neg {
            e = -e;
        }
        e -= self.frac.len() as i64;
        if w > 1 << 53 {
            return None;
        }
        let pow = *POW10.get(usize::try_from(e.unsigned_abs()).ok()?)?;
        let f = w as f64;
        Some(if e >= 0 { f * pow } else { f / pow })
    }
}

/// The end of the run of ASCII digits at `i`; `None` when there is none.
fn digits(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    (i > start).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json and `Value`'s `Deserialize` make of `text`.
    fn serde(text: &str) -> Option<Map> {
        match serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .next()?
            .ok()?
        {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn same_map_as_serde_json() {
        let same = [
            r#"{"level":"info","msg":"order placed","order_id":"o-123","user":{"id":42,"tier":"gold"},"amount":19.99,"ok":true,"none":null}"#,
            r#"{}"#,
            r#"{ "a" : [ 1 , -2 , 3.5e2 , "x" , [ ] , { } ] , "b" : false }"#,
            r#"{"esc":"q\" b\\ s\/ n\n t\t r\r b\b f\f","ü":"ünïcödé ✓"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"n":0,"m":-0.0,"big":999999999999999999,"neg":-999999999999999999,"e":1E+3,"f":1e-7}"#,
            r#"{"f":0.1,"g":123456789.123456789,"h":2.2250738585072011e-308}"#,
            "{\"a\":\n{\"b\":\t[\r1]}}",
        ];
        for text in same {
            let (fast, rest) = object(text).unwrap_or_else(|| panic!("fast path: {text}"));
            assert_eq!(rest, "", "{text}");
            assert_eq!(Some(fast), serde(text), "{text}");
        }
    }

    /// Random objects built from JSON's pieces, then cut and with a byte changed: wherever the
    /// fast reader gives a map, it is serde_json's.
    #[test]
    fn random_texts_agree_with_serde_json() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\n",
            "\"k\"",
            "\"v\\\"x\"",
            "\"\\u0041\"",
            "\"é\\n\"",
            "0",
            "-1",
            "12",
            "3.25",
            "-0.5e-3",
            "1E9",
            "true",
            "false",
            "null",
            "123456789012345678",
            "1234567890123456789",
            "\"\"",
            "\"a\\\\b\"",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut fast_read, mut cases) = (0, 0);
        for _ in 0..20_000 {
            let mut t = String::from("{");
            for _ in 0..next(24) {
                t.push_str(PIECES[next(PIECES.len())]);
            }
            // Mostly well-formed: a key, a value, close.
            if next(2) == 0 {
                t = format!("{{\"k{}\":{}}}", next(9), PIECES[12 + next(13)]);
            }
            if next(4) == 0 && !t.is_empty() {
                let cut = next(t.len());
                if t.is_char_boundary(cut) {
                    t.truncate(cut);
                }
            }
            cases += 1;
            if let Some((fast, _)) = object(&t) {
                fast_read += 1;
                assert_eq!(Some(fast), serde(&t), "{t:?}");
            }
        }
        assert!(
            fast_read > cases / 4,
            "{fast_read} of {cases} read by the fast path"
        );
    }

    /// The word scan finds a quote, a backslash or a raw control character at every position
    /// of a long string, past bytes of multi-byte characters and bytes 0x7f and 0x20 (which
    /// must not stop it).
    #[test]
    fn every_stop_byte_at_every_position() {
        for at in 0..24 {
            for (stop, tail) in [("\\\"", "x"), ("\\\\", "y"), ("\u{1}", ""), ("\u{1f}", "")] {
                let mut v: String = "é\u{7f} abcdefghijklmnopqrstuvwxyz"
                    .chars()
                    .take(at)
                    .collect();
                v.push_str(stop);
                v.push_str(tail);
                v.push_str(" ñ end");
                let text = format!("{{\"key with spaces\":\"{v}\",\"n\":1}}");
                let fast = object(&text).map(|(m, _)| m);
                // Raw control characters are serde_json's (it refuses them); the rest must read.
                if stop.starts_with('\\') {
                    assert_eq!(fast, serde(&text), "{text:?}");
                    assert!(fast.is_some(), "{text:?}");
                } else {
                    assert_eq!(fast, None, "{text:?}");
                }
            }
        }
    }

    /// Floats read by the fast path are serde_json's, bit for bit (its sign of zero too),
    /// at the edges of the path (2^53, 19 digits, 10^±22) and past them, where serde_json
    /// reads them itself.
    #[test]
    fn floats_are_serde_jsons_bit_for_bit() {
        let mut texts: Vec<String> = "0.0 -0.0 0e0 -0e5 1.5 -2.25 0.1 0.3 1e22 1e23 1e-22 1e-23 \
             9007199254740992.0 9007199254740993.0 9007199254740992e-22 123456789012345678.9 \
             1234567890123456789.0 12345678901234567890.0 1.7976931348623157e308 5e-324 \
             2.2250738585072011e-308 1E+3 1e-0007 4.35 0.000123 100.500 3.0e-5 1e10000 0e99999"
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let int_digits = next(12) as u32 + 1;
            let int = next(10u64.pow(int_digits));
            let frac_len = next(10) as usize + 1;
            let frac = format!("{:0frac_len$}", next(10u64.pow(frac_len as u32)));
            let mut t = format!("{}{int}.{frac}", if next(2) == 0 { "-" } else { "" });
            if next(3) == 0 {
                let sign = ["", "+", "-"][next(3) as usize];
                t.push_str(&format!("e{sign}{}", next(30)));
            }
            texts.push(t);
        }
        for t in &texts {
            let text = format!("{{\"f\":{t}}}");
            let want = serde_json::from_str::<f64>(t).ok();
            let got = object(&text).and_then(|(m, _)| match m.get("f") {
                Some(Value::Float(f)) => Some(*f),
                _ => None,
            });
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{t}");
        }
    }

    #[test]
    fn leaves_the_rest_and_steps_aside() {
        let (m, rest) = object("{\"a\":1} trailing").unwrap();
        assert_eq!(m.get("a"), Some(&Value::Int(1)));
        assert_eq!(rest, " trailing");
        // serde_json's path: escapes it owns, numbers it reads as floats, raw controls,
        // anything malformed.
        for text in [
            r#"{"u":"\u00e9"}"#,
            r#"{"big":9999999999999999999}"#,
            r#"{"z":-0}"#,
            "{\"raw\":\"a\u{1}b\"}",
            "{\"raw\":\"a\\nb\u{1f}\"}",
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":tru}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":"x"#,
            r#"{"a":[1 2]}"#,
            r#"{a:1}"#,
            r#"[1]"#,
            "",
        ] {
            assert!(object(text).is_none(), "{text:?}");
        }
        let deep = format!(
            "{}{}",
            "{\"a\":".repeat(70),
            "1".to_string() + &"}".repeat(70)
        );
        assert!(object(&deep).is_none(), "nesting past MAX_DEPTH");
        let ok = format!("{}1{}", "{\"a\":".repeat(60), "}".repeat(60));
        assert_eq!(object(&ok).map(|(m, _)| m), serde(&ok));
    }
}
