//! `wva-metrics-server scrape`: one metrics page (a file, stdin, or a URL fetched exactly as the server
//! fetches pods) in, the signals the server would extract from it out, as JSON.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::read_input;
use crate::error::Error;
use crate::target::{PodTarget, Scheme};

/// The largest page `scrape` reads.
pub(crate) const SCRAPE_COMMAND_MAX_BYTES: usize = 64 << 20;

/// The `scrape` command's TLS and token options (the server's `--scrape-*` flags, for one page).
#[derive(Debug, Clone, Default)]
pub struct ScrapeReach {
    pub ca_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
}

/// An `http(s)://<IP>:<port>/<path>` URL as the scraper's target, so the command fetches exactly as the
/// server does; `None` for host names.
fn ip_target(url: &str) -> Option<PodTarget> {
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
        per_port: false,
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
        let tls = (pod.scheme == Scheme::Https)
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

pub async fn run(source: &str, timeout: Duration, reach: &ScrapeReach) -> Result<String, Error> {
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
        .any(crate::sources::exposition::ModelSignals::is_complete)
    {
        return Err(Error::NoModel {
            extraction: json,
            source_name: source.to_string(),
        });
    }
    Ok(json)
}
