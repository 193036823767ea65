//! One model's decision from its inputs: the saturation analysis over every replica of every variant,
//! then one target per variant. Pure and infallible: the inputs' invariants are established where the
//! inputs are made (the engine's snapshot join, or `analyze`'s validation in [`super::input`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::saturation::role::{self, Role};
use crate::saturation::targets::CapacityVerb;
use crate::saturation::v2::{
    self, CapacityAnalysis, CapacityMemory, EngineParams, ReplicaRow, SchedulerQueue, V2Thresholds,
    VariantIn,
};
use crate::saturation::{
    analyze, compute_targets, enforce, Activity, Analysis, Demand, Message, ReplicaMetrics,
    SaturationConfig, TargetReason, VariantState, VariantTarget, ZeroPolicy,
};

/// One replica's input to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "super::input::RawReplica")]
pub struct ReplicaInput<'a> {
    /// The row's serving instance: the pod, or `pod:port` for one data-parallel rank of a pod read at
    /// several ports (WVA v0.9's row key). Borrowed from the cluster snapshot on the request path.
    pub pod: Cow<'a, str>,
    /// For a rank's row, the pod it is a rank of: the pod's rows together are one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_of: Option<Cow<'a, str>>,
    pub kv_cache_usage: f64,
    pub queue_length: f64,
    /// Saturation V2: KV tokens (`num_gpu_blocks × block_size`; unset: the variant's record decides).
    /// `analyze` also takes `numGpuBlocks` and `blockSize`, and `tokensInUse` for `kvCacheUsage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_kv_tokens: Option<i64>,
    /// Saturation V2: average prompt and output tokens per request and prefix-cache hit rate.
    #[serde(default, skip_serializing_if = "crate::saturation::zero::is_zero")]
    pub avg_input_tokens: f64,
    #[serde(default, skip_serializing_if = "crate::saturation::zero::is_zero")]
    pub avg_output_tokens: f64,
    #[serde(default, skip_serializing_if = "crate::saturation::zero::is_zero")]
    pub prefix_cache_hit_rate: f64,
}

impl<'a> ReplicaInput<'a> {
    /// A replica with V1's two signals only.
    pub fn new(pod: impl Into<Cow<'a, str>>, kv_cache_usage: f64, queue_length: f64) -> Self {
        Self {
            pod: pod.into(),
            rank_of: None,
            kv_cache_usage,
            queue_length,
            total_kv_tokens: None,
            avg_input_tokens: 0.0,
            avg_output_tokens: 0.0,
            prefix_cache_hit_rate: 0.0,
        }
    }

    fn row(&self) -> ReplicaRow<'a> {
        ReplicaRow {
            pod: self.pod.clone(),
            kv_cache_usage: self.kv_cache_usage,
            queue_length: queue_as_integer(self.queue_length),
            total_kv_tokens: self.total_kv_tokens.unwrap_or(0),
            avg_input_tokens: self.avg_input_tokens,
            avg_output_tokens: self.avg_output_tokens,
            prefix_cache_hit_rate: self.prefix_cache_hit_rate,
        }
    }
}

/// One variant's input to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantInput<'a> {
    /// Borrowed from the cluster snapshot on the request path; owned when `analyze` reads it.
    pub name: Cow<'a, str>,
    #[serde(
        default = "default_cost",
        deserialize_with = "super::input::cost_number_or_string"
    )]
    pub cost: f64,
    #[serde(default)]
    pub accelerator: Cow<'a, str>,
    pub spec_replicas: i64,
    pub ready_replicas: i64,
    /// Ready pods with fresh samples.
    #[serde(default)]
    pub replicas: Vec<ReplicaInput<'a>>,
    /// The autoscaler's bounds; targets never leave them. Unset: 0 and unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    /// Saturation V2: the P/D role, GPUs per replica, and the engine's parameters (from the pod
    /// template's command line; `analyze` also takes them as `args`, see [`super::input`]).
    #[serde(default, skip_serializing_if = "Role::is_both")]
    pub role: Role,
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub gpus_per_replica: i64,
    /// `analyze` also takes the container's command line here, as `args`.
    #[serde(
        default,
        alias = "args",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "super::input::params_or_args"
    )]
    pub engine_params: Option<Cow<'a, EngineParams>>,
}

fn one() -> i64 {
    1
}

fn is_one(n: &i64) -> bool {
    *n == 1
}

impl<'a> VariantInput<'a> {
    /// Ready pods with fresh samples: a pod of several ranks counts once (the engine gives its rows only
    /// when every rank has a fresh sample).
    pub fn sampled_pods(&self) -> i64 {
        fn pod<'r>(r: &'r ReplicaInput<'_>) -> &'r str {
            r.rank_of.as_deref().unwrap_or(&r.pod)
        }
        let rows = &self.replicas;
        // A decision runs on every HPA request: a variant's few rows are counted without allocating
        // (first occurrences); many rows are sorted instead.
        let pods = if rows.len() <= 32 {
            (0..rows.len())
                .filter(|&i| !rows[..i].iter().any(|r| pod(r) == pod(&rows[i])))
                .count()
        } else {
            let mut pods: Vec<&str> = rows.iter().map(pod).collect();
            pods.sort_unstable();
            pods.dedup();
            pods.len()
        };
        i64::try_from(pods).unwrap_or(i64::MAX)
    }

    fn v2(&self) -> VariantIn<'a> {
        VariantIn {
            name: self.name.clone(),
            cost: self.cost,
            accelerator: self.accelerator.clone(),
            role: self.role,
            current: self.spec_replicas,
            ready: self.ready_replicas,
            gpus_per_replica: self.gpus_per_replica,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            params: self.engine_params.clone(),
            rows: self.replicas.iter().map(ReplicaInput::row).collect(),
        }
    }

    fn state(&self) -> VariantState<'a> {
        VariantState {
            name: self.name.clone(),
            cost: self.cost,
            spec_replicas: self.spec_replicas,
            ready_replicas: self.ready_replicas,
            seen_replicas: self.sampled_pods(),
            min_replicas: self.min_replicas.unwrap_or(0),
            max_replicas: self.max_replicas,
            role: self.role,
        }
    }
}

fn default_cost() -> f64 {
    crate::cluster::crd::DEFAULT_VARIANT_COST
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDecision<'a> {
    /// `v1`, `saturation-v2`, or `queueing-model` (refused: every variant held).
    pub analyzer: &'static str,
    pub config: SaturationConfig,
    /// V1's analysis (of the whole model; a disaggregated model has one per role instead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis<'a>>,
    /// V1's analysis of each prefill/decode role of a disaggregated model.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub analysis_by_role: BTreeMap<Role, Analysis<'a>>,
    /// Saturation V2's analysis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityAnalysis<'a>>,
    pub in_transition: bool,
    pub targets: BTreeMap<Cow<'a, str>, i64>,
    /// What the GPU limiter did to the targets (absent when it is not enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limiter: Option<super::limit::LimiterNote>,
    pub reasons: Vec<VariantTarget<'a>>,
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

impl ModelDecision<'_> {
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
pub fn decide<'a>(config: &SaturationConfig, variants: &[VariantInput<'a>]) -> ModelDecision<'a> {
    decide_with_zero(config, variants, None)
}

/// [`decide`], then scale to zero and from zero ([`crate::saturation::enforce`]) when `zero` is given.
///
/// A disaggregated model (some variant is `prefill` or `decode`) is analysed per role, as WVA v0.9's V1
/// does: each role's replicas get their own analysis, transition hold and ±1 among that role's variants,
/// so a saturated prefill pool is not starved by an idle decode pool. Scale to zero stays per model.
pub fn decide_with_zero<'a>(
    config: &SaturationConfig,
    variants: &[VariantInput<'a>],
    zero: Option<ZeroInputs>,
) -> ModelDecision<'a> {
    let states: Vec<VariantState<'a>> = variants.iter().map(VariantInput::state).collect();
    if !role::disaggregated(variants.iter().map(|v| &v.role)) {
        let analysis = analyze(&replica_metrics(variants.iter()), config);
        let reasons = compute_targets(&states, &analysis);
        return finish("v1", config, (Some(analysis), None), &states, reasons, zero);
    }
    let mut by_role = BTreeMap::new();
    let mut reasons: Vec<Option<VariantTarget>> = vec![None; variants.len()];
    for r in Role::ALL {
        let members: Vec<usize> = (0..variants.len())
            .filter(|&i| variants[i].role == r)
            .collect();
        if members.is_empty() {
            continue;
        }
        let analysis = analyze(
            &replica_metrics(members.iter().map(|&i| &variants[i])),
            config,
        );
        let group: Vec<VariantState<'a>> = members.iter().map(|&i| states[i].clone()).collect();
        for (&i, t) in members.iter().zip(compute_targets(&group, &analysis)) {
            reasons[i] = Some(t);
        }
        by_role.insert(r, analysis);
    }
    // Every variant has exactly one role, so every slot was filled.
    let reasons = reasons.into_iter().flatten().collect();
    let mut d = finish("v1", config, (None, None), &states, reasons, zero);
    d.analysis_by_role = by_role;
    d
}

/// The rows V1 analyses. The names are the inputs' (a copy of a borrowed name is a pointer).
fn replica_metrics<'a: 'v, 'v>(
    variants: impl Iterator<Item = &'v VariantInput<'a>>,
) -> Vec<ReplicaMetrics<'a>> {
    variants
        .flat_map(|v| {
            v.replicas.iter().map(|r| ReplicaMetrics {
                pod: r.pod.clone(),
                variant: v.name.clone(),
                kv_cache_usage: r.kv_cache_usage,
                queue_length: queue_as_integer(r.queue_length),
            })
        })
        .collect()
}

/// Zero enforcement, then the decision.
fn finish<'a>(
    analyzer: &'static str,
    config: &SaturationConfig,
    (analysis, capacity): (Option<Analysis<'a>>, Option<CapacityAnalysis<'a>>),
    states: &[VariantState<'a>],
    mut reasons: Vec<VariantTarget<'a>>,
    zero: Option<ZeroInputs>,
) -> ModelDecision<'a> {
    if let Some(z) = &zero {
        enforce(states, &mut reasons, &z.policy, &z.activity, &z.demand);
    }
    // Inserted one by one: a map collected from an iterator is first gathered in a vector.
    let mut targets = BTreeMap::new();
    for t in &reasons {
        targets.insert(t.name.clone(), t.target);
    }
    ModelDecision {
        analyzer,
        config: *config,
        analysis,
        analysis_by_role: BTreeMap::new(),
        capacity,
        in_transition: states.iter().any(VariantState::in_transition),
        targets,
        reasons,
        zero,
        limiter: None,
    }
}

/// What saturation V2 decides a model on, besides its variants.
#[derive(Debug, Clone)]
pub struct V2Context<'a> {
    pub namespace: &'a str,
    pub model: &'a str,
    pub config: SaturationConfig,
    pub thresholds: V2Thresholds,
    /// Whether the saturation analyzer votes for the model (an `analyzers` list may disable it).
    pub votes: bool,
    pub scheduler: Option<SchedulerQueue>,
    pub memory: &'a CapacityMemory,
}

/// Saturation V2 (WVA v0.9): the token-capacity analysis and the cost-aware optimizer, then scale to
/// and from zero. Variants at 0 replicas are left to scale from zero, as in WVA. Never a scale-down
/// while Ready pods lack samples (their load is unknown), and every variant is held when no variant's
/// capacity is known or the saturation analyzer does not vote.
pub fn decide_v2<'a>(
    ctx: &V2Context<'_>,
    variants: &[VariantInput<'a>],
    zero: Option<ZeroInputs>,
) -> ModelDecision<'a> {
    let rows: Vec<VariantIn<'a>> = variants.iter().map(VariantInput::v2).collect();
    let capacity = v2::analyze(
        ctx.namespace,
        ctx.model,
        &rows,
        ctx.scheduler,
        &ctx.thresholds,
        ctx.memory,
    );
    let states: Vec<VariantState<'a>> = variants.iter().map(VariantInput::state).collect();
    let reasons = if !ctx.votes {
        held(&states, TargetReason::NoChange, "held: the saturation analyzer is disabled for this model and no other analyzer runs here")
    } else if !capacity.informative() {
        held(&states, TargetReason::NoChange, "held: no variant's capacity is known yet (no replica with samples, no Deployment to estimate from)")
    } else {
        v2_targets(variants, &states, &rows, &capacity)
    };
    finish(
        "saturation-v2",
        &ctx.config,
        (None, Some(capacity)),
        &states,
        reasons,
        zero,
    )
}

/// Each variant's target from the optimizer's moves; `states` are the variants' (same order), with the
/// sampled pods counted once.
fn v2_targets<'a>(
    variants: &[VariantInput<'a>],
    states: &[VariantState<'a>],
    rows: &[VariantIn],
    capacity: &CapacityAnalysis,
) -> Vec<VariantTarget<'a>> {
    let moved = v2::optimize(rows, capacity);
    variants
        .iter()
        .zip(states)
        .map(|(v, s)| {
            let unsampled = v.ready_replicas > s.seen_replicas;
            let Some(i) = capacity.variants.iter().position(|c| c.name == v.name) else {
                return VariantTarget {
                    name: v.name.clone(),
                    target: v.spec_replicas,
                    reason: TargetReason::NoChange,
                    message: "at 0 replicas: left to scale from zero".into(),
                };
            };
            let c = &capacity.variants[i];
            let t = capacity.totals_for(c.role);
            let message = |verb| Message::Capacity {
                verb,
                required: t.required_capacity,
                spare: t.spare_capacity,
                per_replica: c.per_replica_capacity,
                source: c.source.wva_label(),
            };
            let target = moved[i];
            let (target, reason, message) = if target > v.spec_replicas {
                (
                    target,
                    TargetReason::ScaleUp,
                    message(CapacityVerb::ScaleUp),
                )
            } else if target < v.spec_replicas && unsampled {
                (
                    v.spec_replicas,
                    TargetReason::NoChange,
                    message(CapacityVerb::DownHeld {
                        unsampled: v.ready_replicas - s.seen_replicas,
                        ready: v.ready_replicas,
                    }),
                )
            } else if target < v.spec_replicas {
                (
                    target,
                    TargetReason::ScaleDown,
                    message(CapacityVerb::ScaleDown),
                )
            } else {
                (
                    target,
                    TargetReason::NoChange,
                    message(CapacityVerb::NoChange),
                )
            };
            VariantTarget {
                name: v.name.clone(),
                target,
                reason,
                message,
            }
        })
        .collect()
}

/// Every variant at its `spec.replicas`, for one reason.
fn held<'a>(
    states: &[VariantState<'a>],
    reason: TargetReason,
    why: &str,
) -> Vec<VariantTarget<'a>> {
    states
        .iter()
        .map(|s| VariantTarget {
            name: s.name.clone(),
            target: s.spec_replicas,
            reason: reason.clone(),
            message: why.to_string().into(),
        })
        .collect()
}

/// The queueing-model path, which WVA v0.9 refuses: every variant keeps `spec.replicas`.
pub fn decide_refused<'a>(
    config: &SaturationConfig,
    variants: &[VariantInput<'a>],
    why: &str,
) -> ModelDecision<'a> {
    let states: Vec<VariantState<'a>> = variants.iter().map(VariantInput::state).collect();
    let reasons = held(&states, TargetReason::Refused, why);
    finish(
        "queueing-model",
        config,
        (None, None),
        &states,
        reasons,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_variant(i: usize) -> impl Strategy<Value = VariantInput<'static>> {
        (
            1i64..6,
            0i64..3,
            0.5f64..40.0,
            proptest::collection::vec((0.0f64..=1.0, 0.0f64..20.0), 0..6),
            proptest::option::of(1i64..10),
        )
            .prop_map(move |(spec, not_ready, cost, samples, extra)| {
                let ready = (spec - not_ready).max(0);
                let replicas: Vec<ReplicaInput<'static>> = samples
                    .iter()
                    .take(usize::try_from(ready).unwrap_or(0))
                    .enumerate()
                    .map(|(p, (kv, q))| ReplicaInput {
                        total_kv_tokens: Some(16_000),
                        avg_input_tokens: 100.0,
                        avg_output_tokens: 50.0,
                        ..ReplicaInput::new(format!("v{i}-{p}"), *kv, *q)
                    })
                    .collect();
                VariantInput {
                    name: format!("v{i}").into(),
                    cost,
                    accelerator: "H100".into(),
                    spec_replicas: spec,
                    ready_replicas: ready,
                    replicas,
                    min_replicas: Some(0),
                    max_replicas: extra.map(|e| spec + e),
                    role: Role::Both,
                    gpus_per_replica: 1,
                    engine_params: None,
                }
            })
    }

    proptest! {
        /// Saturation V2 never scales down a variant some of whose Ready pods have no fresh sample
        /// (their load is unknown), and never leaves [min, max] when spec.replicas is within it.
        #[test]
        fn v2_never_scales_down_on_missing_data(
            variants in (arb_variant(0), arb_variant(1)).prop_map(|(a, b)| vec![a, b]),
        ) {
            let memory = CapacityMemory::default();
            let ctx = V2Context {
                namespace: "ns",
                model: "m",
                config: SaturationConfig::default(),
                thresholds: V2Thresholds::default(),
                votes: true,
                scheduler: None,
                memory: &memory,
            };
            let d = decide_v2(&ctx, &variants, None);
            for v in &variants {
                let target = d.targets[&v.name];
                let unsampled = v.ready_replicas > v.sampled_pods();
                if unsampled {
                    prop_assert!(target >= v.spec_replicas, "{} scaled down from {} to {target} with unsampled Ready pods", v.name, v.spec_replicas);
                }
                if let Some(max) = v.max_replicas {
                    prop_assert!(target <= max);
                }
                prop_assert!(target >= 0);
            }
        }
    }

    fn pool(name: &str, role: Role, spec: i64, kv: f64, queue: f64) -> VariantInput<'static> {
        VariantInput {
            name: name.to_string().into(),
            cost: 10.0,
            accelerator: "H100".into(),
            spec_replicas: spec,
            ready_replicas: spec,
            replicas: (0..spec)
                .map(|i| ReplicaInput::new(format!("{name}-rank-{i}"), kv, queue))
                .collect(),
            min_replicas: Some(1),
            max_replicas: Some(10),
            role,
            gpus_per_replica: 1,
            engine_params: None,
        }
    }

    /// A saturated prefill pool beside an idle decode pool: pooled, the idle decode replicas hide the
    /// saturation and the −1 lands on prefill (1, 2); per role, as WVA v0.9 decides, prefill grows and
    /// decode shrinks (3, 1).
    #[test]
    fn v1_decides_each_role_apart() {
        let cfg = SaturationConfig::default();
        let pd = [
            pool("prefill", Role::Prefill, 2, 0.9, 6.0),
            pool("decode", Role::Decode, 2, 0.05, 0.0),
        ];
        let d = decide(&cfg, &pd);
        assert_eq!((d.targets["prefill"], d.targets["decode"]), (3, 1), "{d:?}");
        assert!(d.analysis.is_none());
        assert!(d.analysis_by_role[&Role::Prefill].should_scale_up);
        assert!(d.analysis_by_role[&Role::Decode].scale_down_safe);
        // The same pools as one interchangeable variant set: the pooled decision.
        let pooled: Vec<VariantInput> = pd
            .iter()
            .map(|v| VariantInput {
                role: Role::Both,
                ..v.clone()
            })
            .collect();
        let d = decide(&cfg, &pooled);
        assert_eq!((d.targets["prefill"], d.targets["decode"]), (1, 2), "{d:?}");
        assert!(d.analysis_by_role.is_empty() && d.analysis.is_some());
        // A role in transition holds itself only.
        let mut moving = pd.clone();
        moving[1].spec_replicas = 3;
        let d = decide(&cfg, &moving);
        assert_eq!((d.targets["prefill"], d.targets["decode"]), (3, 3), "{d:?}");
        assert_eq!(d.reasons[1].reason, TargetReason::HoldTransition);
        // A `both` variant in a disaggregated model is a third group.
        let mut three = pd.to_vec();
        three.push(pool("both", Role::Both, 2, 0.3, 0.0));
        let d = decide(&cfg, &three);
        assert_eq!(d.analysis_by_role.len(), 3);
        assert_eq!(d.targets["prefill"], 3);
    }

    /// Scale from zero wakes, and keep-one keeps, the cheapest variant of every role.
    #[test]
    fn zero_wakes_and_keeps_every_role() {
        use crate::saturation::{Activity, Demand, ZeroPolicy};
        let parked = |name: &str, role: Role, cost: f64| VariantInput {
            cost,
            min_replicas: Some(0),
            ..pool(name, role, 0, 0.0, 0.0)
        };
        let vs = [
            parked("p-cheap", Role::Prefill, 5.0),
            parked("p-dear", Role::Prefill, 15.0),
            parked("d", Role::Decode, 10.0),
        ];
        let zero = |enabled: bool, demand: Demand| ZeroInputs {
            policy: ZeroPolicy {
                enabled,
                retention: std::time::Duration::from_secs(60),
                source: "test".into(),
            },
            activity: Activity::Idle,
            demand,
        };
        let queued = Demand::Queued {
            requests: 3.0,
            bytes: 0.0,
            pool: "pool".into(),
            held: None,
        };
        let d = decide_with_zero(&SaturationConfig::default(), &vs, Some(zero(true, queued)));
        assert_eq!(
            (d.targets["p-cheap"], d.targets["p-dear"], d.targets["d"]),
            (1, 0, 1)
        );
        assert_eq!(d.reasons[2].reason, TargetReason::ScaleFromZero);
    }

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
                accelerator: "".into(),
                spec_replicas: 1,
                ready_replicas: 1,
                replicas: vec![ReplicaInput::new("p", 0.1, 9.3e18)],
                min_replicas: None,
                max_replicas: None,
                role: Role::Both,
                gpus_per_replica: 1,
                engine_params: None,
            }],
        );
        // WVA would wrap 2^63 to a negative queue and call the replica idle.
        assert!(d.analysis.unwrap().should_scale_up);
        assert_eq!(d.targets["a"], 2);
    }
}
