//! Accepting TLS connections on a listening port, for the HTTPS port and the external scaler's gRPC port
//! alike: a connection limit that idle connections cannot hold, handshake, first-request and idle
//! timeouts, graceful shutdown, and counters by reason. What a connection speaks once its handshake is
//! done is the caller's (`server` serves HTTP/1.1 and HTTP/2, `scaler` gRPC over HTTP/2).
//!
//! A connection counts as busy only while a request is in flight ([`Conn::requests`]). One that has not
//! finished its TLS handshake within `handshake_timeout`, has not started a request within
//! `first_request_timeout` of its handshake, or has had nothing in flight for `idle_timeout` (HTTP/2
//! PINGs do not count) is closed. When every slot is taken, the connection idle the longest (one still in
//! its handshake counts as idle since it was accepted) is closed to make room, so silent connections
//! cannot lock clients out; each port has its own limit, so one port's connections cannot take another's.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::telemetry::{LogLimiter, PortMetrics};

/// One port's connection limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A client that has not finished the TLS handshake by then is dropped (slowloris).
    pub handshake_timeout: Duration,
    /// A connection that has not started a request this long after its handshake is closed.
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// How long an evicted idle connection gets to close before the new one is refused after all.
const EVICTION_WAIT: Duration = Duration::from_millis(200);
/// How long a connection closed for being idle gets to finish its graceful close.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A warning about failed handshakes or a full port is logged at most this often (with a count).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a connection ended early, for `…connections_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    HandshakeTimeout,
    FirstRequestTimeout,
    Idle,
    Evicted,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::HandshakeTimeout => "handshake-timeout",
            Closed::FirstRequestTimeout => "first-request-timeout",
            Closed::Idle => "idle",
            Closed::Evicted => "evicted",
        }
    }
}

/// One connection's activity, as the limit and the idle timer see it.
struct ConnState {
    epoch: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds since `epoch` when the last request ended (0: none yet).
    last_done_ms: AtomicU64,
    evicted: AtomicBool,
    close: Notify,
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
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The earliest moment this connection could become closable, whatever requests come meanwhile: a
    /// request that starts later ends later, and then counts `idle_timeout` from its end.
    fn earliest_close(&self, limits: &Limits) -> Instant {
        // Read before the deadline: a count above zero stays so, a zero one may be stale by then.
        let asked = self.requests.load(Ordering::Acquire) > 0;
        let soonest_after_a_request = Instant::now() + limits.idle_timeout;
        match self.idle_deadline(limits) {
            Some(d) if asked => d,
            // Before the first request the first-request timeout runs, but a request may still come
            // and end under a shorter idle timeout.
            Some(d) => d.min(soonest_after_a_request),
            None => soonest_after_a_request,
        }
    }

    /// When this connection becomes closable for idleness, if no request is in flight.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        let limit = if self.requests.load(Ordering::Acquire) == 0 {
            limits.first_request_timeout
        } else {
            limits.idle_timeout
        };
        Some(self.epoch + since + limit)
    }
}

/// Counts a request as in flight until it is dropped: when the response is produced (HTTP), or when a
/// streamed response body ends (gRPC streams stay in flight for their whole life).
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every open connection, so that a full port can close the one idle the longest.
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

/// A port: its name in logs, its limits, its counters, and what is logged when a handshake fails.
pub struct Port {
    /// `HTTPS` or `external scaler`, in log lines.
    pub name: &'static str,
    pub limits: Limits,
    pub metrics: PortMetrics,
    /// A failed handshake is a warning with this hint (rate-limited), or only a debug line when `None`.
    pub handshake_hint: Option<&'static str>,
}

/// A handshaken connection, handed to the port's protocol: it marks requests in flight and is driven to
/// its end with [`Conn::drive`].
pub struct Conn {
    state: Arc<ConnState>,
    port: Arc<PortState>,
    stop: watch::Receiver<bool>,
    pub remote: SocketAddr,
}

struct PortState {
    port: Port,
    log: LogLimiter,
}

impl Conn {
    /// Marks requests in flight on this connection ([`RequestCounter::start`]); it outlives `self`, for
    /// the protocol's per-request service.
    pub fn requests(&self) -> RequestCounter {
        RequestCounter(self.state.clone())
    }

    /// Runs the connection until it ends, closing it gracefully (`graceful`: HTTP/2 GOAWAY, HTTP/1
    /// close after the response) when it idles out or the server shuts down, and at once when evicted.
    pub async fn drive<C, E>(mut self, conn: C, graceful: impl Fn(Pin<&mut C>))
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        tokio::pin!(conn);
        let remote = self.remote;
        let limits = &self.port.port.limits;
        // The timer is armed for the earliest moment the connection could be closable, and looks again
        // when it fires. Requests only move that moment later, so they never wake this task or re-arm a
        // timer (that was a wake-up and a timer registration per request).
        let close_within = loop {
            let wake = self.state.earliest_close(limits);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(port = self.port.port.name, %remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                // Evicted to make room: it is idle, so it is closed at once and frees its slot now.
                () = self.state.close.notified() => return,
                _ = self.stop.wait_for(|s| *s) => break limits.shutdown_grace,
                () = tokio::time::sleep_until(wake.into()) => {
                    if self.state.idle_deadline(limits).is_some_and(|d| d <= Instant::now()) {
                        if self.state.requests.load(Ordering::Acquire) == 0 {
                            // Never asked for anything: nothing to close gracefully.
                            self.port.port.metrics.closed(Closed::FirstRequestTimeout.label());
                            tracing::debug!(port = self.port.port.name, %remote, "closing a connection that sent no request");
                            return;
                        }
                        self.port.port.metrics.closed(Closed::Idle.label());
                        tracing::debug!(port = self.port.port.name, %remote, "closing an idle connection");
                        break IDLE_CLOSE_GRACE;
                    }
                }
            }
        };
        graceful(conn.as_mut());
        if tokio::time::timeout(close_within, conn).await.is_err() {
            tracing::debug!(port = self.port.port.name, %remote, "connection did not close in time; dropping it");
        }
    }
}

/// Makes [`InFlight`] guards for one connection; cheap to clone into a per-request service.
#[derive(Clone)]
pub struct RequestCounter(Arc<ConnState>);

impl RequestCounter {
    pub fn start(&self) -> InFlight {
        self.0.requests.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }
}

/// Accepts on `listener` until `shutdown` resolves, handshakes each connection with `acceptor` (bounded,
/// evictable) and hands it to `serve`; then stops accepting and waits (up to the grace period) for the
/// connections to finish.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    port: Port,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, Conn) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(port.limits.max_connections));
    let connections = Arc::new(Connections::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let port = Arc::new(PortState {
        port,
        log: LogLimiter::new(WARN_EVERY),
    });
    let (name, max) = (port.port.name, port.port.limits.max_connections);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    if let Some(held) = port.log.allow("accept") {
                        tracing::warn!(port = name, error = %e, repeats_held_back = held, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if connections.evict_idlest() => {
                port.port.metrics.closed(Closed::Evicted.label());
                tokio::time::timeout(EVICTION_WAIT, limit.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            port.port.metrics.rejected.inc();
            if let Some(held) = port.log.allow("full") {
                tracing::warn!(port = name, %remote, max, repeats_held_back = held, "connection limit reached and every connection is busy; closing the new one");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (id, state) = connections.add();
        let (connections, acceptor, serve) = (connections.clone(), acceptor.clone(), serve.clone());
        let conn = Conn {
            state,
            port: port.clone(),
            stop: stop_rx.clone(),
            remote,
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(tls) = handshake(&acceptor, tcp, &conn).await {
                serve(tls, conn).await;
            }
            connections.remove(id);
        });
    }
    drop(listener);
    tracing::info!(port = name, grace = ?port.port.limits.shutdown_grace, "shutting down: no longer accepting, draining in-flight requests");
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(port.port.limits.shutdown_grace, limit.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            port = name,
            "grace period over; closing remaining connections"
        );
    }
}

/// The TLS handshake, bounded by the handshake timeout, given up when the connection is evicted.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    conn: &Conn,
) -> Option<TlsStream<TcpStream>> {
    let port = &conn.port;
    let remote = conn.remote;
    let failed = |why: &str| {
        port.port.metrics.handshake_failures.inc();
        match port.port.handshake_hint {
            Some(hint) => {
                if let Some(held) = port.log.allow("handshake") {
                    tracing::warn!(%remote, reason = why, repeats_held_back = held, "{}: TLS handshake refused ({hint})", port.port.name);
                }
            }
            None => {
                tracing::debug!(port = port.port.name, %remote, reason = why, "TLS handshake failed")
            }
        }
    };
    let accept = tokio::time::timeout(port.port.limits.handshake_timeout, acceptor.accept(tcp));
    tokio::select! {
        done = accept => match done {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                failed(&crate::error::cap(&e.to_string(), crate::error::MAX_ECHO_BYTES));
                None
            }
            Err(_) => {
                port.port.metrics.closed(Closed::HandshakeTimeout.label());
                failed("timed out");
                None
            }
        },
        () = conn.state.close.notified() => None,
    }
}
