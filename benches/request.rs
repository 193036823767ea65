//! The HPA request path over TLS, end to end in one process: p50/p99/p999 latency and throughput of
//! `GET …/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name=…` with a front-proxy client
//! certificate and a warm authorization cache, over HTTP/1.1 and h2, for 1, 100 and 1,000 variants.
//!
//! Baseline in the same run: the same server answering the static discovery document (same TLS, same
//! authentication, no authorization and no engine), i.e. the transport floor. The two are measured side
//! by side, in alternating slices, so the machine's noise falls on both alike. Before them, the handler
//! alone (no sockets): CPU time and allocations per request, floor and metric, figures that the noise of
//! a shared machine barely moves, with the model decided by V1 (as in the network rows) and by saturation
//! V2 (`WVA_BENCH_HANDLER_ONLY=1` stops there). The saturation ConfigMap has a `default` entry, as
//! deployments' do. `WVA_BENCH_STUB_ENGINE=1`
//! answers the metric rows without the engine, to tell the route's cost from the decision's. Beside them: KEDA's poll of
//! the external scaler (GetMetrics then IsActive over gRPC with mTLS, one pair at a time) on the same
//! engine. Client and server share the machine's cores, so throughput is "both sides on this machine".
//! With `WVA_BENCH_ADAPTER` unset, Prometheus Adapter with WVA's rule answers the same requests as the
//! baseline of record.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use std::time::Duration;

mod adapter;
#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[allow(dead_code)]
mod load;
// Only part of the integration tests' fixtures is used here.
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use wva_metrics_server::auth::config::{AuthConfig, AuthOverrides};
use wva_metrics_server::auth::review::{
    Attributes, BoxFuture, ReviewError, Reviewer, TokenOutcome,
};
use wva_metrics_server::auth::{Auth, Decision, PeerCertificates, UserInfo};
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::{MetricItem, MetricsProvider, ProviderError};
use wva_metrics_server::saturation::config::{ScalingConfig, Thresholds};
use wva_metrics_server::scaler;
use wva_metrics_server::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use wva_metrics_server::server::routes::{self, AppState};
use wva_metrics_server::server::{serve, ServeOptions};
use wva_metrics_server::sources::{Lookup, PodSample, SampleSource, SourceKind, TokenFigures};
use wva_metrics_server::target::PodTarget;
use wva_metrics_server::telemetry::Metrics;
use wva_metrics_server::tls::{self, ReloadingCert};

/// SubjectAccessReview that allows everything (the cache is warm after the first request anyway).
struct AllowAll;
impl Reviewer for AllowAll {
    fn review_token<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<TokenOutcome, ReviewError>> {
        Box::pin(async {
            Ok(TokenOutcome::Rejected {
                reason: "no tokens in this benchmark".to_string(),
            })
        })
    }
    fn review_access<'a>(
        &'a self,
        _: &'a UserInfo,
        _: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, ReviewError>> {
        Box::pin(async {
            Ok(Decision {
                allowed: true,
                reason: "".into(),
            })
        })
    }
}

struct Moderate;
impl SampleSource for Moderate {
    fn lookup(&self, _: &PodTarget, _: &str) -> Lookup {
        Lookup::Fresh(PodSample {
            kv_cache_usage: 0.4,
            queue_length: 1.0,
            running_requests: None,
            age: Duration::from_secs(1),
            source: SourceKind::Pods,
            // What saturation V2 reads (V1 ignores it): 16,000 KV tokens, 400 tokens in, 150 out.
            tokens: Some(TokenFigures {
                total_kv_tokens: Some(16_000),
                avg_input_tokens: 400.0,
                avg_output_tokens: 150.0,
                prefix_cache_hit_rate: 0.2,
            }),
        })
    }
}

/// `variants` variants in models of two, two pods each, one namespace.
fn snapshot_of(variants: usize) -> Snapshot {
    let variants = (0..variants)
        .map(|i| {
            let pods = (0..2)
                .map(|p| PodTarget::new("ns", &format!("variant-{i}-{p}"), "10.0.0.1", 8000))
                .collect();
            let model = format!("model-{}", i / 2);
            Variant::new(
                "ns",
                &format!("variant-{i}"),
                (&model, "H100"),
                5.0 + (i % 2) as f64,
                pods,
            )
        })
        .collect::<Vec<_>>();
    let mut s = Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        pickers: Vec::new(),
        variants,
        excluded: vec![],
        synced: true,
    };
    s.variants
        .sort_by(|a, b| (&a.model_id, &a.name).cmp(&(&b.model_id, &b.name)));
    s
}

/// `WVA_BENCH_STUB_ENGINE=1`: the HPA route answers from this provider instead of the engine (one item
/// per request, no decision), which separates what the route, authorization and JSON cost from what the
/// decision costs.
struct Fixed;

impl MetricsProvider for Fixed {
    fn external_metric(
        &self,
        namespace: &str,
        _: &str,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError> {
        let name = selector
            .required_values("variant_name")
            .and_then(|v| v.first().cloned())
            .unwrap_or_default();
        Ok(vec![MetricItem {
            labels: [
                ("variant_name", name),
                ("namespace", namespace.to_string()),
                ("exported_namespace", namespace.to_string()),
                ("accelerator_type", "H100".to_string()),
            ]
            .into(),
            value_milli: 2000,
        }])
    }
}

/// The saturation ConfigMap as WVA v0.4.1-v0.8 deployments ship it: a `default` entry with V1's
/// thresholds, and an override for a model of another namespace (every request resolves its model
/// against the entries). `v2`: the `default` entry selects saturation V2, as WVA v0.9's does.
fn thresholds(v2: bool) -> Thresholds {
    let analyzers = if v2 {
        "scaleUpThreshold: 0.85\nscaleDownBoundary: 0.70\nanalyzers:\n  - name: saturation\n"
    } else {
        ""
    };
    let data = std::collections::BTreeMap::from([
        (
            "default".to_string(),
            format!("kvCacheThreshold: 0.80\nqueueLengthThreshold: 5\nkvSpareTrigger: 0.10\nqueueSpareTrigger: 3\n{analyzers}"),
        ),
        (
            "other".to_string(),
            "model_id: other/model\nnamespace: elsewhere\nkvCacheThreshold: 0.85\n".to_string(),
        ),
    ]);
    let (global, issues) = ScalingConfig::from_configmap(&ScalingConfig::default(), &data);
    assert!(issues.rejected.is_empty(), "{issues:?}");
    Thresholds::new("wva-metrics-server", "wva-saturation-scaling-config").with_global(global)
}

/// The server's request state: the engine on [`snapshot_of`]`(variants)` with fresh samples, front-proxy
/// authentication trusting `front_ca`, and an allow-all reviewer behind a one-hour decision cache.
fn app_state(variants: usize, front_ca: &str, v2: bool) -> (Arc<AppState>, Arc<Engine>) {
    let metrics = Metrics::new();
    let auth = Arc::new(Auth::new(
        Some(Arc::new(AllowAll)),
        Duration::from_secs(3600),
        metrics.clone(),
    ));
    let data = std::collections::BTreeMap::from([
        (
            "requestheader-client-ca-file".to_string(),
            front_ca.to_string(),
        ),
        (
            "requestheader-allowed-names".to_string(),
            r#"["front-proxy-client"]"#.to_string(),
        ),
        (
            "requestheader-username-headers".to_string(),
            r#"["X-Remote-User"]"#.to_string(),
        ),
    ]);
    auth.set_config(
        AuthConfig::from_configmap(&data, &AuthOverrides::default(), &tls::provider()).unwrap(),
    );
    let engine = Arc::new(Engine::new(
        snapshot::shared(snapshot_of(variants)),
        Arc::new(Moderate),
        Arc::new(arc_swap::ArcSwap::from_pointee(thresholds(v2))),
        Duration::from_secs(120),
    ));
    let state = Arc::new(AppState {
        provider: engine.clone(),
        auth: Some(auth),
        metrics,
        health: wva_metrics_server::health::Health::new(),
    });
    (state, engine)
}

/// The handler alone, without TLS, HTTP framing or a client: mean CPU time per request of `paths` (taken
/// in turn) on one thread, as the best of five batches, so a neighbour's burst on this shared machine
/// does not count. What the metric path costs beyond the floor is the engine's and the route's own work.
fn handler_cost(state: &Arc<AppState>, peer: &PeerCertificates, paths: &[String]) -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batch = 20_000;
    let request = |path: &str| {
        let mut req = http::Request::get(path)
            .header(
                "X-Remote-User",
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            )
            .body(())
            .unwrap();
        req.extensions_mut().insert(peer.clone());
        req
    };
    runtime.block_on(async {
        let mut best = f64::INFINITY;
        let mut allocations = 0;
        for _ in 0..5 {
            let (start, before) = (std::time::Instant::now(), Counting::allocations());
            for i in 0..batch {
                let resp = routes::handle(state.clone(), request(&paths[i % paths.len()])).await;
                assert_eq!(resp.status(), http::StatusCode::OK);
            }
            best = best.min(start.elapsed().as_secs_f64() * 1e6 / batch as f64);
            allocations = Counting::allocations() - before;
        }
        (best, allocations as f64 / batch as f64)
    })
}

/// [`handler_cost`] on two threads at once, each with a peer of its own (as two connections): the mean
/// of their figures. Beside the one-thread figure it shows what a request costs when another worker
/// answers at the same time: writes to memory both read (a shared lock's count, a shared reference
/// count) move between the cores' caches, a cost one thread alone never pays.
fn handler_cost_parallel(
    state: &Arc<AppState>,
    chain: &[CertificateDer<'static>],
    paths: &[String],
) -> f64 {
    let costs: Vec<f64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let peer = PeerCertificates::new(Some(chain.to_vec()));
                s.spawn(move || handler_cost(state, &peer, paths).0)
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    costs.iter().sum::<f64>() / costs.len() as f64
}

/// The system allocator, counting allocations: a figure per request that the noise of a shared machine
/// does not move. Each thread counts its own (the handler-only section runs on one): a counter shared
/// by every thread made each allocation of the server's workers and of the client contend for one cache
/// line, a cost the product does not have and that weighed on the path that allocates more.
struct Counting;

thread_local! {
    /// Const-initialised and without a destructor: usable inside the allocator, at any time.
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Counting {
    /// This thread's allocations so far.
    fn allocations() -> u64 {
        ALLOCATIONS.with(std::cell::Cell::get)
    }

    fn count() {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
// `GlobalAlloc` is an unsafe trait, so the crate's `unsafe_code` denial is lifted for this measurement
// allocator alone.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: as above.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Our server in this process on its own 2-worker runtime (as the binary runs on 2 cores), serving
/// `variants` variants with fresh samples for every pod, front-proxy authentication and a warm, allow-all
/// authorization cache.
struct InProcess {
    port: u16,
    /// KEDA's external scaler on the same engine (mTLS with the serving CA's client certificates).
    scaler_port: u16,
    // Kept alive for the server task; dropped (and the server with it) after `stop`.
    _runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcess {
    fn start(
        variants: usize,
        front_ca: &str,
        serving_ca: &str,
        cert_dir: &std::path::Path,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let provider = tls::provider();
        let (mut state, engine) = app_state(variants, front_ca, false);
        if std::env::var("WVA_BENCH_STUB_ENGINE").as_deref() == Ok("1") {
            if let Some(s) = Arc::get_mut(&mut state) {
                s.provider = Arc::new(Fixed);
            }
        }
        let resolver = ReloadingCert::load(
            &cert_dir.join("tls.crt"),
            &cert_dir.join("tls.key"),
            &provider,
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in support::pem_certs(serving_ca) {
            roots.add(c).unwrap();
        }
        let scaler_config = Arc::new(
            scaler::tls_config(resolver.clone(), scaler::ClientAuth::Required(roots)).unwrap(),
        );
        let scaler_listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let scaler_port = scaler_listener.local_addr().unwrap().port();
        runtime.spawn(scaler::serve(
            scaler_listener,
            scaler_config,
            scaler::Scaler::new(
                engine.clone(),
                wva_metrics_server::changes::Changes::new(),
                scaler::RECHECK,
            ),
            scaler::default_limits(),
            wva_metrics_server::telemetry::PortMetrics::default(),
            futures::future::pending(),
        ));
        let config = Arc::new(tls::server_config(resolver, provider.clone()).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(serve(
            listener,
            config,
            state,
            ServeOptions::default(),
            async {
                let _ = rx.await;
            },
        ));
        Self {
            port,
            scaler_port,
            _runtime: runtime,
            stop: Some(tx),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The in-process server on `port`, asked as the HPA through the aggregator's front proxy.
fn hpa_target(port: u16, tls: &rustls::ClientConfig) -> load::Target {
    load::Target {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        server_name: "127.0.0.1".try_into().unwrap(),
        tls: tls.clone(),
        headers: vec![(
            "X-Remote-User".into(),
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(),
        )],
    }
}

/// The transport floor's request: the group-version's discovery document.
const FLOOR_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// The HPA's request for `variant-{i}` in namespace `ns`.
fn metric_paths(variants: usize) -> Arc<Vec<String>> {
    Arc::new(
        (0..variants)
            .map(|i| format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name%3Dvariant-{i}"))
            .collect(),
    )
}

/// Latency at a modest, HPA-like concurrency; peak throughput with many requests in flight.
const LATENCY: (usize, usize) = (4, 2);
const PEAK: (usize, usize) = (32, 8);

fn shape(
    http2: bool,
    (h1_connections, h2_streams): (usize, usize),
    duration: Duration,
) -> load::Shape {
    load::Shape {
        http2,
        connections: if http2 { 2 } else { h1_connections },
        streams: h2_streams,
        duration,
    }
}

/// CPU time (ns, kernel time on their behalf included) of this thread, the client's, and of every other
/// thread of the process, the server's, from Linux's schedstat; `None` where it cannot be read.
fn thread_cpu() -> Option<(u64, u64)> {
    let me = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let my_tid = me.split_whitespace().next()?.to_string();
    let mut out = (0, 0);
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let e = e.ok()?;
        // A thread may end between listing and reading.
        let Ok(stat) = std::fs::read_to_string(e.path().join("schedstat")) else {
            continue;
        };
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        if e.file_name().to_string_lossy() == my_tid {
            out.0 += ns;
        } else {
            out.1 += ns;
        }
    }
    Some(out)
}

/// One path list's figures in [`side_by_side`]: latency, peak throughput, and client and server CPU
/// µs per request at the latency load (`None` where schedstat cannot be read).
type Measured = (load::Figures, load::Figures, Option<(f64, f64)>);

/// Slices per measurement in [`side_by_side`].
const ROUNDS: u32 = 5;

/// Latency and peak throughput of each path list, measured side by side: [`ROUNDS`] alternating slices
/// of `duration / ROUNDS` each, so that a burst from a neighbour on this shared machine falls on every
/// list alike rather than on whichever ran at the time.
fn side_by_side<const N: usize>(
    client: &tokio::runtime::Runtime,
    target: &load::Target,
    lists: &[Arc<Vec<String>>; N],
    http2: bool,
    duration: Duration,
) -> [Measured; N] {
    let slice = duration / ROUNDS;
    let measure = |load_shape: (usize, usize)| {
        let mut acc: [(Vec<u64>, f64); N] = std::array::from_fn(|_| (Vec::new(), 0.0));
        let mut cpu = [Some((0u64, 0u64)); N];
        for _ in 0..ROUNDS {
            for ((paths, (all, elapsed)), c) in lists.iter().zip(acc.iter_mut()).zip(cpu.iter_mut())
            {
                let before = thread_cpu();
                let (lat, took) = client.block_on(load::latencies(
                    target,
                    paths.clone(),
                    shape(http2, load_shape, slice),
                ));
                *c = match (*c, before, thread_cpu()) {
                    (Some(c), Some(b), Some(a)) => Some((c.0 + a.0 - b.0, c.1 + a.1 - b.1)),
                    _ => None,
                };
                all.extend(lat);
                *elapsed += took;
            }
        }
        let figures = acc.map(|(all, elapsed)| load::figures(all, elapsed));
        let cpu: [Option<(f64, f64)>; N] = std::array::from_fn(|i| {
            let n = figures[i].requests as f64;
            cpu[i].map(|(client, server)| (client as f64 / n / 1e3, server as f64 / n / 1e3))
        });
        (figures, cpu)
    };
    let (latency, cpu) = measure(LATENCY);
    let (peak, _) = measure(PEAK);
    std::array::from_fn(|i| (latency[i], peak[i], cpu[i]))
}

/// Latency of KEDA's poll pair (GetMetrics, then IsActive) on one connection, one pair at a time.
async fn scaler_pairs(
    addr: std::net::SocketAddr,
    ca: &str,
    keda: &support::Leaf,
    variants: usize,
    duration: Duration,
) -> load::Figures {
    let mut c = support::scaler_client(addr, ca, Some(keda)).await.unwrap();
    let mut lat = Vec::new();
    let start = std::time::Instant::now();
    let mut i = 0usize;
    while start.elapsed() < duration {
        let so = ScaledObjectRef {
            name: "so".into(),
            namespace: "ns".into(),
            scaler_metadata: [(
                "variantName".to_string(),
                format!("variant-{}", i % variants),
            )]
            .into(),
        };
        i += 1;
        let t = std::time::Instant::now();
        c.get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so.clone()),
            metric_name: scaler::METRIC_NAME.into(),
        })
        .await
        .unwrap();
        c.is_active(so).await.unwrap();
        lat.push(t.elapsed().as_nanos() as u64);
    }
    load::figures(lat, start.elapsed().as_secs_f64())
}

fn main() {
    // `cargo test --all-targets` runs this target once without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds: u64 = std::env::var("WVA_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let serving = support::Ca::new("serving");
    let front = support::Ca::new("front-proxy");
    let server_leaf = serving.server(&["127.0.0.1", "localhost"]);
    let keda = serving.client("keda-operator", &[]);
    let fp = front.client("front-proxy-client", &[]);
    let dir = std::env::temp_dir().join(format!("wva-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &server_leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &server_leaf.key_pem).unwrap();
    let client_tls = load::client_tls(&serving.pem, Some((&fp.cert_pem, &fp.key_pem)));
    std::fs::write(dir.join("front-proxy-client.crt"), &fp.cert_pem).unwrap();
    std::fs::write(dir.join("front-proxy-client.key"), &fp.key_pem).unwrap();
    // The baseline: Prometheus Adapter with WVA's rule, one namespace per fleet size (`v1`, `v100`, …).
    let sizes = [1usize, 100, 1000];
    let baseline = (std::env::var("WVA_BENCH_ADAPTER").as_deref() != Ok("0")).then(|| {
        let namespaces: Vec<(String, usize)> =
            sizes.iter().map(|n| (format!("v{n}"), *n)).collect();
        adapter::start(
            &serving,
            &front.pem,
            (
                &dir.join("front-proxy-client.crt"),
                &dir.join("front-proxy-client.key"),
            ),
            &namespaces,
        )
    });
    if let Some(b) = &baseline {
        println!(
            "\n[request] baseline: prometheus-adapter (WVA v0.4.1 rule) on port {}, logs in {}",
            b.port,
            b.dir.display()
        );
    }
    // The client runs on one thread of its own; the server has two workers. All share this machine's cores.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\n[request] {} cores | client (1 thread) and server (2 workers) share them | {seconds} s per row", std::thread::available_parallelism().map_or(0, std::num::NonZero::get));
    println!("[request] latency at {}×1 (http/1.1) or 2×{} (h2) requests in flight; peak at {}×1 or 2×{}", LATENCY.0, LATENCY.1, PEAK.0, PEAK.1);
    println!(
        "[request] {:>8} {:>8} {:>26} {:>9} {:>9} {:>9} {:>10} {:>10} {:>14}",
        "variants",
        "proto",
        "path",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "req/s",
        "peak req/s",
        "CPU µs/req"
    );
    println!("[request] CPU µs/req: client / server threads, per request at the latency load (schedstat, kernel time included)");
    // One path alone over h2 for 20 s (100 variants), to profile it (`perf record`) or count its
    // context switches (`perf stat`) without the other path in the same process.
    if let Ok(which) = std::env::var("WVA_BENCH_PROFILE") {
        let variants = 100;
        let server = InProcess::start(variants, &front.pem, &serving.pem, &dir);
        let target = hpa_target(server.port, &client_tls);
        let paths = match which.as_str() {
            "floor" => Arc::new(vec![FLOOR_PATH.to_string()]),
            "metric" => metric_paths(variants),
            other => panic!("WVA_BENCH_PROFILE is floor or metric, not {other:?}"),
        };
        let f = client.block_on(load::run(
            &target,
            paths,
            shape(true, LATENCY, Duration::from_secs(20)),
        ));
        println!(
            "[request] {which} alone, h2: {} requests, {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs",
            f.requests, f.rps, f.p50, f.p99
        );
        return;
    }
    // The handler alone: what each request costs the server beyond the floor, without the noise of
    // sockets, TLS and a client sharing the cores.
    let chain = support::pem_certs(&fp.cert_pem);
    let peer = PeerCertificates::new(Some(chain.clone()));
    println!(
        "[request] {:>8} {:>8} {:>26} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "variants",
        "",
        "handler only (1 thread)",
        "floor µs",
        "metric µs",
        "extra µs",
        "floor allocs",
        "metric allocs"
    );
    for variants in sizes {
        let (state, _) = app_state(variants, &front.pem, false);
        let (floor, floor_allocs) = handler_cost(&state, &peer, &[FLOOR_PATH.to_string()]);
        let (metric, metric_allocs) = handler_cost(&state, &peer, &metric_paths(variants));
        println!(
            "[request] {variants:>8} {:>8} {:>26} {floor:>9.2} {metric:>9.2} {:>9.2} {floor_allocs:>10.1} {metric_allocs:>10.1}",
            "", "V1", metric - floor
        );
        let floor2 = handler_cost_parallel(&state, &chain, &[FLOOR_PATH.to_string()]);
        let metric2 = handler_cost_parallel(&state, &chain, &metric_paths(variants));
        println!(
            "[request] {variants:>8} {:>8} {:>26} {floor2:>9.2} {metric2:>9.2} {:>9.2} {:>10} {:>10}",
            "", "V1, 2 threads at once", metric2 - floor2, "-", "-"
        );
        // The same requests decided by saturation V2 (WVA v0.9's default engine), for reference: the
        // network rows below are V1's.
        let (state, _) = app_state(variants, &front.pem, true);
        let (metric, metric_allocs) = handler_cost(&state, &peer, &metric_paths(variants));
        println!(
            "[request] {variants:>8} {:>8} {:>26} {floor:>9.2} {metric:>9.2} {:>9.2} {floor_allocs:>10.1} {metric_allocs:>10.1}",
            "", "saturation V2", metric - floor
        );
    }
    if std::env::var("WVA_BENCH_HANDLER_ONLY").as_deref() == Ok("1") {
        return;
    }
    for variants in sizes {
        let server = InProcess::start(variants, &front.pem, &serving.pem, &dir);
        let mut hpa_h2 = None;
        let target = hpa_target(server.port, &client_tls);
        let floor_paths = Arc::new(vec![FLOOR_PATH.to_string()]);
        let paths = metric_paths(variants);
        for http2 in [false, true] {
            let proto = if http2 { "h2" } else { "http/1.1" };
            let lists = [
                ("discovery (floor)", &floor_paths),
                ("inferno_desired_replicas", &paths),
            ];
            let figures = side_by_side(
                &client,
                &target,
                &lists.map(|(_, p)| p.clone()),
                http2,
                duration,
            );
            let mut rows = Vec::new();
            for ((name, _), (lat, peak, cpu)) in lists.iter().zip(figures) {
                let cpu = cpu.map_or_else(|| "-".to_string(), |(c, s)| format!("{c:.1} / {s:.1}"));
                println!("[request] {variants:>8} {proto:>8} {name:>26} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {cpu:>14}", lat.p50, lat.p99, lat.p999, lat.rps, peak.rps);
                rows.push((lat, peak));
            }
            let ((fl, fp), (ml, mp)) = (rows[0], rows[1]);
            if http2 {
                hpa_h2 = Some(ml);
            }
            println!("[request] {variants:>8} {proto:>8} {:>26} metric/floor: p99 {:.2}x, peak throughput {:.2}x", "", ml.p99 / fl.p99, mp.rps / fp.rps);
            if let Some(b) = &baseline {
                let target = load::Target {
                    addr: format!("127.0.0.1:{}", b.port).parse().unwrap(),
                    ..target.clone()
                };
                let paths: Arc<Vec<String>> = Arc::new(
                    (0..variants)
                        .map(|i| format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/v{variants}/inferno_desired_replicas?labelSelector=variant_name%3Dvariant-{i}"))
                        .collect(),
                );
                let al = client.block_on(load::run(
                    &target,
                    paths.clone(),
                    shape(http2, LATENCY, duration),
                ));
                let ap = client.block_on(load::run(&target, paths, shape(http2, PEAK, duration)));
                println!("[request] {variants:>8} {proto:>8} {:>26} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>10.0}", "prometheus-adapter", al.p50, al.p99, al.p999, al.rps, ap.rps);
                println!("[request] {variants:>8} {proto:>8} {:>26} adapter/ours: p99 {:.1}x, p50 {:.1}x; ours/adapter peak throughput {:.1}x", "", al.p99 / ml.p99, al.p50 / ml.p50, mp.rps / ap.rps);
            }
        }
        // KEDA's poll of one ScaledObject: GetMetrics then IsActive, one at a time, over mTLS.
        let addr = format!("127.0.0.1:{}", server.scaler_port).parse().unwrap();
        let g = client.block_on(scaler_pairs(addr, &serving.pem, &keda, variants, duration));
        println!(
            "[request] {variants:>8} {:>8} {:>26} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>10}",
            "grpc", "GetMetrics+IsActive (1)", g.p50, g.p99, g.p999, g.rps, "-"
        );
        if let Some(h) = hpa_h2 {
            println!("[request] {variants:>8} {:>8} {:>26} grpc pair / one HPA request (h2, 4 in flight): p50 {:.2}x, p99 {:.2}x", "", "", g.p50 / h.p50, g.p99 / h.p99);
        }
        drop(server);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
