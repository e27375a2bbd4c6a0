//! Values as Fluent Bit reads them: booleans (`On`/`Off`/`true`/`false`/`yes`/`no`), sizes
//! (`5MB`, `32k`, `1G`: powers of 1024, as `flb_utils_size_to_bytes`), and times (`10`, `10s`,
//! `5m`, `1h`, `1d`, as `flb_utils_time_to_seconds`).

/// Parses a Fluent Bit boolean.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("expected On/Off, true/false or yes/no, got '{s}'")),
    }
}

/// Parses a size with an optional K/KB, M/MB, G/GB suffix (case-insensitive, 1024-based).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, mult) = if let Some(n) = lower.strip_suffix("kb").or_else(|| lower.strip_suffix('k'))
    {
        (n, 1024u64)
    } else if let Some(n) = lower.strip_suffix("mb").or_else(|| lower.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else if let Some(n) = lower.strip_suffix("gb").or_else(|| lower.strip_suffix('g')) {
        (n, 1024 * 1024 * 1024)
    } else if let Some(n) = lower.strip_suffix('b') {
        (n, 1)
    } else {
        (lower.as_str(), 1)
    };
    let num = num.trim();
    if let Ok(v) = num.parse::<u64>() {
        return v
            .checked_mul(mult)
            .ok_or_else(|| format!("size too large: '{s}'"));
    }
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok((v * mult as f64) as u64),
        _ => Err(format!(
            "expected a size such as 512, 32k, 5MB or 1G, got '{s}'"
        )),
    }
}

/// Parses a duration in seconds with an optional s/m/h/d suffix; fractions are allowed.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('s') => (&t[..t.len() - 1], 1.0),
        Some('m') => (&t[..t.len() - 1], 60.0),
        Some('h') => (&t[..t.len() - 1], 3600.0),
        Some('d') => (&t[..t.len() - 1], 86400.0),
        _ => (t.as_str(), 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v * mult),
        _ => Err(format!(
            "expected a time such as 10, 10s, 5m, 1h or 1d, got '{s}'"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for t in ["On", "on", "TRUE", "yes", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["Off", "false", "No", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn sizes_as_fluent_bit_reads_them() {
        assert_eq!(parse_size("5MB"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_size("5M"), Ok(5 * 1024 * 1024));
        assert_eq!(parse_size("32k"), Ok(32 * 1024));
        assert_eq!(parse_size("32KB"), Ok(32 * 1024));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert!(parse_size("five").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn times_as_fluent_bit_reads_them() {
        assert_eq!(parse_seconds("10"), Ok(10.0));
        assert_eq!(parse_seconds("10s"), Ok(10.0));
        assert_eq!(parse_seconds("5m"), Ok(300.0));
        assert_eq!(parse_seconds("1h"), Ok(3600.0));
        assert_eq!(parse_seconds("1d"), Ok(86400.0));
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert!(parse_seconds("soon").is_err());
    }
}
