//! Command line and environment: every flag can also be set by an environment variable (shown in
//! `--help`); Prometheus and namespace settings use WVA's variable names so existing deployments carry over.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::config::AuthOverrides;
use crate::server::ServeOptions;
use crate::sources::epp::EppOptions;
use crate::sources::prometheus::PrometheusOptions;
use crate::sources::reach::{Reach, ScrapeTls, TokenFile};
use crate::sources::scraper::ScrapeOptions;
use crate::status::{StatusOptions, STATUS_TICK};
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "wva-metrics-server",
    version,
    about = "Kubernetes external-metrics API server serving WVA saturation-driven desired replicas (inferno_desired_replicas, wva_desired_replicas)",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve external.metrics.k8s.io/v1beta1 over HTTPS (in a cluster, or --standalone from a file).
    Serve(Box<ServeArgs>),
    /// Decide one model from a JSON snapshot (FILE or - for stdin) and print the decision as JSON.
    Analyze {
        /// JSON input: {"config": {...}, "variants": [{"name", "cost", "specReplicas", "readyReplicas", "replicas": [...]}]}
        #[arg(default_value = "-")]
        input: String,
    },
    /// Show what the server decides, per model, as tables: its /debug/variants through the kubeconfig's API
    /// server (the aggregated path, no port-forward), or from --url.
    Status(StatusCommandArgs),
    /// Fetch (URL) or read (FILE, or - for stdin) one metrics page and print the vLLM or SGLang signals found, as JSON.
    Scrape {
        source: String,
        /// Request timeout when SOURCE is a URL.
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        /// CA bundle for an https URL (as --scrape-ca-file) [default: the system bundle].
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Name to verify the certificate against, for an https URL whose host is an IP (as
        /// --scrape-tls-server-name).
        #[arg(long)]
        tls_server_name: Option<String>,
        /// Bearer token file to present (as --scrape-bearer-token-file).
        #[arg(long)]
        bearer_token_file: Option<PathBuf>,
    },
}

/// `status`: where to read /debug/variants from.
#[derive(Debug, Clone, Args)]
pub struct StatusCommandArgs {
    /// Only this namespace's models.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Read from this server instead of through the API server, e.g. https://127.0.0.1:6443 (the path
    /// /debug/variants is added when the URL has none).
    #[arg(long)]
    pub url: Option<String>,
    /// CA bundle for --url's certificate (default: the system roots).
    #[arg(long, requires = "url")]
    pub ca_file: Option<PathBuf>,
    /// Bearer token file for --url (a ServiceAccount token with `get` on /debug/variants).
    #[arg(long, requires = "url")]
    pub token_file: Option<PathBuf>,
    /// Kubernetes client configuration (default: KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG", conflicts_with = "url")]
    pub kubeconfig: Option<PathBuf>,
    /// Print the document as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MetricsSource {
    /// Scrape pods directly only.
    Pods,
    /// Query Prometheus only.
    Prometheus,
    /// Scraped sample when fresh, Prometheus otherwise.
    Both,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub sources: SourceArgs,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    #[command(flatten)]
    pub scaler: ScalerArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

/// KEDA's external scaler: gRPC over TLS on a port of its own.
#[derive(Debug, Clone, Args)]
pub struct ScalerArgs {
    /// Port of KEDA's external scaler (gRPC over TLS with the serving certificate). Unset: not served.
    #[arg(long, env = "WVA_EXTERNAL_SCALER_PORT")]
    pub external_scaler_port: Option<u16>,
    /// CA bundle that KEDA's client certificate (TriggerAuthentication tlsClientCert) must chain to.
    #[arg(long, env = "WVA_EXTERNAL_SCALER_CLIENT_CA_FILE")]
    pub external_scaler_client_ca_file: Option<PathBuf>,
    /// Serve the scaler without client certificates (logged as a warning). Standalone always does, on loopback.
    #[arg(
        long,
        env = "WVA_EXTERNAL_SCALER_ALLOW_UNAUTHENTICATED",
        default_value_t = false
    )]
    pub external_scaler_allow_unauthenticated: bool,
}

/// The HTTPS listener.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// HTTPS port.
    #[arg(long, env = "WVA_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Address to listen on [default: 0.0.0.0; 127.0.0.1 with --standalone].
    #[arg(long, env = "WVA_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,
    /// Connections served at once; further ones are closed.
    #[arg(long, env = "WVA_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// A connection that has not started a request this long after its TLS handshake is closed.
    #[arg(long, env = "WVA_FIRST_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub first_request_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2 PINGs do not count).
    #[arg(long, env = "WVA_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// HTTP/2 streams served at once per connection.
    #[arg(long, env = "WVA_MAX_CONCURRENT_STREAMS", default_value_t = crate::server::MAX_CONCURRENT_STREAMS)]
    pub max_concurrent_streams: u32,
    /// Time allowed for a TLS handshake.
    #[arg(long, env = "WVA_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "WVA_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// The serving certificate.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Serving certificate (PEM). Reloaded when it changes on disk. Without it a self-signed one is generated.
    #[arg(long, env = "WVA_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "WVA_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes (polling sees Secret symlink swaps).
    #[arg(long, env = "WVA_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// Where the CA of a generated certificate is written (ca.crt).
    #[arg(long, env = "WVA_CERT_DIR")]
    pub cert_dir: Option<PathBuf>,
    /// Extra DNS names or IPs for a generated certificate (repeatable, or comma-separated).
    #[arg(long = "tls-san", env = "WVA_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
}

/// Where the variants come from: a cluster, or a standalone file.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig to use; in-cluster configuration when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of this server (its ConfigMaps live there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "wva-metrics-server")]
    pub namespace: String,
    /// Only watch this namespace's variants (VAs, annotated HPAs and ScaledObjects), Deployments, Pods and
    /// local saturation ConfigMap (default: all namespaces, minus those annotated wva.llmd.ai/exclude=true).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Saturation thresholds ConfigMap in --namespace (WVA v0.5 name; v0.4.1 used capacity-scaling-config);
    /// a ConfigMap of this name in a namespace labelled wva.llmd.ai/config-enabled=true overrides it there.
    #[arg(
        long,
        env = "SATURATION_CONFIG_MAP_NAME",
        default_value = "wva-saturation-scaling-config"
    )]
    pub saturation_configmap: String,
    /// Scale to zero for models no ConfigMap entry decides for (WVA's WVA_SCALE_TO_ZERO).
    #[arg(long, env = "WVA_SCALE_TO_ZERO", default_value_t = false, action = clap::ArgAction::Set)]
    pub scale_to_zero: bool,
    /// Name of the scale-to-zero ConfigMap in --namespace (entries default and per model: enable_scale_to_zero, retention_period).
    #[arg(
        long,
        env = "WVA_SCALE_TO_ZERO_CONFIGMAP",
        default_value = crate::saturation::zero::CONFIGMAP_NAME
    )]
    pub scale_to_zero_configmap: String,
    /// Serve only variants labelled `wva.llmd.ai/controller-instance=<this>` (WVA v0.5.1 isolation).
    /// Unset: every variant, whatever its instance; items carry controller_instance either way.
    #[arg(long, env = "CONTROLLER_INSTANCE")]
    pub controller_instance: Option<String>,
    /// Only the GPUs of the nodes this label selector picks count for the GPU limiter (WVA's
    /// WVA_NODE_SELECTOR, e.g. `pool=inference`). Unset: every node.
    #[arg(long, env = "WVA_NODE_SELECTOR", value_parser = node_selector)]
    pub node_selector: Option<crate::provider::selector::Selector>,
    /// Serve from a multi-document YAML file of VariantAutoscalings, HPAs, ScaledObjects, Deployments, Pods,
    /// Namespaces and ConfigMaps instead of a
    /// cluster (reloaded when it changes). No authentication: loopback addresses only.
    #[arg(long, env = "WVA_STANDALONE")]
    pub standalone: Option<PathBuf>,
}

/// Delegated authentication and authorization.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// CA bundle for x509 client certificates (overrides client-ca-file of kube-system/extension-apiserver-authentication).
    #[arg(long, env = "WVA_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// CA bundle for front-proxy (request-header) client certificates (overrides the ConfigMap).
    #[arg(long, env = "WVA_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed CNs of front-proxy client certificates; empty accepts any CN signed by the CA (overrides the ConfigMap).
    #[arg(long, env = "WVA_REQUESTHEADER_ALLOWED_NAMES", value_delimiter = ',')]
    pub requestheader_allowed_names: Option<Vec<String>>,
    /// Headers carrying the user name (overrides the ConfigMap).
    #[arg(
        long,
        env = "WVA_REQUESTHEADER_USERNAME_HEADERS",
        value_delimiter = ','
    )]
    pub requestheader_username_headers: Option<Vec<String>>,
    /// Headers carrying the groups (overrides the ConfigMap).
    #[arg(long, env = "WVA_REQUESTHEADER_GROUP_HEADERS", value_delimiter = ',')]
    pub requestheader_group_headers: Option<Vec<String>>,
    /// Prefixes of headers carrying extra user attributes (overrides the ConfigMap).
    #[arg(
        long,
        env = "WVA_REQUESTHEADER_EXTRA_HEADERS_PREFIX",
        value_delimiter = ','
    )]
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,
    /// Headers carrying the user UID (overrides the ConfigMap).
    #[arg(long, env = "WVA_REQUESTHEADER_UID_HEADERS", value_delimiter = ',')]
    pub requestheader_uid_headers: Option<Vec<String>>,
    /// How long TokenReview and SubjectAccessReview answers (allow and deny) are cached.
    #[arg(long, env = "WVA_AUTH_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,
}

/// Replica samples: the pod scraper and its window.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Where replica samples come from.
    #[arg(long, env = "WVA_METRICS_SOURCE", value_enum, default_value = "both")]
    pub metrics_source: MetricsSource,
    /// How often pods are scraped.
    #[arg(long, env = "WVA_SCRAPE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub scrape_interval: Duration,
    /// Timeout of one pod scrape.
    #[arg(long, env = "WVA_SCRAPE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,
    /// Pods scraped at once.
    #[arg(long, env = "WVA_SCRAPE_CONCURRENCY", default_value_t = 64)]
    pub scrape_concurrency: usize,
    /// Largest metrics page read; larger pages are cut (and logged).
    #[arg(long, env = "WVA_MAX_PAGE_BYTES", default_value_t = crate::sources::scraper::DEFAULT_MAX_PAGE_BYTES)]
    pub max_page_bytes: usize,
    /// Look-back window: the peak over this window is used (WVA's `max_over_time[1m]`).
    #[arg(long, env = "WVA_LOOKBACK", default_value = "60s", value_parser = parse_duration)]
    pub lookback: Duration,
    /// While Ready pods lack fresh samples, answer spec.replicas for this long; after that answer 503.
    #[arg(long, env = "WVA_MAX_METRIC_AGE", default_value = "2m", value_parser = parse_duration)]
    pub max_metric_age: Duration,
    /// CA bundle for pods annotated prometheus.io/scheme: https [default: the system bundle].
    #[arg(long, env = "WVA_SCRAPE_CA_FILE")]
    pub scrape_ca_file: Option<PathBuf>,
    /// Name to verify HTTPS pods' certificates against [default: the pod's IP].
    #[arg(long, env = "WVA_SCRAPE_TLS_SERVER_NAME")]
    pub scrape_tls_server_name: Option<String>,
    /// Bearer token file presented to every scraped pod (re-read when it changes).
    #[arg(long, env = "WVA_SCRAPE_BEARER_TOKEN_FILE")]
    pub scrape_bearer_token_file: Option<PathBuf>,
    /// How often InferencePool endpoint pickers are read for queued requests (scale from zero).
    #[arg(long, env = "WVA_EPP_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub epp_interval: Duration,
    /// Bearer token presented to endpoint pickers (re-read when it changes).
    #[arg(
        long,
        env = "WVA_EPP_TOKEN_FILE",
        default_value = crate::sources::epp::DEFAULT_TOKEN_FILE
    )]
    pub epp_token_file: PathBuf,
}

/// VariantAutoscaling status write-back.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Write each VariantAutoscaling's status (desiredOptimizedAlloc, conditions) and events; one replica at a time (Lease).
    #[arg(long, env = "WVA_WRITE_STATUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub write_status: bool,
    /// How often status is rewritten even without a change (changes are written within seconds).
    #[arg(long, env = "WVA_STATUS_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// Lease duration for the status writer's leader election (Lease wva-metrics-server-status in --namespace).
    #[arg(long, env = "WVA_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease [default: hostname and process id].
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

/// Logging.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "WVA_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log level or env-filter directive (e.g. info, debug, wva_metrics_server=debug).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Args)]
pub struct PrometheusArgs {
    /// Prometheus (or Thanos querier) base URL; must be https:// unless --prometheus-allow-http.
    #[arg(long = "prometheus-base-url", env = "PROMETHEUS_BASE_URL")]
    pub base_url: Option<String>,
    /// Skip verification of Prometheus' certificate (development only).
    #[arg(
        long = "prometheus-tls-insecure-skip-verify",
        env = "PROMETHEUS_TLS_INSECURE_SKIP_VERIFY",
        default_value_t = false
    )]
    pub insecure_skip_verify: bool,
    /// CA bundle to verify Prometheus' certificate.
    #[arg(long = "prometheus-ca-cert-path", env = "PROMETHEUS_CA_CERT_PATH")]
    pub ca_cert_path: Option<PathBuf>,
    /// Client certificate for mTLS to Prometheus.
    #[arg(
        long = "prometheus-client-cert-path",
        env = "PROMETHEUS_CLIENT_CERT_PATH",
        requires = "client_key_path"
    )]
    pub client_cert_path: Option<PathBuf>,
    /// Client key for mTLS to Prometheus.
    #[arg(
        long = "prometheus-client-key-path",
        env = "PROMETHEUS_CLIENT_KEY_PATH",
        requires = "client_cert_path"
    )]
    pub client_key_path: Option<PathBuf>,
    /// TLS server name to verify instead of the URL's host.
    #[arg(long = "prometheus-server-name", env = "PROMETHEUS_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Bearer token sent to Prometheus (wins over --prometheus-token-path).
    #[arg(
        long = "prometheus-bearer-token",
        env = "PROMETHEUS_BEARER_TOKEN",
        hide_env_values = true
    )]
    pub bearer_token: Option<String>,
    /// File holding the bearer token (re-read on every refresh, so rotated tokens work).
    #[arg(long = "prometheus-token-path", env = "PROMETHEUS_TOKEN_PATH")]
    pub token_path: Option<PathBuf>,
    /// Allow an http:// Prometheus URL (WVA refuses it; so do we unless told).
    #[arg(
        long = "prometheus-allow-http",
        env = "PROMETHEUS_ALLOW_HTTP",
        default_value_t = false
    )]
    pub allow_http: bool,
    /// Timeout of one PromQL query.
    #[arg(long = "prometheus-timeout", env = "PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `500ms`, `10s`, `2m`, `1h`, or a plain number of seconds.
impl PrometheusArgs {
    /// The Prometheus client's options, when a base URL is configured.
    pub(crate) fn options(&self) -> Option<PrometheusOptions> {
        Some(PrometheusOptions {
            base_url: self.base_url.clone()?,
            insecure_skip_verify: self.insecure_skip_verify,
            ca_cert_path: self.ca_cert_path.clone(),
            client_cert_path: self.client_cert_path.clone(),
            client_key_path: self.client_key_path.clone(),
            server_name: self.server_name.clone(),
            bearer_token: self.bearer_token.clone(),
            token_path: self.token_path.clone(),
            allow_http: self.allow_http,
            timeout: self.timeout,
        })
    }
}

impl SourceArgs {
    pub(crate) fn epp_options(&self) -> EppOptions {
        EppOptions {
            interval: self.epp_interval,
            timeout: self.scrape_timeout,
            token_file: self.epp_token_file.clone(),
        }
    }

    pub(crate) fn scrape_options(&self) -> ScrapeOptions {
        ScrapeOptions {
            interval: self.scrape_interval,
            timeout: self.scrape_timeout,
            concurrency: self.scrape_concurrency,
            max_body_bytes: self.max_page_bytes,
            reach: Reach {
                // Built even when no pod asks for https yet; if it cannot be (no system bundle), https
                // pods report why and the others are unaffected.
                tls: Some(
                    ScrapeTls::new(
                        self.scrape_ca_file.as_deref(),
                        self.scrape_tls_server_name.as_deref(),
                    )
                    .map(Arc::new),
                ),
                token: self
                    .scrape_bearer_token_file
                    .clone()
                    .map(|f| Arc::new(TokenFile::new(f))),
            },
            ..ScrapeOptions::default()
        }
    }
}

impl HttpArgs {
    pub(crate) fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            handshake_timeout: self.handshake_timeout,
            first_request_timeout: self.first_request_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            shutdown_grace: self.shutdown_grace,
            ..Default::default()
        }
    }
}

impl StatusArgs {
    /// The writer's options; `identity` defaults to the host name and process id.
    pub(crate) fn options(&self) -> StatusOptions {
        StatusOptions {
            interval: self.status_interval,
            tick: STATUS_TICK.min(self.status_interval),
            lease_duration: self.lease_duration,
            identity: self.identity.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
                format!("{}-{}", host.trim(), std::process::id())
            }),
        }
    }
}

impl AuthArgs {
    /// The command-line overrides of the trust configuration, with the CA files read.
    pub fn overrides(&self) -> Result<AuthOverrides, String> {
        Ok(AuthOverrides {
            client_ca_pem: read_optional(&self.client_ca_file, "--client-ca-file")?,
            requestheader_ca_pem: read_optional(
                &self.requestheader_client_ca_file,
                "--requestheader-client-ca-file",
            )?,
            allowed_names: self.requestheader_allowed_names.clone(),
            username_headers: self.requestheader_username_headers.clone(),
            group_headers: self.requestheader_group_headers.clone(),
            extra_headers_prefix: self.requestheader_extra_headers_prefix.clone(),
            uid_headers: self.requestheader_uid_headers.clone(),
        })
    }
}

fn read_optional(path: &Option<PathBuf>, what: &str) -> Result<Option<Vec<u8>>, String> {
    path.as_ref()
        .map(|p| std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display())))
        .transpose()
}

/// Flags take Go's duration form (`1m30s`, `500ms`) or a number of seconds: [`crate::duration::parse`].
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

impl ServeArgs {
    /// Checks combinations clap cannot express; messages say what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.sources.scrape_ca_file.is_some() || self.sources.scrape_tls_server_name.is_some() {
            ScrapeTls::new(
                self.sources.scrape_ca_file.as_deref(),
                self.sources.scrape_tls_server_name.as_deref(),
            )
            .map_err(|e| format!("--scrape-ca-file / --scrape-tls-server-name: {e}"))?;
        }
        if let Some(f) = &self.sources.scrape_bearer_token_file {
            TokenFile::new(f.clone())
                .read()
                .map_err(|e| format!("--scrape-bearer-token-file: {e}"))?;
        }
        if self.sources.epp_interval.is_zero() {
            return Err("--epp-interval must be greater than 0".into());
        }
        if self.sources.scrape_interval.is_zero() {
            return Err("--scrape-interval must be greater than 0".into());
        }
        if self.sources.lookback < self.sources.scrape_interval {
            return Err(format!(
                "--lookback ({:?}) must be at least --scrape-interval ({:?})",
                self.sources.lookback, self.sources.scrape_interval
            ));
        }
        if self.sources.scrape_concurrency == 0 || self.http.max_connections == 0 {
            return Err("--scrape-concurrency and --max-connections must be at least 1".into());
        }
        if self.cluster.standalone.is_some() {
            let addr = self
                .http
                .bind_address
                .unwrap_or(IpAddr::from([127, 0, 0, 1]));
            if !addr.is_loopback() {
                return Err(format!(
                    "--standalone serves without authentication and only on loopback; --bind-address {addr} is not a loopback address"
                ));
            }
        }
        if self.scaler.external_scaler_port.is_some()
            && self.cluster.standalone.is_none()
            && self.scaler.external_scaler_client_ca_file.is_none()
            && !self.scaler.external_scaler_allow_unauthenticated
        {
            return Err("--external-scaler-port needs --external-scaler-client-ca-file (the CA of KEDA's client certificate), or --external-scaler-allow-unauthenticated to serve without client authentication".into());
        }
        if self.sources.metrics_source == MetricsSource::Prometheus
            && self.prometheus.base_url.is_none()
        {
            return Err(
                "--metrics-source prometheus needs --prometheus-base-url (PROMETHEUS_BASE_URL)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `--node-selector`: Kubernetes label-selector syntax, checked at startup.
fn node_selector(text: &str) -> Result<crate::provider::selector::Selector, String> {
    crate::provider::selector::Selector::parse(text)
        .map_err(|e| format!("not a label selector: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn standalone_refuses_non_loopback() {
        let cli = Cli::try_parse_from([
            "wva-metrics-server",
            "serve",
            "--standalone",
            "f.yaml",
            "--bind-address",
            "0.0.0.0",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        assert!(args.validate().unwrap_err().contains("only on loopback"));
    }
}
