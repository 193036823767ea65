//! Authentication and authorization, mirroring Go's delegating authenticator and authorizer
//! (k8s.io/apiserver `pkg/authentication/authenticatorfactory`, `pkg/authorization/authorizerfactory`): request-header certificates, x509 client certificates, bearer tokens
//! via TokenReview; SubjectAccessReview for everything but health, discovery and `system:masters`.

pub mod cache;
pub mod config;
pub mod review;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::HeaderMap;
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use thiserror::Error;

use self::cache::TtlCache;
use self::config::AuthConfig;
use self::review::{Attributes, Reviewer, TokenOutcome};
use crate::telemetry::{AuthCache, Metrics};

pub(crate) const AUTHENTICATED_GROUP: &str = "system:authenticated";
pub(crate) const MASTERS_GROUP: &str = "system:masters";
pub(crate) const ANONYMOUS_USER: &str = "system:anonymous";
pub(crate) const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Hash)]
pub struct UserInfo {
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        Self {
            username: ANONYMOUS_USER.into(),
            groups: vec![UNAUTHENTICATED_GROUP.into()],
            ..Default::default()
        }
    }

    /// Go's `AuthenticatedGroupAdder`: every authenticated user is in `system:authenticated`, so the
    /// aggregator's group-less identities pass the default discovery RBAC.
    fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

#[derive(Debug, Error, PartialEq)]
pub(crate) enum AuthError {
    /// 401: credentials were presented and none was accepted.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// 500: a review could not be obtained from the cluster.
    #[error("authentication or authorization could not be completed: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Shared with the cached decision: answering from the cache copies no text.
    pub reason: Arc<str>,
}

/// How long a connection's verified client certificate is trusted before its chain is checked again.
/// Within it, a keep-alive connection pays for the signature checks and X.509 parsing once rather than
/// on every request (they were half of the request path's CPU under load); past it, an expired or
/// revoked-by-rotation certificate stops working within this bound even on a connection that stays open.
const CHAIN_VERDICT_TTL: Duration = Duration::from_secs(10);

/// The peer certificate chain of a TLS connection, as a request extension shared by the requests of
/// that connection, with the outcome of verifying it against the current trust configuration.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates {
    chain: Option<Arc<Vec<CertificateDer<'static>>>>,
    verdict: Arc<Mutex<Option<ChainVerdict>>>,
}

impl PeerCertificates {
    pub fn new(chain: Option<Vec<CertificateDer<'static>>>) -> Self {
        Self {
            chain: chain.map(Arc::new),
            verdict: Arc::default(),
        }
    }
}

/// Outcome of checking a chain against one trust configuration (`config`, compared by identity, so a
/// CA rotation forces a fresh check).
#[derive(Debug, Clone)]
struct ChainVerdict {
    config: Arc<AuthConfig>,
    checked: Instant,
    /// CN of a valid request-header (front-proxy) certificate, or why it is not one.
    request_header: Option<Result<String, String>>,
    /// CN and organizations of a valid client-ca certificate, or why it is not one.
    client_ca: Option<Result<(String, Vec<String>), String>>,
}

impl ChainVerdict {
    fn check(config: &Arc<AuthConfig>, chain: &[CertificateDer<'static>]) -> Self {
        let subject = || subject_of(&chain[0]);
        Self {
            config: config.clone(),
            checked: Instant::now(),
            request_header: config.request_header.as_ref().map(|rh| {
                rh.ca
                    .verify(chain)
                    .map_err(|e| format!("not a request-header certificate: {e}"))
                    .and_then(|()| subject().map(|(cn, _)| cn))
            }),
            client_ca: config.client_ca.as_ref().map(|ca| {
                ca.verify(chain)
                    .map_err(|e| format!("not a client-ca certificate: {e}"))
                    .and_then(|()| subject())
            }),
        }
    }
}

thread_local! {
    /// The authorization cache key of the request this worker is checking, built in place.
    static DECISION_KEY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A worker keeps its key buffer up to this size; a larger one (a user with very many groups) is freed
/// after use.
const MAX_KEPT_KEY_BYTES: usize = 16 * 1024;

pub struct Auth {
    config: ArcSwapOption<AuthConfig>,
    reviewer: Option<Arc<dyn Reviewer>>,
    tokens: TtlCache<String, TokenOutcome>,
    decisions: TtlCache<Vec<u8>, Decision>,
    metrics: Arc<Metrics>,
}

/// Subject (CN) and organizations (O) of a certificate.
fn subject_of(cert: &CertificateDer<'_>) -> Result<(String, Vec<String>), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    let subject = parsed.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string();
    let orgs = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok((cn, orgs))
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
}

impl Auth {
    pub fn new(
        reviewer: Option<Arc<dyn Reviewer>>,
        cache_ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config: ArcSwapOption::empty(),
            reviewer,
            tokens: TtlCache::new(cache_ttl, 10_000),
            decisions: TtlCache::new(cache_ttl, 10_000),
            metrics,
        }
    }

    /// Replaces the trust configuration (CAs, allowed names, header names). Cached decisions made under
    /// the old configuration are dropped.
    pub fn set_config(&self, config: AuthConfig) {
        self.config.store(Some(Arc::new(config)));
        self.tokens.clear();
        self.decisions.clear();
    }

    pub fn config_loaded(&self) -> bool {
        self.config.load().is_some()
    }

    /// The authenticated user, anonymous when no credentials were presented, or 401.
    pub(crate) async fn authenticate(
        &self,
        peer: &PeerCertificates,
        headers: &HeaderMap,
    ) -> Result<UserInfo, AuthError> {
        let config = self.config.load_full().ok_or_else(|| {
            AuthError::Unavailable(
                "the authentication configuration has not been loaded yet".into(),
            )
        })?;
        let mut failures = Vec::new();
        if let Some(chain) = peer.chain.as_deref().filter(|c| !c.is_empty()) {
            let verdict = {
                let mut memo = peer
                    .verdict
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match memo.as_ref() {
                    Some(v)
                        if Arc::ptr_eq(&v.config, &config)
                            && v.checked.elapsed() < CHAIN_VERDICT_TTL =>
                    {
                        v.clone()
                    }
                    _ => memo.insert(ChainVerdict::check(&config, chain)).clone(),
                }
            };
            // 1. Front-proxy: the chain leads to the request-header CA and the CN is allowed.
            if let (Some(rh), Some(outcome)) = (&config.request_header, verdict.request_header) {
                match outcome {
                    Ok(cn) => {
                        if !rh.allowed_names.is_empty() && !rh.allowed_names.contains(&cn) {
                            failures.push(format!("request-header client certificate CN {cn:?} is not in requestheader-allowed-names {:?}", rh.allowed_names));
                        } else if let Some(user) = self.user_from_headers(rh, headers) {
                            return Ok(user.with_authenticated_group());
                        }
                    }
                    Err(e) => failures.push(e),
                }
            }
            // 2. x509 client certificate: user = CN, groups = O.
            if let Some(outcome) = verdict.client_ca {
                match outcome {
                    Ok((cn, orgs)) => {
                        if !cn.is_empty() {
                            return Ok(UserInfo {
                                username: cn,
                                groups: orgs,
                                ..Default::default()
                            }
                            .with_authenticated_group());
                        }
                        failures.push("client certificate has an empty CN".into());
                    }
                    Err(e) => failures.push(e),
                }
            }
            if config.request_header.is_none() && config.client_ca.is_none() {
                failures.push(
                    "a client certificate was presented but no client CA is configured".into(),
                );
            }
        }
        // 3. Bearer token via TokenReview.
        if let Some(token) = bearer_token(headers) {
            return match self.review_token(token).await? {
                TokenOutcome::Authenticated(user) => Ok(user.with_authenticated_group()),
                TokenOutcome::Rejected { reason } => Err(AuthError::Unauthorized(format!(
                    "TokenReview rejected the bearer token: {reason}"
                ))),
            };
        }
        if !failures.is_empty() {
            return Err(AuthError::Unauthorized(failures.join("; ")));
        }
        Ok(UserInfo::anonymous())
    }

    fn user_from_headers(
        &self,
        rh: &config::RequestHeaderConfig,
        headers: &HeaderMap,
    ) -> Option<UserInfo> {
        let first_non_empty = |names: &[String]| {
            names
                .iter()
                .flat_map(|n| header_values(headers, n))
                .find(|v| !v.is_empty())
                .map(str::to_string)
        };
        let username = first_non_empty(&rh.username_headers)?;
        let uid = first_non_empty(&rh.uid_headers).unwrap_or_default();
        // One header per group, repeated; values are taken as they are.
        let groups: Vec<String> = rh
            .group_headers
            .iter()
            .flat_map(|n| header_values(headers, n))
            .map(str::to_string)
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            for prefix in &rh.extra_headers_prefix {
                let lname = name.as_str();
                let lprefix = prefix.to_ascii_lowercase();
                if let Some(suffix) = lname.strip_prefix(lprefix.as_str()) {
                    if suffix.is_empty() {
                        continue;
                    }
                    // The key is percent-escaped by the sender (client-go `headerKeyEscape`).
                    let key = percent_encoding::percent_decode_str(suffix)
                        .decode_utf8_lossy()
                        .to_ascii_lowercase();
                    if let Ok(v) = value.to_str() {
                        extra.entry(key).or_default().push(v.to_string());
                    }
                }
            }
        }
        Some(UserInfo {
            username,
            uid,
            groups,
            extra,
        })
    }

    /// The token's review outcome (cached either way), or `Err` when the review could not be obtained.
    async fn review_token(&self, token: &str) -> Result<TokenOutcome, AuthError> {
        if let Some(hit) = self.tokens.get(token) {
            self.metrics.cache_lookup(AuthCache::Token, true);
            return Ok(hit);
        }
        self.metrics.cache_lookup(AuthCache::Token, false);
        let reviewer = self.reviewer.as_ref().ok_or_else(|| {
            AuthError::Unauthorized(
                "bearer tokens are not accepted: no Kubernetes API to review them".into(),
            )
        })?;
        let result = reviewer
            .review_token(token)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        self.tokens.insert(token.to_string(), result.clone());
        Ok(result)
    }

    /// SubjectAccessReview, cached. `system:masters` is always allowed.
    pub(crate) async fn authorize(
        &self,
        user: &UserInfo,
        attrs: &Attributes<'_>,
    ) -> Result<Decision, AuthError> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Decision {
                allowed: true,
                reason: Arc::from("system:masters"),
            });
        }
        // The key is written into this worker's buffer, so a hit allocates nothing; a miss takes a copy
        // to keep.
        let looked_up = DECISION_KEY.with_borrow_mut(|key| {
            review::write_cache_key(user, attrs, key);
            let hit = self
                .decisions
                .get(key.as_slice())
                .ok_or_else(|| key.clone());
            if key.capacity() > MAX_KEPT_KEY_BYTES {
                *key = Vec::new();
            }
            hit
        });
        let key = match looked_up {
            Ok(hit) => {
                self.metrics.cache_lookup(AuthCache::Authorization, true);
                return Ok(hit);
            }
            Err(key) => key,
        };
        self.metrics.cache_lookup(AuthCache::Authorization, false);
        let reviewer = self.reviewer.as_ref().ok_or_else(|| {
            AuthError::Unavailable("no Kubernetes API to authorize requests".into())
        })?;
        let decision = reviewer
            .review_access(user, attrs)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        self.decisions.insert(key, decision.clone());
        Ok(decision)
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}
