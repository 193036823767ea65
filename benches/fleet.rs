//! Memory and CPU at fleet scale: the real server binary in standalone mode scraping 1,000 and 10,000
//! emulated vLLM pods (each its own loopback address, serving a ~60 KB two-engine vLLM page) every 5 s,
//! for 100 and 1,000 variants. Reports the server process's resident memory (now and peak) and its CPU
//! share of one core over a measurement window, from /proc (Linux only), plus the scrapes it completed,
//! so a run that measured failures instead of work is visible.
//!
//! The pods are served from this process on one thread of its own; their cost is not the server's and is
//! not counted. Run with `cargo bench --bench fleet` (part of `just bench`); `WVA_FLEET_SECONDS` sets the
//! measurement window (default 30 s, six scrape rounds).
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

#[allow(dead_code)]
mod load;
#[allow(dead_code)]
mod page;
mod procstat;

use procstat::{cpu_seconds, memory_mib};

const SERVER: &str = env!("CARGO_BIN_EXE_wva-metrics-server");
const POD_PORT: u16 = 18000;
const INTERVAL: &str = "5s";

/// The i-th pod's address: 127.20.x.y, one address per pod as in a cluster (so one connection per pod).
fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        20 + (i / 62_500) as u8,
        ((i / 250) % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

fn model_of(variant: usize) -> String {
    format!("org/model-{}", variant / 2)
}

/// `variants` variants (two per model), `pods` pods spread evenly, as a standalone file.
fn standalone_file(variants: usize, pods: usize) -> String {
    let mut o = String::new();
    let per = pods / variants;
    for v in 0..variants {
        let _ = write!(
            o,
            "apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: variant-{v}\n  namespace: fleet\n  labels: {{inference.optimization/acceleratorName: H100}}\nspec: {{modelID: {m}, variantCost: \"{c}\", scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: variant-{v}}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: variant-{v}, namespace: fleet}}\nspec:\n  replicas: {per}\n  selector: {{matchLabels: {{app: variant-{v}}}}}\n  template: {{}}\nstatus: {{replicas: {per}, readyReplicas: {per}}}\n---\n",
            m = model_of(v),
            c = 5 + 10 * (v % 2),
        );
        for p in 0..per {
            let i = v * per + p;
            let _ = write!(
                o,
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: variant-{v}-{p}\n  namespace: fleet\n  labels: {{app: variant-{v}}}\n  annotations: {{prometheus.io/port: \"{POD_PORT}\"}}\nstatus:\n  phase: Running\n  podIP: {}\n  conditions: [{{type: Ready, status: \"True\"}}]\n---\n",
                pod_ip(i)
            );
        }
    }
    o
}

/// Serves each pod's page on its own address until the runtime is dropped.
fn serve_pods(variants: usize, pods: usize) -> (tokio::runtime::Runtime, usize) {
    // One worker thread of its own (a current-thread runtime would only run while blocked on).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let per = pods / variants;
    let pages: Vec<Bytes> = (0..variants.div_ceil(2))
        .map(|m| Bytes::from(page::vllm_page_for(&format!("org/model-{m}"), 2)))
        .collect();
    let page_size = pages[0].len();
    let pages = Arc::new(pages);
    for i in 0..pods {
        let page = pages[(i / per) / 2].clone();
        let addr = SocketAddr::new(IpAddr::V4(pod_ip(i)), POD_PORT);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| {
                panic!("binding pod address {addr}: {e} (raise `ulimit -n` above 2× the pod count)")
            });
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let page = page.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let page = page.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "text/plain; version=0.0.4")
                                    .body(Full::new(page))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    }
    (rt, page_size)
}

/// A client for the server's /metrics, on a small runtime of its own.
struct MetricsClient {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// Sum of one counter family on the server's /metrics (a few attempts: a failed read must not pass for 0).
fn counter_sum(client: &MetricsClient, url: &str, name: &str) -> f64 {
    let mut last = String::new();
    for _ in 0..5 {
        match client.rt.block_on(async {
            client
                .http
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }) {
            Ok(text) => {
                return text
                    .lines()
                    .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("reading {url}: {last}");
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Row {
    variants: usize,
    pods: usize,
    rss: f64,
    hwm: f64,
    cpu: f64,
    /// Share of `cpu` spent in the kernel (connections, reads).
    system: f64,
    scrapes: f64,
    failures: f64,
}

fn measure(dir: &Path, variants: usize, pods: usize, window: Duration) -> Row {
    let (pod_rt, _) = serve_pods(variants, pods);
    let file = dir.join(format!("fleet-{variants}-{pods}.yaml"));
    std::fs::write(&file, standalone_file(variants, pods)).unwrap();
    let certs = dir.join(format!("certs-{variants}-{pods}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join(format!("server-{variants}-{pods}.log"))).unwrap();
    // WVA_FLEET_SERVER: another build of the server to measure (e.g. one with symbols, for perf).
    let server_bin = std::env::var("WVA_FLEET_SERVER").unwrap_or_else(|_| SERVER.to_string());
    let child = Command::new(&server_bin)
        .args(["serve", "--standalone"])
        .arg(&file)
        .args(["--secure-port", &port.to_string(), "--cert-dir"])
        .arg(&certs)
        .args(["--scrape-interval", INTERVAL, "--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting the server");
    let server = Server(child);
    let pid = server.0.id();
    let metrics = format!("https://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = loop {
        if let Ok(ca) = std::fs::read_to_string(certs.join("ca.crt")) {
            break MetricsClient {
                rt: tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap(),
                // No idle connection: the server may close it during the measurement window.
                http: reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .tls_backend_preconfigured(load::client_tls(&ca, None))
                    .build()
                    .unwrap(),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the server did not write its certificate"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Warm-up: every pod scraped at least once, then one more round so connections and buffers settle.
    loop {
        let done = counter_sum(&client, &metrics, "wva_metrics_server_pod_scrapes_total");
        if done >= pods as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {pods} pods scraped after 120 s; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(5));
    let scrapes0 = counter_sum(&client, &metrics, "wva_metrics_server_pod_scrapes_total");
    let failures0 = counter_sum(
        &client,
        &metrics,
        "wva_metrics_server_pod_scrape_failures_total",
    );
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu1 = cpu_seconds(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let (user, system) = ((cpu1.0 - cpu0.0) / elapsed, (cpu1.1 - cpu0.1) / elapsed);
    let (rss, hwm) = memory_mib(pid);
    let scrapes = counter_sum(&client, &metrics, "wva_metrics_server_pod_scrapes_total") - scrapes0;
    let failures = counter_sum(
        &client,
        &metrics,
        "wva_metrics_server_pod_scrape_failures_total",
    ) - failures0;
    drop(server);
    drop(pod_rt);
    Row {
        variants,
        pods,
        rss,
        hwm,
        cpu: user + system,
        system,
        scrapes,
        failures,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let window = Duration::from_secs(
        std::env::var("WVA_FLEET_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let dir: PathBuf = std::env::temp_dir().join(format!("wva-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = page::vllm_page_for("org/model-0", 2).len();
    println!(
        "\n[fleet] server binary in standalone mode, scrape interval {INTERVAL}, pages of {:.1} KB (2 engines), {} s window; logs in {}",
        page as f64 / 1e3,
        window.as_secs(),
        dir.display()
    );
    println!(
        "[fleet] {:>8} {:>6} {:>9} {:>10} {:>10} {:>10} {:>12} {:>9} {:>14}",
        "variants",
        "pods",
        "RSS MiB",
        "peak MiB",
        "CPU %core",
        "of it sys",
        "scrapes/s",
        "failures",
        "parsed MB/s"
    );
    let mut rows = Vec::new();
    // `WVA_FLEET_ONLY=1000x10000` measures one configuration.
    let only = std::env::var("WVA_FLEET_ONLY").ok();
    for (variants, pods) in [(100, 1_000), (1_000, 1_000), (100, 10_000), (1_000, 10_000)] {
        if only
            .as_ref()
            .is_some_and(|o| *o != format!("{variants}x{pods}"))
        {
            continue;
        }
        let r = measure(&dir, variants, pods, window);
        let rate = r.scrapes / window.as_secs_f64();
        println!(
            "[fleet] {:>8} {:>6} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>9} {:>14.1}",
            r.variants,
            r.pods,
            r.rss,
            r.hwm,
            r.cpu * 100.0,
            r.system * 100.0,
            rate,
            r.failures,
            rate * page as f64 / 1e6
        );
        rows.push(r);
    }
    let by = |v: usize, p: usize| rows.iter().find(|r| r.variants == v && r.pods == p);
    if let (Some(a), Some(b)) = (by(1_000, 1_000), by(1_000, 10_000)) {
        println!(
        "[fleet] 1,000 → 10,000 pods (1,000 variants): RSS ×{:.2}, CPU ×{:.2}; per extra pod {:.1} KiB and {:.3} %core",
        b.rss / a.rss,
        b.cpu / a.cpu,
        (b.rss - a.rss) * 1024.0 / 9_000.0,
        (b.cpu - a.cpu) * 100.0 / 9_000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
