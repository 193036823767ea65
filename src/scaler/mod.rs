//! KEDA's external scaler (`externalscaler.proto`, gRPC over TLS on its own port): a ScaledObject with an
//! `external` or `external-push` trigger pointing here gets its variant's desired replicas from the same
//! engine, number and reasons as the HPA path (`provider::MetricsProvider`), so KEDA can keep
//! `v1beta1.external.metrics.k8s.io` for itself.
//!
//! Which variant: the trigger metadata's `variantName` (and optional `namespace`, default the
//! ScaledObject's), else the ScaledObject's own name (an annotated ScaledObject is itself a variant).
//! `GetMetricSpec` asks for one metric with target 1, so KEDA's HPA uses `AverageValue: 1` = desired
//! replicas; `IsActive` is desired > 0. An unknown variant is `NOT_FOUND`, missing data `UNAVAILABLE` with
//! the HPA path's 503 message: never a number that was not computed, and never "inactive" because of an
//! error.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};

use crate::provider::selector::Selector;
use crate::provider::{MetricsProvider, ProviderError};
use crate::tls::{ReloadingCert, TlsError};

/// The generated messages and service of `proto/externalscaler.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The metric KEDA's HPA is given (KEDA prefixes it with `s<index>-` and strips that before asking).
pub const METRIC_NAME: &str = "wva_desired_replicas";
/// Trigger metadata naming the variant; absent: the ScaledObject's own name.
pub const VARIANT_KEY: &str = "variantName";
/// Trigger metadata naming the variant's namespace; absent: the ScaledObject's.
pub const NAMESPACE_KEY: &str = "namespace";
/// How often an `external-push` stream re-evaluates activity (a change is pushed within this).
pub const PUSH_INTERVAL: Duration = Duration::from_millis(500);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scaler answers from.
#[derive(Clone)]
pub struct Scaler {
    provider: Arc<dyn MetricsProvider>,
    push_interval: Duration,
}

impl Scaler {
    pub fn new(provider: Arc<dyn MetricsProvider>, push_interval: Duration) -> Self {
        Scaler {
            provider,
            push_interval,
        }
    }

    /// The variant's desired replicas, or the gRPC status that says why there is none.
    fn desired(&self, r: &ScaledObjectRef) -> Result<i64, Status> {
        let (namespace, variant) = variant_of(r)?;
        let selector = Selector::parse(&format!("variant_name={variant}"))
            .map_err(|e| Status::invalid_argument(format!("variant name {variant:?}: {e}")))?;
        match self
            .provider
            .external_metric(&namespace, METRIC_NAME, &selector)
        {
            Ok(items) => match items.as_slice() {
                [one] => Ok(one.value_milli.div_euclid(1000)),
                [] => Err(not_found(r, &namespace, &variant)),
                several => Err(Status::failed_precondition(format!(
                    "{} variants named {variant} in namespace {namespace} (declared by several objects); name one with a unique name",
                    several.len()
                ))),
            },
            Err(ProviderError::NoMatch { .. }) => Err(not_found(r, &namespace, &variant)),
            Err(ProviderError::Unavailable(why)) => Err(Status::unavailable(why)),
            Err(e @ ProviderError::UnknownMetric { .. }) => Err(Status::internal(e.to_string())),
        }
    }
}

fn not_found(r: &ScaledObjectRef, namespace: &str, variant: &str) -> Status {
    let from = if r.scaler_metadata.contains_key(VARIANT_KEY) {
        format!("the trigger's {VARIANT_KEY}")
    } else {
        format!("the ScaledObject's own name (no {VARIANT_KEY} in the trigger metadata)")
    };
    Status::not_found(format!(
        "no variant {variant} in namespace {namespace} (from {from}, for ScaledObject {}/{}): \
         is there a VariantAutoscaling or an annotated HPA/ScaledObject of that name?",
        r.namespace, r.name
    ))
}

/// (namespace, variant) a ScaledObject means.
fn variant_of(r: &ScaledObjectRef) -> Result<(String, String), Status> {
    let pick = |key: &str, fallback: &str| {
        r.scaler_metadata
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .unwrap_or(fallback)
            .to_string()
    };
    let namespace = pick(NAMESPACE_KEY, &r.namespace);
    let variant = pick(VARIANT_KEY, &r.name);
    for (what, value) in [("namespace", &namespace), ("variant name", &variant)] {
        if !is_object_name(value) {
            return Err(Status::invalid_argument(format!(
                "{what} {value:?} is not a Kubernetes object name (set {VARIANT_KEY} / {NAMESPACE_KEY} in the trigger metadata)"
            )));
        }
    }
    Ok((namespace, variant))
}

/// A DNS-1123 subdomain: what object names and namespaces are.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn metric_spec() -> GetMetricSpecResponse {
    GetMetricSpecResponse {
        metric_specs: vec![MetricSpec {
            metric_name: METRIC_NAME.into(),
            target_size: 1,
            target_size_float: 1.0,
        }],
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let desired = self.desired(request.get_ref())?;
        Ok(Response::new(IsActiveResponse {
            result: desired > 0,
        }))
    }

    type StreamIsActiveStream = ResponseStream<IsActiveResponse>;

    /// Sends the activity at once, then every change of it (checked every [`PUSH_INTERVAL`]). While the
    /// answer is unavailable nothing is sent (an error is not "inactive"); an unknown variant ends the
    /// stream with `NOT_FOUND`.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let r = request.into_inner();
        let scaler = self.clone();
        scaler.desired(&r)?;
        let stream = futures::stream::unfold(
            (scaler, r, None::<bool>, false),
            |(scaler, r, last, ended)| async move {
                if ended {
                    return None;
                }
                let mut first = last.is_none();
                loop {
                    if !first {
                        tokio::time::sleep(scaler.push_interval).await;
                    }
                    first = false;
                    match scaler.desired(&r) {
                        Ok(d) if last != Some(d > 0) => {
                            let active = d > 0;
                            return Some((
                                Ok(IsActiveResponse { result: active }),
                                (scaler, r, Some(active), false),
                            ));
                        }
                        Ok(_) => {}
                        Err(s) if s.code() == tonic::Code::Unavailable => {
                            tracing::debug!(scaled_object = %format!("{}/{}", r.namespace, r.name), reason = %s.message(), "activity unknown; nothing pushed");
                        }
                        Err(s) => return Some((Err(s), (scaler, r, last, true))),
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        variant_of(request.get_ref())?;
        Ok(Response::new(metric_spec()))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request
            .into_inner()
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is missing"))?;
        let desired = self.desired(&r)?;
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: METRIC_NAME.into(),
                metric_value: desired,
                metric_value_float: desired as f64,
            }],
        }))
    }

    type StreamMetricSpecStream = ResponseStream<GetMetricSpecResponse>;

    /// The spec never changes: sent once, and the stream stays open until KEDA closes it.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        variant_of(request.get_ref())?;
        let once = futures::stream::once(async { Ok(metric_spec()) });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            once,
            futures::stream::pending(),
        ))))
    }
}

/// How clients of the scaler port are authenticated.
pub enum ClientAuth {
    /// A client certificate that chains to this CA bundle (KEDA's TriggerAuthentication `tlsClientCert`).
    Required(RootCertStore),
    /// No client certificate (standalone, or `--external-scaler-allow-unauthenticated`).
    None,
}

/// The scaler port's TLS: our serving certificate, HTTP/2 only, and the client authentication asked for.
pub fn tls_config(cert: Arc<ReloadingCert>, auth: ClientAuth) -> Result<ServerConfig, TlsError> {
    let provider = crate::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = match auth {
        ClientAuth::Required(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(format!("the scaler's client CA: {e}")))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(cert)
        }
        ClientAuth::None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A handshaken TLS connection, as tonic's server takes it.
struct TlsIo(tokio_rustls::server::TlsStream<TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves the scaler on `listener` until `shutdown` resolves. Handshakes run concurrently, each bounded;
/// a failed one (no or wrong client certificate) is logged and dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    scaler: Scaler,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<TlsIo>(64);
    let accept = async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "external scaler: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // gRPC answers in several small writes (headers, data, trailers): without this, Nagle holds
            // the last one for the client's delayed ACK, about 40 ms per call.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "external scaler: TCP_NODELAY not set");
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(TlsIo(tls)).await;
                    }
                    Ok(Err(e)) => handshake_failed(peer, &e.to_string()),
                    Err(_) => handshake_failed(peer, "timed out"),
                }
            });
        }
    };
    let incoming = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|io| (Ok::<_, std::io::Error>(io), rx))
    });
    let server = tonic::transport::Server::builder()
        .add_service(ExternalScalerServer::new(scaler))
        .serve_with_incoming_shutdown(incoming, shutdown);
    tokio::select! {
        r = server => r,
        () = accept => Ok(()),
    }
}

fn handshake_failed(peer: SocketAddr, why: &str) {
    tracing::warn!(%peer, reason = why, "external scaler: TLS handshake refused (KEDA's TriggerAuthentication needs caCert, tlsClientCert and tlsClientKey signed by --external-scaler-client-ca-file)");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, meta: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: name.into(),
            namespace: "llm".into(),
            scaler_metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_variant_comes_from_metadata_then_the_scaled_object() {
        assert_eq!(
            variant_of(&r("so", &[])).unwrap(),
            ("llm".into(), "so".into())
        );
        assert_eq!(
            variant_of(&r(
                "so",
                &[("variantName", "qwen-l40s"), ("namespace", "prod")]
            ))
            .unwrap(),
            ("prod".into(), "qwen-l40s".into())
        );
        let bad = variant_of(&r("so", &[("variantName", "a,b")])).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(bad.message().contains("\"a,b\""), "{}", bad.message());
    }
}
