//! The Prometheus source: WVA's per-pod peak queries, run in the background for every model the
//! variants serve, so the request path reads a cache and a burst of HPA requests costs no query at all.
//! `promql` writes the queries, `client` runs them; the poller here keeps the answers.

mod client;
pub(crate) mod promql;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use client::{PrometheusClient, PrometheusError, PrometheusOptions};
use promql::{idle_query, kv_query, load_queries, queue_query, token_queries};

use super::exposition::CacheConfig;
use super::{
    LoadFigures, Lookup, MissingSample, PodSample, SampleSource, SourceKind, TokenFigures,
};
use crate::health::Heartbeat;
use crate::saturation::{Activity, ZeroConfig};
use crate::target::{PodTarget, TargetFeed};
use crate::telemetry::Metrics;

/// How often the (slower-moving) load figures and saturation V2's figures are refreshed, by default.
pub const LOAD_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct ModelResult {
    at: Instant,
    per_pod: HashMap<String, (Option<f64>, Option<f64>)>,
}

#[derive(Debug, Clone, Default)]
struct ModelState {
    last: Option<ModelResult>,
    last_error: Option<String>,
    first_asked: Option<Instant>,
    load: Option<(Instant, LoadFigures)>,
    /// Saturation V2's per-pod figures, refreshed with the load figures.
    tokens: HashMap<String, TokenFigures>,
    /// The last answer to WVA's idle query, for the retention period asked: the increase (`None`: no
    /// series) or the error.
    activity: Option<(Instant, Duration, Result<Option<f64>, String>)>,
}

/// How the poller reads Prometheus.
#[derive(Debug, Clone, Copy)]
pub struct PollOptions {
    /// The window of WVA's peak queries; an answer older than this is not current.
    pub lookback: Duration,
    /// How often every model is queried.
    pub interval: Duration,
    /// How often the slower figures (load, saturation V2's) are refreshed ([`LOAD_EVERY`]).
    pub load_every: Duration,
}

/// Background poller and cache of Prometheus answers, per (namespace, model).
pub struct PrometheusSource {
    client: PrometheusClient,
    opts: PollOptions,
    /// The models to query.
    targets: Arc<dyn TargetFeed>,
    /// Which models are idle-queried, and over which retention period: those scale to zero is enabled for.
    zero: Arc<ArcSwap<ZeroConfig>>,
    state: RwLock<HashMap<(String, String), ModelState>>,
    metrics: Arc<Metrics>,
    /// Query failures, at most one line a minute per model and reason.
    log: crate::telemetry::LogLimiter,
    /// Bumped after each round of queries (push streams wake on it).
    changes: crate::changes::Changes,
}

impl PrometheusSource {
    pub fn new(
        client: PrometheusClient,
        opts: PollOptions,
        targets: Arc<dyn TargetFeed>,
        zero: Arc<ArcSwap<ZeroConfig>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            opts,
            targets,
            zero,
            state: RwLock::new(HashMap::new()),
            metrics,
            log: crate::telemetry::LogLimiter::new(Duration::from_secs(60)),
            changes: crate::changes::Changes::new(),
        }
    }

    /// Bumps `changes` after each round of queries.
    pub fn notifying(mut self, changes: crate::changes::Changes) -> Self {
        self.changes = changes;
        self
    }

    /// Queries every model the feed names, every interval.
    pub async fn run(self: Arc<Self>, heartbeat: Arc<Heartbeat>) {
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            heartbeat.beat();
            let models: BTreeSet<(String, String)> = self.targets.models();
            self.state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, _| models.contains(k));
            futures::future::join_all(models.iter().map(|(ns, m)| self.refresh(ns, m))).await;
            self.changes.notify();
        }
    }

    /// Runs the two queries of one model (in parallel, like WVA) and records the result or the error.
    pub async fn refresh(&self, namespace: &str, model: &str) {
        let key = (namespace.to_string(), model.to_string());
        {
            let mut s = self
                .state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.entry(key.clone())
                .or_default()
                .first_asked
                .get_or_insert_with(Instant::now);
        }
        self.metrics.prometheus_queries.inc_by(2);
        let (kv_q, queue_q) = (
            kv_query(namespace, model, self.opts.lookback),
            queue_query(namespace, model, self.opts.lookback),
        );
        let (kv, q) = futures::join!(self.client.query(&kv_q), self.client.query(&queue_q));
        let load_due = {
            let s = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.get(&key)
                .and_then(|e| e.load.as_ref())
                .is_none_or(|(at, _)| at.elapsed() >= self.opts.load_every)
        };
        let (load, tokens) = if load_due {
            futures::join!(
                self.load_figures(namespace, model),
                self.token_figures(namespace, model)
            )
        } else {
            (None, None)
        };
        // The idle query runs for the models scale to zero is enabled for, over their retention period.
        let policy = self.zero.load().resolve(model, namespace);
        let activity = match policy.enabled.then_some(policy.retention) {
            Some(r) => {
                self.metrics.prometheus_queries.inc();
                let answer = self
                    .client
                    .query(&idle_query(namespace, model, r))
                    .await
                    .map(|series| series.first().map(|(_, v)| *v))
                    .map_err(|e| e.to_string());
                Some((Instant::now(), r, answer))
            }
            None => None,
        };
        let mut s = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = s.entry(key).or_default();
        if let Some(l) = load {
            entry.load = Some((Instant::now(), l));
        }
        if let Some(t) = tokens {
            entry.tokens = t;
        }
        if activity.is_some() {
            entry.activity = activity;
        }
        match (kv, q) {
            (Ok(kv), Ok(q)) => {
                let mut per_pod: HashMap<String, (Option<f64>, Option<f64>)> = HashMap::new();
                for (signal, series) in [(0, kv), (1, q)] {
                    for (labels, v) in series {
                        for key in series_keys(&labels) {
                            let e = per_pod.entry(key).or_default();
                            let slot = if signal == 0 { &mut e.0 } else { &mut e.1 };
                            *slot = Some(slot.map_or(v, |old| peak(old, v)));
                        }
                    }
                }
                entry.last = Some(ModelResult {
                    at: Instant::now(),
                    per_pod,
                });
                entry.last_error = None;
            }
            (Err(e), _) | (_, Err(e)) => {
                self.metrics.prometheus_failures.inc();
                let e =
                    crate::error::cap(&e.to_string(), crate::error::MAX_STATUS_MESSAGE_BYTES / 4)
                        .into_owned();
                if let Some(held) = self.log.allow(&format!("{namespace}\n{model}\n{e}")) {
                    tracing::warn!(namespace, model, error = %e, repeats_held_back = held, "Prometheus query failed; keeping the previous result until it ages out");
                }
                entry.last_error = Some(e);
            }
        }
    }

    /// Runs saturation V2's four per-pod queries; a failure leaves the previous figures in place. A
    /// NaN (no completions: 0/0) or a missing series reads as 0, as in WVA; a hit rate outside 0–1 is
    /// dropped.
    async fn token_figures(
        &self,
        namespace: &str,
        model: &str,
    ) -> Option<HashMap<String, TokenFigures>> {
        let queries = token_queries(namespace, model);
        self.metrics.prometheus_queries.inc_by(queries.len() as u64);
        let results =
            futures::future::join_all(queries.iter().map(|(_, q)| self.client.query(q))).await;
        let mut per_pod: HashMap<String, TokenFigures> = HashMap::new();
        for (i, r) in results.into_iter().enumerate() {
            let series = match r {
                Ok(series) => series,
                Err(e) => {
                    self.metrics.prometheus_failures.inc();
                    tracing::debug!(namespace, model, query = queries[i].0, error = %e, "saturation V2 query failed");
                    return None;
                }
            };
            for (labels, v) in series {
                for key in series_keys(&labels) {
                    let t = per_pod.entry(key).or_default();
                    let usable = if v.is_finite() && v >= 0.0 { v } else { 0.0 };
                    match i {
                        0 => {
                            // vLLM's cache_config_info carries the figures as labels; SGLang's
                            // max_total_num_tokens is the figure.
                            let c = if labels.contains_key("num_gpu_blocks") {
                                CacheConfig::from_labels(|k| labels.get(k).map(String::as_str))
                            } else {
                                CacheConfig::from_tokens(v)
                            };
                            if let Some(c) = c {
                                t.total_kv_tokens = Some(c.total_tokens());
                            }
                        }
                        1 => t.avg_input_tokens = usable,
                        2 => t.avg_output_tokens = usable,
                        _ => {
                            t.prefix_cache_hit_rate = if usable <= 1.0 { usable } else { 0.0 };
                        }
                    }
                }
            }
        }
        Some(per_pod)
    }

    /// Runs the five load queries; a failure is logged and leaves the previous figures in place.
    async fn load_figures(&self, namespace: &str, model: &str) -> Option<LoadFigures> {
        let queries = load_queries(namespace, model);
        self.metrics.prometheus_queries.inc_by(queries.len() as u64);
        let results =
            futures::future::join_all(queries.iter().map(|(_, q)| self.client.query(q))).await;
        let mut values = [0.0f64; 5];
        for (i, r) in results.into_iter().enumerate() {
            match r {
                // An empty result (no traffic yet) and NaN (0/0) both mean 0, as in WVA.
                Ok(series) => values[i] = series.first().map_or(0.0, |(_, v)| *v),
                Err(e) => {
                    self.metrics.prometheus_failures.inc();
                    tracing::debug!(namespace, model, query = queries[i].0, error = %e, "load query failed");
                    return None;
                }
            }
        }
        Some(LoadFigures {
            arrival_rate: values[0] * 60.0,
            avg_input_tokens: values[1],
            avg_output_tokens: values[2],
            ttft_average: values[3] * 1000.0,
            itl_average: values[4] * 1000.0,
            age: Duration::ZERO,
        })
    }

    pub(crate) fn lookup_at(&self, pod: &PodTarget, model: &str, now: Instant) -> Lookup {
        let s = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(state) = s.get(&(pod.namespace.clone(), model.to_string())) else {
            return Lookup::Missing {
                since: Duration::ZERO,
                reason: MissingSample::PrometheusNotQueried,
            };
        };
        let since_base = state
            .last
            .as_ref()
            .map(|r| r.at)
            .or(state.first_asked)
            .unwrap_or(now);
        let since = now.saturating_duration_since(since_base);
        let Some(result) = state
            .last
            .as_ref()
            .filter(|r| now.saturating_duration_since(r.at) <= self.opts.lookback)
        else {
            let reason = state
                .last_error
                .as_ref()
                .map_or(MissingSample::PrometheusNotAnswered, |e| {
                    MissingSample::Prometheus(e.clone())
                });
            return Lookup::Missing { since, reason };
        };
        let since_asked = now.saturating_duration_since(state.first_asked.unwrap_or(now));
        let unusable = |v: f64| !(v.is_finite() && v >= 0.0);
        match result.per_pod.get(pod.instance().as_ref()) {
            // An infinite or negative answer is no measurement: missing for this pod, aged like the rest.
            Some((Some(kv), _)) if unusable(*kv) => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::Unusable {
                    signal: "vllm:kv_cache_usage_perc",
                    value: *kv,
                },
            },
            Some((_, Some(q))) if unusable(*q) => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::Unusable {
                    signal: "vllm:num_requests_waiting",
                    value: *q,
                },
            },
            Some((Some(kv), Some(q))) => Lookup::Fresh(PodSample {
                kv_cache_usage: *kv,
                queue_length: *q,
                running_requests: None,
                age: now.saturating_duration_since(result.at),
                source: SourceKind::Prometheus,
                // Saturation V2's figures, from the last round of its queries (none yet: the variant's
                // capacity comes from its Deployment, the fallback path).
                tokens: state.tokens.get(pod.instance().as_ref()).copied(),
            }),
            // WVA uses 0 for a pod missing from one of the two results; we do not invent data.
            Some(_) => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::PrometheusPartial,
            },
            None => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::PrometheusNoSeries {
                    pod: pod.instance().into_owned(),
                    model: model.to_string(),
                    namespace: pod.namespace.clone(),
                },
            },
        }
    }
}

impl PrometheusSource {
    /// The idle query's last answer for `retention`.
    pub(crate) fn activity_at(
        &self,
        namespace: &str,
        model: &str,
        retention: Duration,
        now: Instant,
    ) -> Activity {
        let key = (namespace.to_string(), model.to_string());
        let s = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unknown = |reason: String| Activity::Unknown {
            reason: reason.into(),
        };
        let Some((at, asked, answer)) = s.get(&key).and_then(|e| e.activity.clone()) else {
            return unknown("Prometheus has not been asked yet".into());
        };
        let age = now.saturating_duration_since(at);
        if asked != retention || age > self.opts.lookback {
            return unknown(format!(
                "no current answer from Prometheus (last one {}s old)",
                age.as_secs()
            ));
        }
        match answer {
            Err(e) => unknown(format!("Prometheus: {e}")),
            Ok(None) => unknown(format!(
                "Prometheus has no vllm:request_success_total or sglang:num_requests_total series for model {model:?} in {namespace}"
            )),
            Ok(Some(v)) if v > 0.0 => Activity::Active {
                last_secs: age.as_secs(),
            },
            Ok(Some(_)) => Activity::Idle,
        }
    }
}

impl SampleSource for PrometheusSource {
    fn lookup(&self, pod: &PodTarget, model: &str) -> Lookup {
        self.lookup_at(pod, model, Instant::now())
    }

    fn activity(
        &self,
        namespace: &str,
        model: &str,
        _pods: &[&PodTarget],
        retention: Duration,
    ) -> Activity {
        self.activity_at(namespace, model, retention, Instant::now())
    }

    fn model_load(&self, namespace: &str, model: &str) -> Option<LoadFigures> {
        let s = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (at, figures) = s
            .get(&(namespace.to_string(), model.to_string()))?
            .load
            .clone()?;
        Some(LoadFigures {
            age: at.elapsed(),
            ..figures
        })
    }
}

/// The keys a series answers for: its pod, and `pod:port` (the serving instance of a pod read at
/// several ports, a data-parallel rank) when its `instance` label ends in a port. A pod read at one
/// port is keyed by its name, over every instance of it.
fn series_keys(labels: &BTreeMap<String, String>) -> Vec<String> {
    let Some(pod) = labels.get("pod").or_else(|| labels.get("pod_name")) else {
        return Vec::new();
    };
    let port = labels
        .get("instance")
        .and_then(|i| i.rsplit_once(':'))
        .map(|(_, port)| port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(port) => vec![pod.clone(), format!("{pod}:{port}")],
        None => vec![pod.clone()],
    }
}

/// The larger of two answers for one pod (`max by (pod)` over its instances); an unusable value
/// (NaN, negative) wins, so that the pod reads as unusable rather than as its healthy instance.
fn peak(a: f64, b: f64) -> f64 {
    let unusable = |v: f64| !(v.is_finite() && v >= 0.0);
    if unusable(a) {
        a
    } else if unusable(b) {
        b
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series answers for its pod and, when its `instance` has a port, for `pod:port` (a rank read
    /// at its own port); a pod's answer is the peak of its instances, an unusable one winning.
    #[test]
    fn series_answer_for_the_pod_and_its_instance() {
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            series_keys(&labels(&[("pod", "p"), ("instance", "10.0.0.1:8001")])),
            vec!["p".to_string(), "p:8001".to_string()]
        );
        assert_eq!(
            series_keys(&labels(&[
                ("pod_name", "p"),
                ("instance", "[fd00::1]:8000")
            ])),
            vec!["p".to_string(), "p:8000".to_string()]
        );
        assert_eq!(
            series_keys(&labels(&[("pod", "p"), ("instance", "vllm")])),
            vec!["p".to_string()]
        );
        assert!(series_keys(&labels(&[("instance", "10.0.0.1:8000")])).is_empty());
        assert_eq!(peak(0.2, 0.7), 0.7);
        assert_eq!(peak(0.2, -1.0), -1.0);
        assert!(peak(f64::NAN, 0.5).is_nan());
    }

    /// A negative answer from Prometheus is missing for that pod (and ages), never a sample.
    #[test]
    fn unusable_answers_are_missing_for_the_pod() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = PrometheusClient::new(&client::tests::options("http://p:9090", true)).unwrap();
        let source = PrometheusSource::new(
            client,
            PollOptions {
                lookback: Duration::from_secs(60),
                interval: Duration::from_secs(1),
                load_every: LOAD_EVERY,
            },
            Arc::new(crate::target::FixedTargets::default()),
            Arc::new(ArcSwap::from_pointee(ZeroConfig::default())),
            Metrics::new(),
        );
        let now = Instant::now();
        let per_pod = HashMap::from([
            ("good".to_string(), (Some(0.5), Some(1.0))),
            ("bad".to_string(), (Some(0.5), Some(-2.0))),
        ]);
        source.state.write().unwrap().insert(
            ("ns".into(), "m".into()),
            ModelState {
                last: Some(ModelResult { at: now, per_pod }),
                first_asked: Some(now),
                ..Default::default()
            },
        );
        let pod = |name: &str| PodTarget::new("ns", name, "10.0.0.1", 8000);
        assert!(matches!(
            source.lookup_at(&pod("good"), "m", now),
            Lookup::Fresh(_)
        ));
        let Lookup::Missing { reason, .. } = source.lookup_at(&pod("bad"), "m", now) else {
            panic!("a negative queue became a sample")
        };
        assert!(matches!(reason, MissingSample::Unusable { value, .. } if value == -2.0));
    }
}
