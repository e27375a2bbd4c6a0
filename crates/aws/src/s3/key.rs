//! `s3_key_format`: strftime of the buffer file's start time (UTC), then `$TAG`, `$TAG[n]`
//! (the tag split on any of `s3_key_format_tag_delimiters`), `$UUID` (8 random alphanumerics)
//! and `$INDEX` (a counter kept in `store_dir`, so it keeps growing across restarts). The
//! leading `/` is dropped (object keys do not start with one). Without `$UUID`, and unless
//! `static_file_path` is on, `-object` and 8 random characters are appended so that two
//! uploads in the same second do not overwrite each other, as Fluent Bit does.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};

/// A checked key format.
#[derive(Clone, Debug)]
pub struct KeyFormat {
    format: String,
    delimiters: Vec<char>,
    append_uuid: bool,
}

impl KeyFormat {
    /// Checks the format.
    pub fn parse(format: &str, delimiters: &str, static_file_path: bool) -> Result<Self, String> {
        if format.trim().is_empty() {
            return Err("empty".into());
        }
        if StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
            return Err(format!("'{format}' is not a valid strftime format"));
        }
        Ok(KeyFormat {
            format: format.to_string(),
            delimiters: if delimiters.is_empty() {
                vec!['.']
            } else {
                delimiters.chars().collect()
            },
            append_uuid: !static_file_path && !format.contains("$UUID"),
        })
    }

    /// Whether the key uses `$INDEX`.
    pub fn uses_index(&self) -> bool {
        self.format.contains("$INDEX")
    }

    /// The key for a file of `tag` started at `start_secs`, with upload number `index`.
    pub fn render(&self, tag: &str, start_secs: i64, index: u64) -> String {
        let time: DateTime<Utc> = DateTime::from_timestamp(start_secs, 0).unwrap_or_default();
        let mut s = String::new();
        if std::fmt::Write::write_fmt(&mut s, format_args!("{}", time.format(&self.format)))
            .is_err()
        {
            s = self.format.clone();
        }
        let parts: Vec<&str> = tag.split(|c| self.delimiters.contains(&c)).collect();
        let mut out = String::with_capacity(s.len() + tag.len());
        let mut rest = s.as_str();
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("$TAG[") {
                if let Some((n, tail)) = r.split_once(']') {
                    if let Ok(n) = n.trim().parse::<usize>() {
                        out.push_str(&safe_part(parts.get(n).copied().unwrap_or("")));
                        rest = tail;
                        continue;
                    }
                }
            }
            let (text, len) = if after.starts_with("$TAG") {
                (safe_part(tag), 4)
            } else if after.starts_with("$UUID") {
                (random8(), 5)
            } else if after.starts_with("$INDEX") {
                (index.to_string(), 6)
            } else {
                ("$".to_string(), 1)
            };
            out.push_str(&text);
            rest = &after[len..];
        }
        out.push_str(rest);
        if self.append_uuid {
            out.push_str("-object");
            out.push_str(&random8());
        }
        let key = out.trim_start_matches('/');
        // S3's limit: 1,024 bytes of UTF-8.
        let mut end = key.len().min(MAX_KEY_BYTES);
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key[..end].to_string()
    }
}

/// S3's longest object key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// A tag (or part of one) made safe inside a key: a tag can come from a client (`forward`,
/// `http`) or a file name, so `..` becomes `__` (no key climbs out of its prefix when
/// synced to a file system) and control characters become `_`.
fn safe_part(tag: &str) -> String {
    tag.replace("..", "__")
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

fn random8() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tag a client chose cannot put `..` or control characters into a key, and a key
    /// stays within S3's 1,024 bytes.
    #[test]
    fn keys_from_hostile_tags_are_safe() {
        let k = KeyFormat::parse("/logs/$TAG/$TAG[1]/x", ".", true).unwrap();
        let key = k.render("a/../../etc\npasswd", 0, 0);
        assert_eq!(key, "logs/a/__/__/etc_passwd//x");
        assert!(!key.contains(".."));
        let long = "é".repeat(1000);
        let k = KeyFormat::parse("$TAG", ".", true).unwrap();
        let key = k.render(&long, 0, 0);
        assert!(key.len() <= 1024 && key.len() >= 1022, "{}", key.len());
    }

    #[test]
    fn tag_parts_time_index_and_uuid() {
        let k =
            KeyFormat::parse("/logs/$TAG[1]/$TAG/%Y/%m/%d/$INDEX-$UUID.gz", ".", false).unwrap();
        let key = k.render("kube.web.x", 1_576_777_272, 7);
        assert!(
            key.starts_with("logs/web/kube.web.x/2019/12/19/7-"),
            "{key}"
        );
        assert_eq!(key.len(), "logs/web/kube.web.x/2019/12/19/7-".len() + 8 + 3);
        assert!(k.uses_index());
        let k = KeyFormat::parse("a/$TAG[0]_$TAG[9]", "._", true).unwrap();
        assert_eq!(k.render("x_y", 0, 0), "a/x_");
        let k = KeyFormat::parse("/f/%H", ".", false).unwrap();
        let key = k.render("t", 3600, 0);
        assert!(
            key.starts_with("f/01-object") && key.len() == "f/01-object".len() + 8,
            "{key}"
        );
        assert!(KeyFormat::parse("%Q", ".", false).is_err());
    }
}
