//! Why a pod has no usable sample right now. Status conditions and `/debug/variants` match on the
//! variant, never on its text.

use serde::{Serialize, Serializer};
use thiserror::Error;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
