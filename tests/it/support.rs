//! Shared test fixtures: a PKI made with rcgen, a test double of the Kubernetes API (TokenReview,
//! SubjectAccessReview and a watchable ConfigMap), and HTTPS clients that present certificates.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use tokio::sync::broadcast;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `(variant_name, value)` of every item of an ExternalMetricValueList.
pub fn variant_values(list: &Value) -> Vec<(String, String)> {
    let field = |v: &Value| v.as_str().unwrap_or("").to_string();
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    (
                        field(&i["metricLabels"]["variant_name"]),
                        field(&i["value"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A provider whose answers take a while, so a request stays in flight. On a multi-threaded runtime the
/// wait hands the worker's other tasks (the accept loop among them) to another thread.
pub struct Slow(
    pub Arc<dyn wva_metrics_server::provider::MetricsProvider>,
    pub std::time::Duration,
);

impl wva_metrics_server::provider::MetricsProvider for Slow {
    fn external_metric(
        &self,
        ns: &str,
        metric: &str,
        sel: &wva_metrics_server::provider::selector::Selector,
    ) -> Result<
        Vec<wva_metrics_server::provider::MetricItem>,
        wva_metrics_server::provider::ProviderError,
    > {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(|| std::thread::sleep(self.1));
        } else {
            std::thread::sleep(self.1);
        }
        self.0.external_metric(ns, metric, sel)
    }
}

/// Every pod reports the same KV-cache usage and queue (a store "filled directly").
pub struct FixedSamples(pub f64, pub f64);

impl wva_metrics_server::sources::SampleSource for FixedSamples {
    fn lookup(
        &self,
        _: &wva_metrics_server::target::PodTarget,
        _: &str,
    ) -> wva_metrics_server::sources::Lookup {
        wva_metrics_server::sources::Lookup::Fresh(wva_metrics_server::sources::PodSample {
            kv_cache_usage: self.0,
            queue_length: self.1,
            running_requests: None,
            age: std::time::Duration::from_secs(1),
            source: wva_metrics_server::sources::SourceKind::Pods,
            tokens: None,
        })
    }
}

/// Listed pods report the given KV-cache usage and queue; the others were never scraped (for a second).
pub struct SamplesByPod(pub BTreeMap<String, (f64, f64)>);

impl wva_metrics_server::sources::SampleSource for SamplesByPod {
    fn lookup(
        &self,
        pod: &wva_metrics_server::target::PodTarget,
        _: &str,
    ) -> wva_metrics_server::sources::Lookup {
        use wva_metrics_server::sources::{Lookup, MissingSample, PodSample, SourceKind};
        match self.0.get(&pod.name) {
            Some(&(kv_cache_usage, queue_length)) => Lookup::Fresh(PodSample {
                kv_cache_usage,
                queue_length,
                running_requests: None,
                age: std::time::Duration::from_secs(1),
                source: SourceKind::Pods,
                tokens: None,
            }),
            None => Lookup::Missing {
                since: std::time::Duration::from_secs(1),
                reason: MissingSample::NotScrapedYet,
            },
        }
    }
}

pub fn pod_target(namespace: &str, name: &str) -> wva_metrics_server::target::PodTarget {
    wva_metrics_server::target::PodTarget::new(namespace, name, "127.0.0.1", 1)
}

/// A synced snapshot with one variant `name` of model `m` in namespace `ns` (H100, cost 10), its Deployment at
/// `replicas` spec and ready, and that many pods.
pub fn one_variant(name: &str, replicas: usize) -> wva_metrics_server::cluster::snapshot::Snapshot {
    wva_metrics_server::cluster::snapshot::Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        pickers: Vec::new(),
        variants: vec![wva_metrics_server::cluster::snapshot::Variant::new(
            "ns",
            name,
            ("m", "H100"),
            10.0,
            (0..replicas)
                .map(|i| pod_target("ns", &format!("{name}-{i}")))
                .collect(),
        )],
        excluded: vec![],
        synced: true,
    }
}

pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A CA able to issue certificates.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(
            names,
            names[0],
            &[],
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    pub fn client(&self, cn: &str, orgs: &[&str]) -> Leaf {
        self.leaf(&[], cn, orgs, vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    pub fn leaf(
        &self,
        names: &[&str],
        cn: &str,
        orgs: &[&str],
        eku: Vec<ExtendedKeyUsagePurpose>,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(
            names
                .iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.extended_key_usages = eku;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// What the fake API saw and how it answers.
#[derive(Default)]
pub struct ApiState {
    /// token → (user, groups); any other token is rejected.
    pub tokens: BTreeMap<String, (String, Vec<String>)>,
    /// Users allowed by SubjectAccessReview; everyone else is denied.
    pub allowed_users: Vec<String>,
    /// Every SubjectAccessReview spec received.
    pub sar_requests: Vec<Value>,
    pub token_reviews: usize,
    /// The auth ConfigMap's data; `None` = absent.
    pub auth_configmap: Option<BTreeMap<String, String>>,
    pub resource_version: u64,
    /// Leases by name, with their resourceVersion.
    pub leases: BTreeMap<String, Value>,
    /// VariantAutoscalings by name (GET returns them; status patches are recorded).
    pub vas: BTreeMap<String, Value>,
    /// Status patches received: (name, query string, body).
    pub status_patches: Vec<(String, String, Value)>,
    /// The next this-many status patches fail with 500.
    pub fail_status_patches: usize,
    /// Events received (events.k8s.io/v1).
    pub events: Vec<Value>,
}

pub struct FakeKubeApi {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ApiState>>,
    events: broadcast::Sender<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ApiState>>,
    events: broadcast::Sender<String>,
}

fn configmap(data: &BTreeMap<String, String>, rv: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system", "resourceVersion": rv.to_string(), "uid": "cm-uid"},
        "data": data})
}

async fn configmaps(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("watch").map(String::as_str) == Some("true") {
        // A long-lived watch: forward every update pushed by the test as one JSON line.
        let mut rx = s.events.subscribe();
        let stream = async_stream(
            move |tx: tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>| async move {
                while let Ok(line) = rx.recv().await {
                    if tx.send(Ok(Bytes::from(line))).await.is_err() {
                        break;
                    }
                }
            },
        );
        return Response::builder()
            .header("content-type", "application/json")
            .body(stream)
            .unwrap();
    }
    let st = s.state.lock().unwrap();
    let items: Vec<Value> = st
        .auth_configmap
        .iter()
        .map(|d| configmap(d, st.resource_version))
        .collect();
    Json(json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items})).into_response()
}

/// A streaming body fed by a task.
fn async_stream<F, Fut>(f: F) -> Body
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn token_reviews(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut st = s.state.lock().unwrap();
    st.token_reviews += 1;
    let token = body
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = match st.tokens.get(token) {
        Some((user, groups)) => {
            json!({"authenticated": true, "user": {"username": user, "uid": "uid-1", "groups": groups}})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut out = body.clone();
    out["status"] = status;
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn access_reviews(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut st = s.state.lock().unwrap();
    let spec = body.get("spec").cloned().unwrap_or(Value::Null);
    st.sar_requests.push(spec.clone());
    let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
    let allowed = st.allowed_users.iter().any(|u| u == user);
    let mut out = body.clone();
    out["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by test"})
    } else {
        json!({"allowed": false, "reason": "no RBAC policy matched"})
    };
    (StatusCode::CREATED, Json(out)).into_response()
}

fn status(code: u16, reason: &str) -> Response {
    (StatusCode::from_u16(code).unwrap(), Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason, "code": code}))).into_response()
}

async fn get_lease(
    State(s): State<Shared>,
    axum::extract::Path((_ns, name)): axum::extract::Path<(String, String)>,
) -> Response {
    match s.state.lock().unwrap().leases.get(&name) {
        Some(l) => Json(l.clone()).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn create_lease(State(s): State<Shared>, Json(mut body): Json<Value>) -> Response {
    let mut st = s.state.lock().unwrap();
    let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
    if st.leases.contains_key(&name) {
        return status(409, "AlreadyExists");
    }
    st.resource_version += 1;
    body["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
    st.leases.insert(name, body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

/// Optimistic concurrency as the API server does it: a stale resourceVersion is a 409 Conflict.
async fn replace_lease(
    State(s): State<Shared>,
    axum::extract::Path((_ns, name)): axum::extract::Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> Response {
    let mut st = s.state.lock().unwrap();
    let Some(current) = st.leases.get(&name) else {
        return status(404, "NotFound");
    };
    if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
        return status(409, "Conflict");
    }
    st.resource_version += 1;
    body["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
    st.leases.insert(name, body.clone());
    Json(body).into_response()
}

async fn get_va(
    State(s): State<Shared>,
    axum::extract::Path((_ns, name)): axum::extract::Path<(String, String)>,
) -> Response {
    match s.state.lock().unwrap().vas.get(&name) {
        Some(v) => Json(v.clone()).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn patch_va_status(
    State(s): State<Shared>,
    axum::extract::Path((_ns, name)): axum::extract::Path<(String, String)>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Response {
    let mut st = s.state.lock().unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.status_patches.push((
        name.clone(),
        uri.query().unwrap_or("").to_string(),
        body.clone(),
    ));
    if st.fail_status_patches > 0 {
        st.fail_status_patches -= 1;
        return status(500, "InternalError");
    }
    let Some(va) = st.vas.get_mut(&name) else {
        return status(404, "NotFound");
    };
    va["status"] = body["status"].clone();
    Json(va.clone()).into_response()
}

async fn create_event(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    s.state.lock().unwrap().events.push(body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

impl FakeKubeApi {
    pub async fn start(state: ApiState) -> Self {
        let (events, _) = broadcast::channel(16);
        let shared = Shared {
            state: Arc::new(Mutex::new(state)),
            events: events.clone(),
        };
        let app = Router::new()
            .route("/api/v1/namespaces/kube-system/configmaps", get(configmaps))
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_reviews),
            )
            .route(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                post(access_reviews),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(replace_lease),
            )
            .route(
                "/apis/llmd.ai/v1alpha1/namespaces/{ns}/variantautoscalings/{name}",
                get(get_va),
            )
            .route(
                "/apis/llmd.ai/v1alpha1/namespaces/{ns}/variantautoscalings/{name}/status",
                axum::routing::patch(patch_va_status),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(create_event),
            )
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            state: shared.state,
            events,
        }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Replaces the auth ConfigMap and tells watchers.
    pub fn update_auth_configmap(&self, data: BTreeMap<String, String>) {
        let line = {
            let mut st = self.state.lock().unwrap();
            st.resource_version += 1;
            st.auth_configmap = Some(data.clone());
            format!(
                "{}\n",
                json!({"type": "MODIFIED", "object": configmap(&data, st.resource_version)})
            )
        };
        let _ = self.events.send(line);
    }
}

/// The data kube-apiserver publishes, with JSON-encoded lists.
pub fn auth_configmap_data(
    client_ca: &str,
    front_proxy_ca: &str,
    allowed: &[&str],
) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("client-ca-file".to_string(), client_ca.to_string()),
        (
            "requestheader-client-ca-file".to_string(),
            front_proxy_ca.to_string(),
        ),
        (
            "requestheader-allowed-names".to_string(),
            serde_json::to_string(allowed).unwrap(),
        ),
        (
            "requestheader-username-headers".to_string(),
            r#"["X-Remote-User"]"#.to_string(),
        ),
        (
            "requestheader-group-headers".to_string(),
            r#"["X-Remote-Group"]"#.to_string(),
        ),
        (
            "requestheader-extra-headers-prefix".to_string(),
            r#"["X-Remote-Extra-"]"#.to_string(),
        ),
    ])
}

/// An HTTPS client trusting `ca_pem`, optionally presenting a client certificate, HTTP/1.1 or h2.
pub fn https_client(ca_pem: &str, identity: Option<&Leaf>, http2: bool) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match identity {
        Some(leaf) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .timeout(std::time::Duration::from_secs(10));
    if http2 {
        b = b.http2_prior_knowledge();
    }
    b.build().unwrap()
}

use rustls::pki_types::pem::PemObject;

/// Runs `cmd` with `stdin` (when given) written to it and closed, capturing stdout and stderr.
pub fn output_with_stdin(
    cmd: &mut std::process::Command,
    stdin: Option<&str>,
) -> std::io::Result<std::process::Output> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())?;
    }
    drop(child.stdin.take());
    child.wait_with_output()
}

/// PEM certificates as DER.
pub fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

/// A gRPC client of the external scaler dialing as KEDA does with a TriggerAuthentication: the server's CA, and a client
/// certificate when given.
pub async fn scaler_client(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> Result<
    wva_metrics_server::scaler::proto::external_scaler_client::ExternalScalerClient<
        tonic::transport::Channel,
    >,
    tonic::transport::Error,
> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(scaler_tls_config(ca_pem, identity)));
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                // As Go's net package (KEDA) does by default.
                tcp.set_nodelay(true)?;
                let tls = connector
                    .connect(
                        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                        tcp,
                    )
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(
        wva_metrics_server::scaler::proto::external_scaler_client::ExternalScalerClient::new(
            channel,
        ),
    )
}

/// The TLS configuration KEDA dials the external scaler with: the server's CA, `h2`, and a client
/// certificate when given.
pub fn scaler_tls_config(ca_pem: &str, identity: Option<&Leaf>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(wva_metrics_server::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some(leaf) => {
            use rustls::pki_types::pem::PemObject;
            let key =
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder
                .with_client_auth_cert(pem_certs(&leaf.cert_pem), key)
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

/// A TLS connection to the external scaler that has finished its handshake and sends nothing yet.
pub async fn scaler_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Leaf>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(scaler_tls_config(ca_pem, identity)))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}
