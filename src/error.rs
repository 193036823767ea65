//! The crate's typed errors: every place where a caller decides something from an error matches on a
//! variant here, never on the text of a message.
//!
//! * [`Error`]: what ends a command (`serve`, `analyze`, `scrape`) with a message for the operator.
//! * [`Exclusion`]: why a variant (a VariantAutoscaling or an annotated autoscaler) cannot be decided (status conditions and events match on it).
//! * [`MissingSample`]: why a pod has no usable sample (status conditions and `/debug/variants` use it).
//! * [`api_status_code`]: the HTTP status of a Kubernetes API error, for hints and retries.

use std::fmt;

use serde::{Serialize, Serializer};
use thiserror::Error;

/// What ends a command.
#[derive(Debug, Error)]
pub enum Error {
    /// A flag, environment variable or input file is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// The `analyze` input is malformed or inconsistent; the message names the JSON path or rule.
    #[error("invalid input{}: {message}", path.as_deref().map(|p| format!(" at {p}")).unwrap_or_default())]
    Input {
        path: Option<String>,
        message: String,
    },
    /// Reading or writing a local file or stream.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Building the Kubernetes client.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Certificates and keys for serving or for clients.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Fetching a page for `scrape`.
    #[error("{0}")]
    Fetch(String),
    /// `scrape` found no model with both signals; the extraction is in the message.
    #[error("{extraction}\nno model with both KV-cache usage and queue length found in {source_name} (expected vllm:kv_cache_usage_perc and vllm:num_requests_waiting with a model_name label)")]
    NoModel {
        extraction: String,
        source_name: String,
    },
    /// A supervised task kept failing and could not be restarted.
    #[error("task {task} failed {failures} times in a row (last: {last}); giving up so that the pod restarts")]
    TaskFailed {
        task: &'static str,
        failures: u32,
        last: String,
    },
    /// Encoding our own output.
    #[error("encoding the output: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why a VariantAutoscaling (or another variant source) is excluded from decisions.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Exclusion {
    #[error("spec.modelID is empty")]
    EmptyModel,
    /// A model ID is a name vLLM serves (`--served-model-name`), not a document: it is copied into
    /// every decision, gauge and answer, so it is bounded.
    #[error("the model ID is {bytes} bytes long; at most {MAX_MODEL_ID_BYTES} are accepted")]
    ModelIdTooLong { bytes: usize },
    #[error("label {label} is missing and the pod template selects no GPU product (nodeSelector or required nodeAffinity on nvidia.com/gpu.product, amd.com/gpu.product-name or cloud.google.com/gke-accelerator)")]
    MissingAccelerator { label: &'static str },
    #[error("label {label} is empty")]
    EmptyAccelerator { label: &'static str },
    #[error("spec.variantCost {value:?}: {why}")]
    BadCost { value: String, why: String },
    #[error("spec.scaleTargetRef.kind {kind:?} is not supported (only Deployment)")]
    UnsupportedTargetKind { kind: String },
    #[error("spec.scaleTargetRef.name is empty")]
    EmptyTargetName,
    #[error("the object has no name")]
    NoName,
    #[error("target Deployment {namespace}/{name} not found")]
    TargetNotFound { namespace: String, name: String },
    #[error("Deployment {deployment} has an unusable selector: {why}")]
    BadSelector { deployment: String, why: String },
    #[error("Deployment {deployment} has no pod selector")]
    NoSelector { deployment: String },
    #[error("Deployment {deployment} has several autoscalers ({autoscalers}); keep one, they would fight over its replicas")]
    SeveralAutoscalers {
        deployment: String,
        autoscalers: String,
    },
    #[error("annotation {annotation} is missing (a managed object names its model there)")]
    MissingAnnotation { annotation: &'static str },
    #[error("annotation {annotation} is empty")]
    EmptyAnnotation { annotation: &'static str },
    #[error("annotation {annotation} {value:?}: {why}")]
    BadAnnotation {
        annotation: &'static str,
        value: String,
        why: String,
    },
    #[error("namespace {namespace} is annotated {annotation}=\"true\"; its variants are left to another controller")]
    NamespaceExcluded {
        namespace: String,
        annotation: &'static str,
    },
}

impl Exclusion {
    /// Whether the variant's scale target could be resolved (the `TargetResolved` condition).
    pub(crate) fn target_resolved(&self) -> bool {
        !matches!(
            self,
            Exclusion::UnsupportedTargetKind { .. }
                | Exclusion::EmptyTargetName
                | Exclusion::NoName
                | Exclusion::TargetNotFound { .. }
        )
    }

    /// Whether the object is someone else's (an excluded namespace): it is reported where asked
    /// about, but gets no status or Events from us.
    pub(crate) fn not_ours(&self) -> bool {
        matches!(self, Exclusion::NamespaceExcluded { .. })
    }
}

impl Serialize for Exclusion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a pod has no usable sample right now.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MissingSample {
    #[error("not scraped yet")]
    NotScrapedYet,
    #[error("scrape failing: {0}")]
    ScrapeFailing(String),
    #[error("the page has no vLLM queue or KV-cache metrics")]
    NoVllmSeries,
    #[error("the page has no series with model_name={model:?} (it serves {served})")]
    OtherModels { model: String, served: String },
    #[error("the page was cut at {limit} bytes (--max-page-bytes) before any series for model_name={model:?}")]
    PageCut { model: String, limit: usize },
    #[error("the page is empty")]
    EmptyPage,
    #[error("no sample in the last {lookback_secs}s")]
    NoSampleInWindow { lookback_secs: u64 },
    #[error("the page has no vllm:kv_cache_usage_perc (or vllm:gpu_cache_usage_perc) for model_name={model:?}")]
    NoKvCache { model: String },
    #[error("the page has no vllm:num_requests_waiting for model_name={model:?}")]
    NoQueue { model: String },
    #[error("Prometheus not queried yet")]
    PrometheusNotQueried,
    #[error("Prometheus not answered yet")]
    PrometheusNotAnswered,
    #[error("Prometheus error: {0}")]
    Prometheus(String),
    #[error("Prometheus has only one of KV-cache usage and queue length for this pod")]
    PrometheusPartial,
    #[error("Prometheus has no vLLM series for pod {pod} with model_name={model:?} in namespace {namespace}")]
    PrometheusNoSeries {
        pod: String,
        model: String,
        namespace: String,
    },
    #[error("no metric source configured")]
    NoSource,
    /// A sample that cannot be a KV-cache fraction or a queue length (NaN, ±Inf, negative).
    #[error("unusable sample: {signal} is {value}")]
    Unusable { signal: &'static str, value: f64 },
    /// Every source of a chain was asked; each one's cause, in priority order.
    #[error("{}", join(.0))]
    All(Vec<MissingSample>),
}

fn join(causes: &[MissingSample]) -> String {
    causes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl MissingSample {
    /// Whether Prometheus failing is (part of) the cause: the `PrometheusError` condition reason.
    pub(crate) fn is_prometheus_error(&self) -> bool {
        match self {
            MissingSample::Prometheus(_) => true,
            MissingSample::All(causes) => causes.iter().any(Self::is_prometheus_error),
            _ => false,
        }
    }
}

impl Serialize for MissingSample {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The HTTP status code of a Kubernetes API error, however it arrived (a list, a watch, a request).
pub(crate) fn api_status_code(e: &kube::runtime::watcher::Error) -> Option<u16> {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(k) | W::WatchStartFailed(k) | W::WatchFailed(k) => client_code(k),
        W::WatchError(status) => Some(status.code),
        W::NoResourceVersion => None,
    }
}

/// The HTTP status code of a kube client error, when the API server answered with one.
pub(crate) fn client_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// How many names a message or log line lists before it says "and N more".
pub(crate) const MAX_NAMES_LISTED: usize = 5;

/// The longest model ID a variant may name (Hugging Face IDs are at most 96 + 1 + 96 bytes).
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// How much of a caller's input a message or log line repeats.
pub const MAX_ECHO_BYTES: usize = 256;

/// The longest `message` of a metav1.Status this server sends.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// `s` cut at `max` bytes (on a character boundary) with its full length named.
pub fn cap(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes)", &s[..end], s.len()))
}

/// Displays caller input, cut at [`MAX_ECHO_BYTES`] with its full length named: error bodies and log
/// lines stay small however large the input.
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cap(self.0, MAX_ECHO_BYTES))
    }
}

/// Displays a list of names, at most `max` of them, and how many more there are: messages and log
/// lines stay small whatever the input.
pub(crate) struct Capped<'a, T>(pub &'a [T], pub usize);

impl<T: fmt::Display> fmt::Display for Capped<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Capped(items, max) = *self;
        for (i, item) in items.iter().take(max).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        if items.len() > max {
            write!(f, " and {} more", items.len() - max)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusion_target_resolution_is_by_variant() {
        let cases = [
            (Exclusion::EmptyModel, true),
            (
                Exclusion::MissingAccelerator {
                    label: "inference.optimization/acceleratorName",
                },
                true,
            ),
            (
                Exclusion::TargetNotFound {
                    namespace: "ns".into(),
                    name: "d".into(),
                },
                false,
            ),
            (Exclusion::EmptyTargetName, false),
            (
                Exclusion::UnsupportedTargetKind {
                    kind: "StatefulSet".into(),
                },
                false,
            ),
            (
                Exclusion::NoSelector {
                    deployment: "d".into(),
                },
                true,
            ),
        ];
        for (e, resolved) in cases {
            assert_eq!(e.target_resolved(), resolved, "{e}");
        }
    }

    #[test]
    fn prometheus_errors_are_found_inside_chains() {
        assert!(MissingSample::Prometheus("timeout".into()).is_prometheus_error());
        assert!(MissingSample::All(vec![
            MissingSample::ScrapeFailing("refused".into()),
            MissingSample::Prometheus("timeout".into()),
        ])
        .is_prometheus_error());
        // The words alone do not make it one.
        assert!(!MissingSample::ScrapeFailing("Prometheus error: x".into()).is_prometheus_error());
        assert_eq!(
            MissingSample::All(vec![
                MissingSample::NotScrapedYet,
                MissingSample::PrometheusNotQueried
            ])
            .to_string(),
            "not scraped yet; Prometheus not queried yet"
        );
    }

    #[test]
    fn echoes_are_cut_with_their_length() {
        assert_eq!(Echo("short").to_string(), "short");
        let long = "é".repeat(400);
        let shown = Echo(&long).to_string();
        assert!(shown.len() < MAX_ECHO_BYTES + 20, "{}", shown.len());
        assert!(shown.ends_with("… (800 bytes)"), "{shown}");
    }

    #[test]
    fn capped_lists_say_how_many_were_left_out() {
        let names = ["a", "b", "c", "d"];
        assert_eq!(Capped(&names, 2).to_string(), "a, b and 2 more");
        assert_eq!(Capped(&names, 4).to_string(), "a, b, c, d");
        assert_eq!(Capped::<&str>(&[], 3).to_string(), "");
    }
}
