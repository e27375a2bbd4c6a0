//! Options every AWS output takes, declared once, and the glue that lets a plugin declare only
//! its own: [`split_entries`] hands each key to the right struct and [`concat()`] builds the
//! plugin's full option table at compile time.

use logferry_core::config::{ConfigError, Entry, OptSpec, Section};
use logferry_core::options;

options! {
    /// Options shared by every AWS output (Fluent Bit's names).
    pub struct AwsOptions for "AWS output" {
        /// The AWS region; when unset, AWS_REGION or AWS_DEFAULT_REGION.
        pub region: Option<String> = ["region"] None,
        /// ARN of an IAM role to assume (STS AssumeRole) on top of the credentials chain.
        pub role_arn: Option<String> = ["role_arn"] None,
        /// External ID passed to STS AssumeRole with role_arn.
        pub external_id: Option<String> = ["external_id"] None,
        /// STS endpoint URL used for role_arn (default: the region's STS endpoint).
        pub sts_endpoint: Option<String> = ["sts_endpoint"] None,
        /// Endpoint URL of the service API, scheme included (http://127.0.0.1:4566).
        pub endpoint: Option<String> = ["endpoint"] None,
        /// Named profile of the shared AWS config and credentials files.
        pub profile: Option<String> = ["profile"] None,
        /// Text appended to the User-Agent of every request.
        pub extra_user_agent: Option<String> = ["extra_user_agent"] None,
        /// Retry a request once, at once, after a network error or timeout.
        pub auto_retry_requests: bool = ["auto_retry_requests"] Some("true"),
    }
}

const EMPTY: OptSpec = OptSpec {
    name: "",
    aliases: &[],
    kind: "",
    default: None,
    doc: "",
};

/// `a` then `b` as one table; `N` must be `a.len() + b.len()` (checked at compile time).
pub const fn concat<const N: usize>(a: &[OptSpec], b: &[OptSpec]) -> [OptSpec; N] {
    assert!(
        a.len() + b.len() == N,
        "concat: N must be a.len() + b.len()"
    );
    let mut out = [EMPTY; N];
    let mut i = 0;
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < b.len() {
        out[a.len() + j] = b[j];
        j += 1;
    }
    out
}

/// Every name and alias in `table`.
pub fn names(table: &'static [OptSpec]) -> Vec<&'static str> {
    table
        .iter()
        .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
        .collect()
}

/// Splits entries into the shared AWS ones and the plugin's own.
pub fn split_entries<'a>(entries: &[&'a Entry]) -> (Vec<&'a Entry>, Vec<&'a Entry>) {
    entries
        .iter()
        .copied()
        .partition(|e| AwsOptions::OPTIONS.iter().any(|o| o.is(&e.key)))
}

/// The error about `key`, pointing at the entry that set it, else at the section.
pub fn key_error(section: &Section, entries: &[&Entry], key: &str, reason: String) -> ConfigError {
    match entries
        .iter()
        .rev()
        .find(|e| e.key.eq_ignore_ascii_case(key))
    {
        Some(e) => ConfigError::key(&e.span, &e.key, reason),
        None => ConfigError::key(&section.span, key, reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_option_has_a_doc_line() {
        assert!(AwsOptions::OPTIONS.iter().all(|o| !o.doc.trim().is_empty()));
    }

    #[test]
    fn concat_keeps_order() {
        const N: usize = AwsOptions::OPTIONS.len() * 2;
        const ALL: [OptSpec; N] = concat(AwsOptions::OPTIONS, AwsOptions::OPTIONS);
        assert_eq!(ALL[0].name, "region");
        assert_eq!(ALL[AwsOptions::OPTIONS.len()].name, "region");
    }
}
