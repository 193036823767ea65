//! What the engine would answer now for each variant: the view status, events and gauges are made from.

use crate::cluster::snapshot::SourceKind;
use crate::engine::limit::LimiterNote;
use crate::engine::{Explanation, ModelExplanation};
use crate::saturation::{Role, TargetReason};
use crate::sources::MissingSample;

/// What the engine would answer now for one VariantAutoscaling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariantView {
    pub namespace: String,
    pub name: String,
    /// The declaring object: VariantAutoscalings get status and Events, annotated objects Events only.
    pub kind: SourceKind,
    pub uid: Option<String>,
    pub accelerator: Option<String>,
    /// Why the accelerator is "unresolved" (the variant is decided all the same).
    pub accelerator_unresolved: Option<String>,
    /// Its prefill/decode role (`both` when it does both).
    pub role: Role,
    pub spec_replicas: i64,
    pub ready_replicas: i64,
    pub cost: f64,
    /// `None` when no decision can be made (excluded, or data missing for too long).
    pub desired: Option<i64>,
    pub desired_reason: Option<TargetReason>,
    pub message: String,
    pub metrics: Condition,
    pub optimization: Condition,
    pub target_resolved: Condition,
    pub load: Option<crate::sources::LoadFigures>,
    /// Peak KV-cache usage and queue over the variant's pods with fresh samples.
    pub kv_cache_usage: Option<f64>,
    pub queue_length: Option<f64>,
    /// Saturation V2's figures for the variant (when V2 decides).
    pub capacity: Option<CapacityFigures>,
    /// The GPU limiter that cut its scale-up, if one did.
    pub limited_by: Option<String>,
}

/// What WVA v0.9 publishes of a V2 decision per variant: its utilization, its role's required and spare
/// capacity, and its KV tokens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CapacityFigures {
    pub model_id: String,
    pub utilization: f64,
    pub required: f64,
    pub spare: f64,
    pub kv_tokens_used: i64,
    pub kv_tokens_capacity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn cond(status: bool, reason: &'static str, message: impl Into<String>) -> Condition {
    Condition {
        status,
        reason,
        message: message.into(),
    }
}

/// Turns the engine's explanation into one view per VariantAutoscaling (decided or excluded).
pub(crate) fn views(
    explanation: &Explanation,
    engine_snapshot: &crate::cluster::snapshot::Snapshot,
) -> Vec<VariantView> {
    let mut out = Vec::new();
    for model in &explanation.models {
        for v in engine_snapshot.model(model.namespace, model.model_id) {
            out.push(view_of(model, v));
        }
    }
    for e in explanation.excluded.iter().filter(|e| !e.reason.not_ours()) {
        let reason = e.reason.to_string();
        let resolved = if !e.reason.target_resolved() {
            cond(false, "TargetNotFound", reason.clone())
        } else {
            cond(true, "TargetFound", "target Deployment found")
        };
        out.push(VariantView {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            kind: e.kind,
            uid: e.uid.clone(),
            accelerator: None,
            accelerator_unresolved: None,
            role: Role::Both,
            spec_replicas: 0,
            ready_replicas: 0,
            cost: 0.0,
            desired: None,
            desired_reason: None,
            limited_by: None,
            message: reason.clone(),
            metrics: cond(false, "MetricsMissing", format!("not evaluated: {reason}")),
            optimization: cond(false, "InvalidConfiguration", reason),
            target_resolved: resolved,
            load: None,
            kv_cache_usage: None,
            queue_length: None,
            capacity: None,
        });
    }
    out
}

/// The limiter that cut a variant's scale-up, when its target says one did.
fn limited_by(
    model: &ModelExplanation,
    variant: &str,
    reason: Option<&TargetReason>,
) -> Option<String> {
    if reason != Some(&TargetReason::Limited) {
        return None;
    }
    match &model.decision.limiter {
        Some(LimiterNote::Applied { variants } | LimiterNote::Capped { variants }) => {
            variants.get(variant).and_then(|g| g.limited_by.clone())
        }
        _ => None,
    }
}

fn view_of(model: &ModelExplanation, v: &crate::cluster::snapshot::Variant) -> VariantView {
    let pods: Vec<_> = model.pods.iter().filter(|p| p.variant == v.name).collect();
    let missing: Vec<String> = pods
        .iter()
        .filter_map(|p| p.missing.as_ref().map(|m| format!("{} ({m})", p.pod)))
        .collect();
    let prometheus_failing = pods
        .iter()
        .filter_map(|p| p.missing.as_ref())
        .any(MissingSample::is_prometheus_error);
    let fresh = pods.len() - missing.len();
    let peak = |f: fn(&crate::sources::PodSample) -> f64| {
        pods.iter()
            .filter_map(|p| p.sample.as_ref().map(f))
            .reduce(f64::max)
    };
    let (kv_cache_usage, queue_length) = (peak(|s| s.kv_cache_usage), peak(|s| s.queue_length));
    let metrics = if let Some(why) = &model.unavailable {
        cond(
            false,
            if prometheus_failing {
                "PrometheusError"
            } else {
                "MetricsStale"
            },
            why.clone(),
        )
    } else if !missing.is_empty() {
        cond(
            false,
            "MetricsMissing",
            format!(
                "{fresh}/{} ready pods have fresh samples; missing: {}",
                pods.len(),
                missing.join(", ")
            ),
        )
    } else {
        cond(
            true,
            "MetricsFound",
            format!("fresh samples from {fresh}/{} ready pods", pods.len()),
        )
    };
    let target = model.decision.reasons.iter().find(|t| t.name == v.name);
    let (desired, desired_reason, message, optimization) = match (&model.unavailable, target) {
        (Some(why), _) => (
            None,
            None,
            why.clone(),
            cond(false, "MetricsUnavailable", why.clone()),
        ),
        (None, Some(t)) => (
            Some(t.target),
            Some(t.reason.clone()),
            t.message.to_string(),
            cond(true, "OptimizationSucceeded", t.message.to_string()),
        ),
        (None, None) => (
            None,
            None,
            "no decision".to_string(),
            cond(false, "OptimizationFailed", "no decision for this variant"),
        ),
    };
    VariantView {
        namespace: v.namespace.clone(),
        name: v.name.clone(),
        kind: v.kind,
        uid: v.uid.clone(),
        accelerator: Some(v.accelerator.clone()),
        accelerator_unresolved: v.accelerator_unresolved.as_ref().map(ToString::to_string),
        role: v.role,
        spec_replicas: v.spec_replicas,
        ready_replicas: v.ready_replicas,
        cost: v.cost,
        desired,
        limited_by: limited_by(model, &v.name, desired_reason.as_ref()),
        desired_reason,
        message,
        metrics,
        optimization,
        target_resolved: cond(true, "TargetFound", format!("Deployment {}", v.deployment)),
        load: model.load.clone(),
        kv_cache_usage,
        queue_length,
        capacity: model.decision.capacity.as_ref().and_then(|c| {
            let vc = c.variants.iter().find(|x| x.name == v.name)?;
            let t = c.totals_for(vc.role);
            Some(CapacityFigures {
                model_id: model.model_id.to_string(),
                utilization: vc.utilization,
                required: t.required_capacity,
                spare: t.spare_capacity,
                kv_tokens_used: vc.kv_tokens_used,
                kv_tokens_capacity: vc.kv_tokens_capacity,
            })
        }),
    }
}
