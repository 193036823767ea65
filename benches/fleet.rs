//! Memory and CPU at fleet scale: the real server binary in standalone mode scraping 1,000 and 10,000
//! emulated vLLM pods (each its own loopback address, serving a ~60 KB two-engine vLLM page) every 5 s,
//! for 100 and 1,000 variants. Reports the server process's resident memory (now and peak) and its CPU
//! share of one core over a measurement window, from /proc (Linux only), plus the scrapes it completed,
//! so a run that measured failures instead of work is visible.
//!
//! The pods are served from this process on one thread of its own; their cost is not the server's and is
//! not counted. Run with `cargo bench --bench fleet` (part of `just bench`); `WVA_FLEET_SECONDS` sets the
//! measurement window (default 30 s, six scrape rounds).
//!
//! The baseline, in the same run: a real Prometheus (the Debian package, `PROMETHEUS_BIN` to override)
//! scraping the same pods at the same interval, measured the same way, after the server has stopped. It
//! keeps only the vLLM series WVA's queries read (`metric_relabel_configs`), which favours it: a
//! Prometheus that stores whole pages costs more. The figure that counts is the ratio of CPU per
//! scrape, since absolute CPU varies about 2× between machines of this kind.
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
fn standalone_file(variants: usize, pods: usize, https: bool) -> String {
    let scheme = if https {
        ", prometheus.io/scheme: https"
    } else {
        ""
    };
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
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: variant-{v}-{p}\n  namespace: fleet\n  labels: {{app: variant-{v}}}\n  annotations: {{prometheus.io/port: \"{POD_PORT}\"{scheme}}}\nstatus:\n  phase: Running\n  podIP: {}\n  conditions: [{{type: Ready, status: \"True\"}}]\n---\n",
                pod_ip(i)
            );
        }
    }
    o
}

/// Serves each pod's page on its own address until the runtime is dropped.
/// The pod index of a `pod_ip` address.
fn pod_index(ip: Ipv4Addr) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    (a == 127 && b >= 20 && d >= 1)
        .then(|| (usize::from(b) - 20) * 62_500 + usize::from(c) * 250 + usize::from(d) - 1)
}

/// Serves every pod's page: one listener on the pod port of every loopback address (one file
/// descriptor, so a scraper that keeps 10,000 connections open still fits the descriptor limit); each
/// connection's local address says which pod was asked. With `tls`, over TLS.
fn serve_pods(
    variants: usize,
    pods: usize,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (tokio::runtime::Runtime, usize) {
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
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), POD_PORT);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("binding the pods' port {addr}: {e}"));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let local = match stream.local_addr() {
                Ok(SocketAddr::V4(a)) => *a.ip(),
                _ => continue,
            };
            let Some(i) = pod_index(local).filter(|i| *i < pods) else {
                continue;
            };
            let page = pages[(i / per) / 2].clone();
            let acceptor = acceptor.clone();
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
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    (rt, page_size)
}

/// TLS for the HTTPS rows: a CA the server is given, and one certificate for every pod, named as a
/// Service would be (`--scrape-tls-server-name`).
struct TlsPods {
    server: Arc<rustls::ServerConfig>,
    ca_file: PathBuf,
}

const TLS_NAME: &str = "pods.fleet.svc";

fn tls_pods(dir: &Path) -> TlsPods {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![TLS_NAME.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let ca_file = dir.join("pods-ca.crt");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
                .unwrap(),
        )
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsPods {
        server: Arc::new(server),
        ca_file,
    }
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

/// Warm-up: waits (until `deadline`) for `scraped()` to count every pod once, then one more round so
/// connections and buffers settle before the measurement window.
fn warm_up(scraped: impl Fn() -> f64, pods: usize, deadline: Instant, dir: &Path) {
    loop {
        let done = scraped();
        if done >= pods as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {pods} pods scraped in time; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(Duration::from_secs(5));
}

fn measure(
    dir: &Path,
    (variants, pods): (usize, usize),
    window: Duration,
    tls: Option<&TlsPods>,
) -> Row {
    let (pod_rt, _) = serve_pods(variants, pods, tls.map(|t| t.server.clone()));
    // Each row its own files: a server must never read another's certificate directory.
    let tag = format!(
        "{variants}-{pods}{}",
        if tls.is_some() { "-https" } else { "" }
    );
    let file = dir.join(format!("fleet-{tag}.yaml"));
    std::fs::write(&file, standalone_file(variants, pods, tls.is_some())).unwrap();
    let certs = dir.join(format!("certs-{tag}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join(format!("server-{tag}.log"))).unwrap();
    // WVA_FLEET_SERVER: another build of the server to measure (e.g. one with symbols, for perf).
    let server_bin = std::env::var("WVA_FLEET_SERVER").unwrap_or_else(|_| SERVER.to_string());
    let child = Command::new(&server_bin)
        .args(["serve", "--standalone"])
        .arg(&file)
        .args(["--secure-port", &port.to_string(), "--cert-dir"])
        .arg(&certs)
        .args(["--scrape-interval", INTERVAL, "--log-level", "warn"])
        .args(tls.map_or_else(Vec::new, |t| {
            vec![
                "--scrape-ca-file".to_string(),
                t.ca_file.display().to_string(),
                "--scrape-tls-server-name".to_string(),
                TLS_NAME.to_string(),
            ]
        }))
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
    warm_up(
        || counter_sum(&client, &metrics, "wva_metrics_server_pod_scrapes_total"),
        pods,
        deadline,
        dir,
    );
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

struct Baseline {
    rss: f64,
    hwm: f64,
    cpu: f64,
    scrapes: f64,
    failed_targets: f64,
}

/// A Prometheus text page's sum of one family (its own /metrics), or `None` when unreadable.
fn prometheus_counter(port: u16, name: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

/// A real Prometheus scraping the same pods every interval, keeping WVA's series only.
fn measure_prometheus(dir: &Path, pods: usize, window: Duration) -> Baseline {
    let (pod_rt, _) = serve_pods(1_000.min(pods), pods, None);
    let targets: Vec<String> = (0..pods)
        .map(|i| format!("'{}:{POD_PORT}'", pod_ip(i)))
        .collect();
    let cfg = dir.join(format!("prometheus-{pods}.yml"));
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: {INTERVAL}, scrape_timeout: 3s}}\nscrape_configs:\n  - job_name: vllm\n    metric_relabel_configs:\n      - source_labels: [__name__]\n        regex: 'vllm:(kv_cache_usage_perc|gpu_cache_usage_perc|num_requests_waiting|num_requests_running|request_success_total)'\n        action: keep\n    static_configs:\n      - targets: [{}]\n",
            targets.join(",")
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    let log = std::fs::File::create(dir.join(format!("prometheus-{pods}.log"))).unwrap();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join(format!("prometheus-data-{pods}")).display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting prometheus (Debian package `prometheus`)");
    let prom = Server(child);
    let pid = prom.0.id();
    let scrapes_of = || {
        prometheus_counter(port, "prometheus_target_interval_length_seconds_count").unwrap_or(0.0)
    };
    warm_up(
        scrapes_of,
        pods,
        Instant::now() + Duration::from_secs(180),
        dir,
    );
    let scrapes0 = scrapes_of();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(window);
    let cpu1 = cpu_seconds(pid);
    let elapsed = t0.elapsed().as_secs_f64();
    let (rss, hwm) = memory_mib(pid);
    let scrapes = scrapes_of() - scrapes0;
    let up = Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{port}/api/v1/query?query=count(up%3D%3D0)"),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let failed_targets = up
        .split("\"value\":[")
        .nth(1)
        .and_then(|v| v.split('"').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    drop(prom);
    drop(pod_rt);
    Baseline {
        rss,
        hwm,
        cpu: (cpu1.0 - cpu0.0 + cpu1.1 - cpu0.1) / elapsed,
        scrapes,
        failed_targets,
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
        let r = measure(&dir, (variants, pods), window, None);
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
    // The HTTPS cost: the same fleet over TLS (one certificate named as a Service, session resumption).
    let tls = tls_pods(&dir);
    for (variants, pods) in [(1_000, 1_000), (1_000, 10_000)] {
        if only
            .as_ref()
            .is_some_and(|o| *o != format!("{variants}x{pods}-https"))
        {
            continue;
        }
        let r = measure(&dir, (variants, pods), window, Some(&tls));
        let rate = r.scrapes / window.as_secs_f64();
        let plain = rows
            .iter()
            .find(|p| p.variants == variants && p.pods == pods)
            .map(|p| p.cpu / p.scrapes.max(1.0));
        println!(
            "[fleet] {:>8} {:>6} {:>9.1} {:>10.1} {:>10.1} {:>10.1} {:>12.0} {:>9} {:>14.1}  https{}",
            r.variants,
            r.pods,
            r.rss,
            r.hwm,
            r.cpu * 100.0,
            r.system * 100.0,
            rate,
            r.failures,
            rate * page as f64 / 1e6,
            plain.map_or_else(String::new, |p| format!(
                ", CPU per scrape ×{:.2} of plain HTTP",
                r.cpu / r.scrapes.max(1.0) / p
            )),
        );
    }
    // The baseline: Prometheus scraping the same pods at the same interval (`WVA_FLEET_BASELINE=0` skips).
    if std::env::var("WVA_FLEET_BASELINE").as_deref() != Ok("0") {
        println!(
            "[fleet] baseline: Prometheus scraping the same pods every {INTERVAL} (keeping WVA's series only)"
        );
        println!(
            "[fleet] {:>6} {:>12} {:>9} {:>10} {:>10} {:>12} {:>14} {:>16} {:>16}",
            "pods",
            "who",
            "RSS MiB",
            "peak MiB",
            "CPU %core",
            "scrapes/s",
            "µs CPU/scrape",
            "CPU/scrape ratio",
            "RSS ratio"
        );
        for pods in [1_000, 10_000] {
            let Some(ours) = rows
                .iter()
                .filter(|r| r.pods == pods)
                .max_by_key(|r| r.variants)
            else {
                continue;
            };
            let b = measure_prometheus(&dir, pods, window);
            let per = |cpu: f64, scrapes: f64| cpu * window.as_secs_f64() / scrapes.max(1.0) * 1e6;
            let (ours_per, prom_per) = (per(ours.cpu, ours.scrapes), per(b.cpu, b.scrapes));
            for (who, rss, hwm, cpu, scrapes, per_scrape) in [
                (
                    "server",
                    ours.rss,
                    ours.hwm,
                    ours.cpu,
                    ours.scrapes,
                    ours_per,
                ),
                ("prometheus", b.rss, b.hwm, b.cpu, b.scrapes, prom_per),
            ] {
                println!(
                    "[fleet] {:>6} {:>12} {:>9.1} {:>10.1} {:>10.1} {:>12.0} {:>14.0} {:>16} {:>16}",
                    pods,
                    who,
                    rss,
                    hwm,
                    cpu * 100.0,
                    scrapes / window.as_secs_f64(),
                    per_scrape,
                    if who == "server" { format!("{:.2}", ours_per / prom_per) } else { "1".into() },
                    if who == "server" { format!("{:.2}", ours.rss / b.rss) } else { "1".into() },
                );
            }
            if b.failed_targets > 0.0 {
                println!("[fleet] (Prometheus had {} targets down)", b.failed_targets);
            }
        }
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
