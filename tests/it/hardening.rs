//! Hostile input on loopback with real TLS: connections that do nothing cannot hold the server's slots,
//! HTTP/2 follows ALPN, error bodies do not grow with their input, and every form of "a pod answers but
//! has no usable sample" ends in a 503 naming the pod after `--max-metric-age`.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use support::{https_client, install_provider, one_variant, FixedSamples, Slow};
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::health::Health;
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::{MetricsProvider, ProviderError};
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::server::routes::AppState;
use wva_metrics_server::server::{serve, ServeOptions};
use wva_metrics_server::sources::scraper::{ScrapeOptions, Scraper};
use wva_metrics_server::sources::window::WindowCache;
use wva_metrics_server::target::PodTarget;
use wva_metrics_server::telemetry::Metrics;
use wva_metrics_server::tls;

const METRIC: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas";

struct Server {
    port: u16,
    ca: String,
    metrics: Arc<Metrics>,
}

async fn start(opts: ServeOptions, slow: Option<Duration>) -> Server {
    install_provider();
    let engine: Arc<dyn MetricsProvider> = Arc::new(Engine::new(
        snapshot::shared(one_variant("v1", 2)),
        Arc::new(FixedSamples(0.5, 1.0)),
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    ));
    let provider = match slow {
        Some(d) => Arc::new(Slow(engine, d)) as Arc<dyn MetricsProvider>,
        None => engine,
    };
    let generated = tls::generate_self_signed(&["127.0.0.1".into()]).unwrap();
    let crypto = tls::provider();
    let resolver = tls::ReloadingCert::from_key(generated.certified_key(&crypto).unwrap());
    let config = Arc::new(tls::server_config(resolver, crypto).unwrap());
    let metrics = Metrics::new();
    let state = Arc::new(AppState {
        provider,
        auth: None,
        metrics: metrics.clone(),
        health: Health::new(),
    });
    // The server gets a runtime of its own, as in the binary: a slow answer blocks one of its workers,
    // not the test's clock.
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            serve(listener, config, state, opts, std::future::pending()).await;
        });
    });
    Server {
        port,
        ca: generated.ca_pem,
        metrics,
    }
}

/// A TLS connection that completes its handshake with the given ALPN protocols.
async fn tls_connect(s: &Server, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(s.ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Whether the server closed the stream within `within` (EOF or reset).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // HTTP/2 control frames (SETTINGS, PING, GOAWAY) may arrive before the close.
            Ok(Ok(_)) => {}
        }
    }
}

fn closed_count(m: &Metrics, reason: &str) -> u64 {
    let text = m.encode();
    text.lines()
        .find(|l| {
            l.starts_with("wva_metrics_server_connections_closed_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Issue item 1: connections that finish the TLS handshake and send nothing take every slot; normal
/// clients still get answers (the idlest is closed to make room), and the silent ones are closed
/// after the first-request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_cannot_lock_clients_out() {
    let s = start(
        ServeOptions {
            max_connections: 16,
            first_request_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        None,
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(tls_connect(&s, &[b"h2", b"http/1.1"]).await);
    }
    let client = https_client(&s.ca, None, false);
    for i in 0..8 {
        let r = client
            .get(format!("https://127.0.0.1:{}{METRIC}", s.port))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("request {i} refused while silent connections held the slots: {e:?}")
            });
        assert_eq!(r.status().as_u16(), 200);
    }
    assert!(closed_count(&s.metrics, "evicted") >= 1);
    // Every silent connection is gone within the first-request timeout (plus a margin).
    for (i, c) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(c, Duration::from_secs(4)).await,
            "silent connection {i} still open"
        );
    }
}

/// An HTTP/2 client connection to `s` (pinging every `ping`, even while idle, when given) and the task
/// driving it, which ends when the server closes the connection.
async fn h2_session(
    s: &Server,
    ping: Option<Duration>,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let tls = tls_connect(s, &[b"h2"]).await;
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(ping)
            .keep_alive_while_idle(true)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

/// `GET /healthz` on an HTTP/2 session: it must answer 200.
async fn healthz(
    s: &Server,
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
) -> hyper::Result<()> {
    let req = hyper::Request::get(format!("https://127.0.0.1:{}/healthz", s.port))
        .body(http_body_util::Empty::<axum::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    assert_eq!(resp.status().as_u16(), 200);
    Ok(())
}

/// Issue item 1, HTTP/2: a connection whose client answers PINGs but sends no request is idle, and
/// is closed (GOAWAY, then EOF) after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_though_they_answer_pings() {
    let s = start(
        ServeOptions {
            idle_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        None,
    )
    .await;
    let (mut sender, driver) = h2_session(&s, Some(Duration::from_millis(200))).await;
    healthz(&s, &mut sender).await.unwrap();
    // The client keeps pinging; the server still ends the connection.
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection was not closed");
    assert!(closed_count(&s.metrics, "idle") >= 1);
}

/// The idle timeout counts from the end of the last request: a connection asked something more often
/// than the timeout stays open for longer than it, then closes once the requests stop. Requests do not
/// wake the connection's timer; it looks again when it fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_counts_from_the_last_request() {
    let s = start(
        ServeOptions {
            idle_timeout: Duration::from_millis(800),
            ..Default::default()
        },
        None,
    )
    .await;
    let (mut sender, mut driver) = h2_session(&s, None).await;
    let started = tokio::time::Instant::now();
    // 2.5 s of requests 300 ms apart: three idle timeouts' worth, never one without a request.
    while started.elapsed() < Duration::from_millis(2500) {
        healthz(&s, &mut sender)
            .await
            .unwrap_or_else(|e| panic!("closed after {:?} of requests: {e}", started.elapsed()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(closed_count(&s.metrics, "idle"), 0);
    assert!(!driver.is_finished(), "the busy connection was closed");
    let ended = tokio::time::timeout(Duration::from_secs(5), &mut driver).await;
    assert!(ended.is_ok(), "the connection was not closed once idle");
    assert_eq!(closed_count(&s.metrics, "idle"), 1);
}

/// Issue item 9: the protocol follows ALPN. An HTTP/2 preface on a connection that negotiated
/// http/1.1 is an HTTP/1 request the server refuses; it never answers with HTTP/2 frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_preface_on_an_http1_connection_is_refused() {
    let s = start(ServeOptions::default(), None).await;
    let mut tls = tls_connect(&s, &[b"http/1.1"]).await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut got)).await;
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 4") || got.starts_with(b"HTTP/1.1 505"),
        "answered {:?}",
        String::from_utf8_lossy(&got[..got.len().min(80)])
    );
    // The same client speaking h2 where it was negotiated is served.
    let client = https_client(&s.ca, None, true);
    let r = client
        .get(format!("https://127.0.0.1:{}/healthz", s.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
}

/// When every connection has a request in flight, a new one is closed at once; a client that never
/// finishes its TLS handshake is dropped after the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_connections_are_kept_and_handshakes_time_out() {
    let s = start(
        ServeOptions {
            max_connections: 1,
            handshake_timeout: Duration::from_millis(800),
            ..Default::default()
        },
        Some(Duration::from_secs(2)),
    )
    .await;
    // A TCP client that never starts TLS is dropped after the handshake timeout.
    let mut silent = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
    // A request in flight keeps its connection; the next connection is refused at once.
    let client = https_client(&s.ca, None, false);
    let url = format!("https://127.0.0.1:{}{METRIC}", s.port);
    let busy = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    assert!(
        closed_within(&mut second, Duration::from_millis(800)).await,
        "the connection over the limit is closed at once"
    );
    assert_eq!(busy.await.unwrap().unwrap().as_u16(), 200);
}

/// Issue item 8: error bodies do not grow with what they echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_stay_small_whatever_they_echo() {
    let s = start(ServeOptions::default(), None).await;
    let client = https_client(&s.ca, None, false);
    let values: Vec<String> = (0..6_000).map(|i| format!("w{i}")).collect();
    let huge_selector = format!("variant_name in ({})", values.join(","));
    let bad_selector = format!("{}===", "a".repeat(14_000));
    for (selector, code) in [(huge_selector, 404), (bad_selector, 400)] {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("labelSelector", &selector)
            .finish();
        let r = client
            .get(format!("https://127.0.0.1:{}{METRIC}?{query}", s.port))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
        let body = r.text().await.unwrap();
        assert!(
            body.len() < 3 * 1024,
            "{} bytes of body for a {} byte selector",
            body.len(),
            selector.len()
        );
        assert!(
            body.contains("bytes)"),
            "the cut says how long the input was: {body}"
        );
    }
}

/// Issue 21 item 10: a huge request target gets an answer, not a dropped connection: over HTTP/1.1 a
/// 700 KB one (414 or 431), over HTTP/2 the largest an `http::Uri` holds, 60 KB (431); and the server
/// answers the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_targets_get_an_answer() {
    let s = start(ServeOptions::default(), None).await;
    for len in [100_000, 700_000] {
        let mut tls = tls_connect(&s, &[b"http/1.1"]).await;
        let request = format!("GET /apis/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(len));
        // The server may answer before reading it all, and close.
        let _ = tls.write_all(request.as_bytes()).await;
        let mut head = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut head))
            .await
            .expect("an answer within 10 s")
            .expect("an answer, not a reset");
        let head = String::from_utf8_lossy(&head[..n]).to_string();
        assert!(
            head.starts_with("HTTP/1.1 414") || head.starts_with("HTTP/1.1 431"),
            "{len} bytes over HTTP/1.1: {head:?}"
        );
    }
    let client = https_client(&s.ca, None, true);
    let r = client
        .get(format!(
            "https://127.0.0.1:{}/apis/{}",
            s.port,
            "a".repeat(60_000)
        ))
        .send()
        .await
        .map_err(|e| format!("{:?}", e.status()))
        .expect("an HTTP/2 answer to a 60 KB path");
    assert_eq!(r.status().as_u16(), 431, "HTTP/2");
    let r = client
        .get(format!("https://127.0.0.1:{}/apis", s.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Issue 21 item 10: 50 streams at once against the limit of 32. A client that opens them before our
/// SETTINGS arrive (h2load does; Go's client assumes 100 until then) gets REFUSED_STREAM on the 18 over
/// the limit, and nothing else: a stream that the server never started, which HTTP/2 clients retry
/// (Go's transport does). Once SETTINGS are known, 50 at once all succeed (the client queues them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_limit_are_refused_and_retried() {
    let s = start(ServeOptions::default(), None).await;
    let tls = tls_connect(&s, &[b"h2"]).await;
    let (client, conn) = h2::client::Builder::new()
        .handshake::<_, axum::body::Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = || {
        http::Request::get(format!("https://127.0.0.1:{}/apis", s.port))
            .body(())
            .unwrap()
    };
    let send = |client: h2::client::SendRequest<axum::body::Bytes>| async move {
        let mut client = client.ready().await?;
        let (response, _) = client.send_request(request(), true)?;
        let response = response.await?;
        Ok::<_, h2::Error>(response.status().as_u16())
    };
    // The first flight, before the server's SETTINGS are read.
    let first: Vec<Result<u16, h2::Error>> =
        futures::future::join_all((0..50).map(|_| send(client.clone()))).await;
    let refused = first
        .iter()
        .filter(|r| matches!(r, Err(e) if e.reason() == Some(h2::Reason::REFUSED_STREAM)))
        .count();
    let ok = first.iter().filter(|r| matches!(r, Ok(200))).count();
    assert_eq!(ok + refused, 50, "{first:?}");
    assert!(refused <= 50 - 32, "{refused} refused");
    // Retried, they succeed; and later flights, with SETTINGS known, see no refusal at all.
    for _ in 0..refused {
        assert_eq!(send(client.clone()).await.unwrap(), 200);
    }
    for _ in 0..20 {
        let flight = futures::future::join_all((0..50).map(|_| send(client.clone()))).await;
        assert!(flight.iter().all(|r| matches!(r, Ok(200))), "{flight:?}");
    }
}

/// The page forms that answer 200 without a usable sample.
fn hostile_pages() -> Vec<(&'static str, Body, &'static str)> {
    let page_cut = {
        let mut p = "# HELP filler x\n".repeat(150_000);
        p.push_str("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\nvllm:num_requests_waiting{model_name=\"m\"} 1\n");
        p
    };
    let chunks = futures::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'#'; 64 * 1024]))),
    );
    vec![
        ("empty", Body::from(""), "the page is empty"),
        (
            "html",
            Body::from("<html><body>Service Unavailable</body></html>\n"),
            "no vLLM queue or KV-cache metrics",
        ),
        (
            "garbage",
            Body::from(vec![0xff_u8, 0xfe, b'\n', b'{', 0x80, b'\n']),
            "scrape failing",
        ),
        (
            "other-model",
            Body::from("vllm:kv_cache_usage_perc{model_name=\"other\"} 0.5\nvllm:num_requests_waiting{model_name=\"other\"} 1\n"),
            "no series with model_name=\"m\"",
        ),
        ("past-the-cut", Body::from(page_cut), "the page was cut at"),
        (
            "no-newlines",
            Body::from("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.5 vllm:num_requests_waiting{model_name=\"m\"} 1"),
            "no vLLM queue or KV-cache metrics",
        ),
        ("chunked-huge", Body::from_stream(chunks), "the page was cut at"),
        (
            "infinite",
            Body::from("vllm:kv_cache_usage_perc{model_name=\"m\"} +Inf\nvllm:num_requests_waiting{model_name=\"m\"} -1\n"),
            "the page has no vllm:kv_cache_usage_perc",
        ),
    ]
}

/// Issue item 5 (and 7): each form holds `spec.replicas` while young, then becomes a 503 that names
/// the pod and the reason after `--max-metric-age`; never a lower number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_no_usable_sample_ends_in_a_503_naming_the_pod() {
    let forms = hostile_pages();
    let names: Vec<&str> = forms.iter().map(|(n, _, _)| *n).collect();
    let bodies = Arc::new(std::sync::Mutex::new(
        forms
            .into_iter()
            .map(|(n, b, _)| (n, Some(b)))
            .collect::<std::collections::HashMap<_, _>>(),
    ));
    let mut pods = Vec::new();
    for name in &names {
        let b = bodies.clone();
        let name = *name;
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let b = b.clone();
                async move {
                    // Streams can be sent once; later scrapes get the same content again.
                    let body = b.lock().unwrap().get_mut(name).and_then(Option::take);
                    let body = body.unwrap_or_else(|| rebuild(name));
                    Response::builder()
                        .header(header::CONTENT_TYPE, "text/plain")
                        .body(body)
                        .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        pods.push((name, addr));
    }
    let variants: Vec<Variant> = pods
        .iter()
        .map(|(name, addr)| {
            Variant::new(
                "ns",
                &format!("v-{name}"),
                ("m", "H100"),
                10.0,
                vec![PodTarget::new(
                    "ns",
                    &format!("pod-{name}"),
                    &addr.ip().to_string(),
                    addr.port(),
                )],
            )
        })
        .collect();
    // One model per form, so that each 503 is about its own pod.
    let variants: Vec<Variant> = variants
        .into_iter()
        .map(|mut v| {
            v.model_id = "m".into();
            v.namespace = format!("ns-{}", v.name);
            v.pods[0].namespace = v.namespace.clone();
            v
        })
        .collect();
    let mut sorted = variants.clone();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let shared = snapshot::shared(Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        pickers: Vec::new(),
        variants: sorted,
        excluded: vec![],
        synced: true,
    });
    let cache = Arc::new(WindowCache::new(Duration::from_secs(1)));
    let scraper = Scraper::new(
        cache.clone(),
        shared.clone(),
        Metrics::new(),
        ScrapeOptions {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            concurrency: 8,
            max_body_bytes: 1 << 20,
            reach: Default::default(),
            reserved_fds: 512,
        },
    );
    let max_age = Duration::from_secs(2);
    let engine = Engine::new(
        shared,
        cache,
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        max_age,
    );
    let everything = Selector::everything();
    // Young: every form holds spec.replicas (1), never less.
    scraper.scrape_once().await;
    for v in &variants {
        let items = engine
            .external_metric(&v.namespace, "inferno_desired_replicas", &everything)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(items[0].value_milli, 1000, "{}", v.name);
    }
    let start = Instant::now();
    while start.elapsed() < max_age + Duration::from_millis(800) {
        scraper.scrape_once().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expected: Vec<&str> = hostile_pages().iter().map(|(_, _, r)| *r).collect();
    for (v, reason) in variants.iter().zip(expected) {
        let err = engine
            .external_metric(&v.namespace, "inferno_desired_replicas", &everything)
            .expect_err(&format!("{} still answered after --max-metric-age", v.name));
        let ProviderError::Unavailable(msg) = err else {
            panic!("{}: {err:?}", v.name)
        };
        assert!(msg.contains(&v.pods[0].name), "{}: {msg}", v.name);
        assert!(msg.contains(reason), "{}: {msg}", v.name);
        assert!(msg.len() < 1024, "{}: {} bytes", v.name, msg.len());
    }
}

/// The content of a form for scrapes after the first (streams are consumed once).
fn rebuild(name: &str) -> Body {
    hostile_pages()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, b, _)| b)
        .unwrap_or_default()
}
