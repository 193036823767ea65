//! Wiring for the three commands: which stores, sources and tasks `serve` starts, and the small
//! `analyze` and `scrape` tools. Each piece is built elsewhere; this only connects them.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::config::AuthOverrides;
use crate::auth::review::KubeReviewer;
use crate::auth::Auth;
use crate::cluster::leader::LeaderElector;
use crate::cluster::snapshot::{self, Snapshot};
use crate::cluster::watch;
use crate::config::{MetricsSource, ServeArgs};
use crate::engine::{self, Engine};
use crate::saturation::config::ScalingConfig;
use crate::server::routes::AppState;
use crate::server::{self as http, ServeOptions};
use crate::sources::prometheus::{PrometheusClient, PrometheusSource};
use crate::sources::scraper::{ScrapeOptions, Scraper};
use crate::sources::window::WindowCache;
use crate::sources::{Chain, SampleSource};
use crate::status::StatusWriter;
use crate::telemetry::Metrics;
use crate::tls::{self, CertSource, ReloadingCert};

fn read_optional(path: &Option<PathBuf>, what: &str) -> Result<Option<Vec<u8>>, String> {
    path.as_ref()
        .map(|p| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display())))
        .transpose()
}

async fn kube_client(kubeconfig: &Option<PathBuf>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration: not in a cluster and no kubeconfig found ({e}); pass --kubeconfig or use --standalone FILE"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("building the Kubernetes client: {e}"))
}

/// The serving certificate: from files (hot-reloaded) or generated, with its CA written out.
fn serving_cert(
    args: &ServeArgs,
    bind: IpAddr,
) -> Result<(Arc<ReloadingCert>, CertSource), String> {
    let provider = tls::provider();
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let resolver = ReloadingCert::load(cert, key, &provider).map_err(|e| e.to_string())?;
        tokio::spawn(tls::watch_files(
            resolver.clone(),
            cert.clone(),
            key.clone(),
            args.tls_reload_interval,
            provider,
        ));
        return Ok((
            resolver,
            CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
        ));
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
    let generated = tls::generate_self_signed(&names).map_err(|e| e.to_string())?;
    let dir = args.cert_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wva-metrics-server-{}", args.secure_port))
    });
    let ca_path = dir.join("ca.crt");
    tls::write_file(&ca_path, &generated.ca_pem).map_err(|e| e.to_string())?;
    let ck = generated
        .certified_key(&provider)
        .map_err(|e| e.to_string())?;
    tracing::info!(ca = %ca_path.display(), sans = ?names, "no --tls-cert-file given: generated a self-signed serving certificate");
    Ok((
        ReloadingCert::from_key(ck),
        CertSource::Generated { ca_path },
    ))
}

pub async fn serve(args: ServeArgs) -> Result<(), String> {
    args.validate()?;
    let metrics = Metrics::new();
    let standalone = args.standalone.is_some();
    let bind = args.bind_address.unwrap_or(if standalone {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from([0, 0, 0, 0])
    });

    // Cluster state and trust configuration.
    let scaling = Arc::new(ArcSwap::from_pointee(ScalingConfig::default()));
    let mut status_client: Option<kube::Client> = None;
    let (shared, auth) = if let Some(file) = &args.standalone {
        let (snap, problems) = crate::standalone::load(file)?;
        for p in &problems {
            tracing::error!("{p}");
        }
        let shared = snapshot::shared(snap);
        tokio::spawn(crate::standalone::watch_file(
            file.clone(),
            shared.clone(),
            Duration::from_secs(2),
        ));
        (shared, None)
    } else {
        let client = kube_client(&args.kubeconfig).await?;
        let shared = snapshot::shared(Snapshot::default());
        tokio::spawn(watch::run_snapshot(
            client.clone(),
            args.watch_namespace.clone(),
            shared.clone(),
            metrics.clone(),
            Duration::from_millis(200),
        ));
        tokio::spawn(watch::run_scaling_config(
            client.clone(),
            args.namespace.clone(),
            args.saturation_configmap.clone(),
            scaling.clone(),
            metrics.clone(),
        ));
        let overrides = AuthOverrides {
            client_ca_pem: read_optional(&args.client_ca_file, "--client-ca-file")?,
            requestheader_ca_pem: read_optional(
                &args.requestheader_client_ca_file,
                "--requestheader-client-ca-file",
            )?,
            allowed_names: args.requestheader_allowed_names.clone(),
            username_headers: args.requestheader_username_headers.clone(),
            group_headers: args.requestheader_group_headers.clone(),
            extra_headers_prefix: args.requestheader_extra_headers_prefix.clone(),
            uid_headers: args.requestheader_uid_headers.clone(),
        };
        let reviewer = Arc::new(KubeReviewer::new(client.clone(), Duration::from_secs(10)));
        let auth = Arc::new(Auth::new(
            Some(reviewer),
            args.auth_cache_ttl,
            metrics.clone(),
        ));
        tokio::spawn(watch::run_auth_config(
            client.clone(),
            auth.clone(),
            overrides,
            metrics.clone(),
        ));
        status_client = Some(client);
        (shared, Some(auth))
    };

    // Sample sources, in priority order.
    let mut sources: Vec<Arc<dyn SampleSource>> = Vec::new();
    if args.metrics_source != MetricsSource::Prometheus {
        let cache = Arc::new(WindowCache::new(args.lookback));
        let opts = ScrapeOptions {
            interval: args.scrape_interval,
            timeout: args.scrape_timeout,
            concurrency: args.scrape_concurrency,
            max_body_bytes: args.max_page_bytes,
        };
        let scraper = Scraper::new(cache.clone(), shared.clone(), metrics.clone(), opts);
        tokio::spawn(scraper.run());
        sources.push(cache);
    }
    if args.metrics_source != MetricsSource::Pods {
        match &args.prometheus.base_url {
            Some(_) => {
                let client = PrometheusClient::new(&args.prometheus).map_err(|e| e.to_string())?;
                let source = Arc::new(PrometheusSource::new(
                    client,
                    args.lookback,
                    metrics.clone(),
                ));
                tokio::spawn(source.clone().run(shared.clone(), args.scrape_interval));
                sources.push(source);
            }
            None => {
                tracing::info!("no PROMETHEUS_BASE_URL: pod scraping is the only metric source")
            }
        }
    }
    let engine = Arc::new(Engine::new(
        shared,
        Arc::new(Chain(sources)),
        scaling,
        args.max_metric_age,
    ));
    // Status write-back and gauges: every replica keeps its gauges; the Lease holder writes status.
    let tick = Duration::from_secs(2).min(args.status_interval);
    match status_client {
        Some(client) if args.write_status => {
            let identity = args.identity.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            });
            let elector = LeaderElector::new(
                client.clone(),
                &args.namespace,
                "wva-metrics-server-status",
                &identity,
                args.lease_duration,
            );
            let writer = StatusWriter {
                client,
                engine: engine.clone(),
                elector,
                metrics: metrics.clone(),
                interval: args.status_interval,
                tick,
            };
            tokio::spawn(writer.run());
        }
        _ => {
            tokio::spawn(crate::status::run_gauges(
                engine.clone(),
                metrics.clone(),
                tick,
            ));
        }
    }

    // The front door.
    let (resolver, cert_source) = serving_cert(&args, bind)?;
    let tls_config =
        Arc::new(tls::server_config(resolver, tls::provider()).map_err(|e| e.to_string())?);
    let addr = SocketAddr::new(bind, args.secure_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listening on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%local, standalone, "serving external.metrics.k8s.io/v1beta1");
    if standalone {
        let ca = match &cert_source {
            CertSource::Generated { ca_path } => format!("--cacert {}", ca_path.display()),
            CertSource::Files { .. } => "--cacert <CA of --tls-cert-file>".to_string(),
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
    let state = Arc::new(AppState {
        provider: engine,
        auth,
        metrics,
    });
    let opts = ServeOptions {
        handshake_timeout: args.handshake_timeout,
        max_connections: args.max_connections,
        shutdown_grace: args.shutdown_grace,
        ..Default::default()
    };
    http::serve(listener, tls_config, state, opts, shutdown_signal()).await;
    Ok(())
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

fn read_input(input: &str) -> Result<String, String> {
    if input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(input).map_err(|e| format!("reading {input}: {e}"))
    }
}

/// `analyze`: one model's snapshot in, the decision out.
pub fn analyze(input: &str) -> Result<String, String> {
    let text = read_input(input)?;
    let decision = engine::input::analyze_json(&text).map_err(|e| e.to_string())?;
    serde_json::to_string_pretty(&decision).map_err(|e| e.to_string())
}

/// `scrape`: one page in, the extracted signals out. Errors when no model could be extracted.
pub async fn scrape(source: &str, timeout: Duration) -> Result<String, String> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let client = crate::sources::scraper::http_client(timeout)?;
        let page = crate::sources::scraper::fetch(&client, source, 64 << 20)
            .await
            .map_err(|e| e.to_string())?;
        page.text
    } else {
        read_input(source)?
    };
    let extraction = crate::sources::exposition::extract_validated(&text);
    let json = serde_json::to_string_pretty(&extraction).map_err(|e| e.to_string())?;
    if !extraction.models.values().any(|m| m.is_complete()) {
        return Err(format!(
            "{json}\nno model with both KV-cache usage and queue length found in {source} (expected vllm:kv_cache_usage_perc and vllm:num_requests_waiting with a model_name label)"
        ));
    }
    Ok(json)
}
