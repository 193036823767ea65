//! Wiring for the three commands: which stores, sources and tasks `serve` starts, and the small
//! `analyze` and `scrape` tools. Each piece is built elsewhere; this only connects them.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::review::KubeReviewer;
use crate::auth::Auth;
use crate::cluster::snapshot::{self, SharedSnapshot, Snapshot};
use crate::cluster::watch;
use crate::config::{MetricsSource, ServeArgs, TlsArgs};
use crate::engine::{self, Engine};
use crate::error::Error;
use crate::health::{liveness_bound, Health};
use crate::saturation::config::Thresholds;
use crate::saturation::ZeroConfig;
use crate::scaler;
use crate::server::routes::AppState;
use crate::server::{self as http};
use crate::sources::epp::{DemandSource, EppSource};
use crate::sources::prometheus::{PrometheusClient, PrometheusSource};
use crate::sources::scraper::Scraper;
use crate::sources::window::WindowCache;
use crate::sources::{Chain, SampleSource};
use crate::standalone::FileScope;
use crate::status::StatusWriter;
use crate::supervisor::{RestartPolicy, Supervisor};
use crate::telemetry::Metrics;
use crate::tls::{self, CertSource, ReloadingCert};

/// How often the standalone file is checked for changes.
pub(crate) const STANDALONE_POLL: Duration = Duration::from_secs(2);
/// Timeout of one TokenReview or SubjectAccessReview call.
pub(crate) const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

async fn kube_client(kubeconfig: &Option<PathBuf>) -> Result<kube::Client, Error> {
    let kube_err = |context: String, e: Box<dyn std::error::Error + Send + Sync>| Error::Kube {
        context,
        source: e,
    };
    let config = match kubeconfig {
        Some(path) => {
            let context = format!("--kubeconfig {}", path.display());
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| kube_err(context.clone(), Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| kube_err(context, Box::new(e)))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            kube_err(
                "no Kubernetes configuration: not in a cluster and no kubeconfig found; pass --kubeconfig or use --standalone FILE".into(),
                Box::new(e),
            )
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| kube_err("building the Kubernetes client".into(), Box::new(e)))
}

/// The serving certificate: from files (hot-reloaded by a supervised task) or generated, with its CA
/// written out. `/readyz` checks that the one in service is valid.
fn serving_cert(
    args: &TlsArgs,
    (port, bind): (u16, IpAddr),
    health: &Health,
    tasks: &mut Supervisor,
) -> Result<(Arc<ReloadingCert>, CertSource), Error> {
    let (resolver, source) = load_serving_cert(args, port, bind, tasks)?;
    let in_service = resolver.clone();
    health.condition("tls", move || {
        in_service.valid_at(std::time::SystemTime::now())
    });
    Ok((resolver, source))
}

fn load_serving_cert(
    args: &TlsArgs,
    port: u16,
    bind: IpAddr,
    tasks: &mut Supervisor,
) -> Result<(Arc<ReloadingCert>, CertSource), Error> {
    let provider = tls::provider();
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let resolver = ReloadingCert::load(cert, key, &provider)?;
        let (r, c, k, every) = (
            resolver.clone(),
            cert.clone(),
            key.clone(),
            args.tls_reload_interval,
        );
        tasks.add("serving-certificate-reload", move || {
            tls::watch_files(r.clone(), c.clone(), k.clone(), every, provider.clone())
        });
        return Ok((resolver, CertSource::Files { cert: cert.clone() }));
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !bind.is_unspecified() {
        names.push(bind.to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.extend(args.tls_sans.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    let generated = tls::generate_self_signed(&names)?;
    let dir = args
        .cert_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wva-metrics-server-{port}")));
    let ca_path = dir.join("ca.crt");
    tls::write_file(&ca_path, &generated.ca_pem)?;
    let ck = generated.certified_key(&provider)?;
    tracing::info!(ca = %ca_path.display(), sans = ?names, "no --tls-cert-file given: generated a self-signed serving certificate");
    Ok((
        ReloadingCert::from_key(ck),
        CertSource::Generated { ca_path },
    ))
}

/// Where variants come from, and what the HTTP surface needs for authentication.
struct ClusterState {
    shared: SharedSnapshot,
    auth: Option<Arc<Auth>>,
    /// For the status writer; `None` in standalone mode.
    client: Option<kube::Client>,
}

/// Standalone: the snapshot from a file, polled every [`STANDALONE_POLL`]; no authentication.
fn standalone_state(
    file: &Path,
    args: &ServeArgs,
    (scaling, zero): (&Arc<ArcSwap<Thresholds>>, &Arc<ArcSwap<ZeroConfig>>),
    health: &Health,
    tasks: &mut Supervisor,
) -> Result<ClusterState, Error> {
    let scope = FileScope {
        instance: args.cluster.controller_instance.clone(),
        namespace: args.cluster.namespace.clone(),
        configmap: args.cluster.saturation_configmap.clone(),
        zero_configmap: args.cluster.scale_to_zero_configmap.clone(),
    };
    let (snap, config, problems) =
        crate::standalone::load(file, &scope, (&scaling.load(), &zero.load()))
            .map_err(Error::Config)?;
    for p in &problems {
        tracing::error!("{p}");
    }
    scaling.store(Arc::new(config.thresholds));
    zero.store(Arc::new(config.zero));
    let shared = snapshot::shared(snap);
    let heartbeat = health.heartbeat("snapshot", liveness_bound(STANDALONE_POLL, Duration::ZERO));
    let (f, s, t, z) = (
        file.to_path_buf(),
        shared.clone(),
        scaling.clone(),
        zero.clone(),
    );
    tasks.add("standalone-file", move || {
        crate::standalone::watch_file(
            f.clone(),
            s.clone(),
            (t.clone(), z.clone()),
            STANDALONE_POLL,
            heartbeat.clone(),
            scope.clone(),
        )
    });
    Ok(ClusterState {
        shared,
        auth: None,
        client: None,
    })
}

/// Scale to zero's ConfigMap (WVA's `wva-model-scale-to-zero-config`), next to the saturation one.
fn watch_zero_config(
    args: &ServeArgs,
    client: &kube::Client,
    zero: &Arc<ArcSwap<ZeroConfig>>,
    metrics: &Arc<Metrics>,
    health: &Health,
    tasks: &mut Supervisor,
) {
    let synced = health.store("scale-to-zero-config");
    let (c, ns, name, target, m) = (
        client.clone(),
        args.cluster.namespace.clone(),
        args.cluster.scale_to_zero_configmap.clone(),
        zero.clone(),
        metrics.clone(),
    );
    tasks.add("scale-to-zero-config-watch", move || {
        watch::run_zero_config(
            c.clone(),
            ns.clone(),
            name.clone(),
            target.clone(),
            m.clone(),
            synced.clone(),
        )
    });
}

/// In a cluster: watchers for the snapshot, the thresholds and the trust configuration.
async fn cluster_state(
    args: &ServeArgs,
    (scaling, zero): (&Arc<ArcSwap<Thresholds>>, &Arc<ArcSwap<ZeroConfig>>),
    metrics: &Arc<Metrics>,
    health: &Health,
    tasks: &mut Supervisor,
) -> Result<ClusterState, Error> {
    let client = kube_client(&args.cluster.kubeconfig).await?;
    watch_zero_config(args, &client, zero, metrics, health, tasks);
    let shared = snapshot::shared(Snapshot::default());
    let heartbeat = health.heartbeat(
        "snapshot",
        liveness_bound(watch::SNAPSHOT_RESYNC, watch::SNAPSHOT_DEBOUNCE),
    );
    let synced = health.store("snapshot");
    {
        let (c, ns, s, m, instance) = (
            client.clone(),
            args.cluster.watch_namespace.clone(),
            shared.clone(),
            metrics.clone(),
            args.cluster.controller_instance.clone(),
        );
        tasks.add("snapshot-watch", move || {
            watch::run_snapshot(
                c.clone(),
                ns.clone(),
                s.clone(),
                m.clone(),
                heartbeat.clone(),
                synced.clone(),
                instance.clone(),
            )
        });
    }
    {
        let synced = health.store("saturation-config");
        let (c, ns, name, target, m) = (
            client.clone(),
            args.cluster.namespace.clone(),
            args.cluster.saturation_configmap.clone(),
            scaling.clone(),
            metrics.clone(),
        );
        tasks.add("saturation-config-watch", move || {
            watch::run_scaling_config(
                c.clone(),
                ns.clone(),
                name.clone(),
                target.clone(),
                m.clone(),
                synced.clone(),
            )
        });
    }
    {
        // Namespace-local saturation ConfigMaps (WVA v0.5.1) override the global one per namespace.
        let synced = health.store("local-saturation-config");
        let (c, watched, ns, name, target, m) = (
            client.clone(),
            args.cluster.watch_namespace.clone(),
            args.cluster.namespace.clone(),
            args.cluster.saturation_configmap.clone(),
            scaling.clone(),
            metrics.clone(),
        );
        tasks.add("local-saturation-config-watch", move || {
            watch::run_local_configs(
                c.clone(),
                watched.clone(),
                ns.clone(),
                name.clone(),
                target.clone(),
                m.clone(),
                synced.clone(),
            )
        });
    }
    let overrides = args.auth.overrides().map_err(Error::Config)?;
    let reviewer = Arc::new(KubeReviewer::new(client.clone(), REVIEW_TIMEOUT));
    let auth = Arc::new(Auth::new(
        Some(reviewer),
        args.auth.auth_cache_ttl,
        metrics.clone(),
    ));
    {
        let (c, a, m) = (client.clone(), auth.clone(), metrics.clone());
        tasks.add("authentication-config-watch", move || {
            watch::run_auth_config(c.clone(), a.clone(), overrides.clone(), m.clone())
        });
    }
    Ok(ClusterState {
        shared,
        auth: Some(auth),
        client: Some(client),
    })
}

/// The endpoint pickers' queues (scale from zero), read under the supervisor.
fn demand_source(
    args: &ServeArgs,
    shared: &SharedSnapshot,
    metrics: &Arc<Metrics>,
    health: &Health,
    tasks: &mut Supervisor,
) -> Arc<dyn DemandSource> {
    let opts = args.sources.epp_options();
    let heartbeat = health.heartbeat("epp-reader", liveness_bound(opts.interval, opts.timeout));
    let source = Arc::new(EppSource::new(shared.clone(), opts, metrics.clone()));
    let s = source.clone();
    tasks.add("epp-reader", move || s.clone().run(heartbeat.clone()));
    source
}

/// Sample sources in priority order, each with its supervised loop.
fn sample_sources(
    args: &ServeArgs,
    shared: &SharedSnapshot,
    metrics: &Arc<Metrics>,
    health: &Health,
    tasks: &mut Supervisor,
) -> Result<Vec<Arc<dyn SampleSource>>, Error> {
    let src = &args.sources;
    let mut sources: Vec<Arc<dyn SampleSource>> = Vec::new();
    if src.metrics_source != MetricsSource::Prometheus {
        let cache = Arc::new(WindowCache::new(src.lookback));
        let mut opts = src.scrape_options();
        // Kept pod connections leave room for both ports' connections and everything else.
        opts.reserved_fds =
            args.http.max_connections + scaler::default_limits().max_connections + 512;
        let heartbeat =
            health.heartbeat("scrape-loop", liveness_bound(opts.interval, opts.timeout));
        let scraper = Arc::new(Scraper::new(
            cache.clone(),
            shared.clone(),
            metrics.clone(),
            opts,
        ));
        tasks.add("pod-scraper", move || {
            scraper.clone().run(heartbeat.clone())
        });
        sources.push(cache);
    }
    if src.metrics_source != MetricsSource::Pods {
        match args.prometheus.options() {
            Some(opts) => {
                let client = PrometheusClient::new(&opts)
                    .map_err(|e| Error::Config(format!("Prometheus: {e}")))?;
                let source = Arc::new(PrometheusSource::new(client, src.lookback, metrics.clone()));
                let heartbeat = health.heartbeat(
                    "prometheus-poll",
                    liveness_bound(src.scrape_interval, opts.timeout),
                );
                let (s, snap, every) = (source.clone(), shared.clone(), src.scrape_interval);
                tasks.add("prometheus-poll", move || {
                    s.clone().run(snap.clone(), every, heartbeat.clone())
                });
                sources.push(source);
            }
            None => {
                tracing::info!("no PROMETHEUS_BASE_URL: pod scraping is the only metric source")
            }
        }
    }
    Ok(sources)
}

pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    args.validate().map_err(Error::Config)?;
    let metrics = Metrics::new();
    let health = Health::new();
    let mut tasks = Supervisor::new(metrics.clone(), RestartPolicy::default());
    let standalone = args.cluster.standalone.is_some();
    let bind = args.http.bind_address.unwrap_or(if standalone {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    });

    // Cluster state and trust configuration.
    let scaling = Arc::new(ArcSwap::from_pointee(Thresholds::new(
        &args.cluster.namespace,
        &args.cluster.saturation_configmap,
    )));
    let zero = ZeroConfig::with_env_default(args.cluster.scale_to_zero);
    let zero = Arc::new(ArcSwap::from_pointee(zero));
    let cluster = match &args.cluster.standalone {
        Some(file) => standalone_state(file, &args, (&scaling, &zero), &health, &mut tasks)?,
        None => cluster_state(&args, (&scaling, &zero), &metrics, &health, &mut tasks).await?,
    };
    let sources = sample_sources(&args, &cluster.shared, &metrics, &health, &mut tasks)?;
    let demand = demand_source(&args, &cluster.shared, &metrics, &health, &mut tasks);
    let engine = Arc::new(
        Engine::new(
            cluster.shared.clone(),
            Arc::new(Chain(sources)),
            scaling,
            args.sources.max_metric_age,
        )
        .with_zero(zero, demand),
    );

    status_tasks(&args, cluster.client.clone(), &engine, &metrics, &mut tasks);

    // The front door.
    let (resolver, cert_source) = serving_cert(
        &args.tls,
        (args.http.secure_port, bind),
        &health,
        &mut tasks,
    )?;
    if let Some(port) = args.scaler.external_scaler_port {
        external_scaler(&args, bind, port, &resolver, &engine, &metrics, &mut tasks)?;
    }
    let tls_config = Arc::new(tls::server_config(resolver, tls::provider())?);
    let addr = SocketAddr::new(bind, args.http.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    tracing::info!(%local, standalone, tasks = ?tasks.names(), "serving external.metrics.k8s.io/v1beta1");
    if standalone {
        print_standalone_banner(local, &cert_source);
    }
    let state = Arc::new(AppState {
        provider: engine,
        auth: cluster.auth,
        metrics,
        health,
    });
    // One shutdown signal for both: the server drains, the tasks stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = http::serve(
        listener,
        tls_config,
        state,
        args.http.serve_options(),
        async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        },
    );
    let mut stop = stop_rx.clone();
    let supervised = tasks.run(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    tokio::pin!(server);
    tokio::pin!(supervised);
    tokio::select! {
        // The server ends only on shutdown: the tasks stop too, and their shutdown hooks (releasing the
        // status Lease) finish before the process exits.
        () = &mut server => supervised.await,
        failed = &mut supervised => match failed {
            // Shutdown: the tasks have stopped; the server finishes draining in-flight requests.
            Ok(()) => {
                server.await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    }
}

/// Status write-back and gauges: every replica keeps its gauges; the Lease holder writes status.
fn status_tasks(
    args: &ServeArgs,
    client: Option<kube::Client>,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    tasks: &mut Supervisor,
) {
    let status_opts = args.status.options();
    match client {
        Some(client) if args.status.write_status => {
            let writer = Arc::new(StatusWriter::new(
                client,
                engine.clone(),
                metrics.clone(),
                &args.cluster.namespace,
                &status_opts,
            ));
            let releasing = writer.clone();
            tasks.add("status-writer", move || writer.clone().run());
            // A rolling update must not wait for the Lease to expire before another replica writes.
            tasks.on_stop("release-status-lease", move || {
                let writer = releasing.clone();
                async move {
                    match writer.elector.release().await {
                        Ok(true) => tracing::info!("released the status Lease for another replica"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "releasing the status Lease failed; another replica takes it when it expires"),
                    }
                }
            });
        }
        _ => {
            let (e, m, every) = (engine.clone(), metrics.clone(), status_opts.tick);
            tasks.add("variant-gauges", move || {
                crate::status::run_gauges(e.clone(), m.clone(), every)
            });
        }
    }
}

/// KEDA's external scaler on its own port, supervised, answering from the same engine.
fn external_scaler(
    args: &ServeArgs,
    bind: IpAddr,
    port: u16,
    cert: &Arc<ReloadingCert>,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    tasks: &mut Supervisor,
) -> Result<(), Error> {
    let auth = match (
        &args.scaler.external_scaler_client_ca_file,
        args.cluster.standalone.is_some(),
    ) {
        (Some(ca), _) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in tls::read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| Error::Config(format!("{}: {e}", ca.display())))?;
            }
            scaler::ClientAuth::Required(roots)
        }
        (None, standalone) => {
            if !standalone {
                tracing::warn!("the external scaler serves without client authentication (--external-scaler-allow-unauthenticated): anyone who reaches the port can read desired replicas");
            }
            scaler::ClientAuth::None
        }
    };
    let config = Arc::new(scaler::tls_config(cert.clone(), auth)?);
    let addr = SocketAddr::new(bind, port);
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::io(format!("listening on {addr} (--external-scaler-port)"), e))?;
    tracing::info!(%addr, "serving KEDA's external scaler (gRPC)");
    let provider: Arc<dyn crate::provider::MetricsProvider> = engine.clone();
    let scaler = scaler::Scaler::new(provider, scaler::PUSH_INTERVAL);
    let port_metrics = metrics.scaler_port.clone();
    tasks.add("external-scaler", move || {
        let (config, scaler, port_metrics) = (config.clone(), scaler.clone(), port_metrics.clone());
        let listener = listener.try_clone();
        async move {
            match listener.and_then(tokio::net::TcpListener::from_std) {
                Ok(l) => {
                    scaler::serve(
                        l,
                        config,
                        scaler,
                        scaler::default_limits(),
                        port_metrics,
                        futures::future::pending(),
                    )
                    .await;
                }
                Err(e) => tracing::error!(error = %e, "external scaler: the listener is unusable"),
            }
        }
    });
    Ok(())
}

fn print_standalone_banner(local: SocketAddr, cert_source: &CertSource) {
    let ca = match cert_source {
        CertSource::Generated { ca_path } => format!("--cacert {}", ca_path.display()),
        CertSource::Files { cert } => format!("--cacert <the CA that signed {}>", cert.display()),
    };
    let host = if local.ip().is_ipv6() {
        format!("[{}]", local.ip())
    } else {
        local.ip().to_string()
    };
    println!(
        "wva-metrics-server (standalone, no authentication) on https://{host}:{}",
        local.port()
    );
    println!("  curl {ca} 'https://{host}:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/<namespace>/inferno_desired_replicas?labelSelector=variant_name%3D<variant>'", local.port());
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}

fn read_input(input: &str) -> Result<String, Error> {
    if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::io("reading stdin", e))?;
        Ok(s)
    } else {
        std::fs::read_to_string(input).map_err(|e| Error::io(format!("reading {input}"), e))
    }
}

/// `analyze`: one model's snapshot in, the decision out.
pub fn analyze(input: &str) -> Result<String, Error> {
    let text = read_input(input)?;
    let decision = engine::input::analyze_json(&text)?;
    Ok(serde_json::to_string_pretty(&decision)?)
}

/// `scrape`: one page in, the extracted signals out. Errors when no model could be extracted.
/// The largest page `scrape` reads.
pub(crate) const SCRAPE_COMMAND_MAX_BYTES: usize = 64 << 20;

pub use crate::server::routes::DEBUG_VARIANTS_API_PATH;

/// `status`: fetches `/debug/variants` and renders it (or prints it as JSON).
pub async fn status(args: &crate::config::StatusCommandArgs) -> Result<String, Error> {
    let query = args
        .namespace
        .as_ref()
        .map(|ns| {
            format!(
                "?namespace={}",
                form_urlencoded::byte_serialize(ns.as_bytes()).collect::<String>()
            )
        })
        .unwrap_or_default();
    let body = match &args.url {
        Some(url) => {
            let base = url.trim_end_matches('/');
            let has_path = base
                .split_once("://")
                .is_some_and(|(_, rest)| rest.contains('/'));
            let url = if has_path {
                format!("{base}{query}")
            } else {
                format!("{base}/debug/variants{query}")
            };
            let mut builder = reqwest::Client::builder()
                .timeout(args.timeout)
                .redirect(reqwest::redirect::Policy::none());
            if let Some(ca) = &args.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| Error::Config(format!("--ca-file {}: {e}", ca.display())))?;
                for cert in reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| Error::Config(format!("--ca-file {}: {e}", ca.display())))?
                {
                    builder = builder.add_root_certificate(cert);
                }
            }
            let client = builder
                .build()
                .map_err(|e| Error::Fetch(format!("building the client: {e}")))?;
            let mut req = client.get(&url);
            if let Some(file) = &args.token_file {
                let token = std::fs::read_to_string(file)
                    .map_err(|e| Error::Config(format!("--token-file {}: {e}", file.display())))?;
                req = req.bearer_auth(token.trim());
            }
            let resp = req.send().await.map_err(|e| {
                Error::Fetch(format!("GET {url}: {}", crate::sources::error_chain(&e)))
            })?;
            let status = resp.status();
            let text = resp
                .text()
                .await
                .map_err(|e| Error::Fetch(format!("GET {url}: {e}")))?;
            if !status.is_success() {
                return Err(Error::Fetch(format!("GET {url}: HTTP {status}: {text}")));
            }
            text
        }
        None => {
            let client = kube_client(&args.kubeconfig).await?;
            let path = format!("{DEBUG_VARIANTS_API_PATH}{query}");
            let req = axum::http::Request::get(&path)
                .body(Vec::new())
                .map_err(|e| Error::Fetch(format!("GET {path}: {e}")))?;
            tokio::time::timeout(args.timeout, client.request_text(req))
                .await
                .map_err(|_| {
                    Error::Fetch(format!("GET {path}: no answer within {:?}", args.timeout))
                })?
                .map_err(|e| Error::Fetch(format!("GET {path} through the API server: {e}")))?
        }
    };
    let doc: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| Error::Fetch(format!("the answer is not a /debug/variants document: {e}")))?;
    if args.json {
        return Ok(serde_json::to_string_pretty(&doc)?);
    }
    Ok(crate::report::render(&doc))
}

/// The `scrape` command's TLS and token options (the server's `--scrape-*` flags, for one page).
#[derive(Debug, Clone, Default)]
pub struct ScrapeReach {
    pub ca_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
}

/// An `http(s)://<IP>:<port>/<path>` URL as the scraper's target, so the command fetches exactly as the
/// server does; `None` for host names.
fn ip_target(url: &str) -> Option<crate::cluster::snapshot::PodTarget> {
    use crate::cluster::snapshot::{PodTarget, Scheme};
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr: SocketAddr = authority.parse().ok().or_else(|| {
        let ip: IpAddr = authority
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        Some(SocketAddr::new(
            ip,
            if scheme == Scheme::Https { 443 } else { 80 },
        ))
    })?;
    Some(PodTarget {
        namespace: String::new(),
        name: authority.to_string(),
        ip: addr.ip().to_string(),
        port: addr.port(),
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_string()
        },
        scheme,
        endpoint: Default::default(),
        tls_server_name: None,
    })
}

async fn fetch_for_command(
    source: &str,
    timeout: Duration,
    reach: &ScrapeReach,
) -> Result<String, Error> {
    use crate::sources::reach::{ScrapeTls, TokenFile};
    let token = reach
        .bearer_token_file
        .as_ref()
        .map(|f| TokenFile::new(f.clone()).read())
        .transpose()
        .map_err(Error::Config)?;
    if let Some(pod) = ip_target(source) {
        // A TLS setting that cannot be used is the command's error, before any connection.
        let tls = (pod.scheme == crate::cluster::snapshot::Scheme::Https)
            .then(|| {
                ScrapeTls::new(reach.ca_file.as_deref(), reach.tls_server_name.as_deref())
                    .map(Arc::new)
                    .map_err(Error::Config)
            })
            .transpose()?
            .map(Ok);
        let page = crate::sources::scraper::fetch_pod(
            &pod,
            timeout,
            SCRAPE_COMMAND_MAX_BYTES,
            (token.as_deref(), tls.as_ref()),
            None,
        )
        .await
        .map_err(|e| Error::Fetch(e.to_string()))?;
        return Ok(page.text);
    }
    if reach.tls_server_name.is_some() {
        return Err(Error::Config(
            "--tls-server-name applies to a URL whose host is an IP address; with a host name, the host is the name verified".into(),
        ));
    }
    let client = crate::sources::scraper::http_client(timeout, reach.ca_file.as_deref())
        .map_err(Error::Fetch)?;
    let page =
        crate::sources::scraper::fetch(&client, source, SCRAPE_COMMAND_MAX_BYTES, token.as_deref())
            .await
            .map_err(|e| Error::Fetch(e.to_string()))?;
    Ok(page.text)
}

pub async fn scrape(source: &str, timeout: Duration, reach: &ScrapeReach) -> Result<String, Error> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        fetch_for_command(source, timeout, reach).await?
    } else {
        read_input(source)?
    };
    let extraction = crate::sources::exposition::extract_validated(&text);
    let json = serde_json::to_string_pretty(&extraction)?;
    if !extraction
        .models
        .values()
        .any(super::sources::exposition::ModelSignals::is_complete)
    {
        return Err(Error::NoModel {
            extraction: json,
            source_name: source.to_string(),
        });
    }
    Ok(json)
}
