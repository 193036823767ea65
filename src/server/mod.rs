//! The HTTPS front door: accept loop with TLS, a connection limit that idle connections cannot hold,
//! first-request and idle timeouts, and graceful shutdown; routing and encoding live in [`routes`].
//!
//! The protocol comes from ALPN, never from sniffing bytes: `h2` gets HTTP/2, anything else HTTP/1.1,
//! so an HTTP/2 preface on a connection that negotiated `http/1.1` is a malformed HTTP/1 request.
//! A connection counts as busy only while a request is being answered; a connection that has not
//! started a request within `first_request_timeout` of its handshake, or has been idle for
//! `idle_timeout` (HTTP/2 PINGs do not count), is closed gracefully. When every slot is taken, the
//! connection idle the longest is closed to make room, so silent connections cannot lock clients out.

pub mod discovery;
pub mod openapi;
pub mod reply;
pub mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::PeerCertificates;
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
/// How long an evicted idle connection gets to close before the new one is refused after all.
const EVICTION_WAIT: Duration = Duration::from_millis(200);
/// How long a connection closed for being idle gets to finish its graceful close.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One connection's activity, as the limit and the idle timer see it.
struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds since `epoch` when the last request ended (0: none yet).
    last_done_ms: AtomicU64,
    evicted: AtomicBool,
    close: Notify,
    /// Poked when a request ends, so the idle timer is re-armed from then.
    activity: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
            activity: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When this connection becomes closable for idleness, if no request is in flight.
    fn idle_deadline(&self, opts: &ServeOptions) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        let limit = if self.requests.load(Ordering::Acquire) == 0 {
            opts.first_request_timeout
        } else {
            opts.idle_timeout
        };
        Some(self.epoch + since + limit)
    }
}

/// Counts a request as in flight until its response has been produced.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn start(state: &Arc<ConnState>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.activity.notify_one();
    }
}

/// Every open connection, so that a full server can close the one idle the longest.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Connections {
    fn add(&self) -> (u64, Arc<ConnState>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState::new());
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, state.clone());
        (id, state)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }

    /// Asks the connection with no request in flight that has been idle the longest to close.
    fn evict_idlest(&self) -> bool {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let victim = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .min_by_key(|c| {
                c.epoch + Duration::from_millis(c.last_done_ms.load(Ordering::Acquire))
            });
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Why a connection ended early, for `wva_metrics_server_connections_closed_total{reason}`.
#[derive(Clone, Copy)]
enum Closed {
    FirstRequestTimeout,
    Idle,
    Evicted,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::FirstRequestTimeout => "first-request-timeout",
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
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
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(opts.max_connections));
    let connections = Arc::new(Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let opts = Arc::new(opts);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if connections.evict_idlest() => {
                state.metrics.connection_closed(Closed::Evicted.label());
                tokio::time::timeout(EVICTION_WAIT, limit.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            state.metrics.connections_rejected.inc();
            tracing::warn!(%remote, max = opts.max_connections, "connection limit reached and every connection is busy; closing the new one");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (id, conn_state) = connections.add();
        let task = Connection {
            acceptor: acceptor.clone(),
            state: state.clone(),
            opts: opts.clone(),
            conn: conn_state,
            stop: stop_rx.clone(),
            remote,
        };
        let connections = connections.clone();
        tokio::spawn(async move {
            let _permit = permit;
            task.run(tcp).await;
            connections.remove(id);
        });
    }
    drop(listener);
    tracing::info!(grace = ?opts.shutdown_grace, "shutting down: no longer accepting, draining in-flight requests");
    let _ = stop_tx.send(true);
    let all = u32::try_from(opts.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(opts.shutdown_grace, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// One accepted TCP connection, from the TLS handshake to its close.
struct Connection {
    acceptor: TlsAcceptor,
    state: Arc<AppState>,
    opts: Arc<ServeOptions>,
    conn: Arc<ConnState>,
    stop: watch::Receiver<bool>,
    remote: std::net::SocketAddr,
}

impl Connection {
    async fn run(self, tcp: tokio::net::TcpStream) {
        let remote = self.remote;
        let handshake =
            tokio::time::timeout(self.opts.handshake_timeout, self.acceptor.accept(tcp));
        let tls = tokio::select! {
            done = handshake => match done {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    self.state.metrics.tls_handshake_failures.inc();
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    self.state.metrics.tls_handshake_failures.inc();
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            },
            () = self.conn.close.notified() => return,
        };
        let (_, session) = tls.get_ref();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let peer = PeerCertificates::new(
            session
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
        );
        let (state, conn) = (self.state.clone(), self.conn.clone());
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let state = state.clone();
            let in_flight = InFlight::start(&conn);
            req.extensions_mut().insert(peer.clone());
            async move {
                let resp = routes::handle(state, req.map(Body::new)).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        });
        let io = TokioIo::new(tls);
        if h2 {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .max_concurrent_streams(self.opts.max_concurrent_streams)
                .serve_connection(io, svc);
            self.drive(conn, http2::Connection::graceful_shutdown).await;
        } else {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(self.opts.header_read_timeout)
                .serve_connection(io, svc);
            self.drive(conn, http1::Connection::graceful_shutdown).await;
        }
    }

    /// Runs the connection until it ends, closing it gracefully when it idles out, is evicted, or the
    /// server shuts down.
    async fn drive<C>(mut self, conn: C, graceful: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        tokio::pin!(conn);
        let remote = self.remote;
        let close_within = loop {
            let deadline = self.conn.idle_deadline(&self.opts);
            // While a request is in flight, look again after the idle timeout (or when it ends).
            let wake = deadline.unwrap_or_else(|| Instant::now() + self.opts.idle_timeout);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                // Evicted to make room: it is idle, so it is closed at once and frees its slot now.
                () = self.conn.close.notified() => return,
                () = self.conn.activity.notified() => {}
                _ = self.stop.wait_for(|s| *s) => break self.opts.shutdown_grace,
                () = tokio::time::sleep_until(wake.into()) => {
                    if deadline.is_some() && self.conn.idle_deadline(&self.opts).is_some_and(|d| d <= Instant::now()) {
                        if self.conn.requests.load(Ordering::Acquire) == 0 {
                            // Never asked for anything: nothing to close gracefully.
                            self.state.metrics.connection_closed(Closed::FirstRequestTimeout.label());
                            tracing::debug!(%remote, "closing a connection that sent no request");
                            return;
                        }
                        self.state.metrics.connection_closed(Closed::Idle.label());
                        tracing::debug!(%remote, "closing an idle connection");
                        break IDLE_CLOSE_GRACE;
                    }
                }
            }
        };
        graceful(conn.as_mut());
        if tokio::time::timeout(close_within, conn).await.is_err() {
            tracing::debug!(%remote, "connection did not close in time; dropping it");
        }
    }
}
