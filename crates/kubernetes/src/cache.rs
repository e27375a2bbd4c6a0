//! Pod metadata cache, shared by the filter, the watch and the background lookups.
//!
//! Bounded whatever happens to the API server (the filter sweeps it every
//! [`SWEEP_EVERY`] on its own timer, watch or no watch):
//! - a pod the watch shows stays while it runs on this node; once the watch (or a relist that
//!   no longer lists it) says it is gone, it is kept [`DELETED_KEEP`] more for late lines
//!   (fluent-bit#2670), then evicted;
//! - a pod learnt from a GET, a preload file or the kubelet is refreshed in the background once
//!   it is older than `Kube_Meta_Cache_TTL`, and evicted when unused for that long (for
//!   [`IDLE_KEEP`] without a TTL);
//! - a pod that could not be had is not asked for again until a back-off passes (1 s doubling to
//!   60 s, so a missing pod never turns into a retry storm, fluent-bit#11134), and is forgotten
//!   like an unused entry;
//! - past [`MAX_PODS`] entries, deleted pods go first (oldest deletion first), then failed
//!   lookups, then the least recently used pods not running on this node; pods the watch shows
//!   running are never evicted (a node runs a few hundred at most).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::meta::PodMeta;

/// How long a deleted pod's metadata is kept for late lines.
pub const DELETED_KEEP: Duration = Duration::from_secs(600);
/// How long an entry not fed by the watch is kept unused, without `Kube_Meta_Cache_TTL`.
pub const IDLE_KEEP: Duration = Duration::from_secs(600);
/// Most entries kept (besides pods the watch shows running on this node).
pub const MAX_PODS: usize = 2048;
/// How often the filter sweeps the cache.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// First back-off after a failed lookup.
pub const MISS_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off after failed lookups.
pub const MISS_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A lookup in flight for longer than this is given up (its task ended without an answer).
const PENDING_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum State<T> {
    Known {
        meta: Arc<T>,
        /// Fed by the watch (kept while the pod runs).
        watched: bool,
        fetched: Instant,
        deleted: Option<Instant>,
        /// A background refresh is under way.
        refreshing: bool,
    },
    Pending {
        since: Instant,
        /// Failed lookups before this one (for the next back-off).
        failures: u32,
    },
    Missing {
        retry_at: Instant,
        failures: u32,
        /// The kubelet answered without the pod: records get the tag's names (Fluent Bit).
        tag_only: bool,
    },
}

#[derive(Debug)]
struct Entry<T> {
    state: State<T>,
    used: Instant,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<T = PodMeta> {
    /// Metadata to use now.
    Hit(Arc<T>),
    /// Metadata to use now; it is older than the TTL and the caller is to refresh it (the entry
    /// is marked so only one refresh runs).
    Stale(Arc<T>),
    /// A lookup is in flight since then.
    Pending(Instant),
    /// Not to be had now (a recent lookup failed); `tag_only`: the kubelet does not list it.
    Absent { tag_only: bool },
    /// Unknown: the caller is to look it up (the entry is now pending).
    Miss,
}

/// The cache. Keys are `<namespace>/<pod>` (the namespace cache holds namespaces, keyed by
/// name, the same way).
#[derive(Debug)]
pub struct Cache<T = PodMeta> {
    inner: Mutex<HashMap<String, Entry<T>>>,
    ttl: Option<Duration>,
    max: usize,
    /// Entries now (`logferry_kubernetes_cache_pods`).
    pub size: Arc<AtomicU64>,
}

impl<T> Cache<T> {
    /// A cache whose entries not fed by the watch are refreshed after `ttl`
    /// (`Kube_Meta_Cache_TTL`; zero: never), holding at most [`MAX_PODS`] evictable entries.
    pub fn new(ttl: Duration) -> Arc<Self> {
        Cache::build(ttl, MAX_PODS, Arc::new(AtomicU64::new(0)))
    }

    /// [`Cache::new`] with another bound.
    pub fn with_max(ttl: Duration, max: usize) -> Arc<Self> {
        Cache::build(ttl, max, Arc::new(AtomicU64::new(0)))
    }

    /// [`Cache::with_max`] reporting its size in `size` (a metrics gauge).
    pub fn build(ttl: Duration, max: usize, size: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Cache {
            inner: Mutex::new(HashMap::new()),
            ttl: (!ttl.is_zero()).then_some(ttl),
            max: max.max(1),
            size,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry<T>>) -> R) -> R {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let r = f(&mut g);
        self.size.store(g.len() as u64, Ordering::Relaxed);
        r
    }

    /// Looks a pod up at `now`; a miss marks it pending (the caller starts the lookup).
    pub fn lookup(&self, key: &str, now: Instant) -> Lookup<T> {
        let ttl = self.ttl;
        // One lock for the look and the insert: instances of the filter on other shards ask
        // at the same time, and only one of them may start the lookup.
        self.with(|m| {
            if let Some(e) = m.get_mut(key) {
                e.used = now;
                return match &mut e.state {
                    State::Known {
                        meta,
                        watched,
                        fetched,
                        deleted,
                        refreshing,
                    } => {
                        let stale = !*watched
                            && deleted.is_none()
                            && ttl.is_some_and(|t| now.saturating_duration_since(*fetched) >= t);
                        if stale && !*refreshing {
                            *refreshing = true;
                            Lookup::Stale(Arc::clone(meta))
                        } else {
                            Lookup::Hit(Arc::clone(meta))
                        }
                    }
                    State::Pending { since, .. } => Lookup::Pending(*since),
                    State::Missing {
                        retry_at, tag_only, ..
                    } if now < *retry_at => Lookup::Absent {
                        tag_only: *tag_only,
                    },
                    State::Missing { failures, .. } => {
                        // The back-off passed: ask again, remembering the failures.
                        let failures = *failures;
                        e.state = State::Pending {
                            since: now,
                            failures,
                        };
                        Lookup::Miss
                    }
                };
            }
            m.insert(
                key.to_string(),
                Entry {
                    state: State::Pending {
                        since: now,
                        failures: 0,
                    },
                    used: now,
                },
            );
            self.enforce(m, now);
            Lookup::Miss
        })
    }

    /// The metadata of a pod, if known (no side effect).
    pub fn peek(&self, key: &str) -> Option<Arc<T>> {
        self.with(|m| match m.get(key).map(|e| &e.state) {
            Some(State::Known { meta, .. }) => Some(Arc::clone(meta)),
            _ => None,
        })
    }

    /// Whether a lookup of the pod is in flight.
    pub fn is_pending(&self, key: &str) -> bool {
        self.with(|m| matches!(m.get(key).map(|e| &e.state), Some(State::Pending { .. })))
    }

    /// Stores a pod's metadata from a GET, a preload file or the kubelet. An entry the watch
    /// feeds is at least as fresh and stays.
    pub fn put(&self, key: &str, meta: T, now: Instant) -> Arc<T> {
        self.store(key, meta, false, now)
    }

    /// Stores a pod's metadata from the watch (ADDED, MODIFIED, or a list).
    pub fn put_watched(&self, key: &str, meta: T, now: Instant) -> Arc<T> {
        self.store(key, meta, true, now)
    }

    fn store(&self, key: &str, meta: T, watched: bool, now: Instant) -> Arc<T> {
        let meta = Arc::new(meta);
        self.with(|m| {
            if !watched {
                if let Some(Entry {
                    state:
                        State::Known {
                            meta: kept,
                            watched: true,
                            deleted: None,
                            ..
                        },
                    ..
                }) = m.get(key)
                {
                    return Arc::clone(kept);
                }
            }
            let used = m.get(key).map_or(now, |e| e.used);
            m.insert(
                key.to_string(),
                Entry {
                    state: State::Known {
                        meta: Arc::clone(&meta),
                        watched,
                        fetched: now,
                        deleted: None,
                        refreshing: false,
                    },
                    used,
                },
            );
            self.enforce(m, now);
            meta
        })
    }

    /// The pod is gone (the watch said so, or a relist no longer lists it): keep it
    /// [`DELETED_KEEP`] for late lines.
    pub fn deleted(&self, key: &str, now: Instant) {
        self.with(|m| {
            if let Some(Entry {
                state: State::Known { deleted, .. },
                ..
            }) = m.get_mut(key)
            {
                deleted.get_or_insert(now);
            }
        });
    }

    /// The last log file of the pod is gone (tail closed it after reading it to its end):
    /// no line can come for it any more, so its entry goes now rather than after
    /// [`DELETED_KEEP`] or an idle timeout, unless the watch shows the pod running (it stays
    /// while it runs) or a lookup is in flight. Returns whether it went.
    pub fn release(&self, key: &str) -> bool {
        self.with(|m| {
            let keep = match m.get(key).map(|e| &e.state) {
                None => return false,
                Some(State::Known {
                    watched: true,
                    deleted: None,
                    ..
                })
                | Some(State::Pending { .. }) => true,
                Some(State::Known { .. }) | Some(State::Missing { .. }) => false,
            };
            !keep && m.remove(key).is_some()
        })
    }

    /// A relist: pods the watch fed that `listed` no longer holds were deleted while the
    /// watch was away.
    pub fn reconcile(&self, listed: &HashSet<String>, now: Instant) -> usize {
        self.with(|m| {
            let mut gone = 0;
            for (k, e) in m.iter_mut() {
                if let State::Known {
                    watched: true,
                    deleted,
                    ..
                } = &mut e.state
                {
                    if deleted.is_none() && !listed.contains(k) {
                        *deleted = Some(now);
                        gone += 1;
                    }
                }
            }
            gone
        })
    }

    /// A lookup failed (or found nothing): back off before the next one. A known entry (a
    /// failed refresh) stays as it is.
    pub fn fail(&self, key: &str, tag_only: bool, now: Instant) {
        self.with(|m| {
            let failures = match m.get_mut(key).map(|e| &mut e.state) {
                Some(State::Known { refreshing, .. }) => {
                    *refreshing = false;
                    return;
                }
                Some(State::Missing { failures, .. }) | Some(State::Pending { failures, .. }) => {
                    *failures + 1
                }
                None => 1,
            };
            let wait = MISS_BACKOFF
                .saturating_mul(1 << failures.saturating_sub(1).min(6))
                .min(MISS_BACKOFF_MAX);
            let used = m.get(key).map_or(now, |e| e.used);
            m.insert(
                key.to_string(),
                Entry {
                    state: State::Missing {
                        retry_at: now + wait,
                        failures,
                        tag_only,
                    },
                    used,
                },
            );
            self.enforce(m, now);
        });
    }

    /// Starts a refresh of a known entry (`Cache_Use_Docker_Id`: a container the entry does not
    /// know); `false` when one runs already or the entry is not known.
    pub fn start_refresh(&self, key: &str) -> bool {
        self.with(|m| match m.get_mut(key).map(|e| &mut e.state) {
            Some(State::Known { refreshing, .. }) if !*refreshing => {
                *refreshing = true;
                true
            }
            _ => false,
        })
    }

    /// Pending lookups (`Use_Kubelet`: every pod waiting for the next `/pods` list).
    pub fn pending_keys(&self) -> Vec<String> {
        self.with(|m| {
            m.iter()
                .filter(|(_, e)| matches!(e.state, State::Pending { .. }))
                .map(|(k, _)| k.clone())
                .collect()
        })
    }

    /// Evicts what has expired at `now` and keeps the bound; returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let idle = self.ttl.unwrap_or(IDLE_KEEP);
        self.with(|m| {
            let before = m.len();
            m.retain(|_, e| {
                let unused = now.saturating_duration_since(e.used);
                match &e.state {
                    State::Known {
                        deleted: Some(d), ..
                    } => now.saturating_duration_since(*d) < DELETED_KEEP,
                    State::Known { watched: true, .. } => true,
                    State::Known { .. } => unused < idle,
                    State::Pending { since, .. } => {
                        now.saturating_duration_since(*since) < PENDING_LIMIT
                    }
                    State::Missing { retry_at, .. } => now < *retry_at || unused < idle,
                }
            });
            self.enforce(m, now);
            before - m.len()
        })
    }

    /// Keeps at most `max` evictable entries: past it, evicts down to 15/16 of it (so the
    /// sorting is paid once per `max / 16` inserts).
    fn enforce(&self, m: &mut HashMap<String, Entry<T>>, now: Instant) {
        if m.len() <= self.max {
            return;
        }
        let target = self.max - self.max / 16;
        // (class, age rank): lower goes first.
        let mut candidates: Vec<(u8, Duration, String)> = m
            .iter()
            .filter_map(|(k, e)| {
                let (class, since) = match &e.state {
                    State::Known {
                        deleted: Some(d), ..
                    } => (0, *d),
                    State::Missing { .. } => (1, e.used),
                    State::Known { watched: false, .. } => (2, e.used),
                    _ => return None,
                };
                Some((class, now.saturating_duration_since(since), k.clone()))
            })
            .collect();
        // Within a class, the oldest first.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let excess = m.len().saturating_sub(target);
        for (_, _, k) in candidates.into_iter().take(excess) {
            m.remove(&k);
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.with(|m| m.len())
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pods known (not pending, not failed), deleted ones included.
    pub fn known(&self) -> usize {
        self.with(|m| {
            m.values()
                .filter(|e| matches!(e.state, State::Known { .. }))
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> PodMeta {
        PodMeta::default()
    }

    type Cache = super::Cache<PodMeta>;

    /// Instances of the filter on several shards ask for the same new pod at once: exactly
    /// one of them is told to look it up, the others that it is pending.
    #[test]
    fn concurrent_first_lookups_start_one_lookup() {
        for _ in 0..50 {
            let c = Cache::new(Duration::ZERO);
            let start = Arc::new(std::sync::Barrier::new(8));
            let misses: usize = (0..8)
                .map(|_| {
                    let (c, start) = (Arc::clone(&c), Arc::clone(&start));
                    std::thread::spawn(move || {
                        start.wait();
                        matches!(c.lookup("ns/p", Instant::now()), Lookup::Miss)
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| usize::from(t.join().unwrap()))
                .sum();
            assert_eq!(misses, 1);
        }
    }

    #[test]
    fn miss_pending_backoff_and_hit() {
        let c = Cache::new(Duration::ZERO);
        let t = Instant::now();
        assert!(matches!(c.lookup("ns/a", t), Lookup::Miss));
        assert!(
            matches!(c.lookup("ns/a", t), Lookup::Pending(_)),
            "one lookup at a time"
        );
        c.fail("ns/a", false, t);
        assert!(matches!(
            c.lookup("ns/a", t),
            Lookup::Absent { tag_only: false }
        ));
        let later = t + MISS_BACKOFF + Duration::from_millis(1);
        assert!(
            matches!(c.lookup("ns/a", later), Lookup::Miss),
            "asked again after the back-off"
        );
        c.fail("ns/a", false, later);
        assert!(
            matches!(
                c.lookup("ns/a", later + MISS_BACKOFF + Duration::from_millis(1)),
                Lookup::Absent { .. }
            ),
            "the second back-off is longer"
        );
        c.put("ns/a", meta(), later);
        assert!(matches!(c.lookup("ns/a", later), Lookup::Hit(_)));
    }

    #[test]
    fn deleted_pods_go_after_their_keep_on_the_sweep() {
        let c = Cache::new(Duration::ZERO);
        let t = Instant::now();
        c.put_watched("ns/a", meta(), t);
        c.put_watched("ns/b", meta(), t);
        c.deleted("ns/a", t);
        assert_eq!(
            c.sweep(t + DELETED_KEEP - Duration::from_secs(1)),
            0,
            "kept for late lines"
        );
        assert!(matches!(c.lookup("ns/a", t), Lookup::Hit(_)));
        assert_eq!(c.sweep(t + DELETED_KEEP), 1);
        assert_eq!(c.len(), 1, "the running pod stays");
        assert_eq!(
            c.sweep(t + DELETED_KEEP * 100),
            0,
            "a watched running pod never expires"
        );
    }

    #[test]
    fn relist_reconciles_deletions() {
        let c = Cache::new(Duration::ZERO);
        let t = Instant::now();
        c.put_watched("ns/a", meta(), t);
        c.put_watched("ns/b", meta(), t);
        c.put("ns/got", meta(), t);
        let listed: HashSet<String> = ["ns/b".to_string()].into();
        assert_eq!(
            c.reconcile(&listed, t),
            1,
            "only watched pods are reconciled"
        );
        c.sweep(t + DELETED_KEEP);
        assert!(c.peek("ns/a").is_none());
        assert!(c.peek("ns/b").is_some());
    }

    #[test]
    fn get_only_and_missing_entries_expire() {
        let ttl = Duration::from_secs(30);
        let c = Cache::new(ttl);
        let t = Instant::now();
        c.put("ns/a", meta(), t);
        assert!(
            matches!(c.lookup("ns/a", t + ttl), Lookup::Stale(_)),
            "refreshed after the TTL"
        );
        assert!(
            matches!(c.lookup("ns/a", t + ttl), Lookup::Hit(_)),
            "one refresh at a time"
        );
        assert!(matches!(c.lookup("ns/b", t), Lookup::Miss));
        c.fail("ns/b", false, t);
        assert_eq!(
            c.sweep(t + ttl * 2 + MISS_BACKOFF_MAX),
            2,
            "unused entries go after the TTL"
        );
        let c = Cache::new(Duration::ZERO);
        c.put("ns/a", meta(), t);
        assert_eq!(c.sweep(t + IDLE_KEEP - Duration::from_secs(1)), 0);
        assert_eq!(
            c.sweep(t + IDLE_KEEP),
            1,
            "without a TTL, after IDLE_KEEP unused"
        );
    }

    #[test]
    fn released_pods_go_unless_the_watch_shows_them_running() {
        let c = Cache::new(Duration::ZERO);
        let t = Instant::now();
        c.put("ns/got", meta(), t);
        c.put_watched("ns/running", meta(), t);
        c.put_watched("ns/deleted", meta(), t);
        c.deleted("ns/deleted", t);
        assert!(matches!(c.lookup("ns/asking", t), Lookup::Miss));
        assert!(matches!(c.lookup("ns/failed", t), Lookup::Miss));
        c.fail("ns/failed", false, t);
        assert!(c.release("ns/got"), "learnt from a GET");
        assert!(c.release("ns/deleted"), "no longer kept for late lines");
        assert!(c.release("ns/failed"), "a failed lookup is forgotten");
        assert!(!c.release("ns/running"), "the watch shows it running");
        assert!(!c.release("ns/asking"), "its lookup is in flight");
        assert!(!c.release("ns/never"));
        assert_eq!(c.len(), 2);
        assert!(c.peek("ns/running").is_some());
        assert_eq!(c.size.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_bound_evicts_deleted_first_and_never_running_watched_pods() {
        let c = Cache::with_max(Duration::ZERO, 64);
        let t = Instant::now();
        for i in 0..32 {
            c.put_watched(&format!("ns/live-{i}"), meta(), t);
        }
        for i in 0..1000 {
            let k = format!("ns/gone-{i}");
            let at = t + Duration::from_millis(i);
            c.put_watched(&k, meta(), at);
            c.deleted(&k, at);
        }
        assert!(c.len() <= 64, "{} entries", c.len());
        for i in 0..32 {
            assert!(c.peek(&format!("ns/live-{i}")).is_some());
        }
        assert!(c.peek("ns/gone-999").is_some(), "the newest deletions stay");
        assert!(c.peek("ns/gone-0").is_none());
        assert_eq!(c.size.load(Ordering::Relaxed), c.len() as u64);
    }
}
