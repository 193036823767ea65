//! The HTTPS front door: HTTP/1.1 and HTTP/2 over the connections [`crate::conn`] accepts (its limit,
//! timeouts and graceful shutdown); routing and encoding live in [`routes`].
//!
//! The protocol comes from ALPN, never from sniffing bytes: `h2` gets HTTP/2, anything else HTTP/1.1,
//! so an HTTP/2 preface on a connection that negotiated `http/1.1` is a malformed HTTP/1 request.
//! A connection counts as busy only while a request is being answered.

pub mod discovery;
pub mod openapi;
pub mod reply;
pub mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::PeerCertificates;
use crate::conn::{self, Conn, Limits, Port};
use routes::AppState;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A client that has not finished the TLS handshake by then is dropped (slowloris).
    pub handshake_timeout: Duration,
    /// Bounds HTTP/1 header reads once a request has begun.
    pub header_read_timeout: Duration,
    /// A connection that has not started a request this long after its handshake is closed.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// HTTP/2 streams per connection; the aggregator needs a handful, more is memory an attacker holds.
    pub max_concurrent_streams: u32,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// kube-apiserver's aggregator multiplexes HPA requests over a few connections; the HPA controller runs
/// 5 syncs at once by default. Go's client opens another connection when a server's limit is reached.
pub const MAX_CONCURRENT_STREAMS: u32 = 32;

impl ServeOptions {
    fn limits(&self) -> Limits {
        Limits {
            handshake_timeout: self.handshake_timeout,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// Serves until `shutdown` resolves, then stops accepting and waits (up to the grace period) for
/// in-flight requests to finish. HTTP/2 connections get a GOAWAY, HTTP/1 ones close after their response.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<AppState>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let port = Port {
        name: "HTTPS",
        limits: opts.limits(),
        metrics: state.metrics.https_port.clone(),
        handshake_hint: None,
    };
    let opts = Arc::new(opts);
    conn::serve(
        listener,
        TlsAcceptor::from(tls),
        port,
        shutdown,
        move |tls, conn| serve_connection(tls, conn, state.clone(), opts.clone()),
    )
    .await;
}

/// One handshaken connection: HTTP/2 when ALPN chose `h2`, HTTP/1.1 otherwise.
async fn serve_connection(
    tls: TlsStream<TcpStream>,
    conn: Conn,
    state: Arc<AppState>,
    opts: Arc<ServeOptions>,
) {
    let (_, session) = tls.get_ref();
    let h2 = session.alpn_protocol() == Some(b"h2");
    let peer = PeerCertificates::new(
        session
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
    );
    let requests = conn.requests();
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        let in_flight = requests.start();
        req.extensions_mut().insert(peer.clone());
        async move {
            let resp = routes::handle(state, req.map(|_| ())).await;
            drop(in_flight);
            Ok::<_, Infallible>(resp)
        }
    });
    let io = TokioIo::new(tls);
    if h2 {
        let c = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(opts.max_concurrent_streams)
            .serve_connection(io, svc);
        conn.drive(c, http2::Connection::graceful_shutdown).await;
    } else {
        let c = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            .serve_connection(io, svc);
        conn.drive(c, http1::Connection::graceful_shutdown).await;
    }
}
