//! The pod scraper: every interval, fetch `/metrics` from every Ready pod of every variant (bounded
//! concurrency, per-scrape timeout, body size limit, no redirects), extract the vLLM signals and record
//! them in the window cache. Fetching and decoding only: deciding is the engine's job.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use thiserror::Error;

use super::error_chain;
use super::exposition::{extract_wanted, Extraction};
use super::http1::{self, Http1Error, Pool};
use super::reach::{Reach, ScrapeTls};
use super::window::{PageFacts, WindowCache};
use crate::changes::Changes;
use crate::health::Heartbeat;
use crate::target::{PodTarget, Scheme, TargetFeed};
use crate::telemetry::{LogLimiter, Metrics, PodLabels};
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
    /// File descriptors kept for everything but pod connections (both ports' connection limits, watches,
    /// files): kept connections to pods never take them.
    pub reserved_fds: usize,
}

/// Descriptors kept for everything else at the defaults: the HTTPS port's 1,024 connections, the
/// external scaler's 64, and 512 for watches, files and the endpoint pickers.
pub const DEFAULT_RESERVED_FDS: usize = 1024 + 64 + 512;

impl Default for ScrapeOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            concurrency: 64,
            max_body_bytes: DEFAULT_MAX_PAGE_BYTES,
            reach: Reach::default(),
            reserved_fds: DEFAULT_RESERVED_FDS,
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
    #[error("GET {url}: no complete answer within {timeout:?}")]
    TimedOut { url: String, timeout: Duration },
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
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(0);
    crate::tls::trust_ca_file(builder, ca_file)
        .map_err(|e| format!("--ca-file: {e}"))?
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
                // The pod's monitor's `tlsConfig.serverName`, else `--scrape-tls-server-name`, else its IP.
                let from_monitor = pod
                    .tls_server_name
                    .as_deref()
                    .map(|n| ServerName::try_from(n.to_string()))
                    .transpose()
                    .map_err(|e| {
                        request_error(format!(
                            "the monitor's tlsConfig.serverName {:?}: {e}",
                            pod.tls_server_name
                        ))
                    })?;
                let name = from_monitor
                    .or_else(|| tls.server_name.clone())
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
    let (response, tcp, opened) =
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| FetchError::TimedOut {
                url: pod_url(pod),
                timeout,
            })??;
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
    targets: Arc<dyn TargetFeed>,
    metrics: Arc<Metrics>,
    opts: ScrapeOptions,
    /// Plain-HTTP connections kept between rounds, at most as many as the open-files limit allows.
    pool: Pool,
    /// The pod count beyond which connections cannot all be kept, once warned about.
    warned_capacity: AtomicBool,
    /// How each pod's last scrape went (absent: not scraped yet), which decides its lane.
    classes: Mutex<HashMap<PodKey, Class>>,
    /// Per-pod warnings, at most one a minute per pod.
    log: LogLimiter,
    /// Bumped after each pod's scrape (push streams wake on it).
    changes: Changes,
}

/// A pod's lane, from its last scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Answered (or failed) within half the timeout: scraped first, in the fast lane.
    Quick,
    /// Timed out or took more than half the timeout: scraped in the slow lane only.
    Slow,
}

/// A pod by namespace and serving instance (its name, or `pod:port` for a rank read at its own port).
type PodKey = (String, String);

fn key_of(pod: &PodTarget) -> PodKey {
    (pod.namespace.clone(), pod.instance().into_owned())
}

/// Slots of the concurrency: (fast lane, of which pods not scraped yet may take, slow lane). The slow
/// lane has an eighth (at least one); pods not scraped yet take at most half of the fast lane, so that
/// pods that start hanging in numbers cannot hold every slot that healthy pods are scraped in.
pub(crate) fn lane_slots(concurrency: usize) -> (usize, usize, usize) {
    let concurrency = concurrency.max(1);
    let slow = (concurrency / 8).max(1);
    let fast = concurrency.saturating_sub(slow).max(1);
    (fast, fast.div_ceil(2), slow)
}

/// What a round's scrapes share: the models wanted per namespace, and the bearer token read once.
struct RoundInputs {
    wanted: HashMap<String, HashSet<String>>,
    token: Option<Result<String, String>>,
}

/// A scrape waiting for a slot in its lane.
struct Job {
    pod: PodTarget,
    round: Arc<RoundInputs>,
}

/// Which queue a scrape came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Quick,
    New,
    Slow,
}

/// How a scrape went, for the lanes.
struct Done {
    key: PodKey,
    queue: Queue,
    class: Class,
}

type Running<'a> = futures::stream::FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send + 'a>>,
>;

/// Scrapes in flight and waiting, in lanes: a pod's slowness costs that pod only. Pods whose last
/// scrape was quick go first; pods not scraped yet take at most half the fast lane; pods that timed out
/// or were slow wait for the slow lane. A round queues every pod that has no scrape in flight or
/// waiting, and never waits for the previous one to end.
struct Lanes<'a> {
    scraper: &'a Scraper,
    queues: [std::collections::VecDeque<Job>; 3],
    running: Running<'a>,
    /// In flight per queue.
    in_flight: [usize; 3],
    /// Pods queued or in flight.
    busy: HashSet<PodKey>,
}

impl Queue {
    fn index(self) -> usize {
        match self {
            Queue::Quick => 0,
            Queue::New => 1,
            Queue::Slow => 2,
        }
    }
}

impl<'a> Lanes<'a> {
    fn new(scraper: &'a Scraper) -> Self {
        Self {
            scraper,
            queues: Default::default(),
            running: Running::new(),
            in_flight: [0; 3],
            busy: HashSet::new(),
        }
    }

    /// Queues a round: every pod of the feed with nothing queued or in flight.
    fn add_round(&mut self) {
        let Some((targets, round)) = self.scraper.prepare_round() else {
            return;
        };
        let classes = self
            .scraper
            .classes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for pod in targets {
            let key = key_of(&pod);
            if self.busy.contains(&key) {
                continue;
            }
            let queue = match classes.get(&key) {
                Some(Class::Quick) => Queue::Quick,
                Some(Class::Slow) => Queue::Slow,
                None => Queue::New,
            };
            self.queues[queue.index()].push_back(Job {
                pod,
                round: round.clone(),
            });
            self.busy.insert(key);
        }
        drop(classes);
        self.fill();
    }

    /// Starts queued scrapes while their lane has free slots.
    fn fill(&mut self) {
        let (fast, new_max, slow) = lane_slots(self.scraper.opts.concurrency);
        loop {
            let fast_busy = self.in_flight[0] + self.in_flight[1];
            let next = if fast_busy < fast && !self.queues[0].is_empty() {
                Queue::Quick
            } else if fast_busy < fast && self.in_flight[1] < new_max && !self.queues[1].is_empty()
            {
                Queue::New
            } else if self.in_flight[2] < slow && !self.queues[2].is_empty() {
                Queue::Slow
            } else {
                break;
            };
            let Some(job) = self.queues[next.index()].pop_front() else {
                break;
            };
            self.in_flight[next.index()] += 1;
            self.running
                .push(Box::pin(self.scraper.scrape_job(job, next)));
        }
    }

    fn finish(&mut self, done: Done) {
        self.in_flight[done.queue.index()] -= 1;
        self.busy.remove(&done.key);
        self.scraper
            .classes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(done.key, done.class);
        self.scraper.changes.notify();
        self.fill();
    }

    fn idle(&self) -> bool {
        self.running.is_empty() && self.queues.iter().all(std::collections::VecDeque::is_empty)
    }
}

impl Scraper {
    pub fn new(
        cache: Arc<WindowCache>,
        targets: Arc<dyn TargetFeed>,
        metrics: Arc<Metrics>,
        opts: ScrapeOptions,
    ) -> Self {
        let pool = Pool::new(http1::capacity_for(
            http1::open_files_limit(),
            opts.concurrency,
            opts.reserved_fds,
        ));
        Self {
            cache,
            targets,
            metrics,
            opts,
            pool,
            warned_capacity: AtomicBool::new(false),
            classes: Mutex::new(HashMap::new()),
            log: LogLimiter::new(Duration::from_secs(60)),
            changes: Changes::new(),
        }
    }

    /// Bumps `changes` after each pod's scrape.
    pub fn notifying(mut self, changes: Changes) -> Self {
        self.changes = changes;
        self
    }

    /// Queues a round every `interval` forever and beats `heartbeat` each time: the loop's liveness,
    /// which no pod's slowness can hold back. A round does not wait for the previous one: a pod still
    /// being scraped, or waiting for a slot, is skipped until its scrape ends.
    pub async fn run(self: Arc<Self>, heartbeat: Arc<Heartbeat>) {
        let mut tick = tokio::time::interval(self.opts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lanes = Lanes::new(&self);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    lanes.add_round();
                    self.metrics
                        .scrape_connections_idle
                        .set(i64::try_from(self.pool.len()).unwrap_or(i64::MAX));
                    heartbeat.beat();
                }
                Some(done) = lanes.running.next(), if !lanes.running.is_empty() => lanes.finish(done),
            }
        }
    }

    /// One round over every pod the feed names now, to its end (tests, benchmarks).
    pub async fn scrape_once(&self) {
        let mut lanes = Lanes::new(self);
        lanes.add_round();
        while !lanes.idle() {
            match lanes.running.next().await {
                Some(done) => lanes.finish(done),
                None => lanes.fill(),
            }
        }
        self.metrics
            .scrape_connections_idle
            .set(i64::try_from(self.pool.len()).unwrap_or(i64::MAX));
    }

    /// The pods to scrape now and what their scrapes share; forgets pods that are gone. `None` when the
    /// feed has no pod.
    fn prepare_round(&self) -> Option<(Vec<PodTarget>, Arc<RoundInputs>)> {
        let targets = self.targets.pods();
        // Only models some variant of the pod's namespace asks for are kept: what a page holds
        // beyond that costs a counter, whatever its size.
        let mut wanted: HashMap<String, HashSet<String>> = HashMap::new();
        for (namespace, model) in self.targets.models() {
            wanted.entry(namespace).or_default().insert(model);
        }
        for (ns, pod) in self.cache.retain(&targets, Instant::now()) {
            self.metrics.forget_pod(&ns, &pod);
        }
        self.keep_connections_of(&targets);
        {
            let present: HashSet<PodKey> = targets.iter().map(key_of).collect();
            self.classes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|key, _| present.contains(key));
        }
        if targets.is_empty() {
            return None;
        }
        // The token file is looked at once a round, not once a pod.
        let token = self.opts.reach.token.as_ref().map(|t| t.read());
        Some((targets, Arc::new(RoundInputs { wanted, token })))
    }

    async fn scrape_job(&self, job: Job, queue: Queue) -> Done {
        let started = Instant::now();
        let none = HashSet::new();
        let models = job
            .round
            .wanted
            .get(job.pod.namespace.as_str())
            .unwrap_or(&none);
        let timed_out = self
            .scrape_pod(&job.pod, models, job.round.token.as_ref())
            .await;
        let slow = timed_out || started.elapsed() > self.opts.timeout / 2;
        Done {
            key: key_of(&job.pod),
            queue,
            class: if slow { Class::Slow } else { Class::Quick },
        }
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

    /// Scrapes one pod and records what it found; `true` when the pod did not answer in time.
    async fn scrape_pod(
        &self,
        pod: &PodTarget,
        wanted: &HashSet<String>,
        token: Option<&Result<String, String>>,
    ) -> bool {
        let token = match token {
            None => None,
            Some(Ok(t)) => Some(t.as_str()),
            Some(Err(e)) => {
                self.cache.record_error(pod, Instant::now(), e.clone());
                return false;
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
                    cache_config,
                    warnings,
                } = extract_wanted(&page.text, &|m| wanted.contains(m));
                let facts = PageFacts {
                    bytes: page.text.len(),
                    cut_at: page.truncated.then_some(self.opts.max_body_bytes),
                    other_models,
                    other_series,
                    cache_config,
                };
                if page.truncated {
                    if let Some(held) =
                        self.log
                            .allow(&format!("{}/{}", pod.namespace, pod.instance()))
                    {
                        tracing::warn!(pod = %pod.instance(), url = %pod_url(pod), limit = self.opts.max_body_bytes, repeats_held_back = held, "metrics page larger than the limit; parsed the first part only");
                    }
                }
                if !warnings.is_empty() {
                    tracing::debug!(pod = %pod.instance(), url = %pod_url(pod), count = warnings.len(), first = %warnings[0], "metrics page has malformed lines");
                }
                self.metrics.scrapes.inc();
                drop(page);
                self.cache.record_page(pod, Instant::now(), &models, facts);
                false
            }
            Err(e) => {
                let labels = PodLabels {
                    namespace: pod.namespace.clone(),
                    pod: pod.instance().into_owned(),
                };
                self.metrics.scrape_failures.get_or_create(&labels).inc();
                tracing::debug!(pod = %pod.instance(), error = %e, "scrape failed");
                self.cache.record_error(pod, Instant::now(), e.to_string());
                matches!(e, FetchError::TimedOut { .. })
            }
        }
    }
}
