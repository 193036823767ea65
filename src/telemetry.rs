//! Logging setup and the server's own Prometheus metrics, in one place with typed handles.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's label (a constant: no allocation per request).
    pub path: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    pub path: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `token` or `authorization`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// The authentication layer's two caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthCache {
    Token = 0,
    Authorization = 1,
}

impl CacheLabels {
    fn of(cache: AuthCache, hit: bool) -> Self {
        Self {
            cache: match cache {
                AuthCache::Token => "token",
                AuthCache::Authorization => "authorization",
            },
            result: if hit { "hit" } else { "miss" },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// A variant's current decision reason (`scaleUp`, `holdTransition`, `scaleUpBlocked`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub variant_name: String,
    pub namespace: String,
    /// The variant's prefill/decode role (`both`, `prefill`, `decode`).
    pub role: &'static str,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct VariantLabels {
    pub variant_name: String,
    pub namespace: String,
    pub accelerator_type: String,
}

/// WVA v0.9's saturation gauges with an accelerator (`wva_saturation_utilization`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct SaturationLabels {
    pub variant_name: String,
    pub namespace: String,
    pub model_name: String,
    pub accelerator_type: String,
}

/// WVA v0.9's capacity gauges (`wva_required_capacity`, `wva_spare_capacity`; `unit="continuous"`:
/// KV tokens).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct CapacityLabels {
    pub variant_name: String,
    pub namespace: String,
    pub model_name: String,
    pub unit: &'static str,
}

/// WVA v0.9's KV-token gauges (`wva_kv_cache_tokens_used`, `wva_kv_cache_tokens_capacity`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct ModelVariantLabels {
    pub variant_name: String,
    pub namespace: String,
    pub model_name: String,
}

/// WVA v0.9's saturation-V2 gauges, unprefixed as WVA names them.
/// One GPU type of the limiter's inventory.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct GpuTypeLabels {
    pub accelerator_type: String,
}

/// A scale-up the GPU limiter cut (WVA's `wva_decisions_limited_total`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct LimitedLabels {
    pub variant_name: String,
    pub namespace: String,
    pub limiter_name: String,
}

/// The GPU limiter's figures (WVA v0.9's names where it has them).
pub(crate) struct LimiterGauges {
    pub discovery_up: Gauge,
    pub available: Family<GpuTypeLabels, Gauge>,
    pub free: Family<GpuTypeLabels, Gauge>,
    pub limited: Family<LimitedLabels, Counter>,
}

pub(crate) struct SaturationGauges {
    pub utilization: Family<SaturationLabels, Gauge<f64, AtomicU64>>,
    pub required: Family<CapacityLabels, Gauge<f64, AtomicU64>>,
    pub spare: Family<CapacityLabels, Gauge<f64, AtomicU64>>,
    pub kv_tokens_used: Family<ModelVariantLabels, Gauge<f64, AtomicU64>>,
    pub kv_tokens_capacity: Family<ModelVariantLabels, Gauge<f64, AtomicU64>>,
}

/// Every metric this process exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<PathLabels, Histogram>,
    /// `auth_cache_lookups`' four series (token or authorization, hit or miss), resolved once: a lookup
    /// runs on every authorized request, and a family lookup hashes its labels under a lock.
    auth_cache: [Counter; 4],
    pub watch_up: Family<WatchLabels, Gauge>,
    pub watch_errors: Family<WatchLabels, Counter>,
    /// All successful scrapes: one series, not one per pod, because at 10,000 pods per-pod success
    /// counters cost megabytes and a label set built per scrape. Failures stay per pod (only failing
    /// pods appear), since which pod fails is what an operator needs.
    pub scrapes: Counter,
    pub scrape_failures: Family<PodLabels, Counter>,
    /// Successful scrapes that opened a connection; with `scrapes`, how often kept connections served.
    pub scrape_connections_opened: Counter,
    /// Connections to pods kept open between scrapes, after the last round.
    pub scrape_connections_idle: Gauge,
    /// The HTTPS port's connections (the external scaler's are in `scaler_port`).
    pub https_port: PortMetrics,
    /// The external scaler's gRPC port's connections.
    pub scaler_port: PortMetrics,
    pub prometheus_queries: Counter,
    pub prometheus_failures: Counter,
    /// Rounds in which an endpoint picker's queue could not be read (scale from zero).
    pub epp_failures: Counter,
    pub task_restarts: Family<TaskLabels, Counter>,
    /// Status writes to VariantAutoscalings, by result.
    pub status_writes: Family<ResultLabels, Counter>,
    /// Per variant: the peak KV-cache usage and waiting queue over its pods (the decision's inputs).
    pub(crate) variant_kv_cache: VariantGauge,
    pub(crate) variant_queue: VariantGauge,
    /// Per variant: 1 for its current decision reason.
    pub(crate) variant_decision: Family<DecisionLabels, Gauge>,
    /// WVA's gauges, unprefixed so existing dashboards work: v0.4.1 (`inferno_*`) and v0.5 (`wva_*`) names.
    variant_gauges: Vec<(VariantKind, VariantGauge)>,
    /// The GPU limiter's inventory and cuts.
    pub(crate) limiter: LimiterGauges,
    /// WVA v0.9's saturation-V2 gauges (set while V2 decides).
    pub(crate) saturation: SaturationGauges,
}

/// A float gauge per variant.
type VariantGauge = Family<VariantLabels, Gauge<f64, AtomicU64>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum VariantKind {
    Desired,
    Current,
    Ratio,
}

impl Metrics {
    #[allow(clippy::too_many_lines)] // One registration per metric, in one place.
    pub fn new() -> Arc<Self> {
        let mut root = Registry::default();
        let mut variant_gauges = Vec::new();
        for (kind, base, help) in [
            (
                VariantKind::Desired,
                "desired_replicas",
                "Desired replicas per variant (what the external metric serves)",
            ),
            (
                VariantKind::Current,
                "current_replicas",
                "Ready replicas per variant",
            ),
            (
                VariantKind::Ratio,
                "desired_ratio",
                "Desired over current replicas per variant",
            ),
        ] {
            for prefix in ["inferno", "wva"] {
                let family = VariantGauge::default();
                root.register(format!("{prefix}_{base}"), help, family.clone());
                variant_gauges.push((kind, family));
            }
        }
        let saturation = SaturationGauges {
            utilization: Family::default(),
            required: Family::default(),
            spare: Family::default(),
            kv_tokens_used: Family::default(),
            kv_tokens_capacity: Family::default(),
        };
        root.register(
            "wva_saturation_utilization",
            "Saturation V2: the variant's demand over its capacity, in KV tokens",
            saturation.utilization.clone(),
        );
        root.register(
            "wva_required_capacity",
            "Saturation V2: KV tokens of capacity the variant's role needs added (unit=continuous)",
            saturation.required.clone(),
        );
        root.register(
            "wva_spare_capacity",
            "Saturation V2: KV tokens of capacity the variant's role can give up (unit=continuous)",
            saturation.spare.clone(),
        );
        root.register(
            "wva_kv_cache_tokens_used",
            "Saturation V2: KV tokens in use over the variant's replicas",
            saturation.kv_tokens_used.clone(),
        );
        root.register(
            "wva_kv_cache_tokens_capacity",
            "Saturation V2: KV tokens over the variant's replicas (vllm:cache_config_info)",
            saturation.kv_tokens_capacity.clone(),
        );
        let limiter = LimiterGauges {
            discovery_up: Gauge::default(),
            available: Family::default(),
            free: Family::default(),
            limited: Family::default(),
        };
        root.register(
            "wva_gpu_discovery_up",
            "1 while the nodes' GPUs are known to the GPU limiter, 0 when they are not (the limiter then does not limit)",
            limiter.discovery_up.clone(),
        );
        root.register(
            "wva_available_gpus",
            "Allocatable GPUs per accelerator type over the nodes the GPU limiter reads",
            limiter.available.clone(),
        );
        root.register(
            "wva_decisions_limited",
            "Scale-ups the GPU limiter cut, by variant and limiter",
            limiter.limited.clone(),
        );
        let registry_root = root;
        let mut registry = registry_root;
        let own = registry.sub_registry_with_prefix("wva_metrics_server");
        let requests = Family::<RequestLabels, Counter>::default();
        own.register(
            "http_requests",
            "HTTP requests by route and status code",
            requests.clone(),
        );
        let request_duration = Family::<PathLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        });
        own.register(
            "http_request_duration_seconds",
            "Request latency by route",
            request_duration.clone(),
        );
        let auth_cache = Family::<CacheLabels, Counter>::default();
        own.register(
            "auth_cache_lookups",
            "Token and authorization cache lookups by result",
            auth_cache.clone(),
        );
        let auth_cache = [
            (AuthCache::Token, false),
            (AuthCache::Token, true),
            (AuthCache::Authorization, false),
            (AuthCache::Authorization, true),
        ]
        .map(|(cache, hit)| {
            auth_cache
                .get_or_create(&CacheLabels::of(cache, hit))
                .clone()
        });
        let watch_up = Family::<WatchLabels, Gauge>::default();
        own.register(
            "watch_up",
            "1 when the watch of a resource is established and synced",
            watch_up.clone(),
        );
        let watch_errors = Family::<WatchLabels, Counter>::default();
        own.register(
            "watch_errors",
            "Watch errors by resource",
            watch_errors.clone(),
        );
        let scrapes = Counter::default();
        own.register(
            "pod_scrapes",
            "Successful pod metric scrapes (all pods)",
            scrapes.clone(),
        );
        let scrape_failures = Family::<PodLabels, Counter>::default();
        own.register(
            "pod_scrape_failures",
            "Failed pod metric scrapes",
            scrape_failures.clone(),
        );
        let scrape_connections_opened = Counter::default();
        own.register(
            "pod_scrape_connections_opened",
            "Successful scrapes that opened a new connection to their pod (the others reused a kept one)",
            scrape_connections_opened.clone(),
        );
        let scrape_connections_idle = Gauge::default();
        own.register(
            "pod_scrape_connections_idle",
            "Connections to pods kept open between scrapes",
            scrape_connections_idle.clone(),
        );
        let https_port = PortMetrics::register(own, "", "the HTTPS port");
        let scaler_port =
            PortMetrics::register(own, "external_scaler_", "the external scaler's gRPC port");
        let prometheus_queries = Counter::default();
        own.register(
            "prometheus_queries",
            "PromQL queries sent",
            prometheus_queries.clone(),
        );
        let prometheus_failures = Counter::default();
        own.register(
            "prometheus_query_failures",
            "PromQL queries that failed",
            prometheus_failures.clone(),
        );
        let epp_failures = Counter::default();
        own.register(
            "epp_read_failures",
            "Rounds in which an InferencePool endpoint picker's queue could not be read",
            epp_failures.clone(),
        );
        let status_writes = Family::<ResultLabels, Counter>::default();
        own.register(
            "status_writes",
            "VariantAutoscaling status writes by result (ok, error)",
            status_writes.clone(),
        );
        let variant_kv_cache = VariantGauge::default();
        own.register(
            "variant_kv_cache_usage",
            "Peak KV-cache usage (0-1) over the variant's pods in the look-back window",
            variant_kv_cache.clone(),
        );
        let variant_queue = VariantGauge::default();
        own.register(
            "variant_queue_length",
            "Peak waiting-queue length over the variant's pods in the look-back window",
            variant_queue.clone(),
        );
        let variant_decision = Family::<DecisionLabels, Gauge>::default();
        own.register(
            "variant_decision",
            "1 for the reason of the variant's current target (scaleUp, scaleDown, noChange, holdTransition, scaleUpBlocked, scaleToZero, scaleFromZero, keepOne, refused, limited), with the variant's prefill/decode role (both, prefill, decode)",
            variant_decision.clone(),
        );
        own.register(
            "free_gpus",
            "GPUs per accelerator type that no scheduled pod requests, on the nodes the GPU limiter reads",
            limiter.free.clone(),
        );
        let task_restarts = Family::<TaskLabels, Counter>::default();
        own.register(
            "task_restarts",
            "Restarts of supervised long-lived tasks (watchers, scraper, pollers, status writer)",
            task_restarts.clone(),
        );
        Arc::new(Self {
            registry,
            task_restarts,
            requests,
            request_duration,
            auth_cache,
            watch_up,
            watch_errors,
            scrapes,
            scrape_failures,
            scrape_connections_opened,
            scrape_connections_idle,
            https_port,
            scaler_port,
            prometheus_queries,
            prometheus_failures,
            epp_failures,
            status_writes,
            variant_kv_cache,
            variant_queue,
            variant_decision,
            variant_gauges,
            saturation,
            limiter,
        })
    }

    pub(crate) fn set_variant(
        &self,
        labels: &VariantLabels,
        desired: f64,
        current: f64,
        ratio: f64,
    ) {
        for (kind, family) in &self.variant_gauges {
            let v = match kind {
                VariantKind::Desired => desired,
                VariantKind::Current => current,
                VariantKind::Ratio => ratio,
            };
            family.get_or_create(labels).set(v);
        }
    }

    pub(crate) fn remove_variant(&self, labels: &VariantLabels) {
        for (_, family) in &self.variant_gauges {
            family.remove(labels);
        }
    }

    pub(crate) fn task_restarted(&self, task: &str) {
        self.task_restarts
            .get_or_create(&TaskLabels { task: task.into() })
            .inc();
    }

    pub(crate) fn cache_lookup(&self, cache: AuthCache, hit: bool) {
        self.auth_cache[cache as usize * 2 + usize::from(hit)].inc();
    }

    /// Forgets the per-pod series of a pod that is gone, so the page does not grow with pod churn.
    pub(crate) fn forget_pod(&self, namespace: &str, pod: &str) {
        let l = PodLabels {
            namespace: namespace.into(),
            pod: pod.into(),
        };
        self.scrape_failures.remove(&l);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One listening port's connection counters: closed by reason, rejected at the limit, failed handshakes.
#[derive(Clone, Default)]
pub struct PortMetrics {
    closed: Family<ReasonLabels, Counter>,
    pub rejected: Counter,
    pub handshake_failures: Counter,
}

impl PortMetrics {
    /// Registers the three under `prefix` (`""` for the HTTPS port, whose names predate the second port).
    pub fn register(own: &mut Registry, prefix: &str, port: &str) -> Self {
        let m = Self::default();
        own.register(
            format!("{prefix}connections_closed"),
            format!("Connections closed by the server on {port}: handshake-timeout, first-request-timeout, idle, or evicted to make room"),
            m.closed.clone(),
        );
        own.register(
            format!("{prefix}connections_rejected"),
            format!("Connections to {port} closed because the connection limit was reached and none was idle"),
            m.rejected.clone(),
        );
        own.register(
            format!("{prefix}tls_handshake_failures"),
            format!("TLS handshakes on {port} that failed or timed out"),
            m.handshake_failures.clone(),
        );
        m
    }

    pub fn closed(&self, reason: &str) {
        self.closed
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Lets a repeated log line through at most once per `every` per key, and says how many were held back
/// meanwhile: one bad pod, picker or client cannot fill the log. Keys are capped in number (the oldest
/// are forgotten), so the limiter's own memory is bounded whatever the keys.
pub struct LogLimiter {
    every: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

/// Keys a [`LogLimiter`] remembers at most.
const LOG_LIMITER_KEYS: usize = 4096;

impl LogLimiter {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// `Some(held back since the last line)` when a line for `key` may be logged now.
    pub fn allow(&self, key: &str) -> Option<u64> {
        self.allow_at(key, std::time::Instant::now())
    }

    pub fn allow_at(&self, key: &str, now: std::time::Instant) -> Option<u64> {
        let key = capped_key(key);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((last, held)) = seen.get_mut(key) {
            if now.saturating_duration_since(*last) < self.every {
                *held += 1;
                return None;
            }
            let was = *held;
            *last = now;
            *held = 0;
            return Some(was);
        }
        if seen.len() >= LOG_LIMITER_KEYS {
            let every = self.every;
            seen.retain(|_, (last, _)| now.saturating_duration_since(*last) < every);
            if seen.len() >= LOG_LIMITER_KEYS {
                // Every key is recent: forget them all rather than grow.
                seen.clear();
            }
        }
        seen.insert(key.to_string(), (now, 0));
        Some(0)
    }
}

/// A limiter key, cut so that a huge input does not become a huge key.
fn capped_key(key: &str) -> &str {
    let mut end = key.len().min(512);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up tracing once. `level` is an env-filter directive (`info`, `wva_metrics_server=debug`, …).
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .map_err(|e| format!("--log-level {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn log_limiter_lets_one_line_a_period_through_per_key() {
        let l = LogLimiter::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(l.allow_at("a", t0), Some(0));
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow_at("b", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.allow_at("a", t0 + Duration::from_secs(61)), Some(2));
        // Huge keys are cut, and the number of keys stays bounded.
        let huge = "k".repeat(1 << 20);
        assert_eq!(l.allow_at(&huge, t0), Some(0));
        assert_eq!(l.allow_at(&format!("{huge}tail"), t0), None);
        for i in 0..3 * LOG_LIMITER_KEYS {
            l.allow_at(&format!("key-{i}"), t0);
        }
        assert!(l.seen.lock().unwrap().len() <= LOG_LIMITER_KEYS);
    }
}
