//! Prometheus' HTTP API as WVA reaches it: HTTPS with WVA's settings (PROMETHEUS_BASE_URL,
//! PROMETHEUS_CA_CERT_PATH, …), a bearer token (re-read from its file when it rotates), instant queries
//! with bounded responses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use thiserror::Error;

use crate::sources::error_chain;
use crate::sources::reach::TokenFile;

#[derive(Debug, Error)]
pub enum PrometheusError {
    #[error("PROMETHEUS_BASE_URL {0:?} is not https://; WVA requires HTTPS (use --prometheus-allow-http for a test setup)")]
    NotHttps(String),
    #[error("PROMETHEUS_BASE_URL {url:?} is not a valid URL: {message}")]
    BadUrl { url: String, message: String },
    #[error("reading {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("PROMETHEUS_TOKEN_PATH: {0}")]
    Token(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("query {query:?}: {message}")]
    Query { query: String, message: String },
}

/// Largest Prometheus API response read.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<VectorSample>,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// Verifies Prometheus' certificate as WVA configures it: against the CA (`webpki`), optionally for
/// PROMETHEUS_SERVER_NAME instead of the URL's host, or not at all with PROMETHEUS_TLS_INSECURE_SKIP_VERIFY
/// (`webpki: None`). Handshake signatures are always checked.
#[derive(Debug)]
struct PrometheusVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    server_name: Option<ServerName<'static>>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PrometheusVerifier {
    fn verify_server_cert(
        &self,
        e: &CertificateDer<'_>,
        i: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        o: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.webpki {
            None => Ok(ServerCertVerified::assertion()),
            Some(v) => {
                v.verify_server_cert(e, i, self.server_name.as_ref().unwrap_or(name), o, now)
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, PrometheusError> {
    std::fs::read(path).map_err(|e| PrometheusError::File {
        path: path.clone(),
        message: e.to_string(),
    })
}

/// How to reach Prometheus (WVA's settings, made from `--prometheus-*` / `PROMETHEUS_*`).
#[derive(Debug, Clone)]
pub struct PrometheusOptions {
    pub base_url: String,
    pub insecure_skip_verify: bool,
    pub ca_cert_path: Option<PathBuf>,
    pub client_cert_path: Option<PathBuf>,
    pub client_key_path: Option<PathBuf>,
    pub server_name: Option<String>,
    pub bearer_token: Option<String>,
    pub token_path: Option<PathBuf>,
    pub allow_http: bool,
    pub timeout: Duration,
}

/// Builds the rustls client configuration from the WVA settings.
pub(crate) fn tls_config(args: &PrometheusOptions) -> Result<ClientConfig, PrometheusError> {
    let provider = crate::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| PrometheusError::Tls(e.to_string()))?;
    let webpki = if args.insecure_skip_verify {
        None
    } else {
        let roots = crate::tls::roots(args.ca_cert_path.as_deref(), "PROMETHEUS_CA_CERT_PATH")
            .map_err(|e| PrometheusError::Tls(e.to_string()))?;
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| PrometheusError::Tls(e.to_string()))?,
        )
    };
    let server_name = args
        .server_name
        .as_deref()
        .map(crate::tls::server_name)
        .transpose()
        .map_err(|e| PrometheusError::Tls(format!("PROMETHEUS_SERVER_NAME: {e}")))?;
    let verifier = Arc::new(PrometheusVerifier {
        webpki,
        server_name,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match (&args.client_cert_path, &args.client_key_path) {
        (Some(cert), Some(key)) => {
            let certs =
                crate::tls::read_certs(cert).map_err(|e| PrometheusError::Tls(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                .map_err(|e| PrometheusError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PrometheusError::Tls(format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

pub struct PrometheusClient {
    http: reqwest::Client,
    base: reqwest::Url,
    bearer: Option<String>,
    /// Re-read when the file changes (projected tokens rotate).
    token_file: Option<TokenFile>,
}

impl PrometheusClient {
    pub fn new(args: &PrometheusOptions) -> Result<Self, PrometheusError> {
        let url = args.base_url.clone();
        let base = reqwest::Url::parse(&url).map_err(|e| PrometheusError::BadUrl {
            url: url.clone(),
            message: e.to_string(),
        })?;
        match base.scheme() {
            "https" => {}
            "http" if args.allow_http => {}
            _ => return Err(PrometheusError::NotHttps(url)),
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(args)?)
            .timeout(args.timeout)
            .connect_timeout(args.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PrometheusError::Tls(e.to_string()))?;
        Ok(Self {
            http,
            base,
            bearer: args.bearer_token.clone().filter(|t| !t.is_empty()),
            token_file: args.token_path.clone().map(TokenFile::new),
        })
    }

    fn token(&self) -> Result<Option<String>, PrometheusError> {
        if let Some(t) = &self.bearer {
            return Ok(Some(t.clone()));
        }
        match &self.token_file {
            Some(f) => f.read().map(Some).map_err(PrometheusError::Token),
            None => Ok(None),
        }
    }

    /// Runs an instant query and returns `(labels, value)` per series. NaN and infinite values are dropped.
    pub async fn query(
        &self,
        query: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, PrometheusError> {
        let err = |message: String| PrometheusError::Query {
            query: query.to_string(),
            message,
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| err("base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["api", "v1", "query"]);
        let mut req = self.http.post(url).form(&[("query", query)]);
        if let Some(t) = self.token()? {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|e| err(error_chain(&e)))?;
        let status = resp.status();
        // Bounded read: a per-pod peak query over a large fleet is a few MB at most; anything far larger is
        // a misdirected URL or a runaway query, not something to buffer.
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(error_chain(&e)))? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(err(format!(
                    "HTTP {status}: response larger than {MAX_RESPONSE_BYTES} bytes; refusing it"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let parsed: ApiResponse = serde_json::from_slice(&bytes).map_err(|e| {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
            err(format!(
                "HTTP {status}, not a Prometheus API response ({e}): {head}"
            ))
        })?;
        if parsed.status != "success" {
            return Err(err(format!(
                "HTTP {status}: {}: {}",
                parsed.error_type.unwrap_or_default(),
                parsed.error.unwrap_or_default()
            )));
        }
        let data = parsed
            .data
            .ok_or_else(|| err("response has no data".into()))?;
        if data.result_type != "vector" {
            return Err(err(format!(
                "expected a vector result, got {}",
                data.result_type
            )));
        }
        Ok(data
            .result
            .into_iter()
            .filter_map(|s| {
                s.value
                    .1
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(|v| (s.metric, v))
            })
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn options(url: &str, allow_http: bool) -> PrometheusOptions {
        PrometheusOptions {
            base_url: url.into(),
            insecure_skip_verify: true,
            ca_cert_path: None,
            client_cert_path: None,
            client_key_path: None,
            server_name: None,
            bearer_token: None,
            token_path: None,
            allow_http,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn http_is_refused_unless_allowed() {
        let args = options;
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(matches!(
            PrometheusClient::new(&args("http://p:9090", false)),
            Err(PrometheusError::NotHttps(_))
        ));
        assert!(PrometheusClient::new(&args("http://p:9090", true)).is_ok());
        assert!(PrometheusClient::new(&args("https://p:9090", false)).is_ok());
        assert!(matches!(
            PrometheusClient::new(&args("not a url", false)),
            Err(PrometheusError::BadUrl { .. })
        ));
    }
}
