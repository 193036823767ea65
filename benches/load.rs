//! A lean HTTPS load generator for the request-path benchmarks: raw hyper connections over rustls, no pool,
//! no redirects, no per-request allocation beyond the request itself, so that on a 2-core machine the client
//! takes as little as possible from the server under test. HTTP/1.1 runs one request at a time per
//! connection (as an HPA's client does); h2 multiplexes `streams` requests per connection.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    /// Client TLS settings (roots, client certificate); ALPN is set per protocol here.
    pub tls: rustls::ClientConfig,
    /// Headers sent on every request (e.g. the front-proxy `X-Remote-User`).
    pub headers: Vec<(String, String)>,
}

/// Load shape: `connections` connections, each carrying `streams` requests in flight (1 for HTTP/1.1).
#[derive(Clone, Copy)]
pub struct Shape {
    pub http2: bool,
    pub connections: usize,
    pub streams: usize,
    pub duration: Duration,
}

/// Latency quantiles (µs) and throughput of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub rps: f64,
    pub requests: usize,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(target: &Target, http2: bool) -> Sender {
    let mut tls = target.tls.clone();
    tls.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(target.server_name.clone(), tcp)
        .await
        .expect("TLS handshake");
    let io = TokioIo::new(stream);
    if http2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        Sender::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Sender::H1(send)
    }
}

fn request(target: &Target, path: &str) -> Request<Empty<Bytes>> {
    let mut b = Request::get(path).header("host", target.addr.to_string());
    for (k, v) in &target.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Empty::new()).expect("request")
}

/// One request: status 200 and the whole body read, or an error.
async fn one(sender: &mut Sender, req: Request<Empty<Bytes>>) -> Result<(), String> {
    let resp = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
    }
    .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body.to_bytes())
        ));
    }
    Ok(())
}

/// Drives `paths` round-robin with `shape` for its duration, after a short warm-up on every connection
/// (handshakes, the server's authorization cache, allocators). Panics on the first non-200 answer: a
/// benchmark that measures errors measures nothing.
pub async fn run(target: &Target, paths: Arc<Vec<String>>, shape: Shape) -> Figures {
    let (all, elapsed) = latencies(target, paths, shape).await;
    figures(all, elapsed)
}

/// [`run`]'s raw material: every request's latency (ns) and the seconds they took together.
pub async fn latencies(target: &Target, paths: Arc<Vec<String>>, shape: Shape) -> (Vec<u64>, f64) {
    let streams = if shape.http2 { shape.streams.max(1) } else { 1 };
    let mut workers = Vec::new();
    for c in 0..shape.connections {
        let mut s = connect(target, shape.http2).await;
        for i in 0..4 {
            let p = &paths[(c + i) % paths.len()];
            if let Err(e) = one(&mut s, request(target, p)).await {
                panic!("warm-up request to {p} failed: {e}");
            }
        }
        match s {
            Sender::H1(_) => workers.push(s),
            Sender::H2(h) => workers.extend((0..streams).map(|_| Sender::H2(h.clone()))),
        }
    }
    let total = workers.len();
    let start = Instant::now();
    let handles: Vec<_> = workers
        .into_iter()
        .enumerate()
        .map(|(w, mut sender)| {
            let (target, paths) = (target.clone(), paths.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = w;
                while start.elapsed() < shape.duration {
                    let p = &paths[i % paths.len()];
                    i += total;
                    let t0 = Instant::now();
                    if let Err(e) = one(&mut sender, request(&target, p)).await {
                        panic!("request to {p} failed: {e}");
                    }
                    lat.push(t0.elapsed().as_nanos() as u64);
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("load worker"));
    }
    (all, start.elapsed().as_secs_f64())
}

/// Quantiles (µs) and throughput of request latencies given in nanoseconds, measured over `elapsed` s.
pub fn figures(mut all: Vec<u64>, elapsed: f64) -> Figures {
    all.sort_unstable();
    let q = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1e3;
    Figures {
        p50: q(0.50),
        p99: q(0.99),
        p999: q(0.999),
        rps: all.len() as f64 / elapsed,
        requests: all.len(),
    }
}

/// Client TLS trusting `ca_pem`, presenting `identity` (certificate and key PEM) when given.
pub fn client_tls(ca_pem: &str, identity: Option<(&str, &str)>) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate PEM");
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                .expect("client key PEM");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client certificate")
        }
        None => builder.with_no_client_auth(),
    }
}
