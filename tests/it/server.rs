//! The real server on a loopback port with real TLS: a simulated aggregator with front-proxy
//! certificates, x509 and token clients, and a test double of the Kubernetes API for TokenReview,
//! SubjectAccessReview and the live `extension-apiserver-authentication` ConfigMap.

use crate::support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::sync::oneshot;
use wva_metrics_server::auth::config::AuthOverrides;
use wva_metrics_server::auth::review::KubeReviewer;
use wva_metrics_server::auth::watch::AuthConfigWatch;
use wva_metrics_server::auth::Auth;
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::health::Health;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::server::routes::AppState;
use wva_metrics_server::server::{serve, ServeOptions};
use wva_metrics_server::target::PodTarget;
use wva_metrics_server::telemetry::Metrics;
use wva_metrics_server::tls::{self, ReloadingCert};

const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const METRIC_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name%3Dv1";

struct Harness {
    addr: std::net::SocketAddr,
    serving_ca: Ca,
    front_proxy: Ca,
    client_ca: Ca,
    api: FakeKubeApi,
    auth: Arc<Auth>,
    dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    health: Arc<Health>,
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "wva-test-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64)
        ^ (N.fetch_add(1, Ordering::Relaxed) as u64)
}

/// Writes cert/key the way the kubelet fills a Secret volume: files behind a `..data` symlink that is
/// swapped atomically.
fn write_secret_volume(dir: &Path, generation: u32, leaf: &Leaf) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(data.join("tls.key"), &leaf.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

async fn start(slow: Option<Duration>) -> Harness {
    install_provider();
    let health = Health::new();
    let serving_ca = Ca::new("serving-ca");
    let front_proxy = Ca::new("front-proxy-ca");
    let client_ca = Ca::new("client-ca");
    let api = FakeKubeApi::start(ApiState {
        tokens: [(
            "good-token".to_string(),
            ("alice".to_string(), vec!["dev".to_string()]),
        )]
        .into(),
        allowed_users: vec![HPA_USER.into(), "alice".into()],
        auth_configmap: Some(auth_configmap_data(
            &client_ca.pem,
            &front_proxy.pem,
            &["front-proxy-client"],
        )),
        resource_version: 1,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let auth = Arc::new(Auth::new(
        Some(Arc::new(KubeReviewer::new(
            api.client(),
            Duration::from_secs(5),
        ))),
        Duration::from_secs(10),
        metrics.clone(),
    ));
    tokio::spawn(
        Arc::new(AuthConfigWatch::new(
            api.client(),
            auth.clone(),
            AuthOverrides::default(),
            metrics.clone(),
        ))
        .run(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !auth.config_loaded() {
        assert!(
            Instant::now() < deadline,
            "auth ConfigMap was never loaded from the fake API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dir = temp_dir("server");
    write_secret_volume(&dir, 1, &serving_ca.server(&["localhost", "127.0.0.1"]));
    let provider = tls::provider();
    let resolver =
        ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key"), &provider).unwrap();
    tokio::spawn(
        Arc::new(tls::CertReload {
            resolver: resolver.clone(),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            every: Duration::from_millis(50),
        })
        .run(),
    );
    let config = Arc::new(tls::server_config(resolver, provider).unwrap());

    let engine: Arc<dyn MetricsProvider> = Arc::new(Engine::new(
        snapshot::shared(one_variant("v1", 2)),
        Arc::new(FixedSamples(0.9, 6.0)),
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    ));
    let provider: Arc<dyn MetricsProvider> = match slow {
        Some(d) => Arc::new(Slow(engine, d)),
        None => engine,
    };
    let state = Arc::new(AppState {
        provider,
        auth: Some(auth.clone()),
        metrics,
        health: health.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let opts = ServeOptions {
        shutdown_grace: Duration::from_secs(5),
        ..Default::default()
    };
    let server = tokio::spawn(serve(listener, config, state, opts, async {
        let _ = rx.await;
    }));
    Harness {
        addr,
        serving_ca,
        front_proxy,
        client_ca,
        api,
        auth,
        dir,
        shutdown: Some(tx),
        server,
        health,
    }
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    fn aggregator(&self) -> Leaf {
        self.front_proxy.client("front-proxy-client", &[])
    }

    async fn get(
        &self,
        client: &reqwest::Client,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String, Value) {
        let mut req = client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:?}"));
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, ct, json)
    }

    fn sar_count(&self) -> usize {
        self.api.state.lock().unwrap().sar_requests.len()
    }
}

fn assert_status(v: &Value, code: u16, reason: &str) {
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["status"], "Failure", "{v}");
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["reason"], reason, "{v}");
}

#[tokio::test]
async fn aggregator_identities_over_http1_and_h2() {
    let h = start(None).await;
    for http2 in [false, true] {
        let agg = https_client(&h.serving_ca.pem, Some(&h.aggregator()), http2);
        // Availability probe: system:kube-aggregator in system:masters.
        let before = h.sar_count();
        let (code, ct, body) = h
            .get(
                &agg,
                "/apis/external.metrics.k8s.io/v1beta1",
                &[
                    ("X-Remote-User", "system:kube-aggregator"),
                    ("X-Remote-Group", "system:masters"),
                ],
            )
            .await;
        assert_eq!((code, ct.as_str()), (200, "application/json"));
        assert_eq!(body["resources"][0]["name"], "externalmetrics");
        // Legacy discovery fallback: same user, no groups; discovery needs no SAR.
        let (code, _, body) = h
            .get(
                &agg,
                "/apis/external.metrics.k8s.io/v1beta1/",
                &[("X-Remote-User", "system:kube-aggregator")],
            )
            .await;
        assert_eq!(code, 200);
        assert_eq!(body["groupVersion"], "external.metrics.k8s.io/v1beta1");
        // OpenAPI download as system:aggregator: served without authorization.
        let (code, ct, body) = h
            .get(
                &agg,
                "/openapi/v2",
                &[("X-Remote-User", "system:aggregator")],
            )
            .await;
        assert_eq!((code, ct.as_str()), (200, "application/json"));
        assert_eq!(body["swagger"], "2.0");
        assert_eq!(
            h.sar_count(),
            before,
            "discovery and OpenAPI must not cost a SubjectAccessReview"
        );

        // The HPA's request, with repeated group headers and an escaped extra key.
        let (code, ct, body) = h
            .get(
                &agg,
                METRIC_PATH,
                &[
                    ("X-Remote-User", HPA_USER),
                    ("X-Remote-Group", "system:serviceaccounts"),
                    ("X-Remote-Group", "system:serviceaccounts:kube-system"),
                    ("X-Remote-Extra-Acme.com%2Fproject", "a"),
                    ("X-Remote-Extra-Acme.com%2Fproject", "b"),
                    ("Accept", "application/vnd.kubernetes.protobuf, */*"),
                ],
            )
            .await;
        assert_eq!((code, ct.as_str()), (200, "application/json"), "{body}");
        assert_eq!(body["kind"], "ExternalMetricValueList");
        assert_eq!(body["items"][0]["metricLabels"]["variant_name"], "v1");
        assert_eq!(
            body["items"][0]["value"], "3",
            "busy single variant at 2 ready replicas scales to 3"
        );
        let sar = h
            .api
            .state
            .lock()
            .unwrap()
            .sar_requests
            .last()
            .cloned()
            .expect("the metric request is authorized by SAR");
        assert_eq!(sar["user"], HPA_USER);
        assert_eq!(
            sar["groups"],
            serde_json::json!([
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated"
            ])
        );
        assert_eq!(
            sar["extra"],
            serde_json::json!({"acme.com/project": ["a", "b"]})
        );
        assert_eq!(
            sar["resourceAttributes"],
            serde_json::json!({"verb": "list", "group": "external.metrics.k8s.io", "version": "v1beta1", "resource": "inferno_desired_replicas", "namespace": "ns"})
        );
    }
}

#[tokio::test]
async fn untrusted_credentials_are_refused() {
    let h = start(None).await;
    let rogue = Ca::new("rogue");
    let anonymous = https_client(&h.serving_ca.pem, None, false);

    // No credentials: anonymous, which SAR denies.
    let (code, _, body) = h.get(&anonymous, METRIC_PATH, &[]).await;
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(r#"User "system:anonymous" cannot list resource "inferno_desired_replicas""#),
        "{body}"
    );

    // Spoofed front-proxy headers without a trusted certificate are never believed.
    let (code, _, _) = h
        .get(
            &anonymous,
            METRIC_PATH,
            &[
                ("X-Remote-User", HPA_USER),
                ("X-Remote-Group", "system:masters"),
            ],
        )
        .await;
    assert_eq!(code, 403);
    let last = h
        .api
        .state
        .lock()
        .unwrap()
        .sar_requests
        .last()
        .cloned()
        .unwrap();
    assert_eq!(last["user"], "system:anonymous");

    let agg_headers = [("X-Remote-User", HPA_USER)];
    for (what, leaf) in [
        (
            "certificate from an unknown CA",
            rogue.client("front-proxy-client", &[]),
        ),
        (
            "front-proxy CN not in requestheader-allowed-names",
            h.front_proxy.client("intruder", &[]),
        ),
        (
            "front-proxy certificate without the ClientAuth usage",
            h.front_proxy.leaf(
                &["x"],
                "front-proxy-client",
                &[],
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
            ),
        ),
    ] {
        let c = https_client(&h.serving_ca.pem, Some(&leaf), false);
        let (code, ct, body) = h.get(&c, METRIC_PATH, &agg_headers).await;
        assert_eq!(
            (code, ct.as_str()),
            (401, "application/json"),
            "{what}: {body}"
        );
        assert_status(&body, 401, "Unauthorized");
    }

    // x509 client certificate from the client CA: user = CN, groups = O; bob is denied by SAR, alice allowed.
    let bob = https_client(
        &h.serving_ca.pem,
        Some(&h.client_ca.client("bob", &["dev"])),
        false,
    );
    let before = h.sar_count();
    for _ in 0..3 {
        let (code, _, body) = h.get(&bob, METRIC_PATH, &[]).await;
        assert_eq!(code, 403, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("no RBAC policy matched"),
            "{body}"
        );
    }
    assert_eq!(h.sar_count(), before + 1, "deny decisions are cached");
    let alice = https_client(
        &h.serving_ca.pem,
        Some(&h.client_ca.client("alice", &["dev"])),
        false,
    );
    assert_eq!(h.get(&alice, METRIC_PATH, &[]).await.0, 200);

    // Bearer tokens via TokenReview, cached either way.
    let (code, _, body) = h
        .get(
            &anonymous,
            METRIC_PATH,
            &[("Authorization", "Bearer bad-token")],
        )
        .await;
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");
    for (token, want) in [("good-token", 200), ("good-token", 200), ("bad-token", 401)] {
        let auth = format!("Bearer {token}");
        assert_eq!(
            h.get(&anonymous, METRIC_PATH, &[("Authorization", auth.as_str())])
                .await
                .0,
            want,
            "{token}"
        );
    }
    assert_eq!(
        h.api.state.lock().unwrap().token_reviews,
        2,
        "token reviews are cached for accepted and rejected tokens"
    );
}

#[tokio::test]
async fn discovery_negotiation_routes_and_health() {
    let h = start(None).await;
    let agg = https_client(&h.serving_ca.pem, Some(&h.aggregator()), false);
    let masters = [
        ("X-Remote-User", "system:kube-aggregator"),
        ("X-Remote-Group", "system:masters"),
    ];
    // Aggregated discovery, as the aggregator of 1.30–1.36 asks for it (v2, then v2beta1).
    let aggregated_only = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
    let (code, ct, body) = h
        .get(
            &agg,
            "/apis",
            &[masters[0], masters[1], ("Accept", aggregated_only)],
        )
        .await;
    assert_eq!(
        (code, ct.as_str()),
        (
            200,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        )
    );
    assert_eq!(body["apiVersion"], "apidiscovery.k8s.io/v2");
    assert_eq!(
        body["items"][0]["versions"][0]["resources"][0]["resource"],
        "externalmetrics"
    );
    // 1.26–1.29 ask for v2beta1 only.
    let (code, ct, body) = h
        .get(
            &agg,
            "/apis",
            &[
                masters[0],
                masters[1],
                (
                    "Accept",
                    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
                ),
            ],
        )
        .await;
    assert_eq!(
        (code, body["apiVersion"].as_str()),
        (200, Some("apidiscovery.k8s.io/v2beta1"))
    );
    assert!(ct.contains("v=v2beta1"));
    // A version we do not serve, and nothing plain to fall back to: 406.
    let (code, ct, body) = h
        .get(
            &agg,
            "/apis",
            &[
                masters[0],
                masters[1],
                (
                    "Accept",
                    "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList",
                ),
            ],
        )
        .await;
    assert_eq!((code, ct.as_str()), (406, "application/json"));
    assert_status(&body, 406, "NotAcceptable");
    // OpenAPI v3: the index points at the group-version's document, whose hash is its ETag; a client
    // holding it gets 304.
    let (code, _, index) = h.get(&agg, "/openapi/v3", &[]).await;
    assert_eq!(code, 200);
    let url = index["paths"]["apis/external.metrics.k8s.io/v1beta1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, _, doc) = h.get(&agg, &url, &[]).await;
    assert_eq!((code, doc["openapi"].as_str()), (200, Some("3.0.0")));
    let hash = url.split("hash=").nth(1).unwrap();
    let (code, _, _) = h
        .get(&agg, &url, &[("If-None-Match", &format!("\"{hash}\""))])
        .await;
    assert_eq!(code, 304);
    let (code, _, body) = h
        .get(
            &agg,
            "/apis",
            &[masters[0], masters[1], ("Accept", "application/json, */*")],
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(body["kind"], "APIGroupList");
    assert_eq!(
        body["groups"][0]["preferredVersion"]["groupVersion"],
        "external.metrics.k8s.io/v1beta1"
    );
    let (code, _, body) = h.get(&agg, "/apis/external.metrics.k8s.io", &masters).await;
    assert_eq!((code, body["kind"].as_str()), (200, Some("APIGroup")));

    for (path, code) in [
        ("/apis/external.metrics.k8s.io/v1beta1/nonexistent-metric", 404),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/foo", 404),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/foo/group/metric", 404),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/nonexistent-metric", 404),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name%3Dnope", 404),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas?labelSelector=variant_name+in+%28", 400),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/INFERNO_DESIRED_REPLICAS?labelSelector=variant_name%3Dv1", 200),
        ("/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/wva_current_replicas?labelSelector=variant_name%3Dv1%2Cexported_namespace%3Dns", 200),
        ("/openapi/v3/apis/other.group/v1", 404),
        ("/nothing-here", 404),
    ] {
        let (got, ct, body) = h.get(&agg, path, &masters).await;
        assert_eq!((got, ct.as_str()), (code, "application/json"), "{path}: {body}");
        if code != 200 {
            assert_eq!(body["kind"], "Status", "{path}");
        } else {
            assert_eq!(body["items"][0]["metricName"], path.split('/').nth(6).unwrap().split('?').next().unwrap().to_ascii_lowercase(), "{path}");
        }
    }
    let resp = agg
        .post(h.url(METRIC_PATH))
        .header("X-Remote-User", "system:kube-aggregator")
        .header("X-Remote-Group", "system:masters")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Health without any credentials; never a redirect.
    let anonymous = https_client(&h.serving_ca.pem, None, false);
    for p in ["/healthz", "/livez", "/readyz"] {
        let (code, _, _) = h.get(&anonymous, p, &[]).await;
        assert_eq!(code, 200, "{p}");
    }
    // Our own /metrics: authorized with a non-resource SAR; masters pass.
    let (code, _, body) = h.get(&agg, "/metrics", &masters).await;
    assert_eq!(code, 200);
    assert!(
        body.as_str()
            .unwrap()
            .contains("wva_metrics_server_http_requests_total"),
        "{body}"
    );
}

/// `/livez` tells the truth about the loops answers depend on: a loop that stops beating fails it
/// (kubelet then restarts the pod), and `/readyz` waits for every store's first full sync.
#[tokio::test]
async fn livez_fails_when_a_loop_stalls_and_readyz_waits_for_first_sync() {
    let h = start(None).await;
    let anonymous = https_client(&h.serving_ca.pem, None, false);
    let scrape = h
        .health
        .heartbeat("scrape-loop", Duration::from_millis(300));
    let snapshot = h.health.store("snapshot");
    let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();

    let (code, _, body) = h.get(&anonymous, "/livez", &[]).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = h.get(&anonymous, "/readyz", &[]).await;
    assert_eq!(code, 500, "{body}");
    assert!(text(body).contains("[-]snapshot failed: initial sync not done"));
    snapshot.set();
    let (code, _, _) = h.get(&anonymous, "/readyz", &[]).await;
    assert_eq!(code, 200);

    // The loop stalls: no beat for longer than its bound.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for path in ["/livez", "/healthz"] {
        let (code, _, body) = h.get(&anonymous, path, &[]).await;
        assert_eq!(code, 500, "{path}");
        assert!(
            text(body).contains("[-]scrape-loop failed: no progress for"),
            "{path}"
        );
    }
    // It beats again: alive again.
    scrape.beat();
    let (code, _, body) = h.get(&anonymous, "/livez", &[]).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn auth_configmap_is_followed_live() {
    let h = start(None).await;
    let agg = https_client(&h.serving_ca.pem, Some(&h.aggregator()), false);
    let hdr = [("X-Remote-User", HPA_USER)];
    assert_eq!(h.get(&agg, METRIC_PATH, &hdr).await.0, 200);
    // kube-apiserver rotates the front-proxy CA: the old aggregator certificate stops being trusted.
    let new_front_proxy = Ca::new("front-proxy-ca-2");
    h.api.update_auth_configmap(auth_configmap_data(
        &h.client_ca.pem,
        &new_front_proxy.pem,
        &["front-proxy-client"],
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = https_client(&h.serving_ca.pem, Some(&h.aggregator()), false);
        if h.get(&fresh, METRIC_PATH, &hdr).await.0 == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CA rotation in the ConfigMap was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = https_client(
        &h.serving_ca.pem,
        Some(&new_front_proxy.client("front-proxy-client", &[])),
        false,
    );
    assert_eq!(h.get(&rotated, METRIC_PATH, &hdr).await.0, 200);
    // A broken update is rejected and the previous configuration stays.
    let mut broken = auth_configmap_data(&h.client_ca.pem, "not a certificate", &[]);
    broken.insert("requestheader-allowed-names".into(), "not json".into());
    h.api.update_auth_configmap(broken);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.auth.config_loaded());
    assert_eq!(h.get(&rotated, METRIC_PATH, &hdr).await.0, 200);
}

#[tokio::test]
async fn serving_certificate_hot_reload_drops_no_request() {
    let h = start(None).await;
    let new_ca = Ca::new("serving-ca-2");
    let both = format!("{}{}", h.serving_ca.pem, new_ca.pem);
    let masters = [
        ("X-Remote-User", "system:kube-aggregator"),
        ("X-Remote-Group", "system:masters"),
    ];
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = h.url("/apis/external.metrics.k8s.io/v1beta1");
    let agg = h.aggregator();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (both, url, failures, done) =
            (both.clone(), url.clone(), failures.clone(), done.clone());
        let agg = Leaf {
            cert_pem: agg.cert_pem.clone(),
            key_pem: agg.key_pem.clone(),
        };
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                // A new client per request forces new connections, so every request does a handshake.
                let c = https_client(&both, Some(&agg), n % 2 == 0);
                let ok = c
                    .get(&url)
                    .header(masters[0].0, masters[0].1)
                    .header(masters[1].0, masters[1].1)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_secret_volume(&h.dir, 2, &new_ca.server(&["localhost", "127.0.0.1"]));
    let only_new = https_client(&new_ca.pem, Some(&h.aggregator()), false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while only_new
        .get(&url)
        .header(masters[0].0, masters[0].1)
        .header(masters[1].0, masters[1].1)
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the new serving certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        total += t.await.unwrap();
    }
    assert!(total > 10, "load loop made only {total} requests");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during the certificate swap ({total} made)"
    );
    // A client trusting only the old CA is now refused at the handshake.
    let only_old = https_client(&h.serving_ca.pem, Some(&h.aggregator()), false);
    assert!(only_old.get(&url).send().await.is_err());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let mut h = start(Some(Duration::from_millis(700))).await;
    let agg = https_client(&h.serving_ca.pem, Some(&h.aggregator()), true);
    let url = h.url(METRIC_PATH);
    let in_flight = tokio::spawn(async move {
        agg.get(url)
            .header("X-Remote-User", HPA_USER)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.shutdown.take().unwrap().send(()).unwrap();
    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the in-flight request completes"
    );
    tokio::time::timeout(Duration::from_secs(5), &mut h.server)
        .await
        .expect("server stops after draining")
        .unwrap();
    let late = https_client(&h.serving_ca.pem, Some(&h.aggregator()), false);
    assert!(
        late.get(h.url("/healthz")).send().await.is_err(),
        "no longer accepting"
    );
}

/// The engine through the HTTP surface, with the real window cache filled directly (no auth, as in
/// standalone mode): selector matching on every item label, the explain document, and the 503 once
/// Ready pods have gone without samples for longer than `--max-metric-age`.
#[tokio::test]
async fn engine_over_http_with_a_filled_sample_store() {
    use wva_metrics_server::cluster::snapshot::ExcludedVariant;
    install_provider();
    let pod = |v: &str, i: usize| PodTarget::new("ns", &format!("{v}-{i}"), "127.0.0.1", 1);
    let variant = |name: &str, acc: &str, cost: f64, pods: Vec<PodTarget>| {
        Variant::new("ns", name, ("m", acc), cost, pods)
    };
    let cheap = variant("cheap", "L40S", 5.0, vec![pod("cheap", 0), pod("cheap", 1)]);
    let pricey = variant("pricey", "H100", 20.0, vec![pod("pricey", 0)]);
    let stalled = Variant {
        kind: Default::default(),
        uid: None,
        namespace: "other".into(),
        model_id: "m2".into(),
        ..variant("stalled", "A100", 1.0, vec![pod("stalled", 0)])
    };
    let snap = Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        pickers: Vec::new(),
        variants: vec![cheap.clone(), pricey.clone(), stalled.clone()],
        excluded: vec![ExcludedVariant {
            kind: Default::default(),
            uid: None,
            namespace: "ns".into(),
            name: "broken".into(),
            model_id: "m".into(),
            reason: wva_metrics_server::cluster::Exclusion::BadCost {
                value: "cheap".into(),
                why: "not a number".into(),
            },
        }],
        synced: true,
    };
    // Every pod busy (KV cache 0.9, queue 6) but the stalled one, never scraped.
    let busy = cheap
        .pods
        .iter()
        .chain(&pricey.pods)
        .map(|p| (p.name.clone(), (0.9, 6.0)))
        .collect();
    let engine = Engine::new(
        snapshot::shared(snap),
        Arc::new(SamplesByPod(busy)),
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_millis(500),
    );
    let (port, ca_pem) = start_unauthenticated(Arc::new(engine), ServeOptions::default()).await;
    let client = https_client(&ca_pem, None, true);
    let get = |path: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("https://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let metric = |m: &str, sel: &str| {
        format!(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/{m}?labelSelector={}",
            percent_encode(sel)
        )
    };
    for (sel, want) in [
        ("", vec![("cheap", "3"), ("pricey", "1")]),
        ("variant_name=cheap", vec![("cheap", "3")]),
        ("namespace=ns,variant_name!=cheap", vec![("pricey", "1")]),
        (
            "exported_namespace=ns,variant_name=pricey",
            vec![("pricey", "1")],
        ),
        ("accelerator_type in (L40S)", vec![("cheap", "3")]),
        ("variant_name=nope", vec![]),
    ] {
        let (code, body) = get(metric("inferno_desired_replicas", sel)).await;
        if want.is_empty() {
            assert_eq!(code, 404, "{sel}: {body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("variant_name=nope"),
                "{body}"
            );
            continue;
        }
        assert_eq!(code, 200, "{sel}: {body}");
        let got: Vec<(String, String)> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["metricLabels"]["variant_name"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    i["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            want.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>(),
            "{sel}"
        );
    }
    let (code, body) = get(metric("wva_desired_ratio", "variant_name=cheap")).await;
    assert_eq!(
        (code, body["items"][0]["value"].as_str()),
        (200, Some("1500m"))
    );
    let (code, body) = get(metric("inferno_desired_replicas", "variant_name=broken")).await;
    assert_eq!(code, 503);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("broken: spec.variantCost \"cheap\": not a number"),
        "{body}"
    );

    // The stalled pod was never scraped: held while young, then 503 naming it.
    let stalled_path =
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/other/inferno_desired_replicas"
            .to_string();
    let (code, body) = get(stalled_path).await;
    assert_eq!(code, 503, "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("no fresh vLLM metrics for model \"m2\" in namespace other")
            && msg.contains("stalled-0 (not scraped yet"),
        "{msg}"
    );

    let (code, doc) = get("/debug/variants?namespace=ns".to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(
        doc["models"][0]["decision"]["targets"],
        serde_json::json!({"cheap": 3, "pricey": 1})
    );
    assert_eq!(doc["models"][0]["pods"][0]["sample"]["source"], "pods");
    assert_eq!(doc["excluded"][0]["name"], "broken");
}

fn percent_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The server without authentication (standalone mode's setup) and a generated certificate.
async fn start_unauthenticated(
    provider: Arc<dyn MetricsProvider>,
    opts: ServeOptions,
) -> (u16, String) {
    let generated = tls::generate_self_signed(&["127.0.0.1".into()]).unwrap();
    let crypto = tls::provider();
    let config = Arc::new(
        tls::server_config(
            ReloadingCert::from_key(generated.certified_key(&crypto).unwrap()),
            crypto,
        )
        .unwrap(),
    );
    let state = Arc::new(AppState {
        provider,
        auth: None,
        metrics: Metrics::new(),
        health: wva_metrics_server::health::Health::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(listener, config, state, opts, std::future::pending()));
    (port, generated.ca_pem)
}
