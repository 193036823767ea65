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
    pub labels: BTreeMap<String, String>,
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
    /// 503: the data needed to answer is missing or stale; the message says what is missing.
    #[error("{0}")]
    Unavailable(String),
}

pub trait MetricsProvider: Send + Sync + 'static {
    /// `metric` arrives lowercased and percent-decoded.
    fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError>;

    /// The inputs and reasoning behind the values, for `/debug/variants`; `None` if not supported.
    fn explain(&self, _namespace: Option<&str>) -> Option<serde_json::Value> {
        None
    }
}
