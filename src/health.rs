//! What `/livez` and `/readyz` report: heartbeats of the loops that answers depend on, and the first
//! full sync of every store they read. Components hold a [`Heartbeat`] or a [`Synced`] handle and touch
//! it; the HTTP surface only reads. Like metrics-server, liveness is tied to the collection loops: a
//! watcher or scraper that stalled or died without restarting fails `/livez`, so kubelet restarts us.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A loop's proof of life: it beats at least once per period; older than `bound` means stalled.
pub struct Heartbeat {
    name: &'static str,
    bound: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last beat (0: registered, counts as a beat at start).
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn bound(&self) -> Duration {
        self.bound
    }
}

/// A store's first full sync: set once, never unset (a later watch error is reported by metrics and
/// answered per request, not by pulling the APIService out of discovery).
pub struct Synced {
    name: &'static str,
    done: AtomicBool,
}

impl Synced {
    pub fn set(&self) {
        self.done.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// One check's line in a `/livez` or `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// A readiness condition checked on every `/readyz` (the serving certificate's validity, say).
type Condition = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Default)]
pub struct Health {
    loops: Mutex<Vec<Arc<Heartbeat>>>,
    stores: Mutex<Vec<Arc<Synced>>>,
    conditions: Mutex<Vec<(&'static str, Condition)>>,
}

/// The liveness bound of a loop that runs every `period` and may take `slack` per run: three missed
/// runs, and never less than [`MIN_LIVENESS_BOUND`], so one slow round on a busy node is not a restart.
pub(crate) fn liveness_bound(period: Duration, slack: Duration) -> Duration {
    ((period + slack) * 3).max(MIN_LIVENESS_BOUND)
}

pub(crate) const MIN_LIVENESS_BOUND: Duration = Duration::from_secs(30);

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a loop; it counts as alive from now until `bound` passes without a beat.
    pub fn heartbeat(&self, name: &'static str, bound: Duration) -> Arc<Heartbeat> {
        let hb = Arc::new(Heartbeat {
            name,
            bound,
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        self.loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(hb.clone());
        hb
    }

    /// Registers a store whose first full sync `/readyz` waits for.
    pub fn store(&self, name: &'static str) -> Arc<Synced> {
        let s = Arc::new(Synced {
            name,
            done: AtomicBool::new(false),
        });
        self.stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(s.clone());
        s
    }

    pub(crate) fn liveness(&self) -> Vec<Check> {
        self.loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|hb| {
                let age = hb.age();
                let ok = age <= hb.bound;
                Check {
                    name: hb.name.to_string(),
                    ok,
                    detail: if ok {
                        "ok".into()
                    } else {
                        format!(
                            "no progress for {}s (bound {}s)",
                            age.as_secs(),
                            hb.bound.as_secs()
                        )
                    },
                }
            })
            .collect()
    }

    /// Registers a condition that `/readyz` checks every time it is asked.
    pub fn condition(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((name, Box::new(check)));
    }

    pub fn readiness(&self) -> Vec<Check> {
        let mut checks: Vec<Check> = self
            .conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, check)| {
                let result = check();
                Check {
                    name: (*name).to_string(),
                    ok: result.is_ok(),
                    detail: result.err().unwrap_or_else(|| "ok".into()),
                }
            })
            .collect();
        checks.extend(
            self.stores
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|s| Check {
                    name: s.name.to_string(),
                    ok: s.is_set(),
                    detail: if s.is_set() {
                        "ok".into()
                    } else {
                        "initial sync not done".into()
                    },
                }),
        );
        checks
    }
}

/// Renders checks as kube-apiserver does (`[+]name ok` / `[-]name failed: …`); `true` when all pass.
pub(crate) fn render(checks: &[Check], what: &str) -> (bool, String) {
    let mut body = String::new();
    let mut all = true;
    for c in checks {
        all &= c.ok;
        if c.ok {
            body.push_str(&format!("[+]{} ok\n", c.name));
        } else {
            body.push_str(&format!("[-]{} failed: {}\n", c.name, c.detail));
        }
    }
    body.push_str(&format!(
        "{what} check {}\n",
        if all { "passed" } else { "failed" }
    ));
    (all, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_fails_liveness() {
        let h = Health::new();
        let hb = h.heartbeat("scrape-loop", Duration::from_millis(30));
        assert!(h.liveness()[0].ok);
        std::thread::sleep(Duration::from_millis(60));
        let c = &h.liveness()[0];
        assert!(!c.ok && c.detail.contains("no progress"), "{c:?}");
        hb.beat();
        assert!(h.liveness()[0].ok);
    }

    #[test]
    fn readiness_waits_for_every_store() {
        let h = Health::new();
        let a = h.store("snapshot");
        let b = h.store("saturation-config");
        assert!(!render(&h.readiness(), "readyz").0);
        a.set();
        let (ok, body) = render(&h.readiness(), "readyz");
        assert!(!ok);
        assert!(body.contains("[+]snapshot ok") && body.contains("[-]saturation-config failed"));
        b.set();
        assert!(render(&h.readiness(), "readyz").0);
    }

    #[test]
    fn conditions_are_checked_on_every_ask() {
        let h = Health::new();
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        h.condition("tls", move || {
            if f.load(Ordering::Relaxed) {
                Err("the serving certificate expired".into())
            } else {
                Ok(())
            }
        });
        assert!(render(&h.readiness(), "readyz").0);
        failing.store(true, Ordering::Relaxed);
        let (ok, body) = render(&h.readiness(), "readyz");
        assert!(
            !ok && body.contains("[-]tls failed: the serving certificate expired"),
            "{body}"
        );
    }

    #[test]
    fn bounds_allow_three_missed_rounds_and_a_floor() {
        assert_eq!(
            liveness_bound(Duration::from_secs(5), Duration::from_secs(3)),
            Duration::from_secs(30)
        );
        assert_eq!(
            liveness_bound(Duration::from_secs(30), Duration::from_secs(5)),
            Duration::from_secs(105)
        );
    }
}
