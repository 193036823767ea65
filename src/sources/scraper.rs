//! The pod scraper: every interval, fetch `/metrics` from every Ready pod of every variant (bounded
//! concurrency, per-scrape timeout, body size limit, no redirects), extract the vLLM signals and record
//! them in the window cache. Fetching and decoding only: deciding is the engine's job.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use thiserror::Error;

use super::error_chain;
use super::exposition::{extract_wanted, Extraction};
use super::http1::{self, Http1Error, Pool};
use super::reach::{Reach, ScrapeTls};
use super::window::{PageFacts, WindowCache};
use crate::cluster::snapshot::{PodTarget, Scheme, SharedSnapshot};
use crate::health::Heartbeat;
use crate::telemetry::{Metrics, PodLabels};
use rustls::pki_types::ServerName;

/// The largest page read per pod. A vLLM page is 30–50 KB per engine (229 KB for eight engines,
/// `benches/page.rs`), so 2 MiB leaves ~9× headroom, and the worst case of the default concurrency,
/// 64 × 2 MiB = 128 MiB, fits the shipped 256 MiB memory limit with the rest of the process.
pub const DEFAULT_MAX_PAGE_BYTES: usize = 2 << 20;

#[derive(Debug, Clone)]
pub struct ScrapeOptions {
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_body_bytes: usize,
    /// HTTPS pods' TLS and the bearer token, when configured.
    pub reach: Reach,
}

impl Default for ScrapeOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            concurrency: 64,
            max_body_bytes: DEFAULT_MAX_PAGE_BYTES,
            reach: Reach::default(),
        }
    }
}

#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("GET {url}: {message}")]
    Request { url: String, message: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: body is not UTF-8")]
    NotUtf8 { url: String },
}

/// The page as text, and whether it was cut at the size limit.
pub(crate) struct Page {
    pub text: String,
    pub truncated: bool,
    /// A new connection was opened for it (not one kept from an earlier scrape).
    pub opened: bool,
}

/// A client for the `scrape` command: no redirects (a redirect from a pod is a misconfiguration we
/// report, not follow), the given timeout, no idle connections. (The scraper itself uses `fetch_pod`.)
pub(crate) fn http_client(
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0);
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("CA file {}: {e}", ca.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("CA file {}: {e}", ca.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("building the scrape client: {e}"))
}

/// Fetches a metrics page with `Accept: text/plain;version=0.0.4` (servers that negotiate would otherwise
/// send OpenMetrics with escaped names), reading at most `max` bytes.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    url: &str,
    max: usize,
    bearer: Option<&str>,
) -> Result<Page, FetchError> {
    let req_err = |e: reqwest::Error| FetchError::Request {
        url: url.to_string(),
        message: error_chain(&e),
    };
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT, "text/plain;version=0.0.4");
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let mut resp = req.send().await.map_err(req_err)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    // One allocation of the announced size (capped) instead of regrowing through a 50 KB page.
    let announced = resp
        .content_length()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0)
        .min(max);
    let mut body: Vec<u8> = Vec::with_capacity(announced);
    let mut truncated = false;
    while let Some(chunk) = resp.chunk().await.map_err(req_err)? {
        if append_limited(&mut body, &chunk, max) {
            truncated = true;
            break;
        }
    }
    finish_page(body, truncated, || url.to_string())
}

/// The body as a page: cut at the last complete line when truncated (so the tail is not misread as a
/// bad sample), and UTF-8. `url` is only built for the error.
fn finish_page(
    mut body: Vec<u8>,
    truncated: bool,
    url: impl FnOnce() -> String,
) -> Result<Page, FetchError> {
    if truncated {
        let end = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        body.truncate(end);
    }
    let text = String::from_utf8(body).map_err(|_| FetchError::NotUtf8 { url: url() })?;
    Ok(Page {
        text,
        truncated,
        opened: true,
    })
}

/// Appends `chunk` to `body` up to `max` bytes in all; `true` when it had to cut.
fn append_limited(body: &mut Vec<u8>, chunk: &[u8], max: usize) -> bool {
    if body.len() + chunk.len() > max {
        body.extend_from_slice(&chunk[..max - body.len()]);
        true
    } else {
        body.extend_from_slice(chunk);
        false
    }
}

/// One scrape of one pod over HTTP/1.1 (`http1`): no URL parsing, no connection task, no redirects (a
/// 3xx is an error like any non-2xx). Plain HTTP unless the pod says `prometheus.io/scheme: https`, then
/// TLS with `tls` (verified against its server name, or the pod's IP). This is the scraper's hot path
/// (10,000 pods every 5 s is 2,000 of these a second); `fetch` (reqwest) serves the `scrape` command for
/// host names. Same limits and errors as `fetch`.
///
/// With a `pool`, plain-HTTP connections are kept between scrapes: connecting costs more CPU than the
/// exchange itself (the kernel's share was 59 % of ours at 10,000 pods, `benches/fleet.rs`), and an idle
/// connection costs only its socket. A kept connection the server has closed meanwhile (vLLM closes idle
/// ones after `VLLM_HTTP_TIMEOUT_KEEP_ALIVE`, 5 s by default) is noticed before use, or by the request
/// finding no answer, and the request is sent again on a new connection: a `GET` is safe to repeat.
/// HTTPS connections are not kept (an idle rustls connection holds its buffers); session resumption keeps
/// their handshakes cheap.
pub(crate) async fn fetch_pod(
    pod: &PodTarget,
    timeout: Duration,
    max: usize,
    (bearer, tls): (Option<&str>, Option<&Result<Arc<ScrapeTls>, String>>),
    pool: Option<&Pool>,
) -> Result<Page, FetchError> {
    let request_error = |message: String| FetchError::Request {
        url: pod_url(pod),
        message,
    };
    let ip: std::net::IpAddr = pod
        .ip
        .parse()
        .map_err(|e| request_error(format!("pod IP {:?}: {e}", pod.ip)))?;
    let addr = std::net::SocketAddr::new(ip, pod.port);
    let request = http1::request(&pod.path, &addr.to_string(), bearer)
        .map_err(|e| request_error(e.to_string()))?;
    let answer = |e: Http1Error| match e {
        Http1Error::Status(status) => FetchError::Status {
            url: pod_url(pod),
            status,
        },
        e => request_error(e.to_string()),
    };
    // Only plain-HTTP connections are kept.
    let pool = pool.filter(|_| pod.scheme == Scheme::Http);
    let exchange = async {
        if let Some(mut tcp) = pool.and_then(|p| p.take(addr)) {
            match http1::exchange(&mut tcp, &request, max).await {
                Ok(response) => return Ok((response, tcp, false)),
                // Closed by the server while idle: once more on a new connection.
                Err(Http1Error::NoResponse(_)) => {}
                Err(e) => return Err(answer(e)),
            }
        }
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| request_error(format!("connecting: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match pod.scheme {
            Scheme::Http => {
                let response = http1::exchange(&mut tcp, &request, max)
                    .await
                    .map_err(answer)?;
                Ok((response, tcp, true))
            }
            Scheme::Https => {
                let tls = match tls {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => return Err(request_error(format!("TLS: {e}"))),
                    None => return Err(request_error(
                        "the pod asks for https (prometheus.io/scheme) and no TLS is configured"
                            .into(),
                    )),
                };
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(ip.into()));
                let mut stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| request_error(format!("TLS handshake: {e}")))?;
                let response = http1::exchange(&mut stream, &request, max)
                    .await
                    .map_err(answer)?;
                // A clean close, so the server does not log a truncated session.
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                let (tcp, _) = stream.into_inner();
                Ok((response, tcp, true))
            }
        }
    };
    let (response, tcp, opened) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| request_error(format!("no complete answer within {timeout:?}")))??;
    if let (Some(pool), true) = (pool, response.reusable) {
        pool.put(addr, tcp);
    }
    let mut page = finish_page(response.body, response.truncated, || pod_url(pod))?;
    page.opened = opened;
    Ok(page)
}

pub(crate) fn pod_url(pod: &PodTarget) -> String {
    let host = if pod.ip.contains(':') {
        format!("[{}]", pod.ip)
    } else {
        pod.ip.clone()
    };
    let scheme = match pod.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    format!("{scheme}://{host}:{}{}", pod.port, pod.path)
}

pub struct Scraper {
    cache: Arc<WindowCache>,
    snapshot: SharedSnapshot,
    metrics: Arc<Metrics>,
    opts: ScrapeOptions,
    /// Plain-HTTP connections kept between rounds, at most as many as the open-files limit allows.
    pool: Pool,
    /// The pod count beyond which connections cannot all be kept, once warned about.
    warned_capacity: AtomicBool,
}

impl Scraper {
    pub fn new(
        cache: Arc<WindowCache>,
        snapshot: SharedSnapshot,
        metrics: Arc<Metrics>,
        opts: ScrapeOptions,
    ) -> Self {
        let pool = Pool::new(http1::capacity_for(
            http1::open_files_limit(),
            opts.concurrency,
        ));
        Self {
            cache,
            snapshot,
            metrics,
            opts,
            pool,
            warned_capacity: AtomicBool::new(false),
        }
    }

    /// Scrapes every `interval` forever, beating `heartbeat` after each round.
    pub async fn run(self: Arc<Self>, heartbeat: Arc<Heartbeat>) {
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.scrape_once().await;
            heartbeat.beat();
        }
    }

    /// One round over every pod of the current snapshot.
    pub async fn scrape_once(&self) {
        let snapshot = self.snapshot.load_full();
        let targets = snapshot.pod_targets();
        // Only models some variant of the pod's namespace asks for are kept: what a page holds
        // beyond that costs a counter, whatever its size.
        let mut wanted: HashMap<&str, HashSet<&str>> = HashMap::new();
        for v in &snapshot.variants {
            wanted
                .entry(v.namespace.as_str())
                .or_default()
                .insert(v.model_id.as_str());
        }
        for (ns, pod) in self.cache.retain(&targets, Instant::now()) {
            self.metrics.forget_pod(&ns, &pod);
        }
        self.keep_connections_of(&targets);
        // The token file is looked at once a round, not once a pod.
        let token = self.opts.reach.token.as_ref().map(|t| t.read());
        let token = token.as_ref();
        let none = HashSet::new();
        let wanted = &wanted;
        let none = &none;
        futures::stream::iter(targets)
            .for_each_concurrent(self.opts.concurrency, |pod| async move {
                let models = wanted.get(pod.namespace.as_str()).unwrap_or(none);
                self.scrape_pod(&pod, models, token).await;
            })
            .await;
        self.metrics
            .scrape_connections_idle
            .set(i64::try_from(self.pool.len()).unwrap_or(i64::MAX));
    }

    /// Closes kept connections to pods no longer scraped, and says once when the open-files limit
    /// leaves some pods to reconnect every round.
    fn keep_connections_of(&self, targets: &[PodTarget]) {
        let keep: HashSet<std::net::SocketAddr> = targets
            .iter()
            .filter(|p| p.scheme == Scheme::Http)
            .filter_map(|p| Some(std::net::SocketAddr::new(p.ip.parse().ok()?, p.port)))
            .collect();
        self.pool.retain(&keep);
        if keep.len() > self.pool.capacity() && !self.warned_capacity.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                pods = keep.len(),
                kept = self.pool.capacity(),
                open_files_limit = http1::open_files_limit(),
                "the open-files limit lets only some pod connections be kept between scrapes; the others reconnect every round (raise the container's nofile limit)"
            );
        }
    }

    async fn scrape_pod(
        &self,
        pod: &PodTarget,
        wanted: &HashSet<&str>,
        token: Option<&Result<String, String>>,
    ) {
        let token = match token {
            None => None,
            Some(Ok(t)) => Some(t.as_str()),
            Some(Err(e)) => {
                self.cache.record_error(pod, Instant::now(), e.clone());
                return;
            }
        };
        let reach = (token, self.opts.reach.tls.as_ref());
        let fetched = fetch_pod(
            pod,
            self.opts.timeout,
            self.opts.max_body_bytes,
            reach,
            Some(&self.pool),
        )
        .await;
        match fetched {
            Ok(page) => {
                if page.opened {
                    self.metrics.scrape_connections_opened.inc();
                }
                let Extraction {
                    models,
                    other_models,
                    other_series,
                    warnings,
                } = extract_wanted(&page.text, &|m| wanted.contains(m));
                let facts = PageFacts {
                    bytes: page.text.len(),
                    cut_at: page.truncated.then_some(self.opts.max_body_bytes),
                    other_models,
                    other_series,
                };
                if page.truncated {
                    tracing::warn!(pod = %pod.name, url = %pod_url(pod), limit = self.opts.max_body_bytes, "metrics page larger than the limit; parsed the first part only");
                }
                if !warnings.is_empty() {
                    tracing::debug!(pod = %pod.name, url = %pod_url(pod), count = warnings.len(), first = %warnings[0], "metrics page has malformed lines");
                }
                self.metrics.scrapes.inc();
                drop(page);
                self.cache.record_page(pod, Instant::now(), &models, facts);
            }
            Err(e) => {
                let labels = PodLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                };
                self.metrics.scrape_failures.get_or_create(&labels).inc();
                tracing::debug!(pod = %pod.name, error = %e, "scrape failed");
                self.cache.record_error(pod, Instant::now(), e.to_string());
            }
        }
    }
}
