//! Memory under hostile input: the real server binary in standalone mode, each flood for a window, and
//! the process's resident memory (now and peak, from /proc) next to the budget the README states.
//! Floods, from the hardening probe:
//! - one pod serving a 7 MB page of 150,000 distinct `model_name`s (with `--max-page-bytes 8 MiB`, the
//!   old default, so the page is read whole);
//! - 40 pods serving 20 MB pages (cut at the 2 MiB default);
//! - 1,024 TLS connections that finish the handshake and send nothing;
//! - 30 HTTP/2 connections × 200 streams with a zero flow-control window, each asking for a 14 KB bad
//!   selector (the server serves 32 streams per connection; the bodies cannot be sent);
//! - on the external scaler's gRPC port: 8 clients each sending a 3.9 MB `ScaledObjectRef` and reading
//!   nothing; one connection with 48 unfinished 3.9 MB bodies; 6,000 TCP connections that never start
//!   TLS;
//! - 100, 1,000 and 5,000 pods that accept the connection and never answer, beside one healthy pod of
//!   another model: how often the healthy model is answered (200) over the window, and `/livez`.
//!
//! Run with `cargo bench --bench hostile` (part of `just bench`); `WVA_HOSTILE_SECONDS` sets each window
//! (default 20 s), `WVA_HOSTILE_SERVER` measures another build (a baseline) with the same floods,
//! `WVA_HOSTILE_ONLY=gRPC` runs only the floods whose name contains it.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{Empty, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod page;
#[allow(dead_code)]
mod procstat;

use procstat::memory_mib;

const SERVER: &str = env!("CARGO_BIN_EXE_wva-metrics-server");

struct Server {
    child: Child,
    port: u16,
    ca: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One variant per pod address, every pod in namespace `h` serving model `m`.
fn standalone_file(pods: &[SocketAddr]) -> String {
    let mut o = String::new();
    for (i, addr) in pods.iter().enumerate() {
        let _ = write!(
            o,
            "apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: v{i}\n  namespace: h\n  labels: {{inference.optimization/acceleratorName: H100}}\nspec: {{modelID: m, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: v{i}}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: v{i}, namespace: h}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: v{i}}}}}\n  template: {{}}\nstatus: {{replicas: 1, readyReplicas: 1}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: v{i}-0\n  namespace: h\n  labels: {{app: v{i}}}\n  annotations: {{prometheus.io/port: \"{}\"}}\nstatus:\n  phase: Running\n  podIP: {}\n  conditions: [{{type: Ready, status: \"True\"}}]\n---\n",
            addr.port(),
            addr.ip()
        );
    }
    o
}

fn start_server(dir: &Path, name: &str, pods: &[SocketAddr], extra: &[&str]) -> Server {
    start_server_with(dir, name, &standalone_file(pods), extra)
}

fn start_server_with(dir: &Path, name: &str, standalone: &str, extra: &[&str]) -> Server {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, standalone).unwrap();
    let certs = dir.join(format!("certs-{name}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join(format!("server-{name}.log"))).unwrap();
    // WVA_HOSTILE_SERVER: another build to measure the same floods against (e.g. the previous release).
    let bin = std::env::var("WVA_HOSTILE_SERVER").unwrap_or_else(|_| SERVER.to_string());
    let child = Command::new(bin)
        .args(["serve", "--standalone"])
        .arg(&file)
        .args(["--secure-port", &port.to_string(), "--cert-dir"])
        .arg(&certs)
        .args(["--scrape-interval", "5s", "--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ca = loop {
        if let Ok(ca) = std::fs::read_to_string(certs.join("ca.crt")) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break ca;
            }
        }
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    Server { child, port, ca }
}

/// Serves `body` at /metrics on `n` loopback ports until the runtime is dropped.
fn serve_pages(rt: &tokio::runtime::Runtime, n: usize, body: Bytes) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| {
            let listener = rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let body = body.clone();
            rt.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let body = body.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| {
                            let body = body.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                    body,
                                )))
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
            addr
        })
        .collect()
}

fn pods_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// One flood: runs it for the window and measures.
type Flood = fn(&Path, Duration) -> Row;

struct Row {
    flood: &'static str,
    rss: f64,
    hwm: f64,
    note: String,
}

fn many_names(dir: &Path, window: Duration) -> Row {
    let rt = pods_runtime();
    let mut page = String::with_capacity(7 << 20);
    let mut i = 0;
    while page.len() < 7_000_000 {
        let _ = writeln!(
            page,
            "vllm:num_requests_waiting{{model_name=\"flood-{i}\"}} 1"
        );
        i += 1;
    }
    let _ = writeln!(page, "vllm:kv_cache_usage_perc{{model_name=\"m\"}} 0.5");
    let _ = writeln!(page, "vllm:num_requests_waiting{{model_name=\"m\"}} 1");
    let pods = serve_pages(&rt, 1, Bytes::from(page));
    let s = start_server(dir, "many-names", &pods, &["--max-page-bytes", "8388608"]);
    std::thread::sleep(window);
    let (rss, hwm) = memory_mib(s.child.id());
    Row {
        flood: "1 pod, 7 MB page, 150k model names (--max-page-bytes 8 MiB)",
        rss,
        hwm,
        note: format!("{i} names"),
    }
}

fn huge_pages(dir: &Path, window: Duration) -> Row {
    let rt = pods_runtime();
    let page = Bytes::from(vec![b'#'; 20 << 20]);
    let pods = serve_pages(&rt, 40, page);
    let s = start_server(dir, "huge-pages", &pods, &[]);
    std::thread::sleep(window);
    let (rss, hwm) = memory_mib(s.child.id());
    Row {
        flood: "40 pods, 20 MB pages (cut at the 2 MiB default)",
        rss,
        hwm,
        note: String::new(),
    }
}

fn silent_connections(dir: &Path, window: Duration) -> Row {
    let rt = pods_runtime();
    let pods = serve_pages(&rt, 1, Bytes::from(page::vllm_page_for("m", 1)));
    let s = start_server(dir, "silent", &pods, &[]);
    let mut cfg = load::client_tls(&s.ca, None);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let client_rt = pods_runtime();
    let held: Vec<_> = client_rt.block_on(async {
        let mut held = Vec::new();
        for _ in 0..1024 {
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", s.port)).await else {
                continue;
            };
            if let Ok(tls) = connector
                .connect("127.0.0.1".try_into().unwrap(), tcp)
                .await
            {
                held.push(tls);
            }
        }
        held
    });
    let opened = held.len();
    // Measured while they are held (before the first-request timeout closes them).
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = memory_mib(s.child.id());
    std::thread::sleep(window.saturating_sub(Duration::from_secs(2)));
    drop(held);
    Row {
        flood: "1,024 TLS connections sending nothing",
        rss,
        hwm,
        note: format!("{opened} handshakes completed"),
    }
}

fn stalled_streams(dir: &Path, window: Duration) -> Row {
    let rt = pods_runtime();
    let pods = serve_pages(&rt, 1, Bytes::from(page::vllm_page_for("m", 1)));
    let s = start_server(dir, "stalled", &pods, &[]);
    let mut cfg = load::client_tls(&s.ca, None);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let selector = format!("{}===", "a".repeat(14_000));
    let path = format!(
        "https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/h/inferno_desired_replicas?labelSelector={selector}",
        s.port
    );
    let headers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..30 {
        let connector = connector.clone();
        let path = path.clone();
        let port = s.port;
        let headers = headers.clone();
        client_rt.spawn(async move {
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let Ok(tls) = connector
                .connect("127.0.0.1".try_into().unwrap(), tcp)
                .await
            else {
                return;
            };
            let Ok((sender, conn)) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(0)
                .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
                .await
            else {
                return;
            };
            tokio::spawn(conn);
            let mut streams = Vec::new();
            for _ in 0..200 {
                let mut sender = sender.clone();
                let req = hyper::Request::get(path.as_str())
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let headers = headers.clone();
                streams.push(tokio::spawn(async move {
                    // Headers arrive; the body never can (window 0), and it is never read.
                    if let Ok(resp) = sender.send_request(req).await {
                        headers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::future::pending::<()>().await;
                        drop(resp);
                    }
                }));
            }
            std::future::pending::<()>().await;
        });
    }
    std::thread::sleep(window);
    let (rss, hwm) = memory_mib(s.child.id());
    Row {
        flood: "30 h2 connections × 200 streams, window 0, 14 KB bad selector",
        rss,
        hwm,
        note: format!(
            "{} responses stalled",
            headers.load(std::sync::atomic::Ordering::Relaxed)
        ),
    }
}

/// A server with the external scaler on its own port (standalone: no client CA needed).
fn start_with_scaler(dir: &Path, name: &str, pods: &[SocketAddr]) -> (Server, u16) {
    let scaler_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = start_server(
        dir,
        name,
        pods,
        &["--external-scaler-port", &scaler_port.to_string()],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", scaler_port)).is_err() {
        assert!(Instant::now() < deadline, "the scaler port did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
    (s, scaler_port)
}

/// An HTTP/2 connection to the scaler port that reads nothing (its receive window is 0).
async fn grpc_connection<B>(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
) -> Option<hyper::client::conn::http2::SendRequest<B>>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let tls = connector
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .ok()?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .handshake::<_, B>(TokioIo::new(tls))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// A gRPC `IsActive` call carrying a `ScaledObjectRef` of `size` bytes (a huge name).
fn huge_is_active(port: u16, size: usize) -> hyper::Request<Full<Bytes>> {
    let mut message = vec![0x0a];
    let mut n = size;
    while n >= 0x80 {
        message.push((n as u8) | 0x80);
        n >>= 7;
    }
    message.push(n as u8);
    // `"` is escaped when a message quotes the name, and percent-encoded in `grpc-message`: the
    // largest echo a name can cause.
    message.extend(std::iter::repeat_n(b'"', size));
    let mut frame = vec![0u8];
    frame.extend((message.len() as u32).to_be_bytes());
    frame.extend(message);
    hyper::Request::post(format!(
        "https://127.0.0.1:{port}/externalscaler.ExternalScaler/IsActive"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(Bytes::from(frame)))
    .unwrap()
}

/// Peak memory while `load` runs against the scaler port.
fn grpc_flood(
    dir: &Path,
    window: Duration,
    name: &'static str,
    flood: &'static str,
    load: impl FnOnce(&tokio::runtime::Runtime, tokio_rustls::TlsConnector, u16) -> String,
) -> Row {
    let rt = pods_runtime();
    let pods = serve_pages(&rt, 1, Bytes::from(page::vllm_page_for("m", 1)));
    let (s, scaler_port) = start_with_scaler(dir, name, &pods);
    let mut cfg = load::client_tls(&s.ca, None);
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let client_rt = pods_runtime();
    let note = load(&client_rt, connector, scaler_port);
    std::thread::sleep(window);
    let (rss, hwm) = memory_mib(s.child.id());
    Row {
        flood,
        rss,
        hwm,
        note,
    }
}

fn grpc_huge_messages(dir: &Path, window: Duration) -> Row {
    grpc_flood(
        dir,
        window,
        "grpc-huge",
        "gRPC: 8 clients × one 3.9 MB ScaledObjectRef, answers unread",
        |rt, connector, port| {
            let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            for _ in 0..8 {
                let (connector, answered) = (connector.clone(), answered.clone());
                rt.spawn(async move {
                    let Some(mut sender) = grpc_connection(&connector, port).await else {
                        return;
                    };
                    if let Ok(resp) = sender.send_request(huge_is_active(port, 3_900_000)).await {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::future::pending::<()>().await;
                        drop(resp);
                    }
                });
            }
            std::thread::sleep(Duration::from_secs(3));
            format!(
                "{} answered at once",
                answered.load(std::sync::atomic::Ordering::Relaxed)
            )
        },
    )
}

fn grpc_unfinished_bodies(dir: &Path, window: Duration) -> Row {
    grpc_flood(
        dir,
        window,
        "grpc-unfinished",
        "gRPC: 1 connection × 48 unfinished 3.9 MB bodies",
        |rt, connector, port| {
            rt.spawn(async move {
                let Some(sender) = grpc_connection(&connector, port).await else {
                    return;
                };
                let mut held = Vec::new();
                for _ in 0..48 {
                    // A body announced as 3.9 MB whose end never comes: its first 64 KB, then nothing.
                    let (mut tx, rx) = futures::channel::mpsc::channel::<
                        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
                    >(1);
                    let req = hyper::Request::post(format!(
                        "https://127.0.0.1:{port}/externalscaler.ExternalScaler/IsActive"
                    ))
                    .header("content-type", "application/grpc")
                    .header("te", "trailers")
                    .body(http_body_util::StreamBody::new(rx))
                    .unwrap();
                    let mut sender = sender.clone();
                    tokio::spawn(async move {
                        let _ = sender.send_request(req).await;
                        std::future::pending::<()>().await;
                    });
                    let mut frame = vec![0u8];
                    frame.extend(3_900_005u32.to_be_bytes());
                    frame.extend(std::iter::repeat_n(b'a', 64 * 1024));
                    let _ = futures::SinkExt::send(
                        &mut tx,
                        Ok(hyper::body::Frame::data(Bytes::from(frame))),
                    )
                    .await;
                    held.push(tx);
                }
                std::future::pending::<()>().await;
            });
            std::thread::sleep(Duration::from_secs(3));
            String::new()
        },
    )
}

fn grpc_no_tls(dir: &Path, window: Duration) -> Row {
    grpc_flood(
        dir,
        window,
        "grpc-no-tls",
        "gRPC: 6,000 TCP connections that never start TLS",
        |rt, _connector, port| {
            let held = rt.block_on(async {
                let mut held = Vec::new();
                for _ in 0..6_000 {
                    if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        held.push(tcp);
                    }
                }
                held
            });
            let n = held.len();
            // Held by the client for the whole window.
            std::mem::forget(held);
            format!("{n} connected")
        },
    )
}

/// One healthy pod of model `g` and `hanging` pods of model `m` that accept and never answer.
fn hanging_file(good: SocketAddr, hang: SocketAddr, hanging: usize) -> String {
    let mut o = String::new();
    let variant = |o: &mut String, name: &str, model: &str, replicas: usize| {
        let _ = write!(
            o,
            "apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: {name}\n  namespace: h\n  labels: {{inference.optimization/acceleratorName: H100}}\nspec: {{modelID: {model}, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: h}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template: {{}}\nstatus: {{replicas: {replicas}, readyReplicas: {replicas}}}\n---\n"
        );
    };
    let pod = |o: &mut String, name: &str, app: &str, addr: SocketAddr| {
        let _ = write!(
            o,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: h\n  labels: {{app: {app}}}\n  annotations: {{prometheus.io/port: \"{}\"}}\nstatus:\n  phase: Running\n  podIP: {}\n  conditions: [{{type: Ready, status: \"True\"}}]\n---\n",
            addr.port(),
            addr.ip()
        );
    };
    variant(&mut o, "good", "g", 1);
    pod(&mut o, "good-0", "good", good);
    variant(&mut o, "hang", "m", hanging);
    for i in 0..hanging {
        pod(&mut o, &format!("hang-{i}"), "hang", hang);
    }
    o
}

/// `hanging` pods that never answer beside a healthy one: how many of the healthy model's answers were
/// 200 over the window (one request a second, `--max-metric-age 10s`) and `/livez` at its end.
fn hanging_pods(dir: &Path, window: Duration, hanging: usize) -> (String, f64, f64, String) {
    let rt = pods_runtime();
    let good = serve_pages(&rt, 1, Bytes::from(page::vllm_page_for("g", 1)))[0];
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let hang = listener.local_addr().unwrap();
    rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let name = format!("hanging-{hanging}");
    // A short --max-metric-age, so that an answer held past fresh data shows as a 503 here.
    let s = start_server_with(
        dir,
        &name,
        &hanging_file(good, hang, hanging),
        &["--max-metric-age", "10s"],
    );
    let client_rt = pods_runtime();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!(
        "https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/h/wva_desired_replicas?labelSelector=variant_name%3Dgood",
        s.port
    );
    let debug = format!("https://127.0.0.1:{}/debug/variants", s.port);
    let start = Instant::now();
    let (mut ok, mut asked) = (0, 0);
    // The oldest the healthy pod's newest sample got (from /debug/variants).
    let mut oldest = 0.0_f64;
    while start.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1));
        // The first answers wait for the first scrape; count from 10 s on.
        if start.elapsed() < Duration::from_secs(10) {
            continue;
        }
        asked += 1;
        let (code, age) = client_rt.block_on(async {
            let code = client.get(&url).send().await.map(|r| r.status().as_u16());
            let doc: Option<serde_json::Value> = match client.get(&debug).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let age = doc.as_ref().and_then(|d| {
                d["models"]
                    .as_array()?
                    .iter()
                    .flat_map(|m| m["pods"].as_array().into_iter().flatten())
                    .find(|p| p["pod"] == "good-0")?["sample"]["age"]
                    .as_f64()
            });
            (code, age)
        });
        if matches!(code, Ok(200)) {
            ok += 1;
        }
        // No sample at all counts as older than the window so far.
        oldest = oldest.max(age.unwrap_or_else(|| start.elapsed().as_secs_f64()));
    }
    let livez = client_rt.block_on(async {
        client
            .get(format!("https://127.0.0.1:{}/livez", s.port))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    let (rss, hwm) = memory_mib(s.child.id());
    (
        format!("{hanging} hanging pods beside 1 healthy one"),
        rss,
        hwm,
        format!(
            "healthy model answered {ok}/{asked}, its sample at most {oldest:.0} s old; /livez {}",
            livez.map_or_else(|e| e.to_string(), |c| c.to_string())
        ),
    )
}

fn idle(dir: &Path, window: Duration) -> Row {
    let rt = pods_runtime();
    let pods = serve_pages(&rt, 1, Bytes::from(page::vllm_page_for("m", 2)));
    let s = start_server(dir, "idle", &pods, &[]);
    std::thread::sleep(window);
    let (rss, hwm) = memory_mib(s.child.id());
    Row {
        flood: "baseline: 1 normal pod",
        rss,
        hwm,
        note: String::new(),
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let window = Duration::from_secs(
        std::env::var("WVA_HOSTILE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20),
    );
    let dir: PathBuf = std::env::temp_dir().join(format!("wva-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "\n[hostile] server binary in standalone mode, default limits unless noted, {} s per flood; logs in {}",
        window.as_secs(),
        dir.display()
    );
    println!(
        "[hostile] {:<64} {:>9} {:>10}  note",
        "flood", "RSS MiB", "peak MiB"
    );
    // WVA_HOSTILE_ONLY=gRPC: only the floods whose description contains it.
    let only = std::env::var("WVA_HOSTILE_ONLY").unwrap_or_default();
    let floods: [(&str, Flood); 8] = [
        ("baseline", idle),
        ("model names", many_names),
        ("20 MB pages", huge_pages),
        ("TLS connections sending nothing", silent_connections),
        ("h2 connections", stalled_streams),
        ("gRPC huge", grpc_huge_messages),
        ("gRPC unfinished", grpc_unfinished_bodies),
        ("gRPC no TLS", grpc_no_tls),
    ];
    for (name, f) in floods {
        if !name.contains(only.as_str()) {
            continue;
        }
        let r = f(&dir, window);
        println!(
            "[hostile] {:<64} {:>9.1} {:>10.1}  {}",
            r.flood, r.rss, r.hwm, r.note
        );
    }
    // Long enough for the liveness bound (30 s) to pass.
    let hanging_window = window.max(Duration::from_secs(40));
    for n in [100, 1_000, 5_000] {
        if !"hanging pods".contains(only.as_str()) {
            continue;
        }
        let (flood, rss, hwm, note) = hanging_pods(&dir, hanging_window, n);
        println!("[hostile] {flood:<64} {rss:>9.1} {hwm:>10.1}  {note}");
    }
    println!("[hostile] budget (README): 256 MiB limit; scrape buffers at most --scrape-concurrency × --max-page-bytes = 128 MiB by default");
}
