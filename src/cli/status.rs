//! `wva-metrics-server status`: a server's `/debug/variants`, fetched through the API server (the
//! aggregated API's proxy, with the kubeconfig's credentials) or from a URL, printed as tables or JSON.

use crate::config::StatusCommandArgs;
use crate::error::Error;
use crate::server::routes::DEBUG_VARIANTS_API_PATH;

/// `status`: fetches `/debug/variants` and renders it (or prints it as JSON).
pub async fn run(args: &StatusCommandArgs) -> Result<String, Error> {
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
            let builder = reqwest::Client::builder()
                .timeout(args.timeout)
                .redirect(reqwest::redirect::Policy::none());
            let builder = crate::tls::trust_ca_file(builder, args.ca_file.as_deref())
                .map_err(|e| Error::Config(format!("--ca-file: {e}")))?;
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
            let client = crate::cluster::client::connect(args.kubeconfig.as_deref()).await?;
            let path = format!("{DEBUG_VARIANTS_API_PATH}{query}");
            let req = http::Request::get(&path)
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
    Ok(super::tables::render(&doc))
}
