//! KEDA's external scaler over real TLS with real client certificates: the answers (spec, metrics,
//! activity), NOT_FOUND and UNAVAILABLE, the push stream reacting to a change, and the refusals (a client
//! certificate from another CA, none at all); then hostile clients: huge messages and names get small
//! errors, silent connections are closed and cannot lock KEDA out, a push stream is never "idle".

use crate::support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::{install_provider, Ca};
use wva_metrics_server::changes::Changes;
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::{MetricItem, MetricsProvider, ProviderError};
use wva_metrics_server::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use wva_metrics_server::scaler::{self, ClientAuth, Scaler};
use wva_metrics_server::telemetry::PortMetrics;
use wva_metrics_server::tls::ReloadingCert;

/// `qwen` answers the shared value; `stale` is unavailable; anything else does not exist.
struct Provider(Arc<AtomicI64>);

impl MetricsProvider for Provider {
    fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError> {
        assert_eq!(metric, "wva_desired_replicas");
        let name = selector.to_string();
        match (namespace, name.as_str()) {
            ("llm", "variant_name=qwen") => Ok(vec![MetricItem {
                labels: BTreeMap::new(),
                value_milli: self.0.load(Ordering::SeqCst) * 1000,
            }]),
            ("llm", "variant_name=stale") => Err(ProviderError::Unavailable(
                "no fresh vLLM metrics for model \"m\" in namespace llm for longer than 120s"
                    .into(),
            )),
            _ => Err(ProviderError::NoMatch {
                metric: metric.into(),
                namespace: namespace.into(),
                selector: name,
            }),
        }
    }
}

struct Running {
    addr: std::net::SocketAddr,
    ca: Ca,
    desired: Arc<AtomicI64>,
    metrics: prometheus_client::registry::Registry,
    changes: Changes,
}

async fn start() -> Running {
    start_with(scaler::default_limits()).await
}

async fn start_with(limits: scaler::Limits) -> Running {
    install_provider();
    let ca = Ca::new("wva-test-ca");
    let server = ca.server(&["localhost"]);
    let dir = std::env::temp_dir().join(format!(
        "wva-scaler-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &server.key_pem).unwrap();
    let provider = wva_metrics_server::tls::provider();
    let cert = ReloadingCert::load(&dir.join("tls.crt"), &dir.join("tls.key"), &provider).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in support::pem_certs(&ca.pem) {
        roots.add(c).unwrap();
    }
    let config = Arc::new(scaler::tls_config(cert, ClientAuth::Required(roots)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let desired = Arc::new(AtomicI64::new(3));
    // Pushes wake on `changes`; the recheck period is an hour, so a push in a test is a woken one.
    let changes = Changes::new();
    let scaler = Scaler::new(
        Arc::new(Provider(desired.clone())),
        changes.clone(),
        Duration::from_secs(3600),
    );
    let mut metrics = prometheus_client::registry::Registry::default();
    let port_metrics = PortMetrics::register(&mut metrics, "external_scaler_", "the scaler port");
    tokio::spawn(scaler::serve(
        listener,
        config,
        scaler,
        limits,
        port_metrics,
        futures::future::pending(),
    ));
    Running {
        addr,
        ca,
        desired,
        metrics,
        changes,
    }
}

fn so(name: &str, meta: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.into(),
        namespace: "llm".into(),
        scaler_metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn answers_spec_metrics_and_activity_with_a_client_certificate() {
    let s = start().await;
    let mut c = keda_client(&s).await;
    let target = so("keda-so", &[("variantName", "qwen")]);

    let spec = c
        .get_metric_spec(target.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(
        (
            spec.metric_specs[0].metric_name.as_str(),
            spec.metric_specs[0].target_size
        ),
        ("wva_desired_replicas", 1)
    );
    let metrics = c
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(target.clone()),
            metric_name: "wva_desired_replicas".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metrics.metric_values[0].metric_value, 3);
    assert!(
        c.is_active(target.clone())
            .await
            .unwrap()
            .into_inner()
            .result
    );
    s.desired.store(0, Ordering::SeqCst);
    assert!(!c.is_active(target).await.unwrap().into_inner().result);

    // An annotated ScaledObject needs no metadata: its own name is the variant.
    assert!(c.is_active(so("qwen", &[])).await.is_ok());

    let missing = c
        .is_active(so("keda-so", &[("variantName", "nope")]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(
        missing
            .message()
            .contains("no variant nope in namespace llm"),
        "{}",
        missing.message()
    );
    let stale = c
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so("stale", &[])),
            metric_name: "wva_desired_replicas".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Unavailable);
    assert!(
        stale.message().contains("no fresh vLLM metrics"),
        "{}",
        stale.message()
    );
}

async fn next(
    stream: &mut tonic::Streaming<wva_metrics_server::scaler::proto::IsActiveResponse>,
) -> Result<bool, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a push within 10 s")
        .expect("the stream is open")
        .map(|r| r.result)
}

/// A client dialing as KEDA with its TriggerAuthentication: the server's CA and a client certificate.
async fn keda_client(
    s: &Running,
) -> wva_metrics_server::scaler::proto::external_scaler_client::ExternalScalerClient<
    tonic::transport::Channel,
> {
    let keda = s.ca.client("keda-operator", &[]);
    support::scaler_client(s.addr, &s.ca.pem, Some(&keda))
        .await
        .unwrap()
}

/// KEDA's `external-push` stream for the variant `qwen`, with a client certificate.
async fn push_stream(
    s: &Running,
) -> tonic::Streaming<wva_metrics_server::scaler::proto::IsActiveResponse> {
    let mut c = keda_client(s).await;
    c.stream_is_active(so("qwen", &[]))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_push_stream_sends_each_change_of_activity() {
    let s = start().await;
    let mut stream = push_stream(&s).await;
    assert!(next(&mut stream).await.unwrap(), "active at 3 replicas");
    s.desired.store(0, Ordering::SeqCst);
    s.changes.notify();
    assert!(!next(&mut stream).await.unwrap(), "inactive at 0");
    // A change read while nothing notifies is not pushed (the next wake finds it).
    s.desired.store(1, Ordering::SeqCst);
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "pushed without a notification: {quiet:?}");
    s.changes.notify();
    assert!(
        next(&mut stream).await.unwrap(),
        "active again once a source has read"
    );
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_configured_ca_are_refused() {
    let s = start().await;
    let other = Ca::new("someone-else");
    let stranger = other.client("keda-operator", &[]);
    for identity in [Some(&stranger), None] {
        let refused = match support::scaler_client(s.addr, &s.ca.pem, identity).await {
            Err(_) => true,
            Ok(mut c) => c.is_active(so("qwen", &[])).await.is_err(),
        };
        assert!(
            refused,
            "identity {:?} was served",
            identity.map(|_| "other CA")
        );
    }
}

/// A counter of the port's registry, by its line's start (`closed{reason="…"}`, `rejected`, …).
fn port_count(registry: &prometheus_client::registry::Registry, line_start: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Issue 21 item 1: a 3.9 MB `ScaledObjectRef` is refused by its size alone, and caller input echoed in
/// an error (a 10 kB name) is cut: every error stays small, whatever the request.
#[tokio::test]
async fn huge_requests_get_small_errors() {
    let s = start().await;
    let mut c = keda_client(&s).await;
    let huge = "x".repeat(3_900_000);
    let refused = c
        .is_active(so("qwen", &[("padding", &huge)]))
        .await
        .unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);
    assert!(
        refused.message().len() < 1024,
        "{} bytes of error",
        refused.message().len()
    );
    // Under the message limit, echoed input is cut at 256 bytes.
    let long_name = "a".repeat(10_000);
    for request in [
        so(&long_name, &[]),
        so("keda-so", &[("variantName", &long_name)]),
        so(
            "keda-so",
            &[("variantName", "qwen"), ("namespace", &long_name)],
        ),
    ] {
        let e = c.get_metric_spec(request).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().len() < 1024,
            "{} bytes of error",
            e.message().len()
        );
        assert!(e.message().contains("(10000 bytes)"), "{}", e.message());
    }
    // The connection is still good for a normal request.
    assert!(
        c.is_active(so("qwen", &[]))
            .await
            .unwrap()
            .into_inner()
            .result
    );
}

/// Issue 21 item 2: connections that never start TLS, or finish it and send nothing, take every slot;
/// KEDA still gets answers (the idlest is closed to make room), and the silent ones are closed after the
/// handshake or first-request timeout, counted by reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_keda_out() {
    let limits = scaler::Limits {
        handshake_timeout: Duration::from_millis(600),
        first_request_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_secs(30),
        max_connections: 4,
        shutdown_grace: Duration::from_secs(1),
    };
    let s = start_with(limits).await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    }
    let keda = s.ca.client("keda-operator", &[]);
    let mut c = support::scaler_client(s.addr, &s.ca.pem, Some(&keda))
        .await
        .unwrap();
    assert!(
        c.is_active(so("qwen", &[]))
            .await
            .unwrap()
            .into_inner()
            .result
    );
    assert!(
        port_count(
            &s.metrics,
            "external_scaler_connections_closed_total{reason=\"evicted\"}"
        ) >= 1,
        "no eviction counted"
    );
    // Every silent connection is closed: evicted, or by the handshake timeout.
    for mut tcp in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
        )
        .await
        .expect("a silent connection was still open after 5 s");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    assert!(
        port_count(
            &s.metrics,
            "external_scaler_connections_closed_total{reason=\"handshake-timeout\"}"
        ) >= 1,
        "no handshake timeout counted"
    );
    // A connection that finishes its handshake and sends nothing is closed after the first-request timeout.
    let tls = support::scaler_tls(s.addr, &s.ca.pem, Some(&keda)).await;
    let mut tls = tls;
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // SETTINGS, GOAWAY
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a silent TLS connection stayed open");
    assert!(
        port_count(
            &s.metrics,
            "external_scaler_connections_closed_total{reason=\"first-request-timeout\"}"
        ) >= 1
    );
    // KEDA's client reconnects as needed and is still answered.
    assert!(
        c.is_active(so("qwen", &[]))
            .await
            .unwrap()
            .into_inner()
            .result
    );
}

/// A push stream is a request in flight for its whole life: its connection is never closed as idle.
#[tokio::test]
async fn a_push_stream_outlives_the_idle_timeout() {
    let mut limits = scaler::default_limits();
    limits.idle_timeout = Duration::from_millis(300);
    limits.first_request_timeout = Duration::from_millis(300);
    let s = start_with(limits).await;
    let mut stream = push_stream(&s).await;
    assert!(next(&mut stream).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.desired.store(0, Ordering::SeqCst);
    s.changes.notify();
    assert!(!next(&mut stream).await.unwrap(), "the stream still pushes");
    assert_eq!(
        port_count(
            &s.metrics,
            "external_scaler_connections_closed_total{reason=\"idle\"}"
        ),
        0
    );
}
