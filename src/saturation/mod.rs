//! Saturation ("capacity") analysis with WVA parity: pure functions, no I/O.
//!
//! * [`config`]: thresholds, their defaults, ConfigMap parsing and per-model overrides.
//! * [`analyze`](mod@analyze): classify replicas and compute spare capacity, the scale-up signal and
//!   scale-down safety (WVA v0.4.1 `AnalyzeModelCapacity`).
//! * [`targets`]: turn an analysis plus the Deployments' state into one target per variant (WVA v0.5
//!   semantics: stateless, transition blocking, cheapest up / most expensive down).
//! * [`role`]: prefill/decode roles; each engine decides each role of a model on its own terms.
//! * [`split`]: an InferencePool's size, from an endpoint-picker signal, split across the model's
//!   variants cost-aware (the variant-level signal trigger).
//! * [`zero`]: scale to zero (idle past the retention period) and from zero (queued demand), after the
//!   targets.

/// Serializes types whose JSON form is their [`std::fmt::Display`] text: the explanations that are
/// written out only when read (`/debug/variants`, status, events), never on the request path.
macro_rules! serialize_as_text {
    ($($t:ty),+ $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )+};
}
pub(crate) use serialize_as_text;

pub mod analyze;
pub mod config;
pub mod limiter;
pub mod role;
pub mod split;
pub mod targets;
pub mod v2;
pub mod zero;

/// A ConfigMap's `data` from key–value pairs, for the ConfigMap parsers' tests.
#[cfg(test)]
pub(crate) fn configmap_data(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub use analyze::{analyze, Analysis, ReplicaMetrics};
pub use config::SaturationConfig;
pub use role::Role;
pub use targets::{compute_targets, Message, TargetReason, VariantState, VariantTarget};
pub use zero::{enforce, Activity, Demand, ZeroConfig, ZeroPolicy};
