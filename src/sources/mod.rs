//! Replica samples: vLLM exposition parsing, the pod scraper and its window cache, the Prometheus client.
//!
//! Every source answers the same narrow question through [`SampleSource`]: "what is the freshest
//! KV-cache usage and queue length of this pod for this model?". The engine never learns how.

pub mod epp;
pub mod exposition;
pub(crate) mod http1;
pub mod missing;
pub mod prometheus;
pub mod reach;
pub mod scraper;
pub mod window;

use std::time::Duration;

use serde::Serialize;

pub use missing::MissingSample;

use crate::saturation::Activity;
use crate::target::PodTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SourceKind {
    Pods,
    Prometheus,
}

/// The peak signals of one pod over the look-back window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSample {
    pub kv_cache_usage: f64,
    pub queue_length: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_requests: Option<f64>,
    /// Age of the newest sample in the window.
    #[serde(with = "duration_secs")]
    pub age: Duration,
    pub source: SourceKind,
    /// What saturation V2 reads besides the peaks: KV tokens and the request shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenFigures>,
}

/// A pod's KV-cache size and request shape (saturation V2).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenFigures {
    /// `num_gpu_blocks × block_size` of `vllm:cache_config_info`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_kv_tokens: Option<i64>,
    /// Average prompt and generated tokens per finished request, over five minutes (0 without any).
    pub avg_input_tokens: f64,
    pub avg_output_tokens: f64,
    /// Prefix-cache hits per query over five minutes.
    pub prefix_cache_hit_rate: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Fresh(PodSample),
    /// No fresh sample. `since` is how long the pod has gone without one (0 for a pod just discovered).
    Missing {
        since: Duration,
        reason: MissingSample,
    },
}

/// Model-level load, as WVA v0.4.1 reports it in `status.currentAlloc.load` (from Prometheus).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LoadFigures {
    /// Requests per minute.
    pub arrival_rate: f64,
    pub avg_input_tokens: f64,
    pub avg_output_tokens: f64,
    /// Milliseconds.
    pub ttft_average: f64,
    /// Milliseconds (inter-token latency; `time_per_output_token` on vLLM < 0.10.2).
    pub itl_average: f64,
    #[serde(with = "duration_secs")]
    pub age: Duration,
}

pub trait SampleSource: Send + Sync {
    fn lookup(&self, pod: &PodTarget, model: &str) -> Lookup;

    /// Model-level load figures, when this source has them.
    fn model_load(&self, _namespace: &str, _model: &str) -> Option<LoadFigures> {
        None
    }

    /// Whether the model served a request in the last `retention` (scale to zero). `pods`: its Ready
    /// pods now.
    fn activity(
        &self,
        _namespace: &str,
        _model: &str,
        _pods: &[&PodTarget],
        _retention: Duration,
    ) -> Activity {
        Activity::Unknown {
            reason: "this source does not track requests".into(),
        }
    }
}

/// Sources in priority order: the first fresh answer wins (`--metrics-source both` = pods, then Prometheus).
pub(crate) struct Chain(pub Vec<std::sync::Arc<dyn SampleSource>>);

impl SampleSource for Chain {
    fn lookup(&self, pod: &PodTarget, model: &str) -> Lookup {
        let mut since = Duration::MAX;
        let mut reasons = Vec::new();
        for source in &self.0 {
            match source.lookup(pod, model) {
                fresh @ Lookup::Fresh(_) => return fresh,
                Lookup::Missing { since: s, reason } => {
                    since = since.min(s);
                    reasons.push(reason);
                }
            }
        }
        let reason = match reasons.len() {
            0 => {
                return Lookup::Missing {
                    since: Duration::ZERO,
                    reason: MissingSample::NoSource,
                }
            }
            1 => reasons.remove(0),
            _ => MissingSample::All(reasons),
        };
        Lookup::Missing { since, reason }
    }

    fn model_load(&self, namespace: &str, model: &str) -> Option<LoadFigures> {
        self.0.iter().find_map(|s| s.model_load(namespace, model))
    }

    /// Any source that saw a request wins; then any that knows the model idle; else every reason.
    fn activity(
        &self,
        namespace: &str,
        model: &str,
        pods: &[&PodTarget],
        retention: Duration,
    ) -> Activity {
        let answers: Vec<Activity> = self
            .0
            .iter()
            .map(|s| s.activity(namespace, model, pods, retention))
            .collect();
        if let Some(active) = answers
            .iter()
            .find(|a| matches!(a, Activity::Active { .. }))
        {
            return active.clone();
        }
        if answers.contains(&Activity::Idle) {
            return Activity::Idle;
        }
        let reasons: Vec<std::borrow::Cow<'static, str>> = answers
            .into_iter()
            .filter_map(|a| match a {
                Activity::Unknown { reason } => Some(reason),
                _ => None,
            })
            .collect();
        Activity::Unknown {
            reason: if reasons.is_empty() {
                "no metric source".into()
            } else {
                reasons.join("; ").into()
            },
        }
    }
}

/// An error with its whole source chain ("error sending request: connection refused"): HTTP client
/// errors hide the cause in their top-level message.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

pub(crate) mod duration_secs {
    use serde::Serializer;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
    }
}
