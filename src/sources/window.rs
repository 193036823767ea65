//! The in-memory window of scraped samples: per pod and model, the samples of the last `lookback`,
//! served as their maximum (WVA's `max_over_time[1m]`). Only pods the scraper is told about are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::exposition::{CacheConfig, ModelSignals, TokenCounters};
use super::MissingSample;
use super::{Lookup, PodSample, SampleSource, SourceKind, TokenFigures};
use crate::error::{Capped, MAX_NAMES_LISTED};
use crate::saturation::Activity;
use crate::target::PodTarget;

type PodKey = (String, String);

#[derive(Debug)]
struct PodWindow {
    first_tracked: Instant,
    last_success: Option<Instant>,
    last_error: Option<String>,
    /// Per model_name (only those some variant asks for), its samples and when it was last complete.
    models: HashMap<String, ModelWindow>,
    /// What the last page looked like, to say why a model has no sample.
    page: PageFacts,
}

#[derive(Debug, Default)]
struct ModelWindow {
    /// Samples oldest first, within the look-back window (the gauges only: 48 bytes each).
    samples: VecDeque<(Instant, Peak)>,
    /// When a page last had both signals: missing data is counted from there, so a pod that answers 200
    /// with nothing usable reaches `--max-metric-age` like one that fails. Kept after the samples age out.
    last_complete: Option<Instant>,
    /// The last `vllm:request_success_total` read, and the page it came from.
    success: Option<(Instant, f64)>,
    /// The request-shape counters' increases of the last [`TOKEN_WINDOW`] (saturation V2's averages).
    tokens: TokenWindow,
}

/// The gauges of one page of one model.
#[derive(Debug, Clone, Copy)]
struct Peak {
    kv: Option<f64>,
    queue: Option<f64>,
    running: Option<f64>,
}

/// How far back request-shape averages reach (WVA's `rate(…[5m])`), in [`TOKEN_STEP`]s.
pub const TOKEN_WINDOW: Duration = Duration::from_secs(300);
/// The counters' increases are summed per step: a pod's window costs at most six steps, not a sample per
/// scrape.
pub const TOKEN_STEP: Duration = Duration::from_secs(60);

/// Increases of the request-shape counters: prompt tokens and requests, generated tokens and requests,
/// prefix-cache hits and queries.
type Increases = [f64; 6];

fn counters_of(c: &TokenCounters) -> [Option<f64>; 6] {
    [
        c.prompt_tokens_sum,
        c.prompt_tokens_count,
        c.generation_tokens_sum,
        c.generation_tokens_count,
        c.prefix_cache_hits,
        c.prefix_cache_queries,
    ]
}

#[derive(Debug, Default)]
struct TokenWindow {
    /// The last page's counters, to take increases from.
    last: Option<[Option<f64>; 6]>,
    /// Per step (its start), the increases seen in it; oldest first.
    steps: VecDeque<(Instant, Increases)>,
}

impl TokenWindow {
    /// Adds one page's counters: the increase since the last page (a decrease is a restart, counted from
    /// 0 as Prometheus's `rate` counts it).
    fn record(&mut self, at: Instant, counters: &TokenCounters) {
        let now = counters_of(counters);
        if let Some(last) = self.last {
            let mut inc = [0.0; 6];
            for (i, slot) in inc.iter_mut().enumerate() {
                if let (Some(a), Some(b)) = (last[i], now[i]) {
                    *slot = if b >= a { b - a } else { b };
                }
            }
            match self.steps.back_mut() {
                Some((start, sum)) if at.saturating_duration_since(*start) < TOKEN_STEP => {
                    for (s, i) in sum.iter_mut().zip(inc) {
                        *s += i;
                    }
                }
                _ => self.steps.push_back((at, inc)),
            }
        }
        self.last = Some(now);
    }

    fn prune(&mut self, horizon: Option<Instant>) {
        while self
            .steps
            .front()
            .is_some_and(|(t, _)| horizon.is_some_and(|h| *t < h))
        {
            self.steps.pop_front();
        }
    }

    /// The increases of the steps that started within the window.
    fn sum(&self, horizon: Option<Instant>) -> Option<Increases> {
        let mut total = [0.0; 6];
        let mut any = false;
        for (_, inc) in self
            .steps
            .iter()
            .filter(|(t, _)| horizon.is_none_or(|h| *t >= h))
        {
            any = true;
            for (s, i) in total.iter_mut().zip(inc) {
                *s += i;
            }
        }
        any.then_some(total)
    }
}

/// When a model (namespace, model_name) was last seen serving, over every pod it ever had: pods come and
/// go, the model's activity stays.
#[derive(Debug, Clone, Copy)]
struct ModelActivity {
    /// The first page with the success counter: how far back the observation reaches.
    observed_since: Instant,
    /// The last page that showed a request: a counter increase or reset, or a request running or waiting.
    last_active: Option<Instant>,
    /// The last page with the counter (entries unseen for [`ACTIVITY_FORGET`] are dropped).
    last_seen: Instant,
}

/// The longest scrape error kept per pod: a quarter of a metav1.Status message, so that a few pods'
/// reasons fit in one.
const MAX_REASON_BYTES: usize = crate::error::MAX_STATUS_MESSAGE_BYTES / 4;

/// A model none of whose pods has been seen this long is forgotten (its observation starts over).
const ACTIVITY_FORGET: Duration = Duration::from_secs(6 * 3600);

/// What a scraped page held besides the wanted models' samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PageFacts {
    /// Bytes read.
    pub bytes: usize,
    /// The limit the page was cut at, when it was larger.
    pub cut_at: Option<usize>,
    /// A few other `model_name`s the page serves, and how many series they had.
    pub other_models: Vec<String>,
    pub other_series: usize,
    /// The server's KV cache (`vllm:cache_config_info`), when the page has it.
    pub cache_config: Option<CacheConfig>,
}

/// Pods by namespace, then serving instance (the pod's name, or `pod:port` for a data-parallel rank
/// read at its own port): lookups on the request path borrow the names instead of allocating a key.
type Pods = HashMap<String, HashMap<String, PodWindow>>;

pub struct WindowCache {
    lookback: Duration,
    pods: RwLock<Pods>,
    /// By namespace, then model: lookups borrow the names, as in [`Pods`].
    activity: RwLock<HashMap<String, HashMap<String, ModelActivity>>>,
}

fn get<'a>(map: &'a Pods, pod: &PodTarget) -> Option<&'a PodWindow> {
    map.get(pod.namespace.as_str())?
        .get(pod.instance().as_ref())
}

fn get_mut<'a>(map: &'a mut Pods, pod: &PodTarget) -> Option<&'a mut PodWindow> {
    map.get_mut(pod.namespace.as_str())?
        .get_mut(pod.instance().as_ref())
}

impl WindowCache {
    pub fn new(lookback: Duration) -> Self {
        Self {
            lookback,
            pods: RwLock::new(HashMap::new()),
            activity: RwLock::new(HashMap::new()),
        }
    }

    /// Keeps exactly the given pods; returns the ones forgotten.
    pub fn retain(&self, pods: &[PodTarget], now: Instant) -> Vec<PodKey> {
        let wanted: std::collections::HashSet<(&str, std::borrow::Cow<'_, str>)> = pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.instance()))
            .collect();
        let mut map = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut gone = Vec::new();
        for (ns, by_name) in map.iter_mut() {
            by_name.retain(|name, _| {
                let keep =
                    wanted.contains(&(ns.as_str(), std::borrow::Cow::Borrowed(name.as_str())));
                if !keep {
                    gone.push((ns.clone(), name.clone()));
                }
                keep
            });
        }
        map.retain(|_, by_name| !by_name.is_empty());
        let mut activity = self
            .activity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for by_model in activity.values_mut() {
            by_model.retain(|_, a| now.saturating_duration_since(a.last_seen) < ACTIVITY_FORGET);
        }
        activity.retain(|_, by_model| !by_model.is_empty());
        drop(activity);
        for (ns, name) in wanted {
            map.entry(ns.to_string())
                .or_default()
                .entry(name.to_string())
                .or_insert_with(|| PodWindow {
                    first_tracked: now,
                    last_success: None,
                    last_error: None,
                    models: HashMap::new(),
                    page: PageFacts::default(),
                });
        }
        gone
    }

    /// Records one successful scrape. Models absent from this page keep their older samples until they age out.
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        pod: &PodTarget,
        at: Instant,
        models: &std::collections::BTreeMap<String, ModelSignals>,
    ) {
        self.record_page(pod, at, models, PageFacts::default());
    }

    /// Records one successful fetch with what else the page held (see [`PageFacts`]).
    pub(crate) fn record_page(
        &self,
        pod: &PodTarget,
        at: Instant,
        models: &std::collections::BTreeMap<String, ModelSignals>,
        page: PageFacts,
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
        w.page = page;
        let mut seen: Vec<(&String, bool)> = Vec::new();
        for (model, signals) in models {
            // Look up before inserting: the model is almost always known, and `entry` would allocate
            // its key on every scrape of every pod.
            let m = match w.models.get_mut(model) {
                Some(m) => m,
                None => w.models.entry(model.clone()).or_default(),
            };
            m.samples.push_back((
                at,
                Peak {
                    kv: signals.kv_cache_usage,
                    queue: signals.queue_length,
                    running: signals.running_requests,
                },
            ));
            if !signals.tokens.is_empty() {
                m.tokens.record(at, &signals.tokens);
            }
            if signals.is_complete() {
                m.last_complete = Some(at);
            }
            if let Some(total) = signals.success_total {
                let previous = m.success.replace((at, total)).map(|(_, v)| v);
                seen.push((model, served_requests(previous, total, signals)));
            }
        }
        self.prune(w, at);
        drop(map);
        if !seen.is_empty() {
            self.note_activity(&pod.namespace, &seen, at);
        }
    }

    fn note_activity(&self, namespace: &str, seen: &[(&String, bool)], at: Instant) {
        let mut activity = self
            .activity
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Look up before inserting: on every scrape of every pod the entry almost always exists, and
        // `entry` would allocate its keys each time.
        let by_model = match activity.get_mut(namespace) {
            Some(m) => m,
            None => activity.entry(namespace.to_string()).or_default(),
        };
        for (model, active) in seen {
            let a = match by_model.get_mut(model.as_str()) {
                Some(a) => a,
                None => by_model.entry((*model).clone()).or_insert(ModelActivity {
                    observed_since: at,
                    last_active: None,
                    last_seen: at,
                }),
            };
            a.last_seen = a.last_seen.max(at);
            if *active {
                a.last_active = Some(a.last_active.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// Whether `model` served a request in the last `retention`, from every pod it had and has
    /// (`pods`: its Ready pods now). Idle needs complete data: the observation covers the retention
    /// period and every current pod's last scrape succeeded with the success counter on the page.
    pub(crate) fn activity_at(
        &self,
        namespace: &str,
        model: &str,
        pods: &[&PodTarget],
        retention: Duration,
        now: Instant,
    ) -> Activity {
        let known = self
            .activity
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(namespace)
            .and_then(|by_model| by_model.get(model))
            .copied();
        let Some(a) = known else {
            return Activity::Unknown {
                reason: format!(
                    "no page of model {model:?} has shown vllm:request_success_total yet"
                )
                .into(),
            };
        };
        if let Some(last) = a.last_active {
            let ago = now.saturating_duration_since(last);
            if ago < retention {
                return Activity::Active {
                    last_secs: ago.as_secs(),
                };
            }
        }
        let observed = now.saturating_duration_since(a.observed_since);
        if observed < retention {
            return Activity::Unknown {
                reason: format!(
                    "observed for {}s of the {}s retention period",
                    observed.as_secs(),
                    retention.as_secs()
                )
                .into(),
            };
        }
        let map = self
            .pods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for pod in pods {
            let w = get(&map, pod);
            let why = match w {
                None => Some("not scraped yet".to_string()),
                Some(w) => match (&w.last_error, w.last_success) {
                    (Some(e), _) => Some(format!("scrape failing: {e}")),
                    (None, None) => Some("not scraped yet".to_string()),
                    (None, Some(last)) => {
                        let on_last_page = w
                            .models
                            .get(model)
                            .and_then(|m| m.success)
                            .is_some_and(|(t, _)| t == last);
                        (!on_last_page).then(|| {
                            "its last page has no vllm:request_success_total for the model"
                                .to_string()
                        })
                    }
                },
            };
            if let Some(why) = why {
                return Activity::Unknown {
                    reason: format!("pod {}: {why}", pod.instance()).into(),
                };
            }
        }
        Activity::Idle
    }

    /// Drops samples older than the window, and models left with neither samples nor a last complete
    /// page (only wanted models get entries, so what stays is bounded by the variants).
    fn prune(&self, w: &mut PodWindow, now: Instant) {
        let horizon = now.checked_sub(self.lookback);
        let token_horizon = now.checked_sub(TOKEN_WINDOW);
        for m in w.models.values_mut() {
            while m
                .samples
                .front()
                .is_some_and(|(t, _)| horizon.is_some_and(|h| *t < h))
            {
                m.samples.pop_front();
            }
            m.tokens.prune(token_horizon);
        }
        w.models
            .retain(|_, m| !m.samples.is_empty() || m.last_complete.is_some());
        if w.models.capacity() > 4 * w.models.len().max(4) {
            w.models.shrink_to_fit();
        }
    }

    /// Records a failed scrape. The samples still in the window stay (a failure is never a zero);
    /// older ones are pruned, so a failing pod holds no more than the window.
    pub(crate) fn record_error(&self, pod: &PodTarget, at: Instant, error: String) {
        let mut map = self
            .pods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = get_mut(&mut map, pod) {
            // Reasons are kept per pod and repeated in answers and logs: kept small.
            w.last_error = Some(match crate::error::cap(&error, MAX_REASON_BYTES) {
                std::borrow::Cow::Borrowed(_) => error,
                std::borrow::Cow::Owned(cut) => cut,
            });
            self.prune(w, at);
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
        // Missing data is counted from the last page with both signals of this model (or from when the
        // pod was first seen): failures, empty pages, garbage, other models and cut pages all age alike.
        let entry = w.models.get(model);
        let since = now.saturating_duration_since(
            entry
                .and_then(|m| m.last_complete)
                .map_or(w.first_tracked, |t| t.max(w.first_tracked)),
        );
        let Some(samples) = entry.map(|m| &m.samples).filter(|s| !s.is_empty()) else {
            return Lookup::Missing {
                since,
                reason: self.why_no_model(w, model),
            };
        };
        let mut kv: Option<f64> = None;
        let mut queue: Option<f64> = None;
        let mut newest: Option<(Instant, Option<f64>)> = None;
        for (t, s) in samples.iter().filter(|(t, _)| in_window(t)) {
            if let Some(v) = s.kv {
                kv = Some(kv.map_or(v, |k| k.max(v)));
            }
            if let Some(v) = s.queue {
                queue = Some(queue.map_or(v, |q| q.max(v)));
            }
            newest = Some((*t, s.running));
        }
        match (kv, queue, newest) {
            (Some(kv), Some(queue), Some((t, running))) => Lookup::Fresh(PodSample {
                kv_cache_usage: kv,
                queue_length: queue,
                running_requests: running,
                age: now.saturating_duration_since(t),
                source: SourceKind::Pods,
                tokens: token_figures(
                    w.page.cache_config,
                    entry.map(|m| &m.tokens),
                    now.checked_sub(TOKEN_WINDOW),
                ),
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
                since,
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

/// Saturation V2's figures of one pod: its KV tokens, and the averages of the counters' increases over
/// the window (`rate(sum) / rate(count)`: the time cancels). A decrease is a restart, counted from 0 as
/// Prometheus's `rate` counts it. No completions in the window read as 0, as WVA reads them.
fn token_figures(
    cache: Option<CacheConfig>,
    tokens: Option<&TokenWindow>,
    horizon: Option<Instant>,
) -> Option<TokenFigures> {
    let sums = tokens.and_then(|t| t.sum(horizon));
    if cache.is_none() && sums.is_none() {
        return None;
    }
    let [prompt, prompts, generated, generations, hits, queries] = sums.unwrap_or_default();
    let ratio = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
    let hit = ratio(hits, queries);
    Some(TokenFigures {
        total_kv_tokens: cache.map(|c| c.total_tokens()),
        avg_input_tokens: ratio(prompt, prompts),
        avg_output_tokens: ratio(generated, generations),
        prefix_cache_hit_rate: if (0.0..=1.0).contains(&hit) { hit } else { 0.0 },
    })
}

impl WindowCache {
    /// Why a pod's window holds nothing for `model`, from its last scrape.
    fn why_no_model(&self, w: &PodWindow, model: &str) -> MissingSample {
        if let Some(e) = &w.last_error {
            return MissingSample::ScrapeFailing(e.clone());
        }
        if w.last_success.is_none() {
            return MissingSample::NotScrapedYet;
        }
        let page = &w.page;
        let with_samples = || w.models.iter().filter(|(_, m)| !m.samples.is_empty());
        if with_samples().next().is_none() && page.other_series == 0 {
            return match page.cut_at {
                Some(limit) => MissingSample::PageCut {
                    model: model.to_string(),
                    limit,
                },
                None if page.bytes == 0 => MissingSample::EmptyPage,
                None => MissingSample::NoVllmSeries,
            };
        }
        let mut served: Vec<String> = with_samples().map(|(m, _)| format!("{m:?}")).collect();
        served.sort();
        served.extend(page.other_models.iter().map(|m| format!("{m:?}")));
        let mut text = Capped(&served, MAX_NAMES_LISTED).to_string();
        if page.other_series > 0 {
            text.push_str(&format!(
                "; {} series of models no variant asks for",
                page.other_series
            ));
        }
        MissingSample::OtherModels {
            model: model.to_string(),
            served: text,
        }
    }
}

/// Whether a page shows requests served since the previous one: the counter rose, or went down (a restart:
/// what it served before is unknown, so it counts), or requests run or wait now. A first reading above 0
/// counts too: when those requests were served is unknown.
fn served_requests(previous: Option<f64>, total: f64, signals: &ModelSignals) -> bool {
    let busy = signals.running_requests.is_some_and(|r| r > 0.0)
        || signals.queue_length.is_some_and(|q| q > 0.0);
    #[allow(clippy::float_cmp)]
    // A counter that did not move reads back the same text, hence the same value.
    let moved = previous.map_or(total > 0.0, |p| total != p);
    busy || moved
}

impl SampleSource for WindowCache {
    fn lookup(&self, pod: &PodTarget, model: &str) -> Lookup {
        self.lookup_at(pod, model, Instant::now())
    }

    fn activity(
        &self,
        namespace: &str,
        model: &str,
        pods: &[&PodTarget],
        retention: Duration,
    ) -> Activity {
        self.activity_at(namespace, model, pods, retention, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str) -> PodTarget {
        PodTarget::new("ns", name, "127.0.0.1", 8000)
    }

    fn page(model: &str, kv: f64, q: f64) -> BTreeMap<String, ModelSignals> {
        BTreeMap::from([(
            model.to_string(),
            ModelSignals {
                kv_cache_usage: Some(kv),
                queue_length: Some(q),
                running_requests: Some(1.0),
                success_total: None,
                tokens: TokenCounters::default(),
            },
        )])
    }

    /// Two ranks of one pod, read at their own ports, keep their own windows; retaining one forgets
    /// the other by its instance key.
    #[test]
    fn ranks_of_one_pod_have_their_own_windows() {
        let cache = WindowCache::new(Duration::from_secs(60));
        let rank = |port| PodTarget {
            per_port: true,
            ..PodTarget::new("ns", "dp", "127.0.0.1", port)
        };
        let (r0, r1) = (rank(8000), rank(8001));
        let t0 = Instant::now();
        cache.retain(&[r0.clone(), r1.clone()], t0);
        cache.record_page(&r0, t0, &page("m", 0.9, 4.0), PageFacts::default());
        cache.record_page(&r1, t0, &page("m", 0.1, 0.0), PageFacts::default());
        let kv = |p: &PodTarget| match cache.lookup_at(p, "m", t0) {
            Lookup::Fresh(s) => Some(s.kv_cache_usage),
            Lookup::Missing { .. } => None,
        };
        assert_eq!((kv(&r0), kv(&r1)), (Some(0.9), Some(0.1)));
        // The pod's name alone is another key: nothing recorded under it.
        assert_eq!(kv(&pod("dp")), None);
        let gone = cache.retain(std::slice::from_ref(&r0), t0);
        assert_eq!(gone, vec![("ns".to_string(), "dp:8001".to_string())]);
    }

    /// Saturation V2's figures: the KV tokens of the last page's `vllm:cache_config_info`, and the
    /// request shape from the counters' increases over five minutes, a restart counted from 0.
    #[test]
    fn token_figures_average_counter_increases_over_five_minutes() {
        let cache = WindowCache::new(Duration::from_secs(60));
        let p = pod("a");
        let t0 = Instant::now();
        cache.retain(std::slice::from_ref(&p), t0);
        let counted = |prompt: f64, generated: f64, n: f64, hits: f64, queries: f64| {
            let mut m = page("m", 0.5, 1.0);
            m.get_mut("m").unwrap().tokens = TokenCounters {
                prompt_tokens_sum: Some(prompt),
                prompt_tokens_count: Some(n),
                generation_tokens_sum: Some(generated),
                generation_tokens_count: Some(n),
                prefix_cache_queries: Some(queries),
                prefix_cache_hits: Some(hits),
            };
            m
        };
        let facts = PageFacts {
            cache_config: Some(CacheConfig {
                num_gpu_blocks: 1000,
                block_size: 16,
            }),
            ..PageFacts::default()
        };
        // An increase counts in the minute it is seen; the one seen at t1 is older than five minutes
        // by the last lookup, so left out.
        cache.record_page(&p, t0, &counted(0.0, 0.0, 0.0, 0.0, 0.0), facts.clone());
        let t1 = t0 + Duration::from_secs(10);
        cache.record_page(
            &p,
            t1,
            &counted(10_000.0, 500.0, 10.0, 0.0, 100.0),
            facts.clone(),
        );
        let t2 = t1 + Duration::from_secs(200);
        cache.record_page(
            &p,
            t2,
            &counted(12_000.0, 900.0, 20.0, 50.0, 200.0),
            facts.clone(),
        );
        // The server restarted: its counters start over.
        let t3 = t2 + Duration::from_secs(120);
        cache.record_page(&p, t3, &counted(1_000.0, 100.0, 10.0, 25.0, 50.0), facts);
        let Lookup::Fresh(s) = cache.lookup_at(&p, "m", t3) else {
            panic!("fresh sample expected")
        };
        let t = s.tokens.unwrap();
        assert_eq!(t.total_kv_tokens, Some(16_000));
        // From t1 on: prompt 2000 + 1000 over 10 + 10 requests; output 400 + 100.
        assert_eq!(t.avg_input_tokens, 150.0);
        assert_eq!(t.avg_output_tokens, 25.0);
        assert_eq!(t.prefix_cache_hit_rate, 75.0 / 150.0);
        // No completions in the window: 0, as WVA reads NaN.
        let q = WindowCache::new(Duration::from_secs(60));
        q.retain(std::slice::from_ref(&p), t0);
        q.record_page(
            &p,
            t0,
            &counted(5.0, 5.0, 1.0, 0.0, 0.0),
            PageFacts::default(),
        );
        q.record_page(
            &p,
            t1,
            &counted(5.0, 5.0, 1.0, 0.0, 0.0),
            PageFacts::default(),
        );
        let Lookup::Fresh(s) = q.lookup_at(&p, "m", t1) else {
            panic!("fresh sample expected")
        };
        let t = s.tokens.unwrap();
        assert_eq!(
            (t.total_kv_tokens, t.avg_input_tokens, t.avg_output_tokens),
            (None, 0.0, 0.0)
        );
    }

    /// Every form of "no usable sample" ages from the last complete page, though the scrapes succeed,
    /// and says what the page was.
    #[test]
    fn pages_without_usable_samples_age_into_missing_data_with_the_reason() {
        let c = WindowCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let p = pod("p");
        c.retain(std::slice::from_ref(&p), t0);
        c.record(&p, t0, &page("m", 0.5, 1.0));
        let none = BTreeMap::new();
        let cases: Vec<(PageFacts, MissingSample)> = vec![
            (PageFacts::default(), MissingSample::EmptyPage),
            (
                PageFacts {
                    bytes: 5_000,
                    ..Default::default()
                },
                MissingSample::NoVllmSeries,
            ),
            (
                PageFacts {
                    bytes: 2 << 20,
                    cut_at: Some(2 << 20),
                    ..Default::default()
                },
                MissingSample::PageCut {
                    model: "m".into(),
                    limit: 2 << 20,
                },
            ),
        ];
        for (facts, want) in cases {
            // Successful scrapes every 5 s for 3 minutes, none with a usable sample.
            for i in 1..=36 {
                c.record_page(&p, t0 + Duration::from_secs(5 * i), &none, facts.clone());
            }
            let Lookup::Missing { since, reason } =
                c.lookup_at(&p, "m", t0 + Duration::from_secs(180))
            else {
                panic!("{want:?}: still fresh")
            };
            assert_eq!(since, Duration::from_secs(180), "{want:?}");
            assert_eq!(reason, want);
        }
        // A flood of other models: counted, a few named, the count said.
        let flood = PageFacts {
            bytes: 7 << 20,
            other_models: (0..5).map(|i| format!("x{i}")).collect(),
            other_series: 150_000,
            ..Default::default()
        };
        c.record_page(&p, t0 + Duration::from_secs(185), &none, flood);
        let Lookup::Missing { reason, .. } = c.lookup_at(&p, "m", t0 + Duration::from_secs(185))
        else {
            panic!()
        };
        let text = reason.to_string();
        assert!(
            text.contains("\"x0\", \"x1\"")
                && text.contains("150000 series of models no variant asks for"),
            "{text}"
        );
        assert!(text.len() < 300, "{}", text.len());
    }

    #[test]
    fn a_failing_pod_holds_no_samples_past_the_window() {
        let c = WindowCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let p = pod("p");
        c.retain(std::slice::from_ref(&p), t0);
        for i in 0..12 {
            c.record(&p, t0 + Duration::from_secs(5 * i), &page("m", 0.5, 1.0));
        }
        c.record_error(&p, t0 + Duration::from_secs(200), "refused".into());
        let map = c.pods.read().unwrap();
        let w = get(&map, &p).unwrap();
        assert!(
            w.models.values().all(|m| m.samples.is_empty()),
            "pruned while failing"
        );
        // What stays is one entry per wanted model, for counting how long it has been missing.
        assert_eq!(w.models.len(), 1);
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
        c.record_error(
            &p,
            t0 + Duration::from_secs(91),
            "connection refused".into(),
        );
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

    fn counter(total: f64, busy: bool) -> BTreeMap<String, ModelSignals> {
        BTreeMap::from([(
            "m".to_string(),
            ModelSignals {
                kv_cache_usage: Some(0.1),
                queue_length: Some(0.0),
                running_requests: Some(if busy { 1.0 } else { 0.0 }),
                success_total: Some(total),
                tokens: TokenCounters::default(),
            },
        )])
    }

    fn idle(a: &Activity) -> bool {
        *a == Activity::Idle
    }

    /// Idle needs the whole retention period observed, and any increase, reset or busy page within it
    /// means active; pods come and go without losing what they served.
    #[test]
    fn activity_from_success_counters() {
        let r = Duration::from_secs(60);
        let s = |n: u64| Duration::from_secs(n);
        let c = WindowCache::new(s(60));
        let t0 = Instant::now();
        let (a, b) = (pod("a"), pod("b"));
        c.retain(std::slice::from_ref(&a), t0);
        assert!(matches!(
            c.activity_at("ns", "m", &[&a], r, t0),
            Activity::Unknown { .. }
        ));
        // First reading 0: nothing served on this pod yet, but only 10 s observed.
        c.record(&a, t0, &counter(0.0, false));
        c.record(&a, t0 + s(10), &counter(0.0, false));
        let early = c.activity_at("ns", "m", &[&a], r, t0 + s(10));
        assert!(
            matches!(early, Activity::Unknown { ref reason } if reason.contains("observed for 10s")),
            "{early:?}"
        );
        c.record(&a, t0 + s(61), &counter(0.0, false));
        assert!(idle(&c.activity_at("ns", "m", &[&a], r, t0 + s(61))));
        // An increase is activity for one retention period.
        c.record(&a, t0 + s(70), &counter(3.0, false));
        assert_eq!(
            c.activity_at("ns", "m", &[&a], r, t0 + s(75)),
            Activity::Active { last_secs: 5 }
        );
        c.record(&a, t0 + s(131), &counter(3.0, false));
        assert!(idle(&c.activity_at("ns", "m", &[&a], r, t0 + s(131))));
        // A reset (the server restarted) counts, even to 0.
        c.record(&a, t0 + s(140), &counter(0.0, false));
        assert!(matches!(
            c.activity_at("ns", "m", &[&a], r, t0 + s(141)),
            Activity::Active { .. }
        ));
        // A request running without the counter moving counts.
        c.record(&a, t0 + s(210), &counter(0.0, true));
        assert!(matches!(
            c.activity_at("ns", "m", &[&a], r, t0 + s(211)),
            Activity::Active { .. }
        ));
        // Pod a is replaced by b: a's last activity stays with the model; b's first reading above 0
        // counts (when those requests were served is unknown).
        c.retain(std::slice::from_ref(&b), t0 + s(220));
        c.record(&b, t0 + s(221), &counter(0.0, false));
        assert!(matches!(
            c.activity_at("ns", "m", &[&b], r, t0 + s(230)),
            Activity::Active { .. }
        ));
        c.record(&b, t0 + s(280), &counter(0.0, false));
        assert!(idle(&c.activity_at("ns", "m", &[&b], r, t0 + s(280))));
        // A failing pod makes the answer unknown, and so does a page without the counter.
        c.record_error(&b, t0 + s(285), "connection refused".into());
        let failing = c.activity_at("ns", "m", &[&b], r, t0 + s(285));
        assert!(
            matches!(failing, Activity::Unknown { ref reason } if reason.contains("pod b: scrape failing")),
            "{failing:?}"
        );
        c.record(&b, t0 + s(290), &page("m", 0.1, 0.0));
        let no_counter = c.activity_at("ns", "m", &[&b], r, t0 + s(290));
        assert!(
            matches!(no_counter, Activity::Unknown { ref reason } if reason.contains("no vllm:request_success_total")),
            "{no_counter:?}"
        );
        // A new pod with a first reading above 0 is activity.
        let d = pod("d");
        c.retain(&[b.clone(), d.clone()], t0 + s(300));
        c.record(&b, t0 + s(400), &counter(0.0, false));
        c.record(&d, t0 + s(400), &counter(7.0, false));
        assert!(matches!(
            c.activity_at("ns", "m", &[&b, &d], r, t0 + s(401)),
            Activity::Active { .. }
        ));
        // Another namespace's model of the same name is another model.
        assert!(matches!(
            c.activity_at("other", "m", &[], r, t0 + s(401)),
            Activity::Unknown { .. }
        ));
    }
}
