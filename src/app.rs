//! `serve`'s wiring: which stores, sources and tasks it starts, and how they connect. Each piece is
//! built elsewhere; every long-lived one is a context struct whose `run(self: Arc<Self>)` the
//! supervisor starts (and restarts). The other commands are in [`crate::cli`].

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::review::KubeReviewer;
use crate::auth::watch::AuthConfigWatch;
use crate::auth::Auth;
use crate::changes::Changes;
use crate::cluster::configs::{FollowedConfig, LocalSaturationConfigs};
use crate::cluster::snapshot::{self, SharedSnapshot, Snapshot};
use crate::cluster::watch::{SnapshotWatch, SNAPSHOT_DEBOUNCE, SNAPSHOT_RESYNC};
use crate::config::{MetricsSource, ServeArgs, TlsArgs};
use crate::engine::learn::{CapacityLearner, DEFAULT_LEARN_INTERVAL};
use crate::engine::limit::{LimitPlanner, PLAN_INTERVAL};
use crate::engine::Engine;
use crate::error::Error;
use crate::follow::ConfigMapWatch;
use crate::health::{liveness_bound, Health};
use crate::saturation::config::Thresholds;
use crate::saturation::ZeroConfig;
use crate::scaler;
use crate::server::routes::AppState;
use crate::server::{self as http};
use crate::sources::epp::{DemandSource, EppSource};
use crate::sources::prometheus::{PollOptions, PrometheusClient, PrometheusSource};
use crate::sources::scraper::Scraper;
use crate::sources::window::WindowCache;
use crate::sources::{Chain, SampleSource};
use crate::standalone::{FileScope, FileWatch};
use crate::status::{GaugeLoop, StatusWriter};
use crate::supervisor::{RestartPolicy, Supervisor};
use crate::target::TargetFeed;
use crate::telemetry::Metrics;
use crate::tls::{self, CertReload, CertSource, ReloadingCert};

/// How often the standalone file is checked for changes.
pub(crate) const STANDALONE_POLL: Duration = Duration::from_secs(2);
/// Timeout of one TokenReview or SubjectAccessReview call.
pub(crate) const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// What every part of the wiring registers with: metrics, health checks, the supervisor.
struct Wiring<'a> {
    args: &'a ServeArgs,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    tasks: Supervisor,
    /// What sources bump after each read, and push streams wake on.
    changes: Changes,
}

/// The configuration stores decisions read, swapped whole when their ConfigMaps (or the file) change.
struct Configs {
    thresholds: Arc<ArcSwap<Thresholds>>,
    zero: Arc<ArcSwap<ZeroConfig>>,
}

/// Where variants come from, and what the HTTP surface needs for authentication.
struct ClusterState {
    shared: SharedSnapshot,
    auth: Option<Arc<Auth>>,
    /// For the status writer; `None` in standalone mode.
    client: Option<kube::Client>,
}

pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    args.validate().map_err(Error::Config)?;
    let metrics = Metrics::new();
    let mut w = Wiring {
        args: &args,
        tasks: Supervisor::new(metrics.clone(), RestartPolicy::default()),
        metrics,
        health: Health::new(),
        changes: Changes::new(),
    };
    let standalone = args.cluster.standalone.is_some();
    let bind = args.http.bind_address.unwrap_or(if standalone {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    });
    let configs = Configs {
        thresholds: Arc::new(ArcSwap::from_pointee(Thresholds::new(
            &args.cluster.namespace,
            &args.cluster.saturation_configmap,
        ))),
        zero: Arc::new(ArcSwap::from_pointee(ZeroConfig::with_env_default(
            args.cluster.scale_to_zero,
        ))),
    };
    let cluster = match &args.cluster.standalone {
        Some(file) => w.standalone_state(file, &configs)?,
        None => w.cluster_state(&configs).await?,
    };
    let targets: Arc<dyn TargetFeed> = cluster.shared.clone();
    let sources = w.sample_sources(&targets, &configs)?;
    let demand = w.demand_source(&targets);
    let engine = Arc::new(
        Engine::new(
            cluster.shared.clone(),
            Arc::new(Chain(sources)),
            configs.thresholds,
            args.sources.max_metric_age,
        )
        .with_zero(configs.zero, demand),
    );
    w.status_tasks(cluster.client.clone(), &engine);
    w.capacity_learning(&engine);
    w.limit_planning(&engine);

    // The front doors.
    let (resolver, cert_source) = w.serving_cert(&args.tls, (args.http.secure_port, bind))?;
    if let Some(port) = args.scaler.external_scaler_port {
        w.external_scaler(SocketAddr::new(bind, port), &resolver, &engine)?;
    }
    let tls_config = Arc::new(tls::server_config(resolver, tls::provider())?);
    let addr = SocketAddr::new(bind, args.http.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listening on {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    tracing::info!(%local, standalone, tasks = ?w.tasks.names(), "serving external.metrics.k8s.io/v1beta1");
    if standalone {
        print_standalone_banner(local, &cert_source);
    }
    let Wiring {
        metrics,
        health,
        tasks,
        ..
    } = w;
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

impl Wiring<'_> {
    /// Registers a supervised task that runs `task.run()` (again after a restart).
    fn spawn<T, Fut>(&mut self, name: &'static str, task: T, run: fn(Arc<T>) -> Fut)
    where
        T: Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let task = Arc::new(task);
        self.tasks.add(name, move || run(task.clone()));
    }

    /// Standalone: the snapshot from a file, polled every [`STANDALONE_POLL`]; no authentication.
    fn standalone_state(&mut self, file: &Path, configs: &Configs) -> Result<ClusterState, Error> {
        let cluster = &self.args.cluster;
        let scope = FileScope {
            instance: cluster.controller_instance.clone(),
            namespace: cluster.namespace.clone(),
            configmap: cluster.saturation_configmap.clone(),
            zero_configmap: cluster.scale_to_zero_configmap.clone(),
        };
        let (thresholds, zero) = (&configs.thresholds, &configs.zero);
        let (snap, config, problems) =
            crate::standalone::load(file, &scope, (&thresholds.load(), &zero.load()))
                .map_err(Error::Config)?;
        for p in &problems {
            tracing::error!("{p}");
        }
        thresholds.store(Arc::new(config.thresholds));
        zero.store(Arc::new(config.zero));
        let shared = snapshot::shared(snap);
        let watch = FileWatch {
            file: file.to_path_buf(),
            shared: shared.clone(),
            thresholds: thresholds.clone(),
            zero: zero.clone(),
            every: STANDALONE_POLL,
            heartbeat: self
                .health
                .heartbeat("snapshot", liveness_bound(STANDALONE_POLL, Duration::ZERO)),
            scope,
        };
        self.spawn("standalone-file", watch, FileWatch::run);
        Ok(ClusterState {
            shared,
            auth: None,
            client: None,
        })
    }

    /// In a cluster: watchers for the snapshot, the configuration ConfigMaps and the trust
    /// configuration.
    async fn cluster_state(&mut self, configs: &Configs) -> Result<ClusterState, Error> {
        let args = &self.args.cluster;
        let client = crate::cluster::client::connect(args.kubeconfig.as_deref()).await?;
        let configmap = |name: &str, synced| ConfigMapWatch {
            client: client.clone(),
            namespace: args.namespace.clone(),
            name: name.to_string(),
            metrics: self.metrics.clone(),
            synced: Some(synced),
        };
        let zero = FollowedConfig::scale_to_zero(
            configmap(
                &args.scale_to_zero_configmap,
                self.health.store("scale-to-zero-config"),
            ),
            configs.zero.clone(),
        );
        let saturation = FollowedConfig::saturation(
            configmap(
                &args.saturation_configmap,
                self.health.store("saturation-config"),
            ),
            configs.thresholds.clone(),
        );
        // Namespace-local saturation ConfigMaps (WVA v0.5.1) override the global one per namespace.
        let local = LocalSaturationConfigs {
            client: client.clone(),
            watched: args.watch_namespace.clone(),
            global_namespace: args.namespace.clone(),
            name: args.saturation_configmap.clone(),
            target: configs.thresholds.clone(),
            metrics: self.metrics.clone(),
            synced: self.health.store("local-saturation-config"),
        };
        let shared = snapshot::shared(Snapshot::default());
        let snapshot = SnapshotWatch {
            client: client.clone(),
            namespace: args.watch_namespace.clone(),
            instance: args.controller_instance.clone(),
            node_selector: args.node_selector.clone(),
            shared: shared.clone(),
            metrics: self.metrics.clone(),
            heartbeat: self.health.heartbeat(
                "snapshot",
                liveness_bound(SNAPSHOT_RESYNC, SNAPSHOT_DEBOUNCE),
            ),
            synced: self.health.store("snapshot"),
            changes: self.changes.clone(),
        };
        let reviewer = Arc::new(KubeReviewer::new(client.clone(), REVIEW_TIMEOUT));
        let auth = Arc::new(Auth::new(
            Some(reviewer),
            self.args.auth.auth_cache_ttl,
            self.metrics.clone(),
        ));
        let overrides = self.args.auth.overrides().map_err(Error::Config)?;
        let trust = AuthConfigWatch::new(
            client.clone(),
            auth.clone(),
            overrides,
            self.metrics.clone(),
        );
        self.spawn("scale-to-zero-config-watch", zero, FollowedConfig::run);
        self.spawn("snapshot-watch", snapshot, SnapshotWatch::run);
        self.spawn("saturation-config-watch", saturation, FollowedConfig::run);
        self.spawn(
            "local-saturation-config-watch",
            local,
            LocalSaturationConfigs::run,
        );
        self.spawn("authentication-config-watch", trust, AuthConfigWatch::run);
        Ok(ClusterState {
            shared,
            auth: Some(auth),
            client: Some(client),
        })
    }

    /// The endpoint pickers' queues (scale from zero), read under the supervisor.
    fn demand_source(&mut self, targets: &Arc<dyn TargetFeed>) -> Arc<dyn DemandSource> {
        let opts = self.args.sources.epp_options();
        let heartbeat = self
            .health
            .heartbeat("epp-reader", liveness_bound(opts.interval, opts.timeout));
        let source = Arc::new(
            EppSource::new(targets.clone(), opts, self.metrics.clone())
                .notifying(self.changes.clone()),
        );
        let s = source.clone();
        self.tasks
            .add("epp-reader", move || s.clone().run(heartbeat.clone()));
        source
    }

    /// Sample sources in priority order, each with its supervised loop.
    fn sample_sources(
        &mut self,
        targets: &Arc<dyn TargetFeed>,
        configs: &Configs,
    ) -> Result<Vec<Arc<dyn SampleSource>>, Error> {
        let src = &self.args.sources;
        let mut sources: Vec<Arc<dyn SampleSource>> = Vec::new();
        if src.metrics_source != MetricsSource::Prometheus {
            let cache = Arc::new(WindowCache::new(src.lookback));
            let mut opts = src.scrape_options();
            // Kept pod connections leave room for both ports' connections and everything else.
            opts.reserved_fds =
                self.args.http.max_connections + scaler::default_limits().max_connections + 512;
            let heartbeat = self
                .health
                .heartbeat("scrape-loop", liveness_bound(opts.interval, opts.timeout));
            let scraper = Arc::new(
                Scraper::new(cache.clone(), targets.clone(), self.metrics.clone(), opts)
                    .notifying(self.changes.clone()),
            );
            self.tasks.add("pod-scraper", move || {
                scraper.clone().run(heartbeat.clone())
            });
            sources.push(cache);
        }
        if src.metrics_source == MetricsSource::Pods {
            return Ok(sources);
        }
        let Some(opts) = self.args.prometheus.options() else {
            tracing::info!("no PROMETHEUS_BASE_URL: pod scraping is the only metric source");
            return Ok(sources);
        };
        let client =
            PrometheusClient::new(&opts).map_err(|e| Error::Config(format!("Prometheus: {e}")))?;
        let poll = PollOptions {
            lookback: src.lookback,
            interval: src.scrape_interval,
            load_every: crate::sources::prometheus::LOAD_EVERY,
        };
        let heartbeat = self.health.heartbeat(
            "prometheus-poll",
            liveness_bound(poll.interval, opts.timeout),
        );
        let source = Arc::new(
            PrometheusSource::new(
                client,
                poll,
                targets.clone(),
                configs.zero.clone(),
                self.metrics.clone(),
            )
            .notifying(self.changes.clone()),
        );
        let s = source.clone();
        self.tasks
            .add("prometheus-poll", move || s.clone().run(heartbeat.clone()));
        sources.push(source);
        Ok(sources)
    }

    /// Saturation V2's learning cycle (it idles while V1 decides).
    fn capacity_learning(&mut self, engine: &Arc<Engine>) {
        let learner = CapacityLearner {
            engine: engine.clone(),
            every: DEFAULT_LEARN_INTERVAL,
            heartbeat: self.health.heartbeat(
                "capacity-learning",
                liveness_bound(DEFAULT_LEARN_INTERVAL, Duration::ZERO),
            ),
        };
        self.spawn("capacity-learning", learner, CapacityLearner::run);
    }

    /// The GPU limiter's planning loop (it idles while the limiter is off).
    fn limit_planning(&mut self, engine: &Arc<Engine>) {
        let planner = LimitPlanner {
            engine: engine.clone(),
            every: PLAN_INTERVAL,
            heartbeat: self.health.heartbeat(
                "limit-planning",
                liveness_bound(PLAN_INTERVAL, Duration::ZERO),
            ),
        };
        self.spawn("limit-planning", planner, LimitPlanner::run);
    }

    /// Status write-back and gauges: every replica keeps its gauges; the Lease holder writes status.
    fn status_tasks(&mut self, client: Option<kube::Client>, engine: &Arc<Engine>) {
        let opts = self.args.status.options();
        let Some(client) = client.filter(|_| self.args.status.write_status) else {
            let gauges = GaugeLoop {
                engine: engine.clone(),
                metrics: self.metrics.clone(),
                every: opts.tick,
            };
            self.spawn("variant-gauges", gauges, GaugeLoop::run);
            return;
        };
        let writer = Arc::new(StatusWriter::new(
            client,
            engine.clone(),
            self.metrics.clone(),
            &self.args.cluster.namespace,
            &opts,
        ));
        let releasing = writer.clone();
        self.tasks
            .add("status-writer", move || writer.clone().run());
        // A rolling update must not wait for the Lease to expire before another replica writes.
        self.tasks.on_stop("release-status-lease", move || {
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

    /// The serving certificate: from files (hot-reloaded by a supervised task) or generated, with its CA
    /// written out. `/readyz` checks that the one in service is valid.
    fn serving_cert(
        &mut self,
        args: &TlsArgs,
        (port, bind): (u16, IpAddr),
    ) -> Result<(Arc<ReloadingCert>, CertSource), Error> {
        let (resolver, source) = match (&args.tls_cert_file, &args.tls_private_key_file) {
            (Some(cert), Some(key)) => {
                let resolver = ReloadingCert::load(cert, key, &tls::provider())?;
                let reload = CertReload {
                    resolver: resolver.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                    every: args.tls_reload_interval,
                };
                self.spawn("serving-certificate-reload", reload, CertReload::run);
                (resolver, CertSource::Files { cert: cert.clone() })
            }
            _ => generated_cert(args, port, bind)?,
        };
        let in_service = resolver.clone();
        self.health.condition("tls", move || {
            in_service.valid_at(std::time::SystemTime::now())
        });
        Ok((resolver, source))
    }

    /// KEDA's external scaler on its own port, supervised, answering from the same engine.
    fn external_scaler(
        &mut self,
        addr: SocketAddr,
        cert: &Arc<ReloadingCert>,
        engine: &Arc<Engine>,
    ) -> Result<(), Error> {
        let auth = match &self.args.scaler.external_scaler_client_ca_file {
            Some(ca) => scaler::ClientAuth::Required(tls::roots(
                Some(ca),
                "--external-scaler-client-ca-file",
            )?),
            None => {
                if self.args.cluster.standalone.is_none() {
                    tracing::warn!("the external scaler serves without client authentication (--external-scaler-allow-unauthenticated): anyone who reaches the port can read desired replicas");
                }
                scaler::ClientAuth::None
            }
        };
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| Error::io(format!("listening on {addr} (--external-scaler-port)"), e))?;
        tracing::info!(%addr, "serving KEDA's external scaler (gRPC)");
        let port = scaler::ScalerPort {
            listener,
            tls: Arc::new(scaler::tls_config(cert.clone(), auth)?),
            scaler: scaler::Scaler::new(engine.clone(), self.changes.clone(), scaler::RECHECK),
            metrics: self.metrics.scaler_port.clone(),
        };
        self.spawn("external-scaler", port, scaler::ScalerPort::run);
        Ok(())
    }
}

/// A self-signed serving certificate for this host's names, its CA written to `--cert-dir`.
fn generated_cert(
    args: &TlsArgs,
    port: u16,
    bind: IpAddr,
) -> Result<(Arc<ReloadingCert>, CertSource), Error> {
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
    let ck = generated.certified_key(&tls::provider())?;
    tracing::info!(ca = %ca_path.display(), sans = ?names, "no --tls-cert-file given: generated a self-signed serving certificate");
    Ok((
        ReloadingCert::from_key(ck),
        CertSource::Generated { ca_path },
    ))
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
