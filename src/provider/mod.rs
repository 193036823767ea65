//! The boundary between the HTTP surface and whatever computes metric values: one narrow trait, like
//! custom-metrics-apiserver's `GetExternalMetric(namespace, selector, info)`.

use std::collections::BTreeMap;

use thiserror::Error;

pub mod metrics;
pub mod quantity;
pub mod selector;

use selector::Selector;

/// One series of an ExternalMetricValueList.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricItem {
    /// Label names are this server's own (static); values come from the cluster.
    pub labels: BTreeMap<&'static str, String>,
    /// The value in milli-units (Quantity semantics).
    pub value_milli: i64,
}

#[derive(Debug, Error, PartialEq)]
pub enum ProviderError {
    /// 404: this server does not serve the metric.
    #[error("the server could not find the metric {metric} for namespace {namespace}")]
    UnknownMetric { metric: String, namespace: String },
    /// 404: nothing matches the selector.
    #[error(
        "no variant in namespace {namespace:?} matches selector {selector:?} for metric {metric}"
    )]
    NoMatch {
        metric: String,
        namespace: String,
        selector: String,
    },
    /// 404: no endpoint-picker series matches the selector.
    #[error(
        "no InferencePool read in namespace {namespace:?} has a series of {metric} matching selector {selector:?}"
    )]
    NoSeries {
        metric: String,
        namespace: String,
        selector: String,
    },
    /// 404: the variant's pods are in no InferencePool read here (or not in the one named).
    #[error("variant {variant} in namespace {namespace:?} has no pods in {}: a variant-level signal trigger needs the InferencePool that selects its pods", pool.as_deref().map_or("any InferencePool read here".to_string(), |p| format!("InferencePool {p}")))]
    NotInPool {
        namespace: String,
        variant: String,
        pool: Option<String>,
    },
    /// 503: the data needed to answer is missing or stale; the message says what is missing.
    #[error("{0}")]
    Unavailable(String),
}

/// A variant-level signal trigger's question: the variant's share of its InferencePool's size, as an
/// endpoint-picker signal over a threshold sets that size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareQuery<'a> {
    pub namespace: &'a str,
    pub variant: &'a str,
    pub signal: metrics::SignalKind,
    /// The metric the signal is served under (its value is read as that metric's series).
    pub metric: &'a str,
    /// The InferencePool named by the trigger; `None`: the one that selects the variant's pods.
    pub pool: Option<&'a str>,
    pub threshold: f64,
    pub activation: f64,
}

/// The answer: the variant's target and how the pool's size was split.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub target: i64,
    pub pool: String,
    /// The signal's value read from the pool's picker.
    pub value: f64,
    /// The pool's demand in replica capacity, and every variant's target.
    pub demand: f64,
    pub targets: Vec<(String, i64)>,
}

pub trait MetricsProvider: Send + Sync + 'static {
    /// `metric` arrives lowercased and percent-decoded.
    fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError>;

    /// A variant's share of its InferencePool's size (see [`ShareQuery`]).
    fn signal_share(&self, query: &ShareQuery<'_>) -> Result<Share, ProviderError> {
        Err(ProviderError::UnknownMetric {
            metric: query.metric.to_string(),
            namespace: query.namespace.to_string(),
        })
    }

    /// The inputs and reasoning behind the values, for `/debug/variants`; `None` if not supported.
    fn explain(&self, _namespace: Option<&str>) -> Option<serde_json::Value> {
        None
    }
}
