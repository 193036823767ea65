//! One model's decision from its inputs: the saturation analysis over every replica of every variant,
//! then one target per variant. Pure and infallible: the inputs' invariants are established where the
//! inputs are made (the engine's snapshot join, or `analyze`'s validation in [`super::input`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::saturation::{
    analyze, compute_targets, enforce, Activity, Analysis, Demand, ReplicaMetrics,
    SaturationConfig, VariantState, VariantTarget, ZeroPolicy,
};

/// One replica's input to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInput {
    pub pod: String,
    pub kv_cache_usage: f64,
    pub queue_length: f64,
}

/// One variant's input to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantInput {
    pub name: String,
    #[serde(
        default = "default_cost",
        deserialize_with = "super::input::cost_number_or_string"
    )]
    pub cost: f64,
    #[serde(default)]
    pub accelerator: String,
    pub spec_replicas: i64,
    pub ready_replicas: i64,
    /// Ready pods with fresh samples.
    #[serde(default)]
    pub replicas: Vec<ReplicaInput>,
    /// The autoscaler's bounds; targets never leave them. Unset: 0 and unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
}

fn default_cost() -> f64 {
    crate::cluster::crd::DEFAULT_VARIANT_COST
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDecision {
    pub config: SaturationConfig,
    pub analysis: Analysis,
    pub in_transition: bool,
    pub targets: BTreeMap<String, i64>,
    pub reasons: Vec<VariantTarget>,
    /// Scale to and from zero: the policy in force, the model's activity and its queued demand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zero: Option<ZeroInputs>,
}

/// What scale to zero and from zero decide on, for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZeroInputs {
    pub policy: ZeroPolicy,
    pub activity: Activity,
    pub demand: Demand,
}

impl ModelDecision {
    /// The decision for a model with no variants to decide (nothing to analyze).
    pub fn empty(config: SaturationConfig) -> Self {
        decide(&config, &[])
    }
}

/// WVA reads the queue as a float and truncates it to an integer. Go's conversion of a float beyond
/// the int64 range wraps around; Rust's saturates, so a huge queue stays a huge queue.
fn queue_as_integer(q: f64) -> i64 {
    // Saturating by definition of `as` for floats; NaN becomes 0 (the engine never passes NaN).
    #[allow(clippy::cast_possible_truncation)] // Saturation is the point.
    let q = q.trunc() as i64;
    q
}

/// Decides one model.
///
/// Expects: variant names unique within the model, replica counts ≥ 0, samples finite and ≥ 0. The
/// engine's inputs satisfy this by construction; `analyze` checks it in [`super::input`].
pub fn decide(config: &SaturationConfig, variants: &[VariantInput]) -> ModelDecision {
    decide_with_zero(config, variants, None)
}

/// [`decide`], then scale to zero and from zero ([`crate::saturation::enforce`]) when `zero` is given.
pub fn decide_with_zero(
    config: &SaturationConfig,
    variants: &[VariantInput],
    zero: Option<ZeroInputs>,
) -> ModelDecision {
    let replicas: Vec<ReplicaMetrics> = variants
        .iter()
        .flat_map(|v| {
            v.replicas.iter().map(|r| ReplicaMetrics {
                pod: r.pod.clone(),
                variant: v.name.clone(),
                kv_cache_usage: r.kv_cache_usage,
                queue_length: queue_as_integer(r.queue_length),
            })
        })
        .collect();
    let analysis = analyze(&replicas, config);
    let states: Vec<VariantState> = variants
        .iter()
        .map(|v| VariantState {
            name: v.name.clone(),
            cost: v.cost,
            spec_replicas: v.spec_replicas,
            ready_replicas: v.ready_replicas,
            seen_replicas: i64::try_from(v.replicas.len()).unwrap_or(i64::MAX),
            min_replicas: v.min_replicas.unwrap_or(0),
            max_replicas: v.max_replicas,
        })
        .collect();
    let in_transition = states.iter().any(VariantState::in_transition);
    let mut reasons = compute_targets(&states, &analysis);
    if let Some(z) = &zero {
        enforce(&states, &mut reasons, &z.policy, &z.activity, &z.demand);
    }
    let targets = reasons.iter().map(|t| (t.name.clone(), t.target)).collect();
    ModelDecision {
        config: *config,
        analysis,
        in_transition,
        targets,
        reasons,
        zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_queues_saturate_instead_of_wrapping() {
        assert_eq!(queue_as_integer(1e300), i64::MAX);
        assert_eq!(queue_as_integer(9.3e18), i64::MAX);
        assert_eq!(queue_as_integer(6.9), 6);
        let d = decide(
            &SaturationConfig::default(),
            &[VariantInput {
                name: "a".into(),
                cost: 1.0,
                accelerator: String::new(),
                spec_replicas: 1,
                ready_replicas: 1,
                replicas: vec![ReplicaInput {
                    pod: "p".into(),
                    kv_cache_usage: 0.1,
                    queue_length: 9.3e18,
                }],
                min_replicas: None,
                max_replicas: None,
            }],
        );
        // WVA would wrap 2^63 to a negative queue and call the replica idle.
        assert!(d.analysis.should_scale_up);
        assert_eq!(d.targets["a"], 2);
    }
}
