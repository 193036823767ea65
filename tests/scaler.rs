//! KEDA's external scaler over real TLS with real client certificates: the answers (spec, metrics,
//! activity), NOT_FOUND and UNAVAILABLE, the push stream reacting to a change, and the refusals (a client
//! certificate from another CA, none at all).

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use support::{install_provider, Ca};
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::{MetricItem, MetricsProvider, ProviderError};
use wva_metrics_server::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use wva_metrics_server::scaler::{self, ClientAuth, Scaler};
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
}

async fn start() -> Running {
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
    let scaler = Scaler::new(
        Arc::new(Provider(desired.clone())),
        Duration::from_millis(50),
    );
    tokio::spawn(scaler::serve(
        listener,
        config,
        scaler,
        futures::future::pending(),
    ));
    Running { addr, ca, desired }
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
    let keda = s.ca.client("keda-operator", &[]);
    let mut c = support::scaler_client(s.addr, &s.ca.pem, Some(&keda))
        .await
        .unwrap();
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

#[tokio::test]
async fn the_push_stream_sends_each_change_of_activity() {
    let s = start().await;
    let keda = s.ca.client("keda-operator", &[]);
    let mut c = support::scaler_client(s.addr, &s.ca.pem, Some(&keda))
        .await
        .unwrap();
    let mut stream = c
        .stream_is_active(so("qwen", &[]))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut stream).await.unwrap(), "active at 3 replicas");
    s.desired.store(0, Ordering::SeqCst);
    assert!(!next(&mut stream).await.unwrap(), "inactive at 0");
    s.desired.store(1, Ordering::SeqCst);
    assert!(next(&mut stream).await.unwrap(), "active again");
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
