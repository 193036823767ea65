//! The in-memory window of scraped samples: per pod and model, the samples of the last `lookback`,
//! served as their maximum (WVA's `max_over_time[1m]`). Only pods the scraper is told about are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::exposition::ModelSignals;
use super::{Lookup, PodSample, SampleSource, SourceKind};
use crate::cluster::snapshot::PodTarget;
use crate::error::{Capped, MissingSample, MAX_NAMES_LISTED};

type PodKey = (String, String);

#[derive(Debug)]
struct PodWindow {
    first_tracked: Instant,
    last_success: Option<Instant>,
    last_error: Option<String>,
    /// Per model_name, samples oldest first.
    models: HashMap<String, VecDeque<(Instant, ModelSignals)>>,
}

/// Pods by namespace, then name: lookups on the request path borrow the names instead of allocating a key.
type Pods = HashMap<String, HashMap<String, PodWindow>>;

pub struct WindowCache {
    lookback: Duration,
    pods: RwLock<Pods>,
}

fn get<'a>(map: &'a Pods, pod: &PodTarget) -> Option<&'a PodWindow> {
    map.get(pod.namespace.as_str())?.get(pod.name.as_str())
}

fn get_mut<'a>(map: &'a mut Pods, pod: &PodTarget) -> Option<&'a mut PodWindow> {
    map.get_mut(pod.namespace.as_str())?
        .get_mut(pod.name.as_str())
}

impl WindowCache {
    pub fn new(lookback: Duration) -> Self {
        Self {
            lookback,
            pods: RwLock::new(HashMap::new()),
        }
    }

    /// Keeps exactly the given pods; returns the ones forgotten.
    pub fn retain(&self, pods: &[PodTarget], now: Instant) -> Vec<PodKey> {
        let wanted: std::collections::HashSet<(&str, &str)> = pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        let mut map = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut gone = Vec::new();
        for (ns, by_name) in map.iter_mut() {
            by_name.retain(|name, _| {
                let keep = wanted.contains(&(ns.as_str(), name.as_str()));
                if !keep {
                    gone.push((ns.clone(), name.clone()));
                }
                keep
            });
        }
        map.retain(|_, by_name| !by_name.is_empty());
        for (ns, name) in wanted {
            map.entry(ns.to_string())
                .or_default()
                .entry(name.to_string())
                .or_insert_with(|| PodWindow {
                    first_tracked: now,
                    last_success: None,
                    last_error: None,
                    models: HashMap::new(),
                });
        }
        gone
    }

    /// Records one successful scrape. Models absent from this page keep their older samples until they age out.
    pub fn record(
        &self,
        pod: &PodTarget,
        at: Instant,
        models: &std::collections::BTreeMap<String, ModelSignals>,
    ) {
        let mut map = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(w) = get_mut(&mut map, pod) else {
            return;
        };
        w.last_success = Some(at);
        w.last_error = None;
        for (model, signals) in models {
            // Look up before inserting: the model is almost always known, and `entry` would allocate
            // its key on every scrape of every pod.
            match w.models.get_mut(model) {
                Some(q) => q.push_back((at, *signals)),
                None => {
                    w.models
                        .insert(model.clone(), VecDeque::from([(at, *signals)]));
                }
            }
        }
        let horizon = at.checked_sub(self.lookback);
        for q in w.models.values_mut() {
            while q
                .front()
                .is_some_and(|(t, _)| horizon.is_some_and(|h| *t < h))
            {
                q.pop_front();
            }
        }
        w.models.retain(|_, q| !q.is_empty());
    }

    /// Records a failed scrape. The samples already in the window stay: a failure is never a zero.
    pub(crate) fn record_error(&self, pod: &PodTarget, error: String) {
        let mut map = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = get_mut(&mut map, pod) {
            w.last_error = Some(error);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(HashMap::len)
            .sum()
    }

    pub(crate) fn lookup_at(&self, pod: &PodTarget, model: &str, now: Instant) -> Lookup {
        let map = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(w) = get(&map, pod) else {
            return Lookup::Missing {
                since: Duration::ZERO,
                reason: MissingSample::NotScrapedYet,
            };
        };
        let horizon = now.checked_sub(self.lookback);
        let in_window = |t: &Instant| horizon.is_none_or(|h| *t >= h);
        let since_base = w
            .last_success
            .unwrap_or(w.first_tracked)
            .max(w.first_tracked);
        let since = now.saturating_duration_since(since_base);
        let Some(samples) = w.models.get(model) else {
            let reason = match (&w.last_error, w.models.is_empty()) {
                (Some(e), _) => MissingSample::ScrapeFailing(e.clone()),
                (None, true) if w.last_success.is_none() => MissingSample::NotScrapedYet,
                (None, true) => MissingSample::NoVllmSeries,
                (None, false) => {
                    let served: Vec<String> = w.models.keys().map(|m| format!("{m:?}")).collect();
                    MissingSample::OtherModels {
                        model: model.to_string(),
                        served: Capped(&served, MAX_NAMES_LISTED).to_string(),
                    }
                }
            };
            // A model mismatch is a lasting condition; count it from when the pod was first seen.
            let since = if w.models.is_empty() {
                since
            } else {
                now.saturating_duration_since(w.first_tracked)
            };
            return Lookup::Missing { since, reason };
        };
        let mut kv: Option<f64> = None;
        let mut queue: Option<f64> = None;
        let mut newest: Option<(Instant, Option<f64>)> = None;
        for (t, s) in samples.iter().filter(|(t, _)| in_window(t)) {
            if let Some(v) = s.kv_cache_usage {
                kv = Some(kv.map_or(v, |k| k.max(v)));
            }
            if let Some(v) = s.queue_length {
                queue = Some(queue.map_or(v, |q| q.max(v)));
            }
            newest = Some((*t, s.running_requests));
        }
        match (kv, queue, newest) {
            (Some(kv), Some(queue), Some((t, running))) => Lookup::Fresh(PodSample {
                kv_cache_usage: kv,
                queue_length: queue,
                running_requests: running,
                age: now.saturating_duration_since(t),
                source: SourceKind::Pods,
            }),
            (_, _, None) => Lookup::Missing {
                since,
                reason: w.last_error.as_ref().map_or_else(
                    || MissingSample::NoSampleInWindow {
                        lookback_secs: self.lookback.as_secs(),
                    },
                    |e| MissingSample::ScrapeFailing(e.clone()),
                ),
            },
            (kv, _, Some(_)) => Lookup::Missing {
                since: now.saturating_duration_since(w.first_tracked),
                reason: if kv.is_none() {
                    MissingSample::NoKvCache {
                        model: model.to_string(),
                    }
                } else {
                    MissingSample::NoQueue {
                        model: model.to_string(),
                    }
                },
            },
        }
    }
}

impl SampleSource for WindowCache {
    fn lookup(&self, pod: &PodTarget, model: &str) -> Lookup {
        self.lookup_at(pod, model, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str) -> PodTarget {
        PodTarget {
            namespace: "ns".into(),
            name: name.into(),
            ip: "127.0.0.1".into(),
            port: 8000,
            path: "/metrics".into(),
        }
    }

    fn page(model: &str, kv: f64, q: f64) -> BTreeMap<String, ModelSignals> {
        BTreeMap::from([(
            model.to_string(),
            ModelSignals {
                kv_cache_usage: Some(kv),
                queue_length: Some(q),
                running_requests: Some(1.0),
            },
        )])
    }

    #[test]
    fn serves_the_max_within_the_window_and_forgets_old_samples() {
        let c = WindowCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let p = pod("a");
        c.retain(std::slice::from_ref(&p), t0);
        assert!(
            matches!(c.lookup_at(&p, "m", t0), Lookup::Missing { ref reason, .. } if *reason == MissingSample::NotScrapedYet)
        );
        c.record(&p, t0, &page("m", 0.9, 1.0));
        c.record(&p, t0 + Duration::from_secs(30), &page("m", 0.2, 7.0));
        let Lookup::Fresh(s) = c.lookup_at(&p, "m", t0 + Duration::from_secs(31)) else {
            panic!()
        };
        assert_eq!(
            (s.kv_cache_usage, s.queue_length, s.age),
            (0.9, 7.0, Duration::from_secs(1))
        );
        // At t0+61 the first sample left the window.
        let Lookup::Fresh(s) = c.lookup_at(&p, "m", t0 + Duration::from_secs(61)) else {
            panic!()
        };
        assert_eq!(s.kv_cache_usage, 0.2);
        // At t0+91 nothing is fresh; the failure is named and timed from the last success.
        c.record_error(&p, "connection refused".into());
        let Lookup::Missing { since, reason } = c.lookup_at(&p, "m", t0 + Duration::from_secs(91))
        else {
            panic!()
        };
        assert_eq!(since, Duration::from_secs(61));
        assert_eq!(
            reason,
            MissingSample::ScrapeFailing("connection refused".into())
        );
        assert_eq!(reason.to_string(), "scrape failing: connection refused");
    }

    #[test]
    fn gone_pods_are_forgotten_and_model_mismatch_is_explained() {
        let c = WindowCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let (a, b) = (pod("a"), pod("b"));
        c.retain(&[a.clone(), b.clone()], t0);
        c.record(&a, t0, &page("other", 0.1, 0.0));
        let Lookup::Missing { reason, .. } = c.lookup_at(&a, "m", t0) else {
            panic!()
        };
        assert!(
            reason
                .to_string()
                .contains("no series with model_name=\"m\" (it serves \"other\")"),
            "{reason}"
        );
        assert_eq!(
            c.retain(std::slice::from_ref(&b), t0),
            vec![("ns".to_string(), "a".to_string())]
        );
        assert_eq!(c.tracked(), 1);
        assert!(matches!(
            c.lookup_at(&a, "other", t0),
            Lookup::Missing { .. }
        ));
    }
}
