//! The HPA request path over TLS, end to end in one process: p50/p99/p999 latency and throughput of
//! `GET …/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name=…` with a front-proxy client
//! certificate and a warm authorization cache, over HTTP/1.1 and h2, for 1, 100 and 1,000 variants.
//!
//! Baseline in the same run: the same server answering the static discovery document (same TLS, same
//! authentication, no authorization and no engine), i.e. the transport floor. Client and server share the
//! machine's cores, so throughput is "both sides on this machine". (Issue #7's Prometheus Adapter baseline
//! is not built yet.)

use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use wva_metrics_server::auth::config::{AuthConfig, AuthOverrides};
use wva_metrics_server::auth::review::{Attributes, BoxFuture, Reviewer};
use wva_metrics_server::auth::{Auth, Decision, UserInfo};
use wva_metrics_server::cluster::snapshot::{self, PodTarget, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::saturation::config::ScalingConfig;
use wva_metrics_server::server::routes::AppState;
use wva_metrics_server::server::tls::{self, ReloadingCert};
use wva_metrics_server::server::{serve, ServeOptions};
use wva_metrics_server::sources::{Lookup, PodSample, SampleSource, SourceKind};
use wva_metrics_server::telemetry::Metrics;

/// SubjectAccessReview that allows everything (the cache is warm after the first request anyway).
struct AllowAll;
impl Reviewer for AllowAll {
    fn review_token<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Result<UserInfo, String>, String>> {
        Box::pin(async { Ok(Err("no tokens in this benchmark".to_string())) })
    }
    fn review_access<'a>(
        &'a self,
        _: &'a UserInfo,
        _: &'a Attributes,
    ) -> BoxFuture<'a, Result<Decision, String>> {
        Box::pin(async {
            Ok(Decision {
                allowed: true,
                reason: String::new(),
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
        })
    }
}

/// `variants` variants in models of two, two pods each, one namespace.
fn snapshot_of(variants: usize) -> Snapshot {
    let variants = (0..variants)
        .map(|i| Variant {
            namespace: "ns".into(),
            name: format!("variant-{i}"),
            model_id: format!("model-{}", i / 2),
            accelerator: "H100".into(),
            cost: 5.0 + (i % 2) as f64,
            deployment: format!("variant-{i}"),
            spec_replicas: 2,
            ready_replicas: 2,
            pods: (0..2)
                .map(|p| PodTarget {
                    namespace: "ns".into(),
                    name: format!("variant-{i}-{p}"),
                    ip: "10.0.0.1".into(),
                    port: 8000,
                    path: "/metrics".into(),
                })
                .collect(),
        })
        .collect::<Vec<_>>();
    let mut s = Snapshot {
        variants,
        excluded: vec![],
        synced: true,
    };
    s.variants
        .sort_by(|a, b| (&a.model_id, &a.name).cmp(&(&b.model_id, &b.name)));
    s
}

struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    rps: f64,
}

async fn drive(
    client: reqwest::Client,
    urls: Arc<Vec<String>>,
    tasks: usize,
    duration: Duration,
) -> Latency {
    // Warm up: connections, the authorization cache, the allocator.
    for u in urls.iter().take(64) {
        let _ = client
            .get(u)
            .header(
                "X-Remote-User",
                "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            )
            .send()
            .await
            .unwrap()
            .bytes()
            .await;
    }
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (client, urls) = (client.clone(), urls.clone());
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut i = t;
            while start.elapsed() < duration {
                let u = &urls[i % urls.len()];
                i += tasks;
                let t0 = Instant::now();
                let r = client
                    .get(u)
                    .header(
                        "X-Remote-User",
                        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
                    )
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.unwrap();
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Latency {
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        rps: all.len() as f64 / elapsed,
    }
}

fn main() {
    // `cargo test --all-targets` runs this target once without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let provider = tls::provider();
        let serving = support::Ca::new("serving");
        let front = support::Ca::new("front-proxy");
        let server_leaf = serving.server(&["127.0.0.1"]);
        let fp = front.client("front-proxy-client", &[]);
        let (serving_ca, front_ca, cert, key, fp_cert, fp_key) = (serving.pem.clone(), front.pem.clone(), server_leaf.cert_pem, server_leaf.key_pem, fp.cert_pem, fp.key_pem);
        let dir = std::env::temp_dir().join(format!("wva-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tls.crt"), &cert).unwrap();
        std::fs::write(dir.join("tls.key"), &key).unwrap();
        println!("\n[request] {} | client and server share this machine's cores", std::env::consts::ARCH);
        println!("[request] {:>8} {:>6} {:>24} {:>10} {:>10} {:>10} {:>10}", "variants", "proto", "path", "p50 µs", "p99 µs", "p999 µs", "req/s");
        for variants in [1usize, 100, 1000] {
            let metrics = Metrics::new();
            let auth = Arc::new(Auth::new(Some(Arc::new(AllowAll)), Duration::from_secs(3600), metrics.clone()));
            let data = std::collections::BTreeMap::from([
                ("requestheader-client-ca-file".to_string(), front_ca.clone()),
                ("requestheader-allowed-names".to_string(), r#"["front-proxy-client"]"#.to_string()),
            ]);
            auth.set_config(AuthConfig::from_configmap(&data, &AuthOverrides::default(), &provider).unwrap());
            let engine = Engine::new(snapshot::shared(snapshot_of(variants)), Arc::new(Moderate), Arc::new(arc_swap::ArcSwap::from_pointee(ScalingConfig::default())), Duration::from_secs(120));
            let resolver = ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key"), &provider).unwrap();
            let config = Arc::new(tls::server_config(resolver, provider.clone()).unwrap());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let state = Arc::new(AppState { provider: Arc::new(engine), auth: Some(auth), metrics });
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, config, state, ServeOptions::default(), async {
                let _ = rx.await;
            }));
            let metric_urls: Arc<Vec<String>> = Arc::new(
                (0..variants.min(1000))
                    .map(|i| format!("https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name%3Dvariant-{i}"))
                    .collect(),
            );
            let floor_urls = Arc::new(vec![format!("https://127.0.0.1:{port}/apis/external.metrics.k8s.io/v1beta1")]);
            for http2 in [false, true] {
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls::pki_types::pem::PemObject::pem_slice_iter(serving_ca.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(fp_cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
                let pkey = rustls::pki_types::pem::PemObject::from_pem_slice(fp_key.as_bytes()).unwrap();
                let mut cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, pkey).unwrap();
                cfg.alpn_protocols = if http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
                let mut b = reqwest::Client::builder().tls_backend_preconfigured(cfg).pool_max_idle_per_host(64);
                if http2 {
                    b = b.http2_prior_knowledge();
                }
                let client = b.build().unwrap();
                let proto = if http2 { "h2" } else { "http/1.1" };
                let floor = drive(client.clone(), floor_urls.clone(), 8, Duration::from_secs(2)).await;
                let m = drive(client, metric_urls.clone(), 8, Duration::from_secs(2)).await;
                for (path, r) in [("discovery (floor)", &floor), ("inferno_desired_replicas", &m)] {
                    println!("[request] {variants:>8} {proto:>6} {path:>24} {:>10.0} {:>10.0} {:>10.0} {:>10.0}", r.p50, r.p99, r.p999, r.rps);
                }
                println!("[request] {variants:>8} {proto:>6} {:>24} p99 ratio metric/floor {:.2}x, throughput ratio {:.2}x", "", m.p99 / floor.p99, m.rps / floor.rps);
            }
            let _ = tx.send(());
            let _ = server.await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
