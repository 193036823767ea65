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
//! error. A trigger whose metadata names a `signal` is answered from an endpoint picker's signal instead
//! ([`signal`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

pub use crate::conn::Limits;
use crate::conn::{self, Conn, InFlight, Port};
use crate::error::{cap, Echo, MAX_ECHO_BYTES, MAX_STATUS_MESSAGE_BYTES};
use crate::provider::selector::Selector;
use crate::provider::{MetricsProvider, ProviderError};
use crate::telemetry::PortMetrics;
use crate::tls::{ReloadingCert, TlsError};

pub mod signal;

/// The generated messages and service of `proto/externalscaler.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

use crate::changes::Changes;
use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The metric KEDA's HPA is given (KEDA prefixes it with `s<index>-` and strips that before asking).
pub const METRIC_NAME: &str = crate::provider::metrics::SCALER_METRIC;
/// Trigger metadata naming the variant; absent: the ScaledObject's own name.
pub const VARIANT_KEY: &str = "variantName";
/// Trigger metadata naming the variant's namespace; absent: the ScaledObject's.
pub const NAMESPACE_KEY: &str = "namespace";
/// How often an `external-push` stream re-evaluates activity when nothing was read meanwhile (a
/// change of configuration, say); a picker read or a scrape wakes it at once.
pub const RECHECK: Duration = Duration::from_secs(5);
/// The least time between two evaluations of one stream, however often sources read: in a large
/// fleet some pod's scrape ends every few milliseconds, and each evaluation is a decision, so a stream
/// evaluates at most 4 times a second (it checked twice a second before it woke on reads).
pub const PUSH_GAP: Duration = Duration::from_millis(250);

/// What the scaler answers from.
#[derive(Clone)]
pub struct Scaler {
    provider: Arc<dyn MetricsProvider>,
    changes: Changes,
    recheck: Duration,
}

impl Scaler {
    /// A scaler over `provider`; push streams wake on `changes`, and at least every `recheck`.
    pub fn new(provider: Arc<dyn MetricsProvider>, changes: Changes, recheck: Duration) -> Self {
        Scaler {
            provider,
            changes,
            recheck,
        }
    }

    /// Whether the ScaledObject is active: its signal above the activation threshold, or its variant's
    /// desired replicas above 0.
    fn active(&self, r: &ScaledObjectRef) -> Result<bool, Status> {
        match signal::parse(&r.namespace, &r.scaler_metadata)? {
            Some(t) => Ok(t.active(t.value(&*self.provider)?)),
            None => Ok(self.desired(r)? > 0),
        }
    }

    /// The metric spec KEDA's HPA is given.
    fn spec(r: &ScaledObjectRef) -> Result<GetMetricSpecResponse, Status> {
        match signal::parse(&r.namespace, &r.scaler_metadata)? {
            Some(t) => Ok(t.spec()),
            None => variant_of(r).map(|_| metric_spec()),
        }
    }

    /// The variant's desired replicas, or the gRPC status that says why there is none.
    fn desired(&self, r: &ScaledObjectRef) -> Result<i64, Status> {
        let (namespace, variant) = variant_of(r)?;
        let selector = Selector::parse(&format!("variant_name={variant}")).map_err(|e| {
            Status::invalid_argument(format!(
                "variant name {:?}: {}",
                cap(&variant, MAX_ECHO_BYTES),
                Echo(&e.to_string())
            ))
        })?;
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
            Err(ProviderError::Unavailable(why)) => Err(Status::unavailable(cap(
                &why,
                MAX_STATUS_MESSAGE_BYTES,
            ))),
            // The scaler asks for the variants' metric only.
            Err(e @ (ProviderError::UnknownMetric { .. } | ProviderError::NoSeries { .. } | ProviderError::NotInPool { .. })) => Err(Status::internal(cap(
                &e.to_string(),
                MAX_STATUS_MESSAGE_BYTES,
            ))),
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
        Echo(&r.namespace),
        Echo(&r.name)
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
                "{what} {:?} is not a Kubernetes object name (set {VARIANT_KEY} / {NAMESPACE_KEY} in the trigger metadata)",
                cap(value, MAX_ECHO_BYTES)
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
        let result = self.active(request.get_ref())?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ResponseStream<IsActiveResponse>;

    /// Sends the activity at once, then every change of it: re-evaluated when a source has read
    /// something (a picker, a pod, the cluster), at most every [`PUSH_GAP`], and at least every
    /// [`RECHECK`]. While the answer is unavailable nothing is sent (an error is not "inactive"); an
    /// unknown variant ends the stream with `NOT_FOUND`.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let r = request.into_inner();
        let first = self.active(&r)?;
        let state = Push {
            rx: self.changes.subscribe(),
            scaler: self.clone(),
            r,
            last: Some(first),
            ended: false,
            evaluated: tokio::time::Instant::now(),
        };
        let once = futures::stream::once(async move { Ok(IsActiveResponse { result: first }) });
        let changes = futures::stream::unfold(state, Push::next);
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            once, changes,
        ))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Ok(Response::new(Self::spec(request.get_ref())?))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request
            .into_inner()
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is missing"))?;
        if let Some(t) = signal::parse(&r.namespace, &r.scaler_metadata)? {
            let value = t.value(&*self.provider)?;
            return Ok(Response::new(GetMetricsResponse {
                metric_values: vec![t.metric_value(value)],
            }));
        }
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

    /// The spec never changes: sent once (a signal trigger's with its threshold), and the stream stays
    /// open until KEDA closes it.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let spec = Self::spec(request.get_ref())?;
        let once = futures::stream::once(async { Ok(spec) });
        Ok(Response::new(Box::pin(futures::StreamExt::chain(
            once,
            futures::stream::pending(),
        ))))
    }
}

/// One `StreamIsActive` stream's state between pushes.
struct Push {
    rx: watch::Receiver<u64>,
    scaler: Scaler,
    r: ScaledObjectRef,
    last: Option<bool>,
    ended: bool,
    /// When the activity was last evaluated.
    evaluated: tokio::time::Instant,
}

impl Push {
    /// Waits for the next change of activity (or the error that ends the stream).
    async fn next(mut self) -> Option<(Result<IsActiveResponse, Status>, Push)> {
        if self.ended {
            return None;
        }
        loop {
            let woken = tokio::time::timeout(self.scaler.recheck, self.rx.changed()).await;
            if matches!(woken, Ok(Err(_))) {
                // Nothing will notify any more (shutting down): fall back to the recheck period.
                tokio::time::sleep(self.scaler.recheck).await;
            }
            // A change after a quiet spell is evaluated at once; a stream of them at most every gap.
            tokio::time::sleep_until(self.evaluated + PUSH_GAP).await;
            self.evaluated = tokio::time::Instant::now();
            match self.scaler.active(&self.r) {
                Ok(active) if self.last != Some(active) => {
                    self.last = Some(active);
                    return Some((Ok(IsActiveResponse { result: active }), self));
                }
                Ok(_) => {}
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    tracing::debug!(scaled_object = %format!("{}/{}", self.r.namespace, self.r.name), reason = %s.message(), "activity unknown; nothing pushed");
                }
                Err(s) => {
                    self.ended = true;
                    return Some((Err(s), self));
                }
            }
        }
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

/// The largest gRPC message read or written. A `ScaledObjectRef` is a name, a namespace and the trigger's
/// metadata: about 100 bytes, a few KB with unusual metadata. tonic's default (4 MiB) would let each
/// stream hold 40,000 times that.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Requests in flight on the port at once, over every connection (KEDA keeps one `StreamIsActive` per
/// `external-push` ScaledObject open on one connection, and polls the others). Beyond it a request is
/// answered `RESOURCE_EXHAUSTED` at once, before its body is read.
pub const MAX_IN_FLIGHT: usize = 1024;
/// HTTP/2 streams per connection: as many as the port's requests, so one KEDA can hold them all.
const MAX_STREAMS: u32 = 1024;
/// A request whose message has not arrived whole by then fails (a stalled body holds no slot for long).
const REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Flow-control windows: requests are tiny, so a client can never have much unread data buffered here.
const STREAM_WINDOW: u32 = 64 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// The scaler port's connection limits (KEDA's operator is one client with one connection per scaler
/// address; the limit is for everyone else).
pub fn default_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(10),
        first_request_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(90),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(5),
    }
}

/// The scaler's port as a supervised task: it serves until the process stops, and a restart serves again
/// on the same bound socket.
pub struct ScalerPort {
    pub listener: std::net::TcpListener,
    pub tls: Arc<ServerConfig>,
    pub scaler: Scaler,
    pub metrics: PortMetrics,
}

impl ScalerPort {
    pub async fn run(self: Arc<Self>) {
        match self.listener.try_clone().and_then(TcpListener::from_std) {
            Ok(listener) => {
                serve(
                    listener,
                    self.tls.clone(),
                    self.scaler.clone(),
                    default_limits(),
                    self.metrics.clone(),
                    futures::future::pending(),
                )
                .await;
            }
            Err(e) => tracing::error!(error = %e, "external scaler: the listener is unusable"),
        }
    }
}

/// Serves the scaler on `listener` until `shutdown` resolves, through [`crate::conn`]: the connection
/// limit with eviction of the idlest, handshake, first-request and idle timeouts, counted on
/// `metrics`. A failed handshake (no or wrong client certificate) is a rate-limited warning.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    scaler: Scaler,
    limits: Limits,
    metrics: PortMetrics,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let port = Port {
        name: "external scaler",
        limits,
        metrics,
        handshake_hint: Some("KEDA's TriggerAuthentication needs caCert, tlsClientCert and tlsClientKey signed by --external-scaler-client-ca-file"),
    };
    let service = ExternalScalerServer::new(scaler)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    conn::serve(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        port,
        shutdown,
        move |tls, conn| serve_connection(tls, conn, service.clone(), slots.clone()),
    )
    .await;
}

/// One connection: gRPC over HTTP/2. A request stays in flight until its response body ends, so a
/// connection holding a push stream is busy, never idle.
async fn serve_connection(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    conn: Conn,
    service: ExternalScalerServer<Scaler>,
    slots: Arc<Semaphore>,
) {
    let requests = conn.requests();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let (service, requests, slots) = (service.clone(), requests.clone(), slots.clone());
        async move {
            let Ok(slot) = slots.try_acquire_owned() else {
                let status = Status::resource_exhausted(format!(
                    "the external scaler has {MAX_IN_FLIGHT} requests in flight; try again"
                ));
                return Ok::<_, Infallible>(status.into_http().map(|b| Guarded {
                    inner: b,
                    _guards: None,
                }));
            };
            let in_flight = requests.start();
            let req = req.map(|b| Deadline::new(b, REQUEST_BODY_TIMEOUT));
            let resp = match tower::ServiceExt::oneshot(service, req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok(resp.map(|b| Guarded {
                inner: b,
                _guards: Some((in_flight, slot)),
            }))
        }
    });
    let c = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .serve_connection(TokioIo::new(tls), svc);
    conn.drive(c, http2::Connection::graceful_shutdown).await;
}

/// A response body that keeps its request in flight (and its slot taken) until it ends or is dropped.
struct Guarded<B> {
    inner: B,
    _guards: Option<(InFlight, OwnedSemaphorePermit)>,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that fails if it has not ended by its deadline.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, within: Duration) -> Self {
        Self {
            inner,
            sleep: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request message did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl Body for Deadline {
    type Data = <Incoming as Body>::Data;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TimedOut(REQUEST_BODY_TIMEOUT)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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
