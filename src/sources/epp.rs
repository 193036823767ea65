//! Demand for models at zero replicas: the flow-control queue of each InferencePool's endpoint picker,
//! read from its pods with a bearer token (the EPP checks it with a TokenReview). Every interval, every
//! picker that selects a variant, each on its own: a picker that hangs or fails delays and ages only its
//! own pool's demand.
//!
//! The queue gauge has had three names (llm-d-router `pkg/epp/metrics/metrics.go`):
//! `llm_d_epp_flow_control_queue_size`, `llm_d_router_epp_flow_control_queue_size`, and the deprecated
//! `inference_extension_flow_control_queue_size` that WVA v0.5.1–v0.9 reads. Pickers publish the old name
//! beside the new one while it is deprecated, so the first name a page has is read and the others
//! ignored (summing both would count each request twice). Requests are summed per
//! `target_model_name` (the model the picker routes to), or per `model_name` where that is empty, as
//! WVA v0.9's scheduler-queue query does; so are the queue's bytes (`…_flow_control_queue_bytes`, the
//! same three names), which saturation V2 turns into queued input tokens.
//!
//! Beside the queue, the picker's signals that llm-d's KEDA guide scales on, under the same three
//! generations of names: the pool's flow-control saturation (`…_flow_control_pool_saturation`, per
//! `inference_pool`; across the picker's pods the highest) and the requests in flight per `model_name`
//! (`llm_d_router_epp_running_requests`, deprecated `inference_objective_running_requests`; summed). They
//! are served as external metrics under the picker's own names.
//!
//! What is never read as "no demand": a page cut at the size limit, a page with no endpoint-picker
//! metric at all (an HTML page, another server on the port), or a NaN, infinite or negative queue. A
//! picker's page always has its pool gauges (`llm_d_epp_ready_endpoints` / `inference_pool_ready_pods`),
//! while the queue gauge appears only once a request has queued (client_golang omits an empty vector):
//! so a picker page without a queue series for a model is 0 for it. A read that fails keeps the last
//! good reading for a grace period (three intervals and the timeout, 4.5 s at the defaults), said as
//! such in the demand; past it the demand is unknown, and unknown never takes a model to zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::exposition;
use super::http1::Pool;
use super::reach::TokenFile;
use super::scraper::{fetch_pod, pod_url};
use crate::changes::Changes;
use crate::error::{cap, MAX_STATUS_MESSAGE_BYTES};
use crate::health::Heartbeat;
use crate::saturation::Demand;
use crate::target::{EndpointPicker, TargetFeed};
use crate::telemetry::{LogLimiter, Metrics};

/// The queue gauge's names, newest first (the first a page has is read).
pub const QUEUE_METRICS: [&str; 3] = [
    "llm_d_epp_flow_control_queue_size",
    "llm_d_router_epp_flow_control_queue_size",
    QUEUE_METRIC,
];
/// The name WVA v0.5.1–v0.9 reads (`scalefromzero`), deprecated in llm-d-router.
pub const QUEUE_METRIC: &str = "inference_extension_flow_control_queue_size";
/// The queue's size in bytes, under the same three names (saturation V2's queued input tokens).
pub const QUEUE_BYTES_METRICS: [&str; 3] = [
    "llm_d_epp_flow_control_queue_bytes",
    "llm_d_router_epp_flow_control_queue_bytes",
    "inference_extension_flow_control_queue_bytes",
];
/// The pool's flow-control saturation (0 empty, 1 full; one series per `inference_pool`), under the same
/// three generations of names (llm-d-router `pkg/epp/metrics/llm_d_router_metrics.go` and `metrics.go`).
pub const SATURATION_METRICS: [&str; 3] = [
    "llm_d_epp_flow_control_pool_saturation",
    "llm_d_router_epp_flow_control_pool_saturation",
    "inference_extension_flow_control_pool_saturation",
];
/// Requests the picker has in flight to the pool, per `model_name` (the deprecated name is
/// `inference_objective_running_requests`; `llm_d_epp_request_running` is llm-d-router v0.10's, which
/// llm-d's KEDA guide queries).
pub const RUNNING_METRICS: [&str; 4] = [
    "llm_d_epp_request_running",
    "llm_d_epp_running_requests",
    "llm_d_router_epp_running_requests",
    "inference_objective_running_requests",
];
pub const QUEUE_MODEL_LABEL: &str = "target_model_name";
/// Where `target_model_name` is empty, the request's model.
const QUEUE_FALLBACK_LABEL: &str = "model_name";
/// Metric-name prefixes only an endpoint picker publishes: a page with none of them is not its page.
const PICKER_PREFIXES: [&str; 5] = [
    "llm_d_epp_",
    "llm_d_router_epp_",
    "inference_pool_",
    "inference_extension_",
    "inference_objective_",
];
/// The in-cluster ServiceAccount token: what the EPP's TokenReview accepts.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// An EPP page is a few KB; anything far larger is not one.
pub const MAX_PAGE: usize = 1 << 20;

/// Where demand comes from, for the engine.
pub trait DemandSource: Send + Sync {
    fn demand(&self, namespace: &str, model: &str) -> Demand;

    /// The endpoint pickers' signals in a namespace (none where no picker is read).
    fn signals(&self, _namespace: &str) -> Vec<PoolSignals> {
        Vec::new()
    }
}

/// One InferencePool's endpoint-picker signals, for the external metrics that serve them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSignals {
    pub pool: String,
    /// The models it serves: those of the variants it selects, and those its picker reports.
    pub models: Vec<String>,
    /// As last read, or why they are not known (never read as zero).
    pub signals: Result<Signals, String>,
}

/// What a picker reported, summed over its pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Signals {
    /// The pool's flow-control saturation; `None` when the picker publishes none (flow control off).
    pub saturation: Option<Result<f64, String>>,
    /// Requests in flight per model (a model absent has none).
    pub running: BTreeMap<String, Result<f64, String>>,
    /// Requests waiting in the flow-control queue per model (a model absent has none).
    pub queued: BTreeMap<String, Result<f64, String>>,
    /// Set when the last read failed and this is the last good reading, still standing.
    pub held: Option<String>,
}

/// No endpoint pickers (standalone mode, tests): every model has no pool.
pub struct NoDemand;

impl DemandSource for NoDemand {
    fn demand(&self, _namespace: &str, _model: &str) -> Demand {
        Demand::NoPool
    }
}

#[derive(Debug, Clone)]
pub struct EppOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub token_file: PathBuf,
}

impl EppOptions {
    /// How long a good reading stands after it was taken, through failed reads: three intervals and the
    /// timeout.
    pub fn grace(&self) -> Duration {
        3 * self.interval + self.timeout
    }
}

/// One model's queue on a picker's page.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Queued {
    pub requests: f64,
    /// The queued requests' bytes (0 where the picker does not publish them, or not usably).
    pub bytes: f64,
}

/// One model's queue, or why the value cannot be used.
pub(crate) type Queue = Result<Queued, String>;

/// A value summed or compared across series, or why it cannot be used.
pub(crate) type Figure = Result<f64, String>;

/// What a picker's page (or all its pods' pages together) says.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Reading {
    /// Queued requests per model (models absent from the map have none queued).
    pub queues: HashMap<String, Queue>,
    /// The pool's saturation; `None` when no series is published (flow control off). Across pods, the
    /// highest.
    pub saturation: Option<Figure>,
    /// Requests in flight per model (absent: none), summed across pods.
    pub running: HashMap<String, Figure>,
}

/// What one picker page says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PickerPage {
    Read(Reading),
    /// No endpoint-picker metric at all.
    NotAPicker,
}

/// A series value an endpoint picker may publish: finite and not negative.
fn usable(name: &str, v: f64) -> Figure {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{name} is {v}"))
    }
}

/// Folds `v` into `into` with `f`; an unusable value, once seen, stays.
fn fold(into: &mut Figure, v: Figure, f: fn(f64, f64) -> f64) {
    match (into.as_mut(), v) {
        (Ok(t), Ok(v)) => *t = f(*t, v),
        (Ok(_), Err(e)) => *into = Err(e),
        (Err(_), _) => {}
    }
}

/// Reads a picker page: the queue per model under the newest name the page has. Lines of other metrics
/// are not even parsed.
pub(crate) fn read_page(page: &str) -> PickerPage {
    let mut picker = false;
    // Per name (index in QUEUE_METRICS): per model, the sum or why it is unusable.
    let mut by_name: [HashMap<String, Result<f64, String>>; 3] = Default::default();
    // The same for bytes; an unusable byte count is left out (bytes only ever add demand).
    let mut bytes_by_name: [HashMap<String, f64>; 3] = Default::default();
    let mut saturation_by_name: [Option<Figure>; 3] = Default::default();
    let mut running_by_name: [HashMap<String, Figure>; 4] = Default::default();
    exposition::parse_wanted(
        page,
        |name| PICKER_PREFIXES.iter().any(|p| name.starts_with(p)),
        |s| {
            picker = true;
            if let Some(i) = SATURATION_METRICS.iter().position(|n| *n == s.name) {
                let v = usable(s.name, s.value);
                match &mut saturation_by_name[i] {
                    Some(sat) => fold(sat, v, f64::max),
                    slot => *slot = Some(v),
                }
                return;
            }
            if let Some(i) = RUNNING_METRICS.iter().position(|n| *n == s.name) {
                if let Some(m) = s.label(QUEUE_FALLBACK_LABEL).filter(|m| !m.is_empty()) {
                    let total = running_by_name[i].entry(m.to_string()).or_insert(Ok(0.0));
                    fold(total, usable(s.name, s.value), |a, b| a + b);
                }
                return;
            }
            let model = match s.label(QUEUE_MODEL_LABEL).filter(|m| !m.is_empty()) {
                Some(m) => m,
                None => match s.label(QUEUE_FALLBACK_LABEL).filter(|m| !m.is_empty()) {
                    Some(m) => m,
                    None => return,
                },
            };
            if let Some(i) = QUEUE_BYTES_METRICS.iter().position(|n| *n == s.name) {
                if s.value.is_finite() && s.value >= 0.0 {
                    *bytes_by_name[i].entry(model.to_string()).or_insert(0.0) += s.value;
                }
                return;
            }
            let Some(i) = QUEUE_METRICS.iter().position(|n| *n == s.name) else {
                return;
            };
            let entry = by_name[i].entry(model.to_string()).or_insert(Ok(0.0));
            if s.value.is_finite() && s.value >= 0.0 {
                if let Ok(total) = entry {
                    *total += s.value;
                }
            } else {
                *entry = Err(format!("{} is {} for this model", s.name, s.value));
            }
        },
    );
    if !picker {
        return PickerPage::NotAPicker;
    }
    let requests = by_name
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_default();
    let bytes = bytes_by_name
        .into_iter()
        .find(|m| !m.is_empty())
        .unwrap_or_default();
    let mut queues: HashMap<String, Queue> = requests
        .into_iter()
        .map(|(model, r)| {
            let b = bytes.get(&model).copied().unwrap_or(0.0);
            (model, r.map(|requests| Queued { requests, bytes: b }))
        })
        .collect();
    for (model, b) in bytes {
        queues.entry(model).or_insert(Ok(Queued {
            requests: 0.0,
            bytes: b,
        }));
    }
    PickerPage::Read(Reading {
        queues,
        saturation: saturation_by_name.into_iter().flatten().next(),
        running: running_by_name
            .into_iter()
            .find(|m| !m.is_empty())
            .unwrap_or_default(),
    })
}

/// One more pod's page of the same picker: queues and running requests add up, the saturation is the
/// highest any pod reports.
fn add_reading(total: &mut Reading, page: Reading) {
    add_queues(&mut total.queues, page.queues);
    for (model, v) in page.running {
        fold(total.running.entry(model).or_insert(Ok(0.0)), v, |a, b| {
            a + b
        });
    }
    match (&mut total.saturation, page.saturation) {
        (Some(t), Some(v)) => fold(t, v, f64::max),
        (slot @ None, v) => *slot = v,
        (Some(_), None) => {}
    }
}

/// Sums per model; `None` once a model's value is unusable on any pod stays unusable.
fn add_queues(total: &mut HashMap<String, Queue>, page: HashMap<String, Queue>) {
    for (model, q) in page {
        let entry = total.entry(model).or_insert(Ok(Queued::default()));
        match (entry.as_mut(), q) {
            (Ok(t), Ok(v)) => {
                t.requests += v.requests;
                t.bytes += v.bytes;
            }
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    }
}

/// What is known of one picker: its last good reading, and its last failure when that is newer.
#[derive(Debug, Clone, Default)]
struct PickerState {
    good: Option<(Instant, Reading)>,
    failed: Option<(Instant, String)>,
}

pub struct EppSource {
    targets: Arc<dyn TargetFeed>,
    opts: EppOptions,
    token: TokenFile,
    /// By `namespace/pool`.
    state: RwLock<HashMap<String, PickerState>>,
    /// Failures are logged when they start or change, and a repeated one at most once a minute.
    log: LogLimiter,
    metrics: Arc<Metrics>,
    /// Connections to the pickers' pods, kept between reads (every 500 ms by default).
    connections: Pool,
    /// Bumped after each read (push streams wake on it).
    changes: Changes,
}

/// Endpoint-picker pods kept connected at most (a picker has a few replicas).
const KEPT_CONNECTIONS: usize = 256;

type Reads<'a> = futures::stream::FuturesUnordered<
    std::pin::Pin<
        Box<dyn std::future::Future<Output = (String, Result<Reading, String>)> + Send + 'a>,
    >,
>;

impl EppSource {
    pub fn new(targets: Arc<dyn TargetFeed>, opts: EppOptions, metrics: Arc<Metrics>) -> Self {
        let token = TokenFile::new(opts.token_file.clone());
        Self {
            targets,
            opts,
            token,
            state: RwLock::new(HashMap::new()),
            log: LogLimiter::new(Duration::from_secs(60)),
            metrics,
            connections: Pool::new(KEPT_CONNECTIONS),
            changes: Changes::new(),
        }
    }

    /// Bumps `changes` after each read.
    pub fn notifying(mut self, changes: Changes) -> Self {
        self.changes = changes;
        self
    }

    /// Starts a read of every picker every interval (a picker whose read is still running is skipped
    /// until it ends) and beats `heartbeat` each time: no picker can hold back another, or the loop.
    pub async fn run(self: Arc<Self>, heartbeat: Arc<Heartbeat>) {
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reads = Reads::new();
        let mut reading: HashSet<String> = HashSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.start_round(&mut reads, &mut reading);
                    heartbeat.beat();
                }
                Some((key, read)) = reads.next(), if !reads.is_empty() => {
                    reading.remove(&key);
                    self.record(&key, read, Instant::now());
                }
            }
        }
    }

    /// One read of every picker, to its end (tests).
    pub async fn read_once(&self) {
        let mut reads = Reads::new();
        let mut reading = HashSet::new();
        self.start_round(&mut reads, &mut reading);
        while let Some((key, read)) = reads.next().await {
            self.record(&key, read, Instant::now());
        }
    }

    /// Queues a read of every picker not being read; forgets pickers that are gone.
    fn start_round<'a>(&'a self, reads: &mut Reads<'a>, reading: &mut HashSet<String>) {
        let pickers = self.targets.pickers();
        let addresses: HashSet<SocketAddr> = pickers
            .iter()
            .filter_map(|p| p.pods.as_ref().ok())
            .flatten()
            .filter_map(|pod| Some(SocketAddr::new(pod.ip.parse().ok()?, pod.port)))
            .collect();
        self.connections.retain(&addresses);
        {
            let keys: HashSet<String> = pickers.iter().map(EndpointPicker::key).collect();
            self.state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, _| keys.contains(k));
        }
        if pickers.is_empty() {
            // Nothing to read: no token file access.
            return;
        }
        let token = Arc::new(self.token.read());
        for picker in pickers {
            let key = picker.key();
            if !reading.insert(key.clone()) {
                continue;
            }
            let token = token.clone();
            reads.push(Box::pin(async move {
                let read = self.read_picker(&picker, &token).await;
                (key, read)
            }));
        }
    }

    /// Reads every pod of one picker at once; the demand is known only when each of them is.
    async fn read_picker(
        &self,
        p: &EndpointPicker,
        token: &Result<String, String>,
    ) -> Result<Reading, String> {
        let pods = p.pods.as_ref().map_err(Clone::clone)?;
        let token = token.as_ref().map_err(Clone::clone)?;
        let pages = futures::future::join_all(pods.iter().map(|pod| async move {
            let page = fetch_pod(
                pod,
                self.opts.timeout,
                MAX_PAGE,
                (Some(token.as_str()), None),
                Some(&self.connections),
            )
            .await;
            (pod, page)
        }))
        .await;
        let mut total = Reading::default();
        for (pod, page) in pages {
            let at = || format!("pod {} ({})", pod.name, pod_url(pod));
            let page = page.map_err(|e| format!("{}: {e}", at()))?;
            // One EPP pod that cannot be read whole may hold the queue: the demand is unknown.
            if page.truncated {
                return Err(format!(
                    "{}: the page was cut at {MAX_PAGE} bytes, so its queue is not known",
                    at()
                ));
            }
            match read_page(&page.text) {
                PickerPage::Read(r) => add_reading(&mut total, r),
                PickerPage::NotAPicker => {
                    return Err(format!(
                        "{}: the page has no endpoint-picker metrics ({} or a pool gauge); is the Service's port the picker's metrics port?",
                        at(),
                        QUEUE_METRICS[0]
                    ))
                }
            }
        }
        Ok(total)
    }

    /// Keeps a picker's read: a good one replaces the last, a failure is kept beside the last good one.
    fn record(&self, key: &str, read: Result<Reading, String>, now: Instant) {
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = state.entry(key.to_string()).or_default();
        match read {
            Ok(reading) => {
                if s.failed.take().is_some() {
                    tracing::info!(pool = %key, "the endpoint picker's queue can be read again");
                }
                s.good = Some((now, reading));
            }
            Err(e) => {
                self.metrics.epp_failures.inc();
                let e = cap(&e, MAX_STATUS_MESSAGE_BYTES).into_owned();
                let news = s.failed.as_ref().is_none_or(|(_, last)| *last != e);
                // Logged when it starts failing or the reason changes, and at most once a minute for a
                // reason that flaps.
                if let Some(held) = self.log.allow(&format!("{key}\n{e}")).filter(|_| news) {
                    tracing::warn!(pool = %key, error = %e, repeats_held_back = held, "reading the endpoint picker failed; until it can be read, its signals are unavailable (503, UNAVAILABLE) and the variants at zero in its pool stay there");
                }
                s.failed = Some((now, e));
            }
        }
        drop(state);
        self.changes.notify();
    }

    /// A picker's last good reading while it stands (within the grace period), with what to say when
    /// it is held through a failed read; else why nothing is known.
    fn standing<'s>(
        &self,
        state: &'s HashMap<String, PickerState>,
        key: &str,
        now: Instant,
    ) -> Result<(&'s Reading, Option<String>), String> {
        let Some(s) = state.get(key) else {
            return Err("not read yet".into());
        };
        let grace = self.opts.grace();
        let failed = s.failed.as_ref().map(|(at, e)| (*at, e.as_str()));
        match &s.good {
            Some((at, reading)) if now.saturating_duration_since(*at) <= grace => {
                let age = now.saturating_duration_since(*at);
                let held = failed.filter(|(f, _)| f > at).map(|(_, e)| {
                    format!(
                        "the last read failed ({e}); this reading is {:.1}s old and stands for up to {}s",
                        age.as_secs_f64(),
                        grace.as_secs_f64()
                    )
                });
                Ok((reading, held))
            }
            Some((at, _)) => Err(match failed {
                Some((_, e)) => e.to_string(),
                None => format!(
                    "last read {}s ago",
                    now.saturating_duration_since(*at).as_secs()
                ),
            }),
            None => Err(failed.map_or_else(|| "not read yet".to_string(), |(_, e)| e.to_string())),
        }
    }

    pub(crate) fn demand_at(&self, namespace: &str, model: &str, now: Instant) -> Demand {
        let Some(pool) = self.targets.picker_of(namespace, model) else {
            return Demand::NoPool;
        };
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.standing(&state, &pool, now) {
            Ok((reading, held)) => match reading.queues.get(model) {
                Some(Err(why)) => Demand::Unknown {
                    pool,
                    reason: why.clone(),
                },
                q => {
                    let q = q.and_then(|q| q.as_ref().ok());
                    Demand::Queued {
                        requests: q.map_or(0.0, |q| q.requests),
                        bytes: q.map_or(0.0, |q| q.bytes),
                        pool,
                        held,
                    }
                }
            },
            Err(reason) => Demand::Unknown { pool, reason },
        }
    }

    /// Every picker of the namespace with its signals as last read (or why they are not known).
    pub(crate) fn signals_at(&self, namespace: &str, now: Instant) -> Vec<PoolSignals> {
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.targets
            .pickers()
            .into_iter()
            .filter(|p| p.namespace == namespace)
            .map(|p| {
                let read = self.standing(&state, &p.key(), now);
                let mut models: Vec<String> = p.models.clone();
                let signals = read.map(|(r, held)| {
                    models.extend(r.queues.keys().chain(r.running.keys()).cloned());
                    Signals {
                        saturation: r.saturation.clone(),
                        running: r.running.clone().into_iter().collect(),
                        queued: r
                            .queues
                            .iter()
                            .map(|(m, q)| {
                                (
                                    m.clone(),
                                    q.as_ref().map(|q| q.requests).map_err(Clone::clone),
                                )
                            })
                            .collect(),
                        held,
                    }
                });
                models.sort();
                models.dedup();
                PoolSignals {
                    pool: p.pool,
                    models,
                    signals,
                }
            })
            .collect()
    }
}

impl DemandSource for EppSource {
    fn demand(&self, namespace: &str, model: &str) -> Demand {
        self.demand_at(namespace, model, Instant::now())
    }

    fn signals(&self, namespace: &str) -> Vec<PoolSignals> {
        self.signals_at(namespace, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_gauge_is_summed_per_target_model() {
        let page = "\
# HELP inference_extension_flow_control_queue_size Current number of requests in the flow control queue.
# TYPE inference_extension_flow_control_queue_size gauge
inference_extension_flow_control_queue_size{fairness_id=\"a\",inference_pool=\"p\",model_name=\"m\",priority=\"0\",target_model_name=\"m\"} 2
inference_extension_flow_control_queue_size{fairness_id=\"b\",inference_pool=\"p\",model_name=\"m\",priority=\"0\",target_model_name=\"m\"} 1
inference_extension_flow_control_queue_size{fairness_id=\"a\",inference_pool=\"p\",model_name=\"x\",priority=\"0\",target_model_name=\"other\"} 0
inference_extension_flow_control_queue_size{target_model_name=\"bad\"} NaN
inference_pool_average_kv_cache_utilization{name=\"p\"} 0.5
";
        let PickerPage::Read(Reading { queues: q, .. }) = read_page(page) else {
            panic!("not read as a picker page")
        };
        let requests = |m: &str| q.get(m).unwrap().as_ref().map(|q| q.requests).ok();
        assert_eq!(requests("m"), Some(3.0));
        assert_eq!(requests("other"), Some(0.0));
        assert!(q.get("bad").unwrap().as_ref().unwrap_err().contains("NaN"));
    }

    /// The queue's bytes under the newest name the page has, per model, beside its requests; an
    /// unusable byte count adds nothing.
    #[test]
    fn queue_bytes_are_read_beside_the_requests() {
        let page = "\
llm_d_epp_flow_control_queue_size{target_model_name=\"m\"} 10
llm_d_epp_flow_control_queue_bytes{target_model_name=\"m\"} 4000
inference_extension_flow_control_queue_bytes{target_model_name=\"m\"} 99999
llm_d_epp_flow_control_queue_bytes{target_model_name=\"only-bytes\"} 800
llm_d_epp_flow_control_queue_bytes{target_model_name=\"nan\"} NaN
";
        let PickerPage::Read(Reading { queues: q, .. }) = read_page(page) else {
            panic!("not read as a picker page")
        };
        assert_eq!(
            q.get("m"),
            Some(&Ok(Queued {
                requests: 10.0,
                bytes: 4000.0
            }))
        );
        assert_eq!(
            q.get("only-bytes"),
            Some(&Ok(Queued {
                requests: 0.0,
                bytes: 800.0
            }))
        );
        assert_eq!(q.get("nan"), None);
    }

    /// The signals llm-d's KEDA guide scales on: the pool's saturation and the running requests per
    /// model, under the newest name a page has; across a picker's pods the highest saturation and the
    /// sum of running requests; an unusable value stays unusable.
    #[test]
    fn signals_are_read_under_the_newest_name() {
        let page = |sat: &str, running: &str| {
            format!(
                "llm_d_router_epp_flow_control_pool_saturation{{inference_pool=\"p\"}} {sat}\n\
                 inference_extension_flow_control_pool_saturation{{inference_pool=\"p\"}} 0.99\n\
                 llm_d_router_epp_running_requests{{model_name=\"m\"}} {running}\n\
                 inference_objective_running_requests{{model_name=\"m\"}} 99\n\
                 llm_d_router_epp_running_requests{{model_name=\"\"}} 5\n"
            )
        };
        let read = |text: &str| match read_page(text) {
            PickerPage::Read(r) => r,
            PickerPage::NotAPicker => panic!("not read as a picker page"),
        };
        let a = read(&page("0.5", "3"));
        assert_eq!(a.saturation, Some(Ok(0.5)));
        assert_eq!(a.running.get("m"), Some(&Ok(3.0)));
        assert_eq!(
            a.running.len(),
            1,
            "a series without a model is not a model's"
        );
        // The deprecated names alone.
        let old = read("inference_extension_flow_control_pool_saturation{inference_pool=\"p\"} 0.25\ninference_objective_running_requests{model_name=\"m\"} 2\n");
        assert_eq!(
            (old.saturation, old.running.get("m").cloned()),
            (Some(Ok(0.25)), Some(Ok(2.0)))
        );
        // llm-d-router v0.10's names, which llm-d's KEDA guide queries.
        let v010 = read("llm_d_epp_flow_control_pool_saturation{inference_pool=\"p\"} 0.4\nllm_d_epp_request_running{model_name=\"m\"} 6\n");
        assert_eq!(
            (v010.saturation, v010.running.get("m").cloned()),
            (Some(Ok(0.4)), Some(Ok(6.0)))
        );
        // A picker page without flow control: no saturation (not a zero).
        let none = read("inference_pool_ready_pods{name=\"p\"} 2\n");
        assert_eq!(none.saturation, None);
        // Across pods.
        let mut total = Reading::default();
        add_reading(&mut total, a);
        add_reading(&mut total, read(&page("0.75", "4")));
        add_reading(&mut total, none);
        assert_eq!(total.saturation, Some(Ok(0.75)));
        assert_eq!(total.running.get("m"), Some(&Ok(7.0)));
        add_reading(&mut total, read(&page("NaN", "-1")));
        assert!(matches!(&total.saturation, Some(Err(e)) if e.contains("NaN")));
        assert!(matches!(total.running.get("m"), Some(Err(e)) if e.contains("-1")));
        add_reading(&mut total, read(&page("0.1", "1")));
        assert!(
            total.saturation.as_ref().is_some_and(Result::is_err),
            "unusable stays unusable"
        );
    }
}
