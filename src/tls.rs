//! TLS, with the one crypto provider (ring):
//! * serving: TLS 1.2+, ALPN h2 and http/1.1, client certificates requested but optional, and a serving
//!   certificate that is hot-reloaded from files (polling, so the Secret volume's `..data` symlink swap is
//!   seen) or generated at start;
//! * as a client (Prometheus, HTTPS pods, the `status` and `scrape` commands): trust anchors from a CA file
//!   or the system bundle ([`roots`]), and a client configuration over them ([`client_config`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{from}: none of its {ignored} certificates is a usable CA")]
    NoUsableCa { from: String, ignored: usize },
    #[error("no system CA bundle found (looked for {}); set {setting}", SYSTEM_CA_BUNDLES.join(", "))]
    NoSystemBundle { setting: &'static str },
    #[error("TLS server name {name:?}: {message}")]
    ServerName { name: String, message: String },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{cert} and {key} do not form a usable serving key pair: {message}")]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("building the TLS configuration: {0}")]
    Config(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every PEM certificate in a file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs = parse_certs(&bytes).map_err(|message| TlsError::Pem {
        path: path.into(),
        message,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Parses PEM certificates from bytes (empty input gives an empty list).
pub(crate) fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM certificate: {e}"))
}

/// Where a system CA bundle is (Debian/Ubuntu/Alpine, RHEL/Fedora, macOS/BSD), when no CA file is given.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Trust anchors from PEM bytes (`from` names them in errors): every certificate that is a usable CA.
/// No certificate at all, or none usable, is an error.
pub fn roots_from_pem(pem: &[u8], from: &str) -> Result<RootCertStore, TlsError> {
    let certs = parse_certs(pem).map_err(|message| TlsError::Pem {
        path: from.into(),
        message,
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: from.into() });
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoUsableCa {
            from: from.into(),
            ignored,
        });
    }
    Ok(roots)
}

/// Trust anchors from `ca_file`, or from the system bundle when none is given; `setting` is the flag or
/// variable an operator sets when there is no system bundle.
pub fn roots(ca_file: Option<&Path>, setting: &'static str) -> Result<RootCertStore, TlsError> {
    let path = match ca_file {
        Some(p) => p,
        None => SYSTEM_CA_BUNDLES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or(TlsError::NoSystemBundle { setting })?,
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    roots_from_pem(&pem, &path.display().to_string())
}

/// A client configuration that verifies servers against `roots` (TLS 1.2 and 1.3, ring), offering `alpn`.
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A reqwest client that also trusts the certificates of `ca_file` (the commands' `--ca-file`), besides
/// the platform's roots.
pub fn trust_ca_file(
    mut builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let Some(path) = ca_file else {
        return Ok(builder);
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TlsError::Pem {
        path: path.into(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    for cert in certs {
        builder = builder.add_root_certificate(cert);
    }
    Ok(builder)
}

/// A server name to verify certificates against, instead of the address dialled.
pub fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_string()).map_err(|e| TlsError::ServerName {
        name: name.into(),
        message: e.to_string(),
    })
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let certs = parse_certs(cert_pem)?;
    if certs.is_empty() {
        return Err("no PEM certificate in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("invalid PEM private key: {e}"))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| e.to_string())
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub(crate) enum CertSource {
    /// `--tls-cert-file`: its CA is the operator's.
    Files { cert: PathBuf },
    /// Generated at start; the CA that signed it is written to `ca_path` so clients can trust it.
    Generated { ca_path: PathBuf },
}

/// Resolves the current serving certificate; swapped atomically on reload.
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    loaded_from: ArcSwap<PemPair>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReloadingCert")
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The raw bytes of a certificate file and its key file.
type PemPair = (Vec<u8>, Vec<u8>);

fn read_pair(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let cert_bytes = std::fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.into(),
        source,
    })?;
    let key_bytes = std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.into(),
        source,
    })?;
    Ok((cert_bytes, key_bytes))
}

fn parse_pair(
    pair: &PemPair,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    certified_key(&pair.0, &pair.1, provider).map_err(|message| TlsError::KeyPair {
        cert: cert.into(),
        key: key.into(),
        message,
    })
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Arc<Self>, TlsError> {
        let pair = read_pair(cert, key)?;
        let ck = parse_pair(&pair, cert, key, provider)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
            loaded_from: ArcSwap::from_pointee(pair),
        }))
    }

    pub fn from_key(ck: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(ck),
            loaded_from: ArcSwap::from_pointee((Vec::new(), Vec::new())),
        })
    }

    /// Re-reads the files; swaps in the new pair when the bytes changed and they form a valid pair.
    /// On error the previous certificate stays in service. Returns whether a new certificate was loaded.
    pub(crate) fn reload(
        &self,
        cert: &Path,
        key: &Path,
        provider: &CryptoProvider,
    ) -> Result<bool, TlsError> {
        let pair = read_pair(cert, key)?;
        if **self.loaded_from.load() == pair {
            return Ok(false);
        }
        let ck = parse_pair(&pair, cert, key, provider)?;
        self.current.store(Arc::new(ck));
        self.loaded_from.store(Arc::new(pair));
        Ok(true)
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// Whether the certificate in service is valid now (`/readyz`'s `tls` check): its leaf parses and
    /// `now` lies within its validity period.
    pub fn valid_at(&self, now: std::time::SystemTime) -> Result<(), String> {
        let ck = self.current.load();
        let leaf = ck
            .cert
            .first()
            .ok_or_else(|| "no serving certificate is loaded".to_string())?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("the serving certificate does not parse: {e}"))?;
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let validity = parsed.validity();
        if secs > validity.not_after.timestamp() {
            return Err(format!(
                "the serving certificate expired at {} (replace the Secret's files; they are reloaded)",
                validity.not_after
            ));
        }
        if secs < validity.not_before.timestamp() {
            return Err(format!(
                "the serving certificate is not valid before {}",
                validity.not_before
            ));
        }
        Ok(())
    }
}

/// Keeps a serving certificate current from its files.
pub struct CertReload {
    pub resolver: Arc<ReloadingCert>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub every: Duration,
}

impl CertReload {
    /// Polls the certificate files and reloads them when they change. Polling (rather than inotify on
    /// the files) sees Kubernetes' atomic `..data` symlink swap of Secret volumes. A pair that does not
    /// load leaves the previous one in service.
    pub async fn run(self: Arc<Self>) {
        let provider = provider();
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.resolver.reload(&self.cert, &self.key, &provider) {
                Ok(true) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "serving certificate not reloaded; the previous one stays in service");
                }
            }
        }
    }
}

/// A self-signed CA and a serving certificate signed by it, for the given DNS names and IPs.
pub struct Generated {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn generate_self_signed(names: &[String]) -> Result<Generated, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName as Dn, DnType,
        ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = KeyPair::generate().map_err(gen)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = Dn::new();
    dn.push(DnType::CommonName, "wva-metrics-server self-signed CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(gen)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen)?;
    let mut dn = Dn::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "localhost".into()),
    );
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let cert = params.signed_by(&key, &issuer).map_err(gen)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

impl Generated {
    pub fn certified_key(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        certified_key(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), provider)
            .map_err(TlsError::Generate)
    }
}

/// Requests a client certificate and checks that the client holds its key, but defers trust to the
/// authenticators: which CA a chain must lead to depends on what the request wants to assert
/// (front-proxy headers need the request-header CA, a user identity the client CA), and those CAs
/// are followed live from the cluster. An untrusted certificate is thus a 401 Status, as in Go servers.
#[derive(Debug)]
pub(crate) struct DeferredClientAuth {
    algorithms: WebPkiSupportedAlgorithms,
}

impl DeferredClientAuth {
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for DeferredClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end: &CertificateDer<'_>,
        _inter: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TLS 1.2 and 1.3, ALPN h2 then http/1.1, optional client certificates.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, TlsError> {
    let verifier = Arc::new(DeferredClientAuth::new(&provider));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Writes a file with the given mode, creating parent directories.
pub(crate) fn write_file(path: &Path, contents: &str) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.into(),
            source,
        })?;
    }
    std::fs::write(path, contents).map_err(|source| TlsError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_valid(from: (i32, u8, u8), to: (i32, u8, u8)) -> Arc<ReloadingCert> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.self_signed(&key).unwrap();
        let ck = certified_key(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            &provider(),
        )
        .unwrap();
        ReloadingCert::from_key(ck)
    }

    /// `/readyz`'s `tls` check is true: a certificate outside its validity period fails it.
    #[test]
    fn validity_is_checked_against_now() {
        let now = std::time::SystemTime::now();
        assert!(cert_valid((2020, 1, 1), (2999, 1, 1)).valid_at(now).is_ok());
        let expired = cert_valid((2020, 1, 1), (2021, 1, 1))
            .valid_at(now)
            .unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        let early = cert_valid((2998, 1, 1), (2999, 1, 1))
            .valid_at(now)
            .unwrap_err();
        assert!(early.contains("not valid before"), "{early}");
    }
}
