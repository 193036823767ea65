//! How pods are reached beyond plain HTTP: HTTPS with a configurable CA (and server name), and a bearer
//! token from a file that is re-read when it rotates. Shared by the pod scraper, the endpoint-picker
//! reader and the `scrape` command.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::tls;

/// A bearer token read from a file, re-read when the file changes (projected tokens rotate).
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, String)>>,
}

impl TokenFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    pub fn read(&self) -> Result<String, String> {
        let why = |e: std::io::Error| format!("bearer token file {}: {e}", self.path.display());
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(why)?;
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, token)) = cached.as_ref() {
            if *at == modified {
                return Ok(token.clone());
            }
        }
        let token = std::fs::read_to_string(&self.path)
            .map_err(why)?
            .trim()
            .to_string();
        if token.is_empty() {
            return Err(format!(
                "bearer token file {} is empty",
                self.path.display()
            ));
        }
        *cached = Some((modified, token.clone()));
        Ok(token)
    }
}

/// TLS for HTTPS pods: the roots to verify against and, optionally, the name to verify (pod certificates
/// usually name a Service, not the pod's IP).
#[derive(Debug)]
pub struct ScrapeTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
}

/// TLS 1.3 tickets kept for resumption (rustls keeps up to 8 per server, so 16,384 servers), so a re-scrape
/// skips the full handshake.
const RESUMPTION_SESSIONS: usize = 8 * 16_384;

impl ScrapeTls {
    /// Roots from `ca_file` (or the system bundle), HTTP/1.1, session resumption.
    pub fn new(ca_file: Option<&Path>, server_name: Option<&str>) -> Result<Self, String> {
        let roots = tls::roots(ca_file, "--scrape-ca-file").map_err(|e| e.to_string())?;
        let mut config = tls::client_config(roots, &[b"http/1.1"]).map_err(|e| e.to_string())?;
        config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMPTION_SESSIONS);
        let server_name = server_name
            .map(tls::server_name)
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// What the scraper presents to pods: TLS for `prometheus.io/scheme: https` pods (or why it could not be
/// set up, which those pods report), and a bearer token.
#[derive(Clone, Default)]
pub struct Reach {
    pub tls: Option<Result<Arc<ScrapeTls>, String>>,
    pub token: Option<Arc<TokenFile>>,
}

impl std::fmt::Debug for Reach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reach")
            .field("tls", &self.tls.as_ref().map(Result::is_ok))
            .field("token", &self.token.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_file_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("wva-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let t = TokenFile::new(path.clone());
        assert!(t.read().unwrap_err().contains("bearer token file"));
        std::fs::write(&path, "one\n").unwrap();
        assert_eq!(t.read().unwrap(), "one");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "two-longer").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(1))
            .unwrap();
        assert_eq!(t.read().unwrap(), "two-longer");
        std::fs::write(&path, "  \n").unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(2))
            .unwrap();
        assert!(t.read().unwrap_err().contains("is empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_tls_settings_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("wva-reach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ScrapeTls::new(Some(&dir.join("nope.crt")), None).unwrap_err();
        assert!(missing.contains("nope.crt"), "{missing}");
        let junk = dir.join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(ScrapeTls::new(Some(&junk), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
