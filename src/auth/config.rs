//! Who is trusted: the request-header (front-proxy) CA with its allowed names and header names, and the
//! client CA. Read from `kube-system/extension-apiserver-authentication` (written by kube-apiserver) and
//! followed live; flags override individual values, as in Go's delegating authentication options.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;

pub(crate) const AUTH_CONFIGMAP_NAMESPACE: &str = "kube-system";
pub(crate) const AUTH_CONFIGMAP_NAME: &str = "extension-apiserver-authentication";

/// Verifies client-certificate chains against one CA bundle, requiring the ClientAuth usage.
#[derive(Clone)]
pub struct CaVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
    pub subjects: usize,
}

impl std::fmt::Debug for CaVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaVerifier({} CA certificates)", self.subjects)
    }
}

impl CaVerifier {
    pub(crate) fn from_pem(pem: &[u8], provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let roots = crate::tls::roots_from_pem(pem, "the CA bundle").map_err(|e| e.to_string())?;
        let added = roots.len();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("building the verifier: {e}"))?;
        Ok(Self {
            verifier,
            subjects: added,
        })
    }

    /// `Ok` when the chain leads to this CA and the leaf may be used for client authentication.
    pub(crate) fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct RequestHeaderConfig {
    pub ca: CaVerifier,
    /// Empty: any CN signed by the CA is accepted (Go semantics).
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_headers_prefix: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub request_header: Option<RequestHeaderConfig>,
    pub client_ca: Option<CaVerifier>,
}

/// Values given on the command line; each one, when set, replaces the ConfigMap's.
#[derive(Debug, Clone, Default)]
pub struct AuthOverrides {
    pub client_ca_pem: Option<Vec<u8>>,
    pub requestheader_ca_pem: Option<Vec<u8>>,
    pub allowed_names: Option<Vec<String>>,
    pub username_headers: Option<Vec<String>>,
    pub group_headers: Option<Vec<String>>,
    pub extra_headers_prefix: Option<Vec<String>>,
    pub uid_headers: Option<Vec<String>>,
}

/// The ConfigMap stores lists as JSON arrays of strings; empty or missing means none.
fn string_list(data: &BTreeMap<String, String>, key: &str) -> Result<Vec<String>, String> {
    match data.get(key).map(|s| s.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(s) => serde_json::from_str::<Vec<String>>(s)
            .map_err(|e| format!("{key}: expected a JSON array of strings: {e}")),
    }
}

impl AuthConfig {
    /// Builds the configuration from the ConfigMap's data plus overrides. A broken CA or list is an error
    /// naming the key, so the caller keeps the previous configuration.
    pub fn from_configmap(
        data: &BTreeMap<String, String>,
        overrides: &AuthOverrides,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let client_ca_pem = overrides
            .client_ca_pem
            .clone()
            .or_else(|| data.get("client-ca-file").map(|s| s.clone().into_bytes()));
        let client_ca = match client_ca_pem {
            Some(pem) if !pem.is_empty() => Some(
                CaVerifier::from_pem(&pem, provider).map_err(|e| format!("client-ca-file: {e}"))?,
            ),
            _ => None,
        };
        let rh_pem = overrides.requestheader_ca_pem.clone().or_else(|| {
            data.get("requestheader-client-ca-file")
                .map(|s| s.clone().into_bytes())
        });
        let request_header = match rh_pem {
            Some(pem) if !pem.is_empty() => {
                let ca = CaVerifier::from_pem(&pem, provider)
                    .map_err(|e| format!("requestheader-client-ca-file: {e}"))?;
                let pick = |o: &Option<Vec<String>>,
                            key: &str,
                            default: &[&str]|
                 -> Result<Vec<String>, String> {
                    if let Some(v) = o {
                        return Ok(v.clone());
                    }
                    let v = string_list(data, key)?;
                    Ok(if v.is_empty() && !default.is_empty() {
                        default
                            .iter()
                            .map(std::string::ToString::to_string)
                            .collect()
                    } else {
                        v
                    })
                };
                Some(RequestHeaderConfig {
                    ca,
                    allowed_names: pick(
                        &overrides.allowed_names,
                        "requestheader-allowed-names",
                        &[],
                    )?,
                    username_headers: pick(
                        &overrides.username_headers,
                        "requestheader-username-headers",
                        &["X-Remote-User"],
                    )?,
                    uid_headers: pick(&overrides.uid_headers, "requestheader-uid-headers", &[])?,
                    group_headers: pick(
                        &overrides.group_headers,
                        "requestheader-group-headers",
                        &["X-Remote-Group"],
                    )?,
                    extra_headers_prefix: pick(
                        &overrides.extra_headers_prefix,
                        "requestheader-extra-headers-prefix",
                        &["X-Remote-Extra-"],
                    )?,
                })
            }
            _ => None,
        };
        Ok(Self {
            request_header,
            client_ca,
        })
    }
}
