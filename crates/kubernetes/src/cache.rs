//! Pod metadata cache, shared by the filter and the watch task.
//!
//! A pod the watch (or a GET, or a preload file) has shown is kept until the watch says it was
//! deleted, and then for [`DELETED_KEEP`] more, so lines a pod wrote just before it went away
//! still get its metadata (fluent-bit#2670). A pod that could not be found is not asked for
//! again until a back-off passes (1s, doubling to 60s), so an unreachable or missing pod never
//! turns into a retry storm (fluent-bit#11134).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::meta::PodMeta;

/// How long a deleted pod's metadata is kept for late lines.
pub const DELETED_KEEP: Duration = Duration::from_secs(600);
/// First back-off after a failed lookup.
pub const MISS_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off after failed lookups.
pub const MISS_BACKOFF_MAX: Duration = Duration::from_secs(60);

enum Entry {
    Known {
        meta: Arc<PodMeta>,
        at: Instant,
        deleted_at: Option<Instant>,
    },
    Missing {
        retry_at: Instant,
        failures: u32,
    },
}

/// What a lookup found.
pub enum Lookup {
    /// Metadata to use.
    Hit(Arc<PodMeta>),
    /// Looked up recently without success: do not ask again yet.
    Backoff,
    /// Not known: ask.
    Miss,
}

/// The cache.
#[derive(Default)]
pub struct Cache {
    inner: Mutex<HashMap<(String, String), Entry>>,
    ttl: Option<Duration>,
}

impl Cache {
    /// A cache whose entries are refreshed after `ttl` (`Kube_Meta_Cache_TTL`; zero: never).
    pub fn new(ttl: Duration) -> Arc<Self> {
        Arc::new(Cache {
            inner: Mutex::new(HashMap::new()),
            ttl: (!ttl.is_zero()).then_some(ttl),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<(String, String), Entry>) -> R) -> R {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Looks a pod up.
    pub fn get(&self, namespace: &str, pod: &str) -> Lookup {
        let ttl = self.ttl;
        self.with(|m| match m.get(&(namespace.to_string(), pod.to_string())) {
            Some(Entry::Known {
                meta,
                at,
                deleted_at,
            }) => {
                let stale = deleted_at.is_none() && ttl.is_some_and(|t| at.elapsed() > t);
                if stale {
                    Lookup::Miss
                } else {
                    Lookup::Hit(Arc::clone(meta))
                }
            }
            Some(Entry::Missing { retry_at, .. }) if Instant::now() < *retry_at => Lookup::Backoff,
            _ => Lookup::Miss,
        })
    }

    /// The stale entry of a pod, if any (used when a refresh fails).
    pub fn stale(&self, namespace: &str, pod: &str) -> Option<Arc<PodMeta>> {
        self.with(|m| match m.get(&(namespace.to_string(), pod.to_string())) {
            Some(Entry::Known { meta, .. }) => Some(Arc::clone(meta)),
            _ => None,
        })
    }

    /// Stores a pod's metadata (from the watch, a GET or a preload file).
    pub fn put(&self, meta: PodMeta) -> Arc<PodMeta> {
        let meta = Arc::new(meta);
        let key = (meta.namespace.clone(), meta.name.clone());
        let m2 = Arc::clone(&meta);
        self.with(|m| {
            m.insert(
                key,
                Entry::Known {
                    meta: m2,
                    at: Instant::now(),
                    deleted_at: None,
                },
            )
        });
        meta
    }

    /// The watch saw the pod deleted: keep it a while for late lines.
    pub fn deleted(&self, namespace: &str, pod: &str) {
        self.with(|m| {
            if let Some(Entry::Known { deleted_at, .. }) =
                m.get_mut(&(namespace.to_string(), pod.to_string()))
            {
                deleted_at.get_or_insert_with(Instant::now);
            }
        });
    }

    /// A lookup failed: back off before the next one.
    pub fn missing(&self, namespace: &str, pod: &str) {
        self.with(|m| {
            let key = (namespace.to_string(), pod.to_string());
            let failures = match m.get(&key) {
                Some(Entry::Missing { failures, .. }) => failures + 1,
                Some(Entry::Known { .. }) => return,
                None => 1,
            };
            let wait = MISS_BACKOFF
                .saturating_mul(1 << failures.saturating_sub(1).min(6))
                .min(MISS_BACKOFF_MAX);
            m.insert(
                key,
                Entry::Missing {
                    retry_at: Instant::now() + wait,
                    failures,
                },
            );
        });
    }

    /// Forgets deleted pods kept longer than [`DELETED_KEEP`].
    pub fn sweep(&self) {
        self.with(|m| {
            m.retain(|_, e| match e {
                Entry::Known {
                    deleted_at: Some(d),
                    ..
                } => d.elapsed() < DELETED_KEEP,
                _ => true,
            })
        });
    }

    /// Number of pods known.
    pub fn len(&self) -> usize {
        self.with(|m| {
            m.values()
                .filter(|e| matches!(e, Entry::Known { .. }))
                .count()
        })
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, pod: &str) -> PodMeta {
        PodMeta {
            namespace: ns.into(),
            name: pod.into(),
            ..Default::default()
        }
    }

    #[test]
    fn hit_miss_backoff_and_deleted_keep() {
        let c = Cache::new(Duration::ZERO);
        assert!(matches!(c.get("ns", "a"), Lookup::Miss));
        c.missing("ns", "a");
        assert!(matches!(c.get("ns", "a"), Lookup::Backoff));
        c.put(meta("ns", "a"));
        assert!(matches!(c.get("ns", "a"), Lookup::Hit(_)));
        c.deleted("ns", "a");
        c.sweep();
        assert!(
            matches!(c.get("ns", "a"), Lookup::Hit(_)),
            "kept for late lines"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn ttl_makes_entries_stale() {
        let c = Cache::new(Duration::from_millis(1));
        c.put(meta("ns", "b"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(c.get("ns", "b"), Lookup::Miss));
        assert!(c.stale("ns", "b").is_some());
    }
}
