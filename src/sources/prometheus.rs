//! The Prometheus source: WVA's per-pod peak queries over HTTPS, run in the background for every model
//! of the snapshot, so the request path reads a cache and a burst of HPA requests costs no query at all.
//! Configuration uses WVA's names (PROMETHEUS_BASE_URL, PROMETHEUS_CA_CERT_PATH, …).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use thiserror::Error;

use super::error_chain;
use super::{LoadFigures, Lookup, PodSample, SampleSource, SourceKind};
use crate::cluster::snapshot::{PodTarget, SharedSnapshot};
use crate::error::MissingSample;
use crate::health::Heartbeat;
use crate::saturation::Activity;
use crate::telemetry::Metrics;

#[derive(Debug, Error)]
pub enum PrometheusError {
    #[error("PROMETHEUS_BASE_URL {0:?} is not https://; WVA requires HTTPS (use --prometheus-allow-http for a test setup)")]
    NotHttps(String),
    #[error("PROMETHEUS_BASE_URL {url:?} is not a valid URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("reading {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("query {query:?}: {message}")]
    Query { query: String, message: String },
}

/// Escapes a PromQL label value (backslash and double quote), as WVA's saturation queries do.
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-pod peak of the KV-cache usage over the window, falling back per pod to the pre-0.9.2 name.
pub(crate) fn kv_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    let w = window.as_secs().max(1);
    format!(
        "max by (pod) (max_over_time(vllm:kv_cache_usage_perc{{{sel}}}[{w}s])) or max by (pod) (max_over_time(vllm:gpu_cache_usage_perc{{{sel}}}[{w}s]))"
    )
}

/// Per-pod peak of the waiting queue over the window.
pub(crate) fn queue_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    format!(
        "max by (pod) (max_over_time(vllm:num_requests_waiting{{{sel}}}[{}s]))",
        window.as_secs().max(1)
    )
}

/// WVA v0.4.1's load queries (its `internal/collector` at v0.4.1), label values escaped. ITL prefers
/// `vllm:inter_token_latency_seconds` (vLLM >= 0.10.2) and falls back to `time_per_output_token_seconds`.
pub(crate) fn load_queries(namespace: &str, model: &str) -> [(&'static str, String); 5] {
    let sel = format!(
        "model_name=\"{}\",namespace=\"{}\"",
        escape_label(model),
        escape_label(namespace)
    );
    let avg =
        |m: &str| format!("sum(rate({m}_sum{{{sel}}}[1m]))/sum(rate({m}_count{{{sel}}}[1m]))");
    [
        (
            "arrivalRate",
            format!("sum(rate(vllm:request_success_total{{{sel}}}[1m]))"),
        ),
        ("avgInputTokens", avg("vllm:request_prompt_tokens")),
        ("avgOutputTokens", avg("vllm:request_generation_tokens")),
        ("ttftAverage", avg("vllm:time_to_first_token_seconds")),
        (
            "itlAverage",
            format!(
                "({}) or ({})",
                avg("vllm:inter_token_latency_seconds"),
                avg("vllm:time_per_output_token_seconds")
            ),
        ),
    ]
}

/// Largest Prometheus API response read.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// How often the (slower-moving) load figures are refreshed.
const LOAD_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Verifies Prometheus' certificate as WVA configures it: against the CA (`webpki`), optionally for
/// PROMETHEUS_SERVER_NAME instead of the URL's host, or not at all with PROMETHEUS_TLS_INSECURE_SKIP_VERIFY
/// (`webpki: None`). Handshake signatures are always checked.
#[derive(Debug)]
struct PrometheusVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    server_name: Option<ServerName<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PrometheusVerifier {
    fn verify_server_cert(
        &self,
        e: &CertificateDer<'_>,
        i: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        o: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.webpki {
            None => Ok(ServerCertVerified::assertion()),
            Some(v) => {
                v.verify_server_cert(e, i, self.server_name.as_ref().unwrap_or(name), o, now)
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

fn read(path: &PathBuf) -> Result<Vec<u8>, PrometheusError> {
    std::fs::read(path).map_err(|e| PrometheusError::File {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// How to reach Prometheus (WVA's settings, made from `--prometheus-*` / `PROMETHEUS_*`).
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    pub base_url: String,
    pub insecure_skip_verify: bool,
    pub ca_cert_path: Option<PathBuf>,
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    pub server_name: Option<String>,
    pub bearer_token: Option<String>,
    pub token_path: Option<PathBuf>,
    pub allow_http: bool,
    pub timeout: Duration,
}

/// Builds the rustls client configuration from the WVA settings.
pub(crate) fn tls_config(args: &PrometheusOptions) -> Result<ClientConfig, PrometheusError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PrometheusError::Tls(e.to_string()))?;
    let webpki = if args.insecure_skip_verify {
        None
    } else {
        let mut roots = RootCertStore::empty();
        let (pem, from) = match &args.ca_cert_path {
            Some(p) => (read(p)?, p.display().to_string()),
            None => {
                let found = SYSTEM_CA_BUNDLES
                    .iter()
                    .find(|p| std::path::Path::new(p).exists());
                let p = found.ok_or_else(|| {
                    PrometheusError::Tls(
                        "no system CA bundle found; set PROMETHEUS_CA_CERT_PATH".into(),
                    )
                })?;
                (read(&PathBuf::from(p))?, p.to_string())
            }
        };
        let certs = crate::tls::parse_certs(&pem)
            .map_err(|e| PrometheusError::Tls(format!("{from}: {e}")))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(PrometheusError::Tls(format!(
                "{from}: no usable CA certificate"
            )));
        }
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| PrometheusError::Tls(e.to_string()))?,
        )
    };
    let server_name =
        match &args.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                PrometheusError::Tls(format!("PROMETHEUS_SERVER_NAME {name:?}: {e}"))
            })?),
            None => None,
        };
    let verifier = Arc::new(PrometheusVerifier {
        webpki,
        server_name,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match (&args.client_cert_path, &args.client_key_path) {
        (Some(cert), Some(key)) => {
            let certs =
                crate::tls::read_certs(cert).map_err(|e| PrometheusError::Tls(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| PrometheusError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PrometheusError::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

pub struct PrometheusClient {
    http: reqwest::Client,
    base: reqwest::Url,
    bearer: Option<String>,
    token_path: Option<PathBuf>,
}

impl PrometheusClient {
    pub fn new(args: &PrometheusOptions) -> Result<Self, PrometheusError> {
        let url = args.base_url.clone();
        let base = reqwest::Url::parse(&url).map_err(|e| PrometheusError::BadUrl {
            url: url.clone(),
            message: e.to_string(),
        })?;
        match base.scheme() {
            "https" => {}
            "http" if args.allow_http => {}
            _ => return Err(PrometheusError::NotHttps(url)),
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(args)?)
            .timeout(args.timeout)
            .connect_timeout(args.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PrometheusError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base,
            bearer: args.bearer_token.clone().filter(|t| !t.is_empty()),
            token_path: args.token_path.clone(),
        })
    }

    fn token(&self) -> Result<Option<String>, PrometheusError> {
        if let Some(t) = &self.bearer {
            return Ok(Some(t.clone()));
        }
        match &self.token_path {
            Some(p) => Ok(Some(String::from_utf8_lossy(&read(p)?).trim().to_string())),
            None => Ok(None),
        }
    }

    /// Runs an instant query and returns `(labels, value)` per series. NaN and infinite values are dropped.
    pub async fn query(
        &self,
        query: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, PrometheusError> {
        let err = |message: String| PrometheusError::Query {
            query: query.to_string(),
            message,
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| err("base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
        let mut req = self.http.post(url).form(&[("query", query)]);
        if let Some(t) = self.token()? {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| err(error_chain(&e)))?;
        let status = resp.status();
        // Bounded read: a per-pod peak query over a large fleet is a few MB at most; anything far larger is
        // a misdirected URL or a runaway query, not something to buffer.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(error_chain(&e)))? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(err(format!(
                    "HTTP {status}: response larger than {MAX_RESPONSE_BYTES} bytes; refusing it"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let parsed: ApiResponse = serde_json::from_slice(&bytes).map_err(|e| {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            err(format!(
                "HTTP {status}, not a Prometheus API response ({e}): {head}"
            ))
        })?;
        if parsed.status != "success" {
            return Err(err(format!(
                "HTTP {status}: {}: {}",
                parsed.error_type.unwrap_or_default(),
                parsed.error.unwrap_or_default()
            )));
        }
        let data = parsed
            .data
            .ok_or_else(|| err("response has no data".into()))?;
        if data.result_type != "vector" {
            return Err(err(format!(
                "expected a vector result, got {}",
                data.result_type
            )));
        }
        Ok(data
            .result
            .into_iter()
            .filter_map(|s| {
                s.value
                    .1
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(|v| (s.metric, v))
            })
            .collect())
    }
}

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
    /// The last answer to WVA's idle query, for the retention period asked: the increase (`None`: no
    /// series) or the error.
    activity: Option<(Instant, Duration, Result<Option<f64>, String>)>,
}

/// WVA's scale-to-zero query: requests served by the model during the retention period.
pub(crate) fn idle_query(namespace: &str, model: &str, retention: Duration) -> String {
    format!(
        "sum(increase(vllm:request_success_total{{namespace=\"{}\",model_name=\"{}\"}}[{}s]))",
        escape_label(namespace),
        escape_label(model),
        retention.as_secs().max(1)
    )
}

/// Background poller and cache of Prometheus answers, per (namespace, model).
pub struct PrometheusSource {
    client: PrometheusClient,
    lookback: Duration,
    state: RwLock<HashMap<(String, String), ModelState>>,
    /// Models the engine asked about idleness, with their retention period: the poller queries them.
    idle_wanted: std::sync::Mutex<HashMap<(String, String), Duration>>,
    metrics: Arc<Metrics>,
    /// Query failures, at most one line a minute per model and reason.
    log: crate::telemetry::LogLimiter,
}

impl PrometheusSource {
    pub fn new(client: PrometheusClient, lookback: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            lookback,
            state: RwLock::new(HashMap::new()),
            idle_wanted: std::sync::Mutex::new(HashMap::new()),
            metrics,
            log: crate::telemetry::LogLimiter::new(Duration::from_secs(60)),
        }
    }

    /// Queries every model of the snapshot every `interval`.
    pub async fn run(
        self: Arc<Self>,
        snapshot: SharedSnapshot,
        interval: Duration,
        heartbeat: Arc<Heartbeat>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            heartbeat.beat();
            let models: BTreeSet<(String, String)> = snapshot
                .load()
                .variants
                .iter()
                .map(|v| (v.namespace.clone(), v.model_id.clone()))
                .collect();
            self.state
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, _| models.contains(k));
            self.idle_wanted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|k, _| models.contains(k));
            futures::future::join_all(models.iter().map(|(ns, m)| self.refresh(ns, m))).await;
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
            kv_query(namespace, model, self.lookback),
            queue_query(namespace, model, self.lookback),
        );
        let (kv, q) = futures::join!(self.client.query(&kv_q), self.client.query(&queue_q));
        let load_due = {
            let s = self
                .state
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.get(&key)
                .and_then(|e| e.load.as_ref())
                .is_none_or(|(at, _)| at.elapsed() >= LOAD_EVERY)
        };
        let load = if load_due {
            self.load_figures(namespace, model).await
        } else {
            None
        };
        let retention = self
            .idle_wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .copied();
        let activity = match retention {
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
        if activity.is_some() {
            entry.activity = activity;
        }
        match (kv, q) {
            (Ok(kv), Ok(q)) => {
                let mut per_pod: HashMap<String, (Option<f64>, Option<f64>)> = HashMap::new();
                for (labels, v) in kv {
                    if let Some(pod) = labels.get("pod").or_else(|| labels.get("pod_name")) {
                        per_pod.entry(pod.clone()).or_default().0 = Some(v);
                    }
                }
                for (labels, v) in q {
                    if let Some(pod) = labels.get("pod").or_else(|| labels.get("pod_name")) {
                        per_pod.entry(pod.clone()).or_default().1 = Some(v);
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
            .filter(|r| now.saturating_duration_since(r.at) <= self.lookback)
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
        match result.per_pod.get(&pod.name) {
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
            }),
            // WVA uses 0 for a pod missing from one of the two results; we do not invent data.
            Some(_) => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::PrometheusPartial,
            },
            None => Lookup::Missing {
                since: since_asked,
                reason: MissingSample::PrometheusNoSeries {
                    pod: pod.name.clone(),
                    model: model.to_string(),
                    namespace: pod.namespace.clone(),
                },
            },
        }
    }
}

impl PrometheusSource {
    /// The idle query's last answer for `retention`, registering the model for the next poll.
    pub(crate) fn activity_at(
        &self,
        namespace: &str,
        model: &str,
        retention: Duration,
        now: Instant,
    ) -> Activity {
        let key = (namespace.to_string(), model.to_string());
        self.idle_wanted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.clone(), retention);
        let s = self
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let unknown = |reason: String| Activity::Unknown { reason };
        let Some((at, asked, answer)) = s.get(&key).and_then(|e| e.activity.clone()) else {
            return unknown("Prometheus has not been asked yet".into());
        };
        let age = now.saturating_duration_since(at);
        if asked != retention || age > self.lookback {
            return unknown(format!(
                "no current answer from Prometheus (last one {}s old)",
                age.as_secs()
            ));
        }
        match answer {
            Err(e) => unknown(format!("Prometheus: {e}")),
            Ok(None) => unknown(format!(
                "Prometheus has no vllm:request_success_total series for model {model:?} in {namespace}"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_escape_label_values() {
        assert_eq!(
            queue_query("ns", "a\"b\\c", Duration::from_secs(60)),
            r#"max by (pod) (max_over_time(vllm:num_requests_waiting{namespace="ns",model_name="a\"b\\c"}[60s]))"#
        );
        assert!(kv_query("ns", "m", Duration::from_secs(60))
            .contains(" or max by (pod) (max_over_time(vllm:gpu_cache_usage_perc{"));
    }

    #[test]
    fn load_queries_match_wva_and_fall_back_for_itl() {
        let q = load_queries("ns", "m");
        assert_eq!(
            q[0].1,
            r#"sum(rate(vllm:request_success_total{model_name="m",namespace="ns"}[1m]))"#
        );
        assert_eq!(
            q[1].1,
            r#"sum(rate(vllm:request_prompt_tokens_sum{model_name="m",namespace="ns"}[1m]))/sum(rate(vllm:request_prompt_tokens_count{model_name="m",namespace="ns"}[1m]))"#
        );
        assert!(
            q[4].1.contains("vllm:inter_token_latency_seconds_sum")
                && q[4].1.contains(") or (")
                && q[4].1.contains("vllm:time_per_output_token_seconds_count")
        );
    }

    fn options(url: &str, allow_http: bool) -> PrometheusOptions {
        PrometheusOptions {
            base_url: url.into(),
            insecure_skip_verify: true,
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
            server_name: None,
            bearer_token: None,
            token_path: None,
            allow_http,
            timeout: Duration::from_secs(1),
        }
    }

    /// A negative answer from Prometheus is missing for that pod (and ages), never a sample.
    #[test]
    fn unusable_answers_are_missing_for_the_pod() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = PrometheusClient::new(&options("http://p:9090", true)).unwrap();
        let source = PrometheusSource::new(client, Duration::from_secs(60), Metrics::new());
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
        let pod = |name: &str| PodTarget {
            namespace: "ns".into(),
            name: name.into(),
            ip: "10.0.0.1".into(),
            port: 8000,
            path: "/metrics".into(),
            scheme: Default::default(),
            endpoint: Default::default(),
            tls_server_name: None,
        };
        assert!(matches!(
            source.lookup_at(&pod("good"), "m", now),
            Lookup::Fresh(_)
        ));
        let Lookup::Missing { reason, .. } = source.lookup_at(&pod("bad"), "m", now) else {
            panic!("a negative queue became a sample")
        };
        assert!(matches!(reason, MissingSample::Unusable { value, .. } if value == -2.0));
    }

    #[test]
    fn http_is_refused_unless_allowed() {
        let args = options;
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(matches!(
            PrometheusClient::new(&args("http://p:9090", false)),
            Err(PrometheusError::NotHttps(_))
        ));
        assert!(PrometheusClient::new(&args("http://p:9090", true)).is_ok());
        assert!(PrometheusClient::new(&args("https://p:9090", false)).is_ok());
        assert!(matches!(
            PrometheusClient::new(&args("not a url", false)),
            Err(PrometheusError::BadUrl { .. })
        ));
    }
}
