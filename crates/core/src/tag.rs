//! Tags and the `Match` / `Match_Regex` rules that route them.
//!
//! Fluent Bit's `Match` is a glob where `*` matches any run of characters, dots included, so
//! `kube.*` matches `kube.var.log.containers.x.log` and `*` (or `**`) matches everything.
//! `Match_Regex` is applied from the start of the tag (Fluent Bit calls Onigmo's `onig_match`,
//! which anchors at the start but not at the end).

use std::sync::Arc;

use regex::Regex;

/// A record's tag, shared cheaply between chunks.
pub type Tag = Arc<str>;

/// A compiled routing rule.
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Matches every tag (`*`, `**`).
    All,
    /// Matches exactly this tag.
    Exact(String),
    /// A glob with `*` wildcards.
    Glob(String),
    /// `Match_Regex`, anchored at the start.
    Regex(Regex),
}

impl Matcher {
    /// Builds a rule from a `Match` pattern.
    pub fn glob(pattern: &str) -> Self {
        if !pattern.is_empty() && pattern.bytes().all(|b| b == b'*') {
            Matcher::All
        } else if pattern.contains('*') {
            Matcher::Glob(pattern.to_string())
        } else {
            Matcher::Exact(pattern.to_string())
        }
    }

    /// Builds a rule from a `Match_Regex` pattern.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        Ok(Matcher::Regex(Regex::new(&format!("^(?:{pattern})"))?))
    }

    /// Whether `tag` is routed by this rule.
    pub fn matches(&self, tag: &str) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Exact(p) => p == tag,
            Matcher::Glob(p) => glob_match(p.as_bytes(), tag.as_bytes()),
            Matcher::Regex(r) => r.is_match(tag),
        }
    }
}

/// `*`-only glob matching with backtracking over the last star (linear in practice).
fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, i));
            p += 1;
        } else if p < pat.len() && pat[p] == s[i] {
            p += 1;
            i += 1;
        } else if let Some((sp, si)) = star {
            p = sp + 1;
            i = si + 1;
            star = Some((sp, si + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Expands an input's `Tag` that contains `*` with a file path, as tail does: the `*` is replaced
/// by the path without its leading `/` and with every other `/` turned into `.`, which gives the
/// `kube.var.log.containers.<file>` tags Fluent Bit users know.
pub fn expand_tag_with_path(tag_pattern: &str, path: &str) -> String {
    match tag_pattern.find('*') {
        None => tag_pattern.to_string(),
        Some(pos) => {
            let dotted = path.strip_prefix('/').unwrap_or(path).replace('/', ".");
            let mut out = String::with_capacity(tag_pattern.len() + dotted.len());
            out.push_str(&tag_pattern[..pos]);
            out.push_str(&dotted);
            out.push_str(&tag_pattern[pos + 1..]);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routing examples of Fluent Bit's manual ("Data Pipeline > Router").
    #[test]
    fn documented_router_examples() {
        // `Match my_cpu` delivers only my_cpu.
        let exact = Matcher::glob("my_cpu");
        assert!(exact.matches("my_cpu"));
        assert!(!exact.matches("my_mem"));
        // `Match my_*` matches any tag starting with my_.
        let wild = Matcher::glob("my_*");
        assert!(wild.matches("my_cpu"));
        assert!(wild.matches("my_mem"));
        assert!(!wild.matches("your_mem"));
        // `Match_Regex .*_sensor_[AB]` matches tags ending with _sensor_A or _sensor_B.
        let re = Matcher::regex(".*_sensor_[AB]").unwrap();
        assert!(re.matches("south_sensor_A"));
        assert!(re.matches("north_sensor_B"));
        assert!(!re.matches("east_sensor_C"));
    }

    #[test]
    fn star_crosses_dots_and_double_star_matches_all() {
        assert!(Matcher::glob("kube.*").matches("kube.var.log.containers.a_b_c-1.log"));
        assert!(!Matcher::glob("kube.*").matches("host.var.log"));
        assert!(Matcher::glob("*").matches("anything.at.all"));
        assert!(Matcher::glob("**").matches("x"));
        assert!(Matcher::glob("*.log").matches("kube.a.log"));
        assert!(!Matcher::glob("*.log").matches("kube.a.log.1"));
        assert!(Matcher::glob("a*b*c").matches("axxbyyc"));
        assert!(!Matcher::glob("a*b*c").matches("axxbyy"));
    }

    #[test]
    fn regex_is_anchored_at_start_only() {
        let re = Matcher::regex("kube\\.").unwrap();
        assert!(re.matches("kube.x"));
        assert!(!re.matches("x.kube.x"));
    }

    #[test]
    fn tail_tag_expansion_matches_fluent_bit() {
        assert_eq!(
            expand_tag_with_path("kube.*", "/var/log/containers/a.log"),
            "kube.var.log.containers.a.log"
        );
        assert_eq!(expand_tag_with_path("app", "/x/y.log"), "app");
        assert_eq!(expand_tag_with_path("t_*", "/x.log"), "t_x.log");
    }
}
