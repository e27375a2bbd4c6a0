//! `${VAR}` expansion. Variables come from the environment, from `@SET` lines and from YAML's
//! `env` section; `@SET` and `env` take precedence over the environment. As in Fluent Bit, an
//! undefined variable expands to the empty string.

use std::collections::HashMap;

/// The variables a config may refer to.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    set: HashMap<String, String>,
    use_env: bool,
}

impl Vars {
    /// Variables backed by the process environment.
    pub fn from_env() -> Self {
        Vars {
            set: HashMap::new(),
            use_env: true,
        }
    }

    /// Variables with no environment behind them (tests).
    pub fn empty() -> Self {
        Vars::default()
    }

    /// Defines a variable (`@SET KEY=VALUE`).
    pub fn set(&mut self, key: &str, value: &str) {
        self.set.insert(key.to_string(), value.to_string());
    }

    /// The value of a variable, if defined.
    pub fn get(&self, key: &str) -> Option<String> {
        if let Some(v) = self.set.get(key) {
            return Some(v.clone());
        }
        if self.use_env {
            return std::env::var(key).ok();
        }
        None
    }

    /// Replaces every `${NAME}` in `s`. An unterminated `${` is kept as written.
    pub fn expand(&self, s: &str) -> String {
        if !s.contains("${") {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after.find('}') {
                Some(end) => {
                    let name = after[..end].trim();
                    out.push_str(&self.get(name).unwrap_or_default());
                    rest = &after[end + 1..];
                }
                None => {
                    out.push_str(&rest[start..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_vars_and_blanks_unknown() {
        let mut v = Vars::empty();
        v.set("DIR", "/var/log");
        assert_eq!(v.expand("${DIR}/*.log"), "/var/log/*.log");
        assert_eq!(v.expand("a${NOPE}b"), "ab");
        assert_eq!(v.expand("x${ DIR }y${"), "x/var/logy${");
        assert_eq!(v.expand("plain"), "plain");
    }
}
