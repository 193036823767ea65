//! Request routing: health, discovery, the external-metrics path and our own /metrics, behind
//! authentication and authorization. Hand-routed on the raw path so every miss is a metav1.Status (an
//! extractor rejection would be plain text) and percent-decoding is ours to control.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::Serialize;

use super::discovery::{self, ApisFormat, GROUP, VERSION};
use super::openapi;
use super::reply::{failure, failure_with_details, json_response, Body, Details, Empty};
use crate::auth::review::Attributes;
use crate::auth::{Auth, AuthError, PeerCertificates, UserInfo};
use crate::error::{cap, Echo, MAX_STATUS_MESSAGE_BYTES};
use crate::health::{self, Health};
use crate::provider::quantity::Milli;
use crate::provider::selector::Selector;
use crate::provider::{MetricItem, MetricsProvider, ProviderError};
use crate::telemetry::{LogLimiter, Metrics, PathLabels, RequestLabels};

/// The aggregated path of `/debug/variants`: kube-apiserver authorizes `get` on `debug` in the group, then
/// proxies to the server with the caller's identity.
pub const DEBUG_VARIANTS_API_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/debug/variants";

/// "metric unavailable" lines, at most one a minute per variant and reason.
static UNAVAILABLE_LOG: std::sync::LazyLock<LogLimiter> =
    std::sync::LazyLock::new(|| LogLimiter::new(std::time::Duration::from_secs(60)));

/// Everything a request needs.
pub struct AppState {
    pub provider: Arc<dyn MetricsProvider>,
    /// `None` disables authentication and authorization (standalone mode on loopback only).
    pub auth: Option<Arc<Auth>>,
    pub metrics: Arc<Metrics>,
    /// The loops and stores `/livez` and `/readyz` report on.
    pub health: Arc<Health>,
}

/// Route classes, used as the low-cardinality `path` label of our own metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Health(&'static str),
    OpenApi,
    ApiGroupList,
    ApiGroup,
    ApiResourceList,
    ExternalMetric,
    OwnMetrics,
    DebugVariants,
    /// `/debug/variants` through the aggregator (`kubectl get --raw`, `wva-metrics-server status`).
    DebugVariantsApi,
    NotFound,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Health(p) => p,
            Route::OpenApi => "/openapi",
            Route::ApiGroupList => "/apis",
            Route::ApiGroup => "/apis/external.metrics.k8s.io",
            Route::ApiResourceList => "/apis/external.metrics.k8s.io/v1beta1",
            Route::ExternalMetric => {
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
            }
            Route::OwnMetrics => "/metrics",
            Route::DebugVariants => "/debug/variants",
            Route::DebugVariantsApi => DEBUG_VARIANTS_API_PATH,
            Route::NotFound => "other",
        }
    }
}

/// No route has more segments than this.
const MAX_SEGMENTS: usize = 6;

/// Splits the raw path into percent-decoded segments, ignoring one trailing slash: the segments and
/// their count, or `None` when there are more than [`MAX_SEGMENTS`] (no route has them) or a segment is
/// not UTF-8 once decoded. A segment without escapes is borrowed from the path. Runs on every request:
/// it neither allocates nor validates again what is already a `str`, unless a segment is escaped.
fn segments(path: &str) -> Option<([Cow<'_, str>; MAX_SEGMENTS], usize)> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut out: [Cow<'_, str>; MAX_SEGMENTS] = Default::default();
    if trimmed.is_empty() {
        return Some((out, 0));
    }
    let mut n = 0;
    for s in trimmed.split('/') {
        let slot = out.get_mut(n)?;
        *slot = if s.contains('%') {
            percent_encoding::percent_decode_str(s).decode_utf8().ok()?
        } else {
            Cow::Borrowed(s)
        };
        n += 1;
    }
    Some((out, n))
}

/// The (namespace, metric) a metric request names, borrowed from its path unless escaped (or, for the
/// metric, not in lower case).
pub(crate) type MetricTarget<'p> = (Cow<'p, str>, Cow<'p, str>);

/// Classifies a path; for the metric route also returns its [`MetricTarget`].
pub(crate) fn classify(path: &str) -> (Route, Option<MetricTarget<'_>>) {
    match path {
        "/healthz" => return (Route::Health("/healthz"), None),
        "/livez" => return (Route::Health("/livez"), None),
        "/readyz" => return (Route::Health("/readyz"), None),
        "/metrics" => return (Route::OwnMetrics, None),
        "/debug/variants" => return (Route::DebugVariants, None),
        _ => {}
    }
    if path == "/openapi/v2" || path == "/openapi/v3" || path.starts_with("/openapi/v3/") {
        return (Route::OpenApi, None);
    }
    let Some((mut segs, n)) = segments(path) else {
        return (Route::NotFound, None);
    };
    let parts: [&str; MAX_SEGMENTS] = std::array::from_fn(|i| segs[i].as_ref());
    match &parts[..n] {
        ["apis"] => (Route::ApiGroupList, None),
        ["apis", g] if *g == GROUP => (Route::ApiGroup, None),
        ["apis", g, v] if *g == GROUP && *v == VERSION => (Route::ApiResourceList, None),
        ["apis", g, v, "debug", "variants"] if *g == GROUP && *v == VERSION => {
            (Route::DebugVariantsApi, None)
        }
        ["apis", g, v, "namespaces", ns, metric]
            if *g == GROUP && *v == VERSION && !ns.is_empty() && !metric.is_empty() =>
        {
            let mut metric = std::mem::take(&mut segs[5]);
            if metric.bytes().any(|b| b.is_ascii_uppercase()) {
                metric = Cow::Owned(metric.to_ascii_lowercase());
            }
            (
                Route::ExternalMetric,
                Some((std::mem::take(&mut segs[4]), metric)),
            )
        }
        _ => (Route::NotFound, None),
    }
}

pub async fn handle(state: Arc<AppState>, req: Request<()>) -> Response<Body> {
    let start = Instant::now();
    let (route, target) = classify(req.uri().path());
    let resp = dispatch(&state, route, target, &req).await;
    let label = route.label();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            path: label,
            code: resp.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .request_duration
        .get_or_create(&PathLabels { path: label })
        .observe(start.elapsed().as_secs_f64());
    resp
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// What a route requires of the caller.
#[derive(Debug, Clone, PartialEq)]
enum Access<'a> {
    /// No credentials: kubelet probes present none, and OpenAPI is answered before authorization so a
    /// denial can never put the aggregator's OpenAPI controller into error backoff.
    Public,
    /// Any authenticated caller (discovery, like Go's `system:discovery` binding).
    Authenticated,
    /// A SubjectAccessReview for these attributes must allow it.
    Authorized(Attributes<'a>),
}

fn required_access<'a>(route: Route, target: Option<&'a MetricTarget<'_>>) -> Access<'a> {
    match route {
        Route::Health(_) | Route::OpenApi => Access::Public,
        Route::ExternalMetric => match target {
            Some((namespace, metric)) => Access::Authorized(Attributes::Resource {
                verb: "list".into(),
                group: GROUP.into(),
                version: VERSION.into(),
                resource: Cow::Borrowed(metric),
                namespace: Cow::Borrowed(namespace),
            }),
            None => Access::Authenticated,
        },
        Route::OwnMetrics => Access::Authorized(Attributes::NonResource {
            path: "/metrics".into(),
            verb: "get".into(),
        }),
        Route::DebugVariants => Access::Authorized(Attributes::NonResource {
            path: "/debug/variants".into(),
            verb: "get".into(),
        }),
        // What kube-apiserver itself authorized before proxying: `get` on `debug` in the group.
        Route::DebugVariantsApi => Access::Authorized(Attributes::Resource {
            verb: "get".into(),
            group: GROUP.into(),
            version: VERSION.into(),
            resource: "debug".into(),
            namespace: "".into(),
        }),
        Route::ApiGroupList | Route::ApiGroup | Route::ApiResourceList | Route::NotFound => {
            Access::Authenticated
        }
    }
}

/// The 403 message kube-apiserver would give for these attributes.
fn forbidden_message(user: &UserInfo, attrs: &Attributes<'_>) -> String {
    match attrs {
        Attributes::Resource {
            verb,
            group,
            resource,
            namespace,
            ..
        } if namespace.is_empty() => format!(
            "{resource}.{group} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" at the cluster scope",
            user.username
        ),
        Attributes::Resource {
            verb,
            group,
            resource,
            namespace,
            ..
        } => format!(
            "{resource}.{group} is forbidden: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{namespace}\"",
            user.username
        ),
        Attributes::NonResource { path, verb } => format!(
            "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
            user.username
        ),
    }
}

/// Route → required access → one authentication and authorization step → the route's answer.
async fn dispatch(
    state: &AppState,
    route: Route,
    target: Option<MetricTarget<'_>>,
    req: &Request<()>,
) -> Response<Body> {
    let method = req.method().clone();
    if route != Route::NotFound && method != Method::GET && method != Method::HEAD {
        let mut resp = failure(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("the server does not allow this method on the requested resource: {method}"),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let access = required_access(route, target.as_ref());
    if access != Access::Public {
        let peer = req
            .extensions()
            .get::<PeerCertificates>()
            .cloned()
            .unwrap_or_default();
        if let Some(denied) =
            check_access(state, &access, &peer, req.headers(), req.uri().path()).await
        {
            return denied;
        }
    }
    answer(state, route, target, req)
}

/// Authenticates the caller and, when the route needs it, authorizes them. `None` lets the request on.
async fn check_access(
    state: &AppState,
    access: &Access<'_>,
    peer: &PeerCertificates,
    headers: &HeaderMap,
    path: &str,
) -> Option<Response<Body>> {
    let auth = state.auth.as_ref()?;
    let user = match auth.authenticate(peer, headers).await {
        Ok(u) => u,
        Err(AuthError::Unauthorized(why)) => {
            tracing::info!(path, reason = %why, "request not authenticated");
            return Some(failure(StatusCode::UNAUTHORIZED, "Unauthorized"));
        }
        Err(e @ AuthError::Unavailable(_)) => {
            tracing::warn!(error = %e, "authentication unavailable");
            return Some(failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Internal error occurred: {e}"),
            ));
        }
    };
    let Access::Authorized(attrs) = access else {
        return None;
    };
    match auth.authorize(&user, attrs).await {
        Ok(d) if d.allowed => None,
        Ok(d) => {
            let mut message = forbidden_message(&user, attrs);
            if !d.reason.is_empty() {
                message = format!("{message}: {}", d.reason);
            }
            Some(failure(StatusCode::FORBIDDEN, &message))
        }
        Err(e) => {
            tracing::warn!(error = %e, "authorization unavailable");
            Some(failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Internal error occurred: {e}"),
            ))
        }
    }
}

/// A static document with its ETag; `304` when the client holds it already.
fn document(body: &[u8], etag: &str, content_type: &str, req: &Request<()>) -> Response<Body> {
    let quoted = format!("\"{etag}\"");
    let held = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == quoted || t.trim() == "*"));
    let mut resp = if held {
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Body::from(body.to_vec()))
    };
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&quoted) {
        headers.insert(header::ETAG, v);
    }
    resp
}

/// `/openapi/v2`, `/openapi/v3` and the group-version's v3 document; other v3 paths are 404.
fn openapi_document(req: &Request<()>) -> Response<Body> {
    let doc = match req.uri().path().trim_end_matches('/') {
        "/openapi/v2" => openapi::v2(),
        "/openapi/v3" => openapi::v3_index(),
        openapi::V3_GROUP_PATH => openapi::v3_group(),
        _ => return not_found(),
    };
    document(&doc.body, &doc.etag, "application/json", req)
}

/// Aggregated discovery for `GET /apis`, in the version the client asked for.
fn aggregated_discovery(version: &'static str, req: &Request<()>) -> Response<Body> {
    use std::sync::OnceLock;
    static DOCS: OnceLock<[openapi::Document; 2]> = OnceLock::new();
    let docs = DOCS.get_or_init(|| {
        ["v2", "v2beta1"].map(|v| openapi::Document::of(&discovery::api_group_discovery_list(v)))
    });
    let doc = &docs[usize::from(version != "v2")];
    document(
        &doc.body,
        &doc.etag,
        &discovery::aggregated_content_type(version),
        req,
    )
}

/// The route's answer, once access is settled.
fn answer(
    state: &AppState,
    route: Route,
    target: Option<MetricTarget<'_>>,
    req: &Request<()>,
) -> Response<Body> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let json_ok = discovery::accepts_plain_json(accept);
    match route {
        Route::Health(path) => health(state, path),
        Route::OpenApi => openapi_document(req),
        Route::ApiGroupList => match discovery::negotiate_apis(accept) {
            Some(ApisFormat::Legacy) => json_response(StatusCode::OK, &discovery::api_group_list()),
            Some(ApisFormat::Aggregated(version)) => aggregated_discovery(version, req),
            None => failure(
                StatusCode::NOT_ACCEPTABLE,
                &format!("the Accept header {:?} lists neither application/json nor aggregated discovery (apidiscovery.k8s.io v2 or v2beta1 APIGroupDiscoveryList)", cap(accept.unwrap_or_default(), crate::error::MAX_ECHO_BYTES)),
            ),
        },
        Route::ApiGroup | Route::ApiResourceList if !json_ok => failure(
            StatusCode::NOT_ACCEPTABLE,
            &format!("only application/json is served here; the Accept header {:?} lists none of it", cap(accept.unwrap_or_default(), crate::error::MAX_ECHO_BYTES)),
        ),
        Route::ApiGroup => json_response(StatusCode::OK, &discovery::api_group()),
        Route::ApiResourceList => json_response(StatusCode::OK, &discovery::api_resource_list()),
        Route::ExternalMetric => {
            let Some((namespace, metric)) = target else {
                return not_found();
            };
            if !json_ok {
                return failure(StatusCode::NOT_ACCEPTABLE, "only application/json is served");
            }
            external_metric(state, &namespace, &metric, req.uri().query())
        }
        Route::OwnMetrics => {
            let mut resp = text(StatusCode::OK, state.metrics.encode());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        Route::DebugVariants | Route::DebugVariantsApi => {
            let namespace = req
                .uri()
                .query()
                .into_iter()
                .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
                .find(|(k, _)| k == "namespace")
                .map(|(_, v)| v.into_owned());
            match state.provider.explain(namespace.as_deref()) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => not_found(),
            }
        }
        Route::NotFound => not_found(),
    }
}

fn not_found() -> Response<Body> {
    failure(
        StatusCode::NOT_FOUND,
        "the server could not find the requested resource",
    )
}

fn health(state: &AppState, path: &str) -> Response<Body> {
    let (ok, body) = match path {
        // Liveness: every loop the answers depend on has made progress within its bound.
        "/livez" | "/healthz" => health::render(&state.health.liveness(), "livez"),
        // Readiness is "able to serve": the serving certificate is valid now (a registered condition),
        // the authentication configuration is loaded, and every store the answers read has completed
        // its first full sync. Later upstream failures stay out on purpose: an unready APIService
        // breaks discovery for the whole cluster, while they are reported per request.
        _ => {
            let auth_ok = state.auth.as_ref().is_none_or(|a| a.config_loaded());
            let mut checks = vec![health::Check {
                name: "authentication-config".into(),
                ok: auth_ok,
                detail: "not loaded".into(),
            }];
            checks.extend(state.health.readiness());
            health::render(&checks, "readyz")
        }
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    text(code, body)
}

#[derive(Serialize)]
struct ValueList<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: Empty,
    items: Values<'a>,
}

/// The provider's items as the answer's `items`, written straight from them (no vector of their own).
struct Values<'a> {
    metric: &'a str,
    timestamp: Seconds,
    items: &'a [MetricItem],
}

impl Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.items.iter().map(|i| Value {
            metric_name: self.metric,
            metric_labels: &i.labels,
            timestamp: &self.timestamp,
            value: Milli(i.value_milli),
        }))
    }
}

/// A time as metav1.Time serializes it: RFC 3339 in UTC with second precision. Formatted once per
/// answer (every item carries it), into a buffer of its own rather than a string.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seconds {
    text: [u8; SECONDS_CAPACITY],
    len: u8,
}

/// Room for any RFC 3339 time jiff can print (`-009999-…` included).
const SECONDS_CAPACITY: usize = 32;

thread_local! {
    /// The last second this worker formatted: answers within one second share its text.
    static LAST_SECOND: std::cell::Cell<Option<(i64, Seconds)>> = const { std::cell::Cell::new(None) };
}

impl Seconds {
    pub fn now() -> Self {
        Self::at(jiff::Timestamp::now())
    }

    fn at(time: jiff::Timestamp) -> Self {
        let second = time.as_second();
        if let Some((last, text)) = LAST_SECOND.get() {
            if last == second {
                return text;
            }
        }
        let mut text = [0; SECONDS_CAPACITY];
        let mut out = &mut text[..];
        // A write to a byte slice fails only when the slice is full: the capacity holds any time.
        let _ = std::io::Write::write_fmt(
            &mut out,
            format_args!("{}", time.strftime("%Y-%m-%dT%H:%M:%SZ")),
        );
        let len = SECONDS_CAPACITY - out.len();
        let formatted = Self {
            text,
            len: u8::try_from(len).unwrap_or(0),
        };
        LAST_SECOND.set(Some((second, formatted)));
        formatted
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Value<'a> {
    metric_name: &'a str,
    metric_labels: &'a std::collections::BTreeMap<&'static str, String>,
    timestamp: &'a Seconds,
    value: Milli,
}

/// The request's `labelSelector`, form-decoded (the aggregator re-encodes the query).
pub(crate) fn label_selector(query: Option<&str>) -> Result<Selector, String> {
    let raw = query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    Selector::parse(&raw).map_err(|e| e.to_string())
}

fn external_metric(
    state: &AppState,
    namespace: &str,
    metric: &str,
    query: Option<&str>,
) -> Response<Body> {
    let selector = match label_selector(query) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    match state.provider.external_metric(namespace, metric, &selector) {
        Ok(items) => json_response(
            StatusCode::OK,
            &ValueList {
                kind: "ExternalMetricValueList",
                api_version: discovery::GROUP_VERSION,
                metadata: Empty {},
                items: Values {
                    metric,
                    timestamp: Seconds::now(),
                    items: &items,
                },
            },
        ),
        Err(e @ ProviderError::UnknownMetric { .. }) => failure_with_details(
            StatusCode::NOT_FOUND,
            &e.to_string(),
            Some(Details {
                name: Some(metric),
                group: Some(GROUP),
                kind: Some(metric),
            }),
        ),
        Err(
            e @ (ProviderError::NoMatch { .. }
            | ProviderError::NoSeries { .. }
            | ProviderError::NotInPool { .. }),
        ) => failure(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ ProviderError::Unavailable(_)) => {
            let reason = e.to_string();
            let selector = selector.to_string();
            // The HPA asks every 15 s per variant, and a bad pod's reason repeats: one line per
            // variant and reason a minute, the same size as the 503's message.
            let key = format!("{namespace}\n{metric}\n{selector}\n{reason}");
            if let Some(held) = UNAVAILABLE_LOG.allow(&key) {
                tracing::warn!(namespace = %Echo(namespace), metric = %Echo(metric), selector = %Echo(&selector), reason = %cap(&reason, MAX_STATUS_MESSAGE_BYTES), repeats_held_back = held, "metric unavailable");
            }
            failure(StatusCode::SERVICE_UNAVAILABLE, &reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21 item 8: a variant whose reason is megabytes, asked 200 times, writes one capped line.
    #[test]
    fn unavailable_reasons_are_logged_capped_and_rate_limited() {
        struct Huge;
        impl MetricsProvider for Huge {
            fn external_metric(
                &self,
                _: &str,
                _: &str,
                _: &Selector,
            ) -> Result<Vec<crate::provider::MetricItem>, ProviderError> {
                Err(ProviderError::Unavailable(format!(
                    "pod p: scrape failing: {}",
                    "x".repeat(3 << 20)
                )))
            }
        }
        #[derive(Clone, Default)]
        struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        let state = AppState {
            provider: Arc::new(Huge),
            auth: None,
            metrics: Metrics::new(),
            health: Health::new(),
        };
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..200 {
                let r = external_metric(
                    &state,
                    "ns-unique-to-this-test",
                    "wva_desired_replicas",
                    None,
                );
                assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            log.matches("metric unavailable").count(),
            1,
            "{} bytes",
            log.len()
        );
        assert!(log.len() < 4096, "{} bytes of log", log.len());
    }

    #[test]
    fn route_table() {
        let m = |ns: &str, metric: &str| Some((ns.to_string(), metric.to_string()));
        type Case = (&'static str, Route, Option<(String, String)>);
        let cases: &[Case] = &[
            ("/healthz", Route::Health("/healthz"), None),
            ("/debug/variants", Route::DebugVariants, None),
            ("/readyz", Route::Health("/readyz"), None),
            ("/openapi/v2", Route::OpenApi, None),
            (
                "/openapi/v3/apis/external.metrics.k8s.io/v1beta1",
                Route::OpenApi,
                None,
            ),
            ("/apis", Route::ApiGroupList, None),
            ("/apis/", Route::ApiGroupList, None),
            ("/apis/external.metrics.k8s.io", Route::ApiGroup, None),
            (
                "/apis/external.metrics.k8s.io/v1beta1",
                Route::ApiResourceList,
                None,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/",
                Route::ApiResourceList,
                None,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/inferno_desired_replicas",
                Route::ExternalMetric,
                m("ns", "inferno_desired_replicas"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/INFERNO_Desired_Replicas",
                Route::ExternalMetric,
                m("ns", "inferno_desired_replicas"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/a%7Cb",
                Route::ExternalMetric,
                m("ns", "a|b"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/nonexistent-metric",
                Route::NotFound,
                None,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/foo",
                Route::NotFound,
                None,
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/foo/group/metric",
                Route::NotFound,
                None,
            ),
            ("/apis/custom.metrics.k8s.io/v1beta1", Route::NotFound, None),
            (
                "/apis/external.metrics.k8s.io/v1beta2",
                Route::NotFound,
                None,
            ),
            ("/", Route::NotFound, None),
            // One segment more than any route has.
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/metric/extra",
                Route::NotFound,
                None,
            ),
            // Escapes are decoded wherever they are, and only there.
            (
                "/apis/external%2Emetrics.k8s.io/v1beta1/namespaces/n%73/m",
                Route::ExternalMetric,
                m("ns", "m"),
            ),
            (
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/ns/%FF",
                Route::NotFound,
                None,
            ),
        ];
        for (path, route, target) in cases {
            let (got, named) = classify(path);
            let named = named.map(|(ns, metric)| (ns.into_owned(), metric.into_owned()));
            assert_eq!((got, named), (*route, target.clone()), "{path}");
        }
    }

    #[test]
    fn selectors_from_queries() {
        assert_eq!(label_selector(None).unwrap(), Selector::everything());
        assert_eq!(
            label_selector(Some("labelSelector=variant_name%3Dv"))
                .unwrap()
                .to_string(),
            "variant_name=v"
        );
        assert_eq!(
            label_selector(Some(
                "foo=bar&labelSelector=exported_namespace%3Dns%2Cvariant_name+in+%28a%2Cb%29"
            ))
            .unwrap()
            .to_string(),
            "exported_namespace=ns,variant_name in (a,b)"
        );
        assert!(label_selector(Some("labelSelector=a%3D%3D%3Db")).is_err());
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let ts = Seconds::now().to_string();
        assert_eq!(ts.len(), 20, "{ts}");
        assert_eq!(serde_json::to_string(&Seconds::now()).unwrap().len(), 22);
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T');
    }

    #[test]
    fn a_second_is_formatted_once_and_each_new_second_again() {
        let at = |s: i64| jiff::Timestamp::from_second(s).unwrap();
        assert_eq!(
            Seconds::at(at(1_780_000_000)).to_string(),
            "2026-05-28T20:26:40Z"
        );
        // The same second from the worker's last answer, then the next one: never a stale text.
        assert_eq!(
            Seconds::at(at(1_780_000_000)).to_string(),
            "2026-05-28T20:26:40Z"
        );
        assert_eq!(
            Seconds::at(at(1_780_000_001)).to_string(),
            "2026-05-28T20:26:41Z"
        );
        assert_eq!(Seconds::at(at(0)).to_string(), "1970-01-01T00:00:00Z");
        for extreme in [jiff::Timestamp::MIN, jiff::Timestamp::MAX] {
            assert_eq!(
                Seconds::at(extreme).to_string(),
                extreme.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
            );
        }
    }
}
