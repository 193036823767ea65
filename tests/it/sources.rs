//! Metric sources against real servers: the pod scraper against loopback HTTP servers that are slow,
//! huge, garbage, redirecting or gone, and its kept connections against servers that keep, time out or
//! drop them, including vLLM's own stack (uvicorn + prometheus_client, Debian packages); the Prometheus
//! source against a real Prometheus (Debian package `prometheus`) served over HTTPS with a self-made CA,
//! directly and behind a bearer-token proxy.

use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use support::*;
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::saturation::ZeroConfig;
use wva_metrics_server::sources::prometheus::PrometheusOptions;
use wva_metrics_server::sources::prometheus::{PollOptions, PrometheusClient, PrometheusSource};
use wva_metrics_server::sources::scraper::{ScrapeOptions, Scraper};
use wva_metrics_server::sources::window::WindowCache;
use wva_metrics_server::sources::{Lookup, SampleSource, SourceKind};
use wva_metrics_server::target::FixedTargets;
use wva_metrics_server::target::PodTarget;
use wva_metrics_server::telemetry::Metrics;

const MODEL: &str = "Qwen/Qwen3-0.6B";

fn vllm_page(kv: f64, waiting: f64) -> String {
    format!(
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n# TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{{engine=\"0\",model_name=\"{MODEL}\"}} {waiting}\n\
         # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n# TYPE vllm:kv_cache_usage_perc gauge\n\
         vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"{MODEL}\"}} {kv}\n\
         vllm:num_requests_running{{engine=\"0\",model_name=\"{MODEL}\"}} 2.0\n"
    )
}

async fn serve(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

fn pod(name: &str, addr: SocketAddr) -> PodTarget {
    PodTarget::new("ns", name, &addr.ip().to_string(), addr.port())
}

fn snapshot_of(pods: Vec<PodTarget>) -> Snapshot {
    Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        pickers: Vec::new(),
        variants: vec![Variant::new("ns", "v", (MODEL, "H100"), 10.0, pods)],
        excluded: vec![],
        synced: true,
    }
}

fn missing_reason(l: Lookup) -> String {
    match l {
        Lookup::Missing { reason, .. } => reason.to_string(),
        Lookup::Fresh(s) => panic!("expected missing, got {s:?}"),
    }
}

#[tokio::test]
async fn scraper_against_real_http_servers() {
    install_provider();
    let (good, _) =
        serve(Router::new().route("/metrics", get(|| async { vllm_page(0.42, 7.0) }))).await;
    let (slow, _) = serve(Router::new().route(
        "/metrics",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            vllm_page(0.1, 0.0)
        }),
    ))
    .await;
    // 2 MiB page: the samples are at the top, then padding lines the limit cuts away mid-line.
    let (huge, _) = serve(Router::new().route(
        "/metrics",
        get(|| async {
            format!(
                "{}{}",
                vllm_page(0.5, 1.0),
                "# padding padding padding padding\n".repeat(60_000)
            )
        }),
    ))
    .await;
    let (garbage, _) = serve(Router::new().route(
        "/metrics",
        get(|| async { "<html><body>login required</body></html>\n" }),
    ))
    .await;
    let (redirect, _) = serve(Router::new().route(
        "/metrics",
        get(|| async { Redirect::temporary("/elsewhere").into_response() }),
    ))
    .await;
    let (gone, gone_task) =
        serve(Router::new().route("/metrics", get(|| async { vllm_page(0.9, 3.0) }))).await;

    let pods = vec![
        pod("good", good),
        pod("slow", slow),
        pod("huge", huge),
        pod("garbage", garbage),
        pod("redirect", redirect),
        pod("gone", gone),
    ];
    let shared = snapshot::shared(snapshot_of(pods.clone()));
    let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
    let metrics = Metrics::new();
    let opts = ScrapeOptions {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        concurrency: 4,
        max_body_bytes: 256 * 1024,
        reach: Default::default(),
        reserved_fds: 512,
    };
    let scraper = Scraper::new(cache.clone(), shared.clone(), metrics.clone(), opts);
    let started = Instant::now();
    scraper.scrape_once().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the slow pod held the round for {:?}",
        started.elapsed()
    );

    let Lookup::Fresh(s) = cache.lookup(&pods[0], MODEL) else {
        panic!("good pod not fresh")
    };
    assert_eq!(
        (
            s.kv_cache_usage,
            s.queue_length,
            s.running_requests,
            s.source
        ),
        (0.42, 7.0, Some(2.0), SourceKind::Pods)
    );
    assert!(
        missing_reason(cache.lookup(&pods[1], MODEL)).contains("scrape failing"),
        "slow pod times out"
    );
    let Lookup::Fresh(s) = cache.lookup(&pods[2], MODEL) else {
        panic!("huge page: the part within the limit is used")
    };
    assert_eq!(s.kv_cache_usage, 0.5);
    assert_eq!(
        missing_reason(cache.lookup(&pods[3], MODEL)),
        "the page has no vLLM queue or KV-cache metrics"
    );
    assert!(
        missing_reason(cache.lookup(&pods[4], MODEL)).contains("HTTP 307"),
        "redirects are reported, not followed"
    );
    assert!(matches!(cache.lookup(&pods[5], MODEL), Lookup::Fresh(_)));

    // The pod's server dies: its samples stay until they age out; the failure is never a zero.
    gone_task.abort();
    let _ = gone_task.await;
    scraper.scrape_once().await;
    let Lookup::Fresh(s) = cache.lookup(&pods[5], MODEL) else {
        panic!("window keeps the last samples")
    };
    assert_eq!(s.kv_cache_usage, 0.9);
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"wva_metrics_server_pod_scrape_failures_total{namespace="ns",pod="gone"} 1"#
        ),
        "{text}"
    );

    // The pod leaves the API: it is forgotten at once, with its metric series.
    shared.store(Arc::new(snapshot_of(pods[..5].to_vec())));
    scraper.scrape_once().await;
    assert_eq!(
        missing_reason(cache.lookup(&pods[5], MODEL)),
        "not scraped yet"
    );
    assert!(!metrics.encode().contains(r#"pod="gone""#));
}

/// How a raw HTTP/1.1 test server treats its connections.
#[derive(Clone, Copy)]
enum Conduct {
    /// Keeps every connection open (the emulator, Go servers).
    KeepAlive,
    /// Closes a connection idle for 200 ms (uvicorn's `timeout_keep_alive`, as vLLM runs it, at 5 s).
    IdleTimeout,
    /// Answers the first request of a connection; closes on the second without answering (a server
    /// whose idle timeout fires as the request arrives).
    CloseOnSecond,
    /// Answers in chunks (Go's `net/http` without a Content-Length), keeping the connection.
    Chunked,
    /// HTTP/1.0-style: no length, the close ends the body.
    CloseDelimited,
}

/// A raw HTTP/1.1 server for `page` behaving as `conduct`; counts the connections it accepted.
async fn raw_server(
    page: String,
    conduct: Conduct,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = l.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let page = page.clone();
            tokio::spawn(async move {
                let mut served = 0;
                loop {
                    // One request: up to the blank line.
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1024];
                    while !request.ends_with(b"\r\n\r\n") {
                        let read = tcp.read(&mut byte);
                        let n = match conduct {
                            Conduct::IdleTimeout if request.is_empty() => {
                                match tokio::time::timeout(Duration::from_millis(200), read).await {
                                    Ok(n) => n.unwrap_or(0),
                                    Err(_) => 0,
                                }
                            }
                            _ => read.await.unwrap_or(0),
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&byte[..n]);
                    }
                    let text = String::from_utf8_lossy(&request).to_string();
                    assert!(text.starts_with("GET /metrics HTTP/1.1\r\n"), "{text}");
                    assert!(
                        text.contains("\r\nAccept: text/plain;version=0.0.4\r\n"),
                        "{text}"
                    );
                    served += 1;
                    let response = match conduct {
                        Conduct::CloseOnSecond if served == 2 => return,
                        Conduct::Chunked => {
                            let mut r = String::from(
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                            );
                            for piece in page.as_bytes().chunks(4096) {
                                r.push_str(&format!(
                                    "{:x}\r\n{}\r\n",
                                    piece.len(),
                                    String::from_utf8_lossy(piece)
                                ));
                            }
                            r + "0\r\n\r\n"
                        }
                        Conduct::CloseDelimited => {
                            format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{page}")
                        }
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{page}",
                            page.len()
                        ),
                    };
                    tcp.write_all(response.as_bytes()).await.unwrap();
                    if matches!(conduct, Conduct::CloseDelimited) {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Connections are kept between rounds where the server allows it, and a kept connection the server
/// closed (idle, or just as the request arrived) costs a new connection, never a failed scrape.
#[tokio::test]
async fn kept_connections_reused_and_replaced() {
    install_provider();
    let page = format!("{}{}", vllm_page(0.3, 2.0), "# pad\n".repeat(2000));
    let conducts = [
        ("keep-alive", Conduct::KeepAlive),
        ("idle-timeout", Conduct::IdleTimeout),
        ("close-on-second", Conduct::CloseOnSecond),
        ("chunked", Conduct::Chunked),
        ("close-delimited", Conduct::CloseDelimited),
    ];
    let mut pods = Vec::new();
    let mut accepted = Vec::new();
    for (name, conduct) in conducts {
        let (addr, count) = raw_server(page.clone(), conduct).await;
        pods.push(pod(name, addr));
        accepted.push(count);
    }
    let shared = snapshot::shared(snapshot_of(pods.clone()));
    let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
    let metrics = Metrics::new();
    let opts = ScrapeOptions {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        concurrency: 8,
        ..Default::default()
    };
    let scraper = Scraper::new(cache.clone(), shared.clone(), metrics.clone(), opts);
    for _ in 0..3 {
        scraper.scrape_once().await;
        // Longer than the idle server's timeout, so it closes its side between rounds.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    for p in &pods {
        let Lookup::Fresh(s) = cache.lookup(p, MODEL) else {
            panic!("{} not fresh", p.name)
        };
        assert_eq!((s.kv_cache_usage, s.queue_length), (0.3, 2.0), "{}", p.name);
    }
    let counts: Vec<usize> = accepted
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        .collect();
    // keep-alive and chunked: one connection for three rounds. The idle one is closed by its server
    // between rounds; close-on-second needs a new one each round after the first; close-delimited
    // cannot be reused.
    assert_eq!(counts, vec![1, 3, 3, 1, 3]);
    let text = metrics.encode();
    for line in [
        "wva_metrics_server_pod_scrapes_total 15",
        "wva_metrics_server_pod_scrape_connections_opened_total 11",
        "wva_metrics_server_pod_scrape_connections_idle 4",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    assert!(!text.contains("pod_scrape_failures_total{"), "{text}");

    // A pod that leaves has its kept connection closed.
    shared.store(Arc::new(snapshot_of(pods[1..].to_vec())));
    scraper.scrape_once().await;
    let text = metrics.encode();
    assert!(
        text.contains("wva_metrics_server_pod_scrape_connections_idle 3"),
        "{text}"
    );
}

/// vLLM's metrics stack (prometheus_client's ASGI app under uvicorn, Debian's `python3-uvicorn` and
/// `python3-prometheus-client`) with the given keep-alive timeout; stopped on drop.
struct Uvicorn {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Uvicorn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_uvicorn(keep_alive_seconds: u32) -> Uvicorn {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/uvicorn");
    // Debian's interpreter, where the packages are (a pyenv `python3` earlier in PATH lacks them).
    let python = std::env::var("WVA_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into());
    let child = Command::new(&python)
        .args(["-m", "uvicorn", "--app-dir", dir, "vllm_metrics:app", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--log-level", "warning"])
        .args(["--timeout-keep-alive", &keep_alive_seconds.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{python} -m uvicorn (apt-get install python3-uvicorn python3-prometheus-client): {e}"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = Uvicorn { child, addr };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("uvicorn did not listen on {addr} within 10 s");
}

/// Against vLLM's own HTTP stack: pages come chunked, a connection is kept while uvicorn keeps it, and
/// when uvicorn closes idle connections at the very moment of the next scrape (its keep-alive timeout
/// equal to the interval, as with vLLM's 5 s and the default `--scrape-interval`), no scrape fails.
#[tokio::test]
async fn kept_connections_against_uvicorn() {
    install_provider();
    let scrape = |addr: SocketAddr| async move {
        let pods = vec![pod("vllm", addr)];
        let shared = snapshot::shared(snapshot_of(pods.clone()));
        let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
        let metrics = Metrics::new();
        let scraper = Scraper::new(
            cache.clone(),
            shared,
            metrics.clone(),
            ScrapeOptions::default(),
        );
        (pods.into_iter().next().unwrap(), cache, metrics, scraper)
    };
    let counter = |metrics: &Metrics, name: &str| -> f64 {
        let text = metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };

    // uvicorn at vLLM's default: five rounds 0.2 s apart share one connection.
    let vllm = start_uvicorn(5).await;
    let (pod, cache, metrics, scraper) = scrape(vllm.addr).await;
    for _ in 0..5 {
        scraper.scrape_once().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Lookup::Fresh(s) = cache.lookup(&pod, MODEL) else {
        panic!("uvicorn pod not fresh: {:?}", cache.lookup(&pod, MODEL))
    };
    assert_eq!(
        (s.kv_cache_usage, s.queue_length, s.running_requests),
        (0.25, 3.0, Some(1.0))
    );
    assert_eq!(
        counter(&metrics, "wva_metrics_server_pod_scrapes_total"),
        5.0
    );
    assert_eq!(
        counter(
            &metrics,
            "wva_metrics_server_pod_scrape_connections_opened_total"
        ),
        1.0
    );

    // uvicorn closing idle connections after 1 s, scraped about every second: the close races the
    // request on some rounds. Every scrape still succeeds.
    let racing = start_uvicorn(1).await;
    let (_, _, metrics, scraper) = scrape(racing.addr).await;
    for i in 0..12u64 {
        scraper.scrape_once().await;
        tokio::time::sleep(Duration::from_millis(940 + 10 * i)).await;
    }
    assert_eq!(
        counter(&metrics, "wva_metrics_server_pod_scrapes_total"),
        12.0
    );
    assert!(
        !metrics.encode().contains("pod_scrape_failures_total{"),
        "{}",
        metrics.encode()
    );
}

/// A Prometheus process with a TLS web config, stopped on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    ca: Ca,
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prometheus_binary() -> String {
    let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into());
    match Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => bin,
        _ => panic!("the Prometheus tests need a real Prometheus: install it with `sudo apt-get install -y prometheus` (or set PROMETHEUS_BIN)"),
    }
}

async fn start_prometheus(targets: &[(SocketAddr, &str)]) -> Prometheus {
    let bin = prometheus_binary();
    let dir = std::env::temp_dir().join(format!("wva-prom-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("prometheus-test-ca");
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: {0}/tls.crt\n  key_file: {0}/tls.key\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut scrape = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vllm\n    static_configs:\n");
    for (addr, pod) in targets {
        // The labels a PodMonitor's relabelling adds.
        scrape.push_str(&format!(
            "      - targets: ['{addr}']\n        labels: {{namespace: ns, pod: {pod}}}\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), scrape).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}/prometheus.yml", dir.display()))
        .arg(format!("--web.config.file={}/web.yml", dir.display()))
        .arg(format!("--storage.tsdb.path={}/data", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    Prometheus {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        ca,
        dir,
    }
}

fn prom_args(url: String, ca: Option<PathBuf>) -> PrometheusOptions {
    PrometheusOptions {
        base_url: url,
        insecure_skip_verify: false,
        ca_cert_path: ca,
        client_cert_path: None,
        client_key_path: None,
        server_name: None,
        bearer_token: None,
        token_path: None,
        allow_http: false,
        timeout: Duration::from_secs(3),
    }
}

#[tokio::test]
async fn prometheus_over_https_with_ca_bearer_token_and_mismatch() {
    install_provider();
    // Pod 1 also serves what saturation V2 reads: its KV cache, and counters that grow by one request
    // of 100 prompt and 50 generated tokens (30 from the prefix cache) per scrape.
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (p1, _) = serve(Router::new().route(
        "/metrics",
        get(move || {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move {
                let l = format!("engine=\"0\",model_name=\"{MODEL}\"");
                format!(
                    "{}vllm:cache_config_info{{block_size=\"16\",engine=\"0\",num_gpu_blocks=\"1000\"}} 1.0\n\
                     vllm:request_prompt_tokens_sum{{{l}}} {}\nvllm:request_prompt_tokens_count{{{l}}} {n}\n\
                     vllm:request_generation_tokens_sum{{{l}}} {}\nvllm:request_generation_tokens_count{{{l}}} {n}\n\
                     vllm:prefix_cache_queries_total{{{l}}} {}\nvllm:prefix_cache_hits_total{{{l}}} {}\n",
                    vllm_page(0.61, 4.0),
                    n * 100,
                    n * 50,
                    n * 100,
                    n * 30
                )
            }
        }),
    ))
    .await;
    let (p2, _) =
        serve(Router::new().route("/metrics", get(|| async { vllm_page(0.2, 0.0) }))).await;
    // Pod 3 runs SGLang: its names for the same signals (SGLang's `metrics/collector.py`), one
    // request of 200 prompt tokens (50 cached) and 20 generated per scrape.
    let sglang_served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (p3, _) = serve(Router::new().route(
        "/metrics",
        get(move || {
            let n = sglang_served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            async move {
                let l = format!("model_name=\"{MODEL}\",engine_type=\"unified\",tp_rank=\"0\"");
                format!(
                    "sglang:token_usage{{{l}}} 0.33\nsglang:num_queue_reqs{{{l}}} 2\n\
                     sglang:max_total_num_tokens{{{l}}} 50000\n\
                     sglang:prompt_tokens_histogram_sum{{{l}}} {}\nsglang:prompt_tokens_histogram_count{{{l}}} {n}\n\
                     sglang:generation_tokens_histogram_sum{{{l}}} {}\nsglang:generation_tokens_histogram_count{{{l}}} {n}\n\
                     sglang:prompt_tokens_total{{{l}}} {}\nsglang:cached_tokens_total{{{l}}} {}\n\
                     sglang:num_requests_total{{{l}}} {n}\n",
                    n * 200,
                    n * 20,
                    n * 200,
                    n * 50
                )
            }
        }),
    ))
    .await;
    let prom = start_prometheus(&[(p1, "pod-1"), (p2, "pod-2"), (p3, "pod-3")]).await;
    let ca_path = prom.dir.join("ca.crt");
    std::fs::write(&ca_path, &prom.ca.pem).unwrap();
    let url = format!("https://127.0.0.1:{}", prom.addr.port());
    let metrics = Metrics::new();

    let source = PrometheusSource::new(
        PrometheusClient::new(&prom_args(url.clone(), Some(ca_path.clone()))).unwrap(),
        PollOptions {
            lookback: Duration::from_secs(60),
            interval: Duration::from_secs(1),
            load_every: Duration::from_secs(1),
        },
        Arc::new(FixedTargets::default()),
        Arc::new(ArcSwap::from_pointee(ZeroConfig::default())),
        metrics.clone(),
    );
    let (t1, t2, t3) = (pod("pod-1", p1), pod("pod-2", p2), pod("pod-3", p3));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        source.refresh("ns", MODEL).await;
        if let (Lookup::Fresh(a), Lookup::Fresh(b), Lookup::Fresh(c)) = (
            source.lookup(&t1, MODEL),
            source.lookup(&t2, MODEL),
            source.lookup(&t3, MODEL),
        ) {
            assert_eq!(
                (a.kv_cache_usage, a.queue_length, a.source),
                (0.61, 4.0, SourceKind::Prometheus)
            );
            assert_eq!((b.kv_cache_usage, b.queue_length), (0.2, 0.0));
            assert_eq!(
                (c.kv_cache_usage, c.queue_length),
                (0.33, 2.0),
                "SGLang's pod"
            );
            break;
        }
        let log = std::fs::read_to_string(prom.dir.join("prometheus.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned both pods: {:?}\n{log}",
            source.lookup(&t1, MODEL)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Saturation V2's figures through WVA v0.9's queries: KV tokens from cache_config_info (no model
    // label), the request shape and the hit rate over five minutes; a pod without them has none.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        source.refresh("ns", MODEL).await;
        if let Lookup::Fresh(a) = source.lookup(&t1, MODEL) {
            if let Some(t) = a.tokens.filter(|t| t.avg_output_tokens > 0.0) {
                assert_eq!(t.total_kv_tokens, Some(16_000));
                assert!((t.avg_input_tokens - 100.0).abs() < 1e-6, "{t:?}");
                assert!((t.avg_output_tokens - 50.0).abs() < 1e-6, "{t:?}");
                assert!((t.prefix_cache_hit_rate - 0.3).abs() < 1e-6, "{t:?}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned V2's figures for pod-1: {:?}",
            source.lookup(&t1, MODEL)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Lookup::Fresh(b) = source.lookup(&t2, MODEL) {
        assert_eq!(b.tokens.and_then(|t| t.total_kv_tokens), None);
    }
    // SGLang's figures through the same queries: capacity in tokens, shape, cached over prompt.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        source.refresh("ns", MODEL).await;
        if let Lookup::Fresh(c) = source.lookup(&t3, MODEL) {
            if let Some(t) = c.tokens.filter(|t| t.avg_output_tokens > 0.0) {
                assert_eq!(t.total_kv_tokens, Some(50_000));
                assert!((t.avg_input_tokens - 200.0).abs() < 1e-6, "{t:?}");
                assert!((t.avg_output_tokens - 20.0).abs() < 1e-6, "{t:?}");
                assert!((t.prefix_cache_hit_rate - 0.25).abs() < 1e-6, "{t:?}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned V2's figures for SGLang's pod-3: {:?}",
            source.lookup(&t3, MODEL)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A pod Prometheus does not know is named, not zeroed.
    let reason = missing_reason(source.lookup(&pod("pod-9", p1), MODEL));
    assert!(
        reason.contains("Prometheus has no vLLM series for pod pod-9"),
        "{reason}"
    );

    // CA mismatch: the query fails with a TLS error, and earlier results are not replaced by zeros.
    let other = Ca::new("unrelated-ca");
    let wrong_ca = prom.dir.join("wrong-ca.crt");
    std::fs::write(&wrong_ca, &other.pem).unwrap();
    let client = PrometheusClient::new(&prom_args(url.clone(), Some(wrong_ca))).unwrap();
    let err = client.query("up").await.unwrap_err().to_string();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // Behind a bearer-token proxy (as Thanos querier behind an OAuth proxy): no token → refused, token → answered.
    let upstream = https_client(&prom.ca.pem, None, false);
    let target = url.clone();
    let proxy = Router::new().fallback(move |req: axum::extract::Request| {
        let (upstream, target) = (upstream.clone(), target.clone());
        async move {
            let authorized = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some("Bearer s3cret");
            if !authorized {
                return (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
            }
            let uri = req.uri().clone();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap();
            let resp = upstream
                .post(format!(
                    "{target}{}",
                    uri.path_and_query()
                        .map_or("/", axum::http::uri::PathAndQuery::as_str)
                ))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            (
                axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap(),
                resp.bytes().await.unwrap(),
            )
                .into_response()
        }
    });
    let proxy_ca = Ca::new("proxy-ca");
    let proxy_leaf = proxy_ca.server(&["127.0.0.1"]);
    let proxy_addr = serve_tls(proxy, &proxy_leaf).await;
    let proxy_ca_path = prom.dir.join("proxy-ca.crt");
    std::fs::write(&proxy_ca_path, &proxy_ca.pem).unwrap();
    let proxy_url = format!("https://127.0.0.1:{}", proxy_addr.port());
    let no_token =
        PrometheusClient::new(&prom_args(proxy_url.clone(), Some(proxy_ca_path.clone()))).unwrap();
    let err = no_token.query("up").await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");
    let token_file = prom.dir.join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let with_token = PrometheusClient::new(&PrometheusOptions {
        token_path: Some(token_file),
        ..prom_args(proxy_url, Some(proxy_ca_path))
    })
    .unwrap();
    let up = with_token.query("up").await.unwrap();
    assert_eq!(up.len(), 3, "{up:?}");
}

/// Serves an axum app over TLS with the given certificate (a bearer-token proxy in front of Prometheus).
async fn serve_tls(app: Router, leaf: &Leaf) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let app = app.clone();
                        async move {
                            tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

/// A TLS pod serving the vLLM page only with `Authorization: Bearer <token>`.
async fn tls_pod(leaf: &Leaf, token: &'static str) -> SocketAddr {
    let app = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| async move {
            let presented = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if presented.as_deref() == Some(&format!("Bearer {token}")) {
                vllm_page(0.33, 4.0).into_response()
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, "token required").into_response()
            }
        }),
    );
    serve_tls(app, leaf).await
}

/// Pods annotated `prometheus.io/scheme: https` are scraped over real TLS, verified against the
/// configured CA (and server name), with the bearer token from a file re-read when it rotates; a pod
/// with another CA's certificate, a name mismatch or a refused token says why.
#[tokio::test]
async fn https_pods_with_a_ca_a_server_name_and_a_rotating_token() {
    use wva_metrics_server::sources::reach::{Reach, ScrapeTls, TokenFile};
    use wva_metrics_server::target::Scheme;
    install_provider();
    let ca = Ca::new("pods-ca");
    let stranger = Ca::new("someone-else");
    let by_ip = tls_pod(&ca.server(&["127.0.0.1"]), "t0k3n").await;
    let by_name = tls_pod(&ca.server(&["vllm.llm.svc"]), "t0k3n").await;
    let foreign = tls_pod(&stranger.server(&["127.0.0.1"]), "t0k3n").await;
    let https = |name: &str, addr: SocketAddr| PodTarget {
        scheme: Scheme::Https,
        endpoint: Default::default(),
        tls_server_name: None,
        ..pod(name, addr)
    };
    let pods = vec![
        https("by-ip", by_ip),
        https("by-name", by_name),
        https("foreign", foreign),
    ];
    let dir = std::env::temp_dir().join(format!("wva-https-scrape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_file, token_file) = (dir.join("ca.crt"), dir.join("token"));
    std::fs::write(&ca_file, &ca.pem).unwrap();
    std::fs::write(&token_file, "t0k3n\n").unwrap();
    let scraper = |server_name: Option<&str>, token: bool| {
        let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
        let opts = ScrapeOptions {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            concurrency: 4,
            max_body_bytes: 256 * 1024,
            reach: Reach {
                tls: Some(ScrapeTls::new(Some(&ca_file), server_name).map(Arc::new)),
                token: token.then(|| Arc::new(TokenFile::new(token_file.clone()))),
            },
            ..ScrapeOptions::default()
        };
        let s = Scraper::new(
            cache.clone(),
            snapshot::shared(snapshot_of(pods.clone())),
            Metrics::new(),
            opts,
        );
        (s, cache)
    };

    let (s, cache) = scraper(None, true);
    s.scrape_once().await;
    let Lookup::Fresh(sample) = cache.lookup(&pods[0], MODEL) else {
        panic!("{:?}", cache.lookup(&pods[0], MODEL))
    };
    assert_eq!((sample.kv_cache_usage, sample.queue_length), (0.33, 4.0));
    let mismatch = missing_reason(cache.lookup(&pods[1], MODEL));
    assert!(
        mismatch.contains("TLS handshake") && mismatch.contains("https://"),
        "{mismatch}"
    );
    let foreign_ca = missing_reason(cache.lookup(&pods[2], MODEL));
    assert!(foreign_ca.contains("TLS handshake"), "{foreign_ca}");

    // Verified against the Service name the certificate carries.
    let (s, cache) = scraper(Some("vllm.llm.svc"), true);
    s.scrape_once().await;
    assert!(matches!(cache.lookup(&pods[1], MODEL), Lookup::Fresh(_)));

    // No token: the pod's 401 is the reason; a rotated wrong token is read again and refused too.
    let (s, cache) = scraper(None, false);
    s.scrape_once().await;
    assert!(missing_reason(cache.lookup(&pods[0], MODEL)).contains("HTTP 401"));
    let (s, cache) = scraper(None, true);
    std::fs::write(&token_file, "rotated").unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(&token_file)
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    s.scrape_once().await;
    assert!(missing_reason(cache.lookup(&pods[0], MODEL)).contains("HTTP 401"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 21 item 6: 72 pods that never answer (concurrency 4, timeout 2 s) beside one healthy pod. The
/// healthy pod is still scraped every round (before: once per 36 s round), its sample stays fresh, and
/// the loop's heartbeat, which `/livez` reads, keeps beating: a pod's slowness costs that pod only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_pods_cost_only_themselves() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let (good, _server) = serve(Router::new().route(
        "/metrics",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { vllm_page(0.3, 0.0) }
        }),
    ))
    .await;
    // Accepts every connection and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let mut pods = vec![pod("good", good)];
    pods.extend((0..72).map(|i| pod(&format!("hang-{i:02}"), hang_addr)));
    let shared = snapshot::shared(snapshot_of(pods));
    let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
    let opts = ScrapeOptions {
        interval: Duration::from_millis(250),
        timeout: Duration::from_secs(2),
        concurrency: 4,
        ..ScrapeOptions::default()
    };
    let scraper = Arc::new(Scraper::new(cache.clone(), shared, Metrics::new(), opts));
    let health = wva_metrics_server::health::Health::new();
    let heartbeat = health.heartbeat("scrape-loop", Duration::from_secs(2));
    let task = tokio::spawn(scraper.run(heartbeat.clone()));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let scraped = hits.load(Ordering::SeqCst);
    assert!(
        scraped >= 8,
        "the healthy pod was scraped {scraped} times in 6 s beside 72 hanging pods"
    );
    assert!(
        heartbeat.age() < heartbeat.bound(),
        "the scrape loop last beat {:?} ago",
        heartbeat.age()
    );
    match cache.lookup(&pod("good", good), MODEL) {
        Lookup::Fresh(s) => assert!(s.age < Duration::from_secs(3), "{:?}", s.age),
        other => panic!("{other:?}"),
    }
    assert!(
        missing_reason(cache.lookup(&pod("hang-00", hang_addr), MODEL))
            .contains("no complete answer within")
    );
    task.abort();
}
