//! Memory under hostile input: the real server binary in standalone mode, each flood for a window, and
//! the process's resident memory (now and peak, from /proc) next to the budget the README states.
//! Floods, from the hardening probe:
//! - one pod serving a 7 MB page of 150,000 distinct `model_name`s (with `--max-page-bytes 8 MiB`, the
//!   old default, so the page is read whole);
//! - 40 pods serving 20 MB pages (cut at the 2 MiB default);
//! - 1,024 TLS connections that finish the handshake and send nothing;
//! - 30 HTTP/2 connections × 200 streams with a zero flow-control window, each asking for a 14 KB bad
//!   selector (the server serves 32 streams per connection; the bodies cannot be sent).
//!
//! Run with `cargo bench --bench hostile` (part of `just bench`); `WVA_HOSTILE_SECONDS` sets each window
//! (default 20 s), `WVA_HOSTILE_SERVER` measures another build (a baseline) with the same floods.
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
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, standalone_file(pods)).unwrap();
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
    for f in [
        idle,
        many_names,
        huge_pages,
        silent_connections,
        stalled_streams,
    ] {
        let r = f(&dir, window);
        println!(
            "[hostile] {:<64} {:>9.1} {:>10.1}  {}",
            r.flood, r.rss, r.hwm, r.note
        );
    }
    println!("[hostile] budget (README): 256 MiB limit; scrape buffers at most --scrape-concurrency × --max-page-bytes = 128 MiB by default");
}
