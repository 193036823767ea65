//! Demand for models at zero replicas: the flow-control queue of each InferencePool's endpoint picker
//! (`inference_extension_flow_control_queue_size{target_model_name}`), read from its pods with a bearer
//! token (the EPP checks it with a TokenReview). Every interval, every picker that selects a variant.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::exposition;
use super::http1::Pool;
use super::reach::TokenFile;
use super::scraper::{fetch_pod, pod_url};
use crate::cluster::snapshot::SharedSnapshot;
use crate::health::Heartbeat;
use crate::saturation::Demand;
use crate::telemetry::Metrics;

/// The gauge and its label (WVA v0.5.1 `scalefromzero`).
pub const QUEUE_METRIC: &str = "inference_extension_flow_control_queue_size";
pub const QUEUE_MODEL_LABEL: &str = "target_model_name";
/// The in-cluster ServiceAccount token: what the EPP's TokenReview accepts.
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// An EPP page is a few KB; anything far larger is not one.
const MAX_PAGE: usize = 1 << 20;

/// Where demand comes from, for the engine.
pub trait DemandSource: Send + Sync {
    fn demand(&self, namespace: &str, model: &str) -> Demand;
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

/// What one picker's last round found: queue per model, or why it could not be read.
#[derive(Debug, Clone)]
struct PickerState {
    at: Instant,
    queues: Result<HashMap<String, f64>, String>,
}

pub struct EppSource {
    snapshot: SharedSnapshot,
    opts: EppOptions,
    token: TokenFile,
    /// By `namespace/pool`.
    state: RwLock<HashMap<String, PickerState>>,
    /// The last error logged per picker, so a failing picker is logged once per change of reason.
    logged: Mutex<HashMap<String, String>>,
    metrics: Arc<Metrics>,
    /// Connections to the pickers' pods, kept between reads (every 500 ms by default).
    connections: Pool,
}

/// Endpoint-picker pods kept connected at most (a picker has a few replicas).
const KEPT_CONNECTIONS: usize = 256;

/// Sums the queue gauge per target model over a page. Lines of other metrics are not even parsed.
pub(crate) fn queues_of(page: &str) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    exposition::parse_wanted(
        page,
        |name| name == QUEUE_METRIC,
        |s| {
            if s.value.is_finite() && s.value >= 0.0 {
                if let Some(model) = s.label(QUEUE_MODEL_LABEL) {
                    *out.entry(model.to_string()).or_default() += s.value;
                }
            }
        },
    );
    out
}

impl EppSource {
    pub fn new(snapshot: SharedSnapshot, opts: EppOptions, metrics: Arc<Metrics>) -> Self {
        let token = TokenFile::new(opts.token_file.clone());
        Self {
            snapshot,
            opts,
            token,
            state: RwLock::new(HashMap::new()),
            logged: Mutex::new(HashMap::new()),
            metrics,
            connections: Pool::new(KEPT_CONNECTIONS),
        }
    }

    /// Whether `error` is news for this picker (and remembers it).
    fn note_error(&self, pool: &str, error: &str) -> bool {
        let mut logged = self
            .logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.get(pool).is_some_and(|e| e == error) {
            return false;
        }
        logged.insert(pool.to_string(), error.to_string());
        true
    }

    fn note_recovery(&self, pool: &str) {
        self.logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(pool);
    }

    /// Reads every picker every interval, beating `heartbeat` after each round.
    pub async fn run(self: Arc<Self>, heartbeat: Arc<Heartbeat>) {
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.read_once().await;
            heartbeat.beat();
        }
    }

    /// One round over the snapshot's pickers.
    pub async fn read_once(&self) {
        let snapshot = self.snapshot.load_full();
        let addresses: HashSet<SocketAddr> = snapshot
            .pickers
            .iter()
            .filter_map(|p| p.pods.as_ref().ok())
            .flatten()
            .filter_map(|pod| Some(SocketAddr::new(pod.ip.parse().ok()?, pod.port)))
            .collect();
        self.connections.retain(&addresses);
        if snapshot.pickers.is_empty() {
            // Nothing to read: no token file access, and nothing stale kept.
            self.state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clear();
            return;
        }
        let token = self.token.read();
        let rounds = snapshot.pickers.iter().map(|p| {
            let token = token.clone();
            async move {
                let queues = match (&p.pods, token) {
                    (Err(e), _) => Err(e.clone()),
                    (_, Err(e)) => Err(e),
                    (Ok(pods), Ok(token)) => {
                        let mut total: HashMap<String, f64> = HashMap::new();
                        let mut failed = None;
                        for pod in pods {
                            match fetch_pod(pod, self.opts.timeout, MAX_PAGE, (Some(&token), None), Some(&self.connections)).await {
                                Ok(page) => {
                                    for (m, q) in queues_of(&page.text) {
                                        *total.entry(m).or_default() += q;
                                    }
                                }
                                Err(e) => failed = Some(format!("pod {} ({}): {e}", pod.name, pod_url(pod))),
                            }
                        }
                        // One EPP pod that cannot be read may hold the queue: the demand is unknown.
                        failed.map_or(Ok(total), Err)
                    }
                };
                let previous = self
                    .state
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&p.key())
                    .map(|s| s.queues.is_ok());
                match (&queues, previous) {
                    // Logged when it starts failing or the reason changes, not every round.
                    (Err(e), _) => {
                        self.metrics.epp_failures.inc();
                        if self.note_error(&p.key(), e) {
                            tracing::warn!(pool = %p.key(), service = %p.service, error = %e, "reading the endpoint picker's queue failed; models at zero stay there until it can be read");
                        }
                    }
                    (Ok(_), Some(false)) => {
                        self.note_recovery(&p.key());
                        tracing::info!(pool = %p.key(), "the endpoint picker's queue can be read again");
                    }
                    (Ok(_), _) => {}
                }
                (
                    p.key(),
                    PickerState {
                        at: Instant::now(),
                        queues,
                    },
                )
            }
        });
        let results = futures::future::join_all(rounds).await;
        let mut state = self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.clear();
        state.extend(results);
    }

    pub(crate) fn demand_at(&self, namespace: &str, model: &str, now: Instant) -> Demand {
        let snapshot = self.snapshot.load();
        let Some(picker) = snapshot.picker_of(namespace, model) else {
            return Demand::NoPool;
        };
        let pool = picker.key();
        let state = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(s) = state.get(&pool) else {
            return Demand::Unknown {
                pool,
                reason: "not read yet".into(),
            };
        };
        // Three rounds missed (or a round that hangs) make the answer stale.
        let stale = 3 * self.opts.interval + self.opts.timeout;
        let age = now.saturating_duration_since(s.at);
        if age > stale {
            return Demand::Unknown {
                pool,
                reason: format!("last read {}s ago", age.as_secs()),
            };
        }
        match &s.queues {
            Ok(q) => Demand::Queued {
                requests: q.get(model).copied().unwrap_or(0.0),
                pool,
            },
            Err(e) => Demand::Unknown {
                pool,
                reason: e.clone(),
            },
        }
    }
}

impl DemandSource for EppSource {
    fn demand(&self, namespace: &str, model: &str) -> Demand {
        self.demand_at(namespace, model, Instant::now())
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
        let q = queues_of(page);
        assert_eq!(q.get("m"), Some(&3.0));
        assert_eq!(q.get("other"), Some(&0.0));
        assert!(!q.contains_key("bad"));
    }
}
