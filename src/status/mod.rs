//! VariantAutoscaling status write-back, events, and the per-variant gauges.
//!
//! Every replica refreshes its own gauges from its engine; only the Lease holder writes status (server-side
//! apply on the status subresource, never the spec) and records events. Writes happen every
//! `--status-interval` and as soon as a decision changes; a failed write is retried with backoff on a later
//! tick and never touches request serving.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as MetaCondition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use serde::Serialize;
use serde_json::Value;

use crate::cluster::crd::VariantAutoscaling;
use crate::cluster::leader::LeaderElector;
use crate::cluster::snapshot::SourceKind;
use crate::engine::{Engine, Explanation, ModelReport};
use crate::saturation::TargetReason;
use crate::sources::MissingSample;
use crate::telemetry::{DecisionLabels, Metrics, ResultLabels, VariantLabels};

pub(crate) const FIELD_MANAGER: &str = "wva-metrics-server";
/// The Lease (in the server's namespace) whose holder writes status.
pub(crate) const LEASE_NAME: &str = "wva-metrics-server-status";
/// How often views and gauges are refreshed; a changed decision is written within one tick.
pub(crate) const STATUS_TICK: Duration = Duration::from_secs(2);
/// Longest message kept in a condition or an event note (the API server rejects much longer ones).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1000;

/// The status writer's settings (`--status-interval`, `--lease-duration`, `--identity`).
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Full rewrite period.
    pub interval: Duration,
    /// Refresh period (at most `interval`).
    pub tick: Duration,
    pub lease_duration: Duration,
    pub identity: String,
}

/// What the engine would answer now for one VariantAutoscaling.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariantView {
    pub namespace: String,
    pub name: String,
    /// The declaring object: VariantAutoscalings get status and Events, annotated objects Events only.
    pub kind: SourceKind,
    pub uid: Option<String>,
    pub accelerator: Option<String>,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

fn cond(status: bool, reason: &'static str, message: impl Into<String>) -> Condition {
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
        for v in engine_snapshot.model(&model.namespace, &model.model_id) {
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
            spec_replicas: 0,
            ready_replicas: 0,
            cost: 0.0,
            desired: None,
            desired_reason: None,
            message: reason.clone(),
            metrics: cond(false, "MetricsMissing", format!("not evaluated: {reason}")),
            optimization: cond(false, "InvalidConfiguration", reason),
            target_resolved: resolved,
            load: None,
            kv_cache_usage: None,
            queue_length: None,
        });
    }
    out
}

fn view_of(model: &ModelReport, v: &crate::cluster::snapshot::Variant) -> VariantView {
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
            t.message.clone(),
            cond(true, "OptimizationSucceeded", t.message.clone()),
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
        spec_replicas: v.spec_replicas,
        ready_replicas: v.ready_replicas,
        cost: v.cost,
        desired,
        desired_reason,
        message,
        metrics,
        optimization,
        target_resolved: cond(true, "TargetFound", format!("Deployment {}", v.deployment)),
        load: model.load.clone(),
        kv_cache_usage,
        queue_length,
    }
}

/// The server-side-apply body for one VariantAutoscaling's status: only `status`, never the spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StatusPatch {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: PatchMetadata,
    pub status: VaStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct PatchMetadata {
    pub name: String,
    pub namespace: String,
}

/// The status fields we own. Fields the installed CRD lacks (v0.5 has no `currentAlloc`) are pruned by
/// the API server.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VaStatus {
    pub conditions: Vec<MetaCondition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_optimized_alloc: Option<DesiredAlloc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actuation: Option<Actuation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_alloc: Option<CurrentAlloc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DesiredAlloc {
    pub num_replicas: i64,
    pub accelerator: String,
    pub last_run_time: Time,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Actuation {
    pub applied: bool,
}

/// WVA v0.4.1's `currentAlloc`: decimals as strings, as its CRD declares them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CurrentAlloc {
    pub accelerator: String,
    pub num_replicas: i64,
    pub max_batch: i64,
    pub variant_cost: String,
    pub itl_average: String,
    pub ttft_average: String,
    pub load: Load,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    pub arrival_rate: String,
    pub avg_input_tokens: String,
    pub avg_output_tokens: String,
}

/// WVA v0.4.1 writes this fixed batch size in `currentAlloc.maxBatch`.
const WVA_MAX_BATCH: i64 = 256;
/// WVA's CRD requires an accelerator of at least this many characters in `desiredOptimizedAlloc`.
const MIN_ACCELERATOR_LEN: usize = 2;

/// A condition as written (metav1.Condition), keeping `lastTransitionTime` when the status did not
/// change. `existing` is the object's current `status.conditions`; entries that are not well-formed
/// conditions are ignored.
fn condition(kind: &str, c: &Condition, existing: &[Value], now: Time) -> MetaCondition {
    let status = if c.status { "True" } else { "False" };
    let previous = existing
        .iter()
        .filter_map(|e| serde_json::from_value::<MetaCondition>(e.clone()).ok())
        .find(|e| e.type_ == kind);
    let since = match previous {
        Some(p) if p.status == status => p.last_transition_time,
        _ => now,
    };
    MetaCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: c.reason.to_string(),
        message: truncate(&c.message, MAX_MESSAGE_BYTES),
        last_transition_time: since,
        observed_generation: None,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The status patch for one VariantAutoscaling at time `now`.
pub(crate) fn status_patch(v: &VariantView, existing: &[Value], now: Time) -> StatusPatch {
    let conditions = vec![
        condition("MetricsAvailable", &v.metrics, existing, now.clone()),
        condition("OptimizationReady", &v.optimization, existing, now.clone()),
        condition("TargetResolved", &v.target_resolved, existing, now.clone()),
    ];
    let accelerator = v
        .accelerator
        .clone()
        .filter(|a| a.len() >= MIN_ACCELERATOR_LEN);
    let desired_optimized_alloc = match (v.desired, &accelerator) {
        (Some(desired), Some(acc)) => Some(DesiredAlloc {
            num_replicas: desired,
            accelerator: acc.clone(),
            last_run_time: now,
        }),
        _ => None,
    };
    // v0.4.1's currentAlloc, written only with real load figures (never invented zeros).
    let current_alloc = match (&v.load, &accelerator) {
        (Some(load), Some(acc)) => Some(CurrentAlloc {
            accelerator: acc.clone(),
            num_replicas: v.spec_replicas,
            max_batch: WVA_MAX_BATCH,
            variant_cost: format!("{:.2}", v.spec_replicas as f64 * v.cost),
            itl_average: format!("{:.2}", load.itl_average),
            ttft_average: format!("{:.2}", load.ttft_average),
            load: Load {
                arrival_rate: format!("{:.2}", load.arrival_rate),
                avg_input_tokens: format!("{:.2}", load.avg_input_tokens),
                avg_output_tokens: format!("{:.2}", load.avg_output_tokens),
            },
        }),
        _ => None,
    };
    StatusPatch {
        api_version: "llmd.ai/v1alpha1",
        kind: "VariantAutoscaling",
        metadata: PatchMetadata {
            name: v.name.clone(),
            namespace: v.namespace.clone(),
        },
        status: VaStatus {
            conditions,
            actuation: desired_optimized_alloc
                .is_some()
                .then_some(Actuation { applied: true }),
            desired_optimized_alloc,
            current_alloc,
        },
    }
}

/// The event to record when a VariantAutoscaling's recommendation or decidability changes, if any.
pub(crate) fn event_for(
    v: &VariantView,
    previous_desired: Option<i64>,
    previous_optimization_message: Option<&str>,
) -> Option<Event> {
    match (v.desired, previous_desired) {
        (Some(now), Some(before)) if now != before => Some(Event {
            type_: EventType::Normal,
            reason: match (&v.desired_reason, now > before) {
                (Some(TargetReason::ScaleToZero), _) => "ScaleToZeroRecommended",
                (Some(TargetReason::ScaleFromZero), _) => "ScaleFromZeroRecommended",
                (_, true) => "ScaleUpRecommended",
                (_, false) => "ScaleDownRecommended",
            }
            .into(),
            note: Some(truncate(
                &format!("desired replicas {before} → {now}: {}", v.message),
                MAX_MESSAGE_BYTES,
            )),
            action: "Recommend".into(),
            secondary: None,
        }),
        // Scale-up needed but every variant is at its maxReplicas: said once per change of the reason.
        (Some(_), _)
            if v.desired_reason == Some(TargetReason::ScaleUpBlocked)
                && previous_optimization_message != Some(v.optimization.message.as_str()) =>
        {
            Some(Event {
                type_: EventType::Warning,
                reason: "MaxReplicasReached".into(),
                note: Some(truncate(&v.message, MAX_MESSAGE_BYTES)),
                action: "Recommend".into(),
                secondary: None,
            })
        }
        (None, _) if previous_optimization_message != Some(v.optimization.message.as_str()) => {
            Some(Event {
                type_: EventType::Warning,
                reason: match (v.target_resolved.status, v.optimization.reason) {
                    (false, _) => "TargetNotFound",
                    (_, "MetricsUnavailable") => "MetricsUnavailable",
                    _ => "InvalidConfiguration",
                }
                .into(),
                note: Some(truncate(&v.optimization.message, MAX_MESSAGE_BYTES)),
                action: "Evaluate".into(),
                secondary: None,
            })
        }
        _ => None,
    }
}

/// The per-variant series last set, so those of variants that are gone (or reasons that changed) are removed.
#[derive(Debug, Default)]
pub(crate) struct GaugeSeries {
    variants: BTreeSet<VariantLabels>,
    decisions: BTreeSet<DecisionLabels>,
}

/// Updates the per-variant gauges from the views, removing series of variants that are gone.
pub(crate) fn update_gauges(metrics: &Metrics, views: &[VariantView], previous: &mut GaugeSeries) {
    let mut now = GaugeSeries::default();
    for v in views {
        let (Some(desired), Some(acc)) = (v.desired, &v.accelerator) else {
            continue;
        };
        let labels = VariantLabels {
            variant_name: v.name.clone(),
            namespace: v.namespace.clone(),
            accelerator_type: acc.clone(),
        };
        let ratio = if v.ready_replicas == 0 {
            desired as f64
        } else {
            desired as f64 / v.ready_replicas as f64
        };
        metrics.set_variant(&labels, desired as f64, v.ready_replicas as f64, ratio);
        for (family, value) in [
            (&metrics.variant_kv_cache, v.kv_cache_usage),
            (&metrics.variant_queue, v.queue_length),
        ] {
            match value {
                Some(x) => {
                    family.get_or_create(&labels).set(x);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
        if let Some(reason) = &v.desired_reason {
            let d = DecisionLabels {
                variant_name: v.name.clone(),
                namespace: v.namespace.clone(),
                reason: reason.as_str().to_string(),
            };
            metrics.variant_decision.get_or_create(&d).set(1);
            now.decisions.insert(d);
        }
        now.variants.insert(labels);
    }
    for gone in previous.variants.difference(&now.variants) {
        metrics.remove_variant(gone);
        metrics.variant_kv_cache.remove(gone);
        metrics.variant_queue.remove(gone);
    }
    for gone in previous.decisions.difference(&now.decisions) {
        metrics.variant_decision.remove(gone);
    }
    *previous = now;
}

/// Without a status writer (standalone, or `--write-status=false`): keeps the gauges current.
pub struct GaugeLoop {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub every: Duration,
}

impl GaugeLoop {
    pub async fn run(self: Arc<Self>) {
        let mut gauges = GaugeSeries::default();
        let mut tick = tokio::time::interval(self.every);
        loop {
            tick.tick().await;
            let snapshot = self.engine.snapshot();
            update_gauges(
                &self.metrics,
                &views(&self.engine.explain(None), &snapshot),
                &mut gauges,
            );
        }
    }
}

pub struct StatusWriter {
    pub client: Client,
    pub engine: Arc<Engine>,
    pub elector: LeaderElector,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub tick: Duration,
}

impl StatusWriter {
    /// A writer that competes for [`LEASE_NAME`] in `namespace`.
    pub fn new(
        client: Client,
        engine: Arc<Engine>,
        metrics: Arc<Metrics>,
        namespace: &str,
        opts: &StatusOptions,
    ) -> Self {
        let elector = LeaderElector::new(
            client.clone(),
            namespace,
            LEASE_NAME,
            &opts.identity,
            opts.lease_duration,
        );
        Self {
            client,
            engine,
            elector,
            metrics,
            interval: opts.interval,
            tick: opts.tick,
        }
    }

    pub async fn run(self: Arc<Self>) {
        let recorder = Recorder::new(
            self.client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(self.elector.identity().to_string()),
            },
        );
        let mut gauges = GaugeSeries::default();
        let mut last_written: BTreeMap<ViewKey, Option<i64>> = BTreeMap::new();
        // What annotated objects (no status to read back) last showed, for their Events.
        let mut remembered: BTreeMap<ViewKey, Remembered> = BTreeMap::new();
        let mut last_full = None::<Instant>;
        let mut retry_at: BTreeMap<ViewKey, (Instant, u32)> = BTreeMap::new();
        let mut leading = false;
        let mut tick = tokio::time::interval(self.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let snapshot = self.engine.snapshot();
            if !snapshot.synced {
                continue;
            }
            let views = views(&self.engine.explain(None), &snapshot);
            update_gauges(&self.metrics, &views, &mut gauges);

            let leader = match self.elector.try_acquire_or_renew().await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election failed; not writing status this round");
                    false
                }
            };
            if leader != leading {
                tracing::info!(
                    identity = self.elector.identity(),
                    leader,
                    "status writer leadership changed"
                );
                leading = leader;
                last_written.clear();
                remembered.clear();
            }
            if !leader {
                continue;
            }
            let full = last_full.is_none_or(|t| t.elapsed() >= self.interval);
            let now = Instant::now();
            for v in &views {
                let key = (v.namespace.clone(), v.kind, v.name.clone());
                let changed = last_written.get(&key) != Some(&v.desired);
                let due = retry_at.get(&key).is_none_or(|(at, _)| now >= *at);
                if !(full || changed) || !due {
                    continue;
                }
                let result = self.write(&recorder, v, &mut remembered).await;
                self.metrics
                    .status_writes
                    .get_or_create(&ResultLabels {
                        result: if result.is_ok() { "ok" } else { "error" }.into(),
                    })
                    .inc();
                match result {
                    Ok(()) => {
                        last_written.insert(key.clone(), v.desired);
                        retry_at.remove(&key);
                    }
                    Err(e) => {
                        let attempts = retry_at.get(&key).map_or(0, |(_, n)| *n) + 1;
                        let backoff = Duration::from_secs(1 << attempts.min(5)).min(self.interval);
                        tracing::warn!(namespace = %v.namespace, variant = %v.name, error = %e, retry_in = ?backoff, "status write failed");
                        retry_at.insert(key, (now + backoff, attempts));
                    }
                }
            }
            if full {
                last_full = Some(now);
            }
            let live: BTreeSet<ViewKey> = views
                .iter()
                .map(|v| (v.namespace.clone(), v.kind, v.name.clone()))
                .collect();
            last_written.retain(|k, _| live.contains(k));
            retry_at.retain(|k, _| live.contains(k));
            remembered.retain(|k, _| live.contains(k));
        }
    }

    /// A VariantAutoscaling gets its status (server-side apply) and an Event on a change; an annotated
    /// HPA or ScaledObject has no status of ours, so it gets the Event alone.
    async fn write(
        &self,
        recorder: &Recorder,
        v: &VariantView,
        remembered: &mut BTreeMap<ViewKey, Remembered>,
    ) -> Result<(), kube::Error> {
        let (previous_desired, previous_message, uid) = if v.kind == SourceKind::VariantAutoscaling
        {
            let api: Api<VariantAutoscaling> = Api::namespaced(self.client.clone(), &v.namespace);
            // Re-read, as WVA does: the VA may be gone, and conditions keep their transition times.
            let Some(current) = api.get_opt(&v.name).await? else {
                return Ok(());
            };
            let status = current.status.clone().unwrap_or_default();
            let existing = status.conditions.clone().unwrap_or_default();
            let previous_desired = status
                .desired_optimized_alloc
                .as_ref()
                .and_then(|d| d["numReplicas"].as_i64());
            let previous_message = existing
                .iter()
                .find(|c| c["type"] == "OptimizationReady")
                .and_then(|c| c["message"].as_str())
                .map(str::to_string);
            let body = status_patch(v, &existing, Time(jiff::Timestamp::now()));
            api.patch_status(
                &v.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await?;
            (previous_desired, previous_message, current.metadata.uid)
        } else {
            let key = (v.namespace.clone(), v.kind, v.name.clone());
            let before = remembered.insert(
                key,
                Remembered {
                    desired: v.desired,
                    message: v.optimization.message.clone(),
                },
            );
            (
                before.as_ref().and_then(|b| b.desired),
                before.map(|b| b.message),
                v.uid.clone(),
            )
        };
        if let Some(event) = event_for(v, previous_desired, previous_message.as_deref()) {
            let reference = ObjectReference {
                api_version: Some(v.kind.api_version().into()),
                kind: Some(v.kind.as_str().into()),
                name: Some(v.name.clone()),
                namespace: Some(v.namespace.clone()),
                uid,
                ..Default::default()
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(variant = %v.name, kind = %v.kind, error = %e, "recording an event failed");
            }
        }
        Ok(())
    }
}

/// A view's identity: namespace, declaring kind, name.
type ViewKey = (String, SourceKind, String);

/// The last decision shown for an annotated object.
struct Remembered {
    desired: Option<i64>,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(rfc3339: &str) -> Time {
        Time(rfc3339.parse().unwrap())
    }

    /// The patch as the API server receives it.
    fn patch(v: &VariantView, existing: &[Value], now: &str) -> Value {
        serde_json::to_value(status_patch(v, existing, at(now))).unwrap()
    }

    fn view(desired: Option<i64>) -> VariantView {
        VariantView {
            kind: SourceKind::VariantAutoscaling,
            uid: None,
            namespace: "ns".into(),
            name: "v".into(),
            accelerator: Some("H100".into()),
            spec_replicas: 2,
            ready_replicas: 2,
            cost: 10.0,
            desired,
            desired_reason: Some(TargetReason::ScaleUp),
            message: "scale up (cheapest variant, cost 10): avg spare KV 0.040 < trigger 0.1"
                .into(),
            metrics: cond(true, "MetricsFound", "fresh samples from 2/2 ready pods"),
            optimization: cond(true, "OptimizationSucceeded", "scale up"),
            target_resolved: cond(true, "TargetFound", "Deployment v"),
            load: None,
            kv_cache_usage: Some(0.9),
            queue_length: Some(6.0),
        }
    }

    #[test]
    fn patch_shape_is_status_only_and_keeps_transition_times() {
        let existing = vec![
            json!({"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        ];
        let p = patch(&view(Some(3)), &existing, "2026-11-29T00:00:00Z");
        assert_eq!(p["apiVersion"], "llmd.ai/v1alpha1");
        assert_eq!(p["metadata"], json!({"name": "v", "namespace": "ns"}));
        assert!(p.get("spec").is_none(), "never writes the spec");
        assert_eq!(
            p["status"]["desiredOptimizedAlloc"],
            json!({"numReplicas": 3, "accelerator": "H100", "lastRunTime": "2026-11-29T00:00:00Z"})
        );
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            conds[0]["lastTransitionTime"], "2026-01-01T00:00:00Z",
            "unchanged status keeps its transition time"
        );
        assert_eq!(conds[1]["type"], "OptimizationReady");
        assert_eq!(conds[1]["lastTransitionTime"], "2026-11-29T00:00:00Z");
        assert!(
            p["status"].get("currentAlloc").is_none(),
            "no load figures, no invented currentAlloc"
        );

        let mut with_load = view(Some(3));
        with_load.load = Some(crate::sources::LoadFigures {
            arrival_rate: 120.0,
            avg_input_tokens: 100.0,
            avg_output_tokens: 50.0,
            ttft_average: 20.0,
            itl_average: 7.5,
            age: Duration::ZERO,
        });
        let p = patch(&with_load, &[], "2026-11-29T00:00:00Z");
        assert_eq!(p["status"]["currentAlloc"]["variantCost"], "20.00");
        assert_eq!(p["status"]["currentAlloc"]["load"]["arrivalRate"], "120.00");

        // No decision: conditions only, the last desiredOptimizedAlloc stays as it was.
        let p = patch(&view(None), &[], "2026-11-29T00:00:00Z");
        assert!(p["status"].get("desiredOptimizedAlloc").is_none());
        // A one-letter accelerator would fail WVA's CRD validation: skipped, like WVA.
        let mut short = view(Some(3));
        short.accelerator = Some("X".into());
        assert!(patch(&short, &[], "2026-11-29T00:00:00Z")["status"]
            .get("desiredOptimizedAlloc")
            .is_none());
    }

    #[test]
    fn every_variant_at_max_is_a_warning_once() {
        let mut v = view(Some(3));
        v.desired_reason = Some(TargetReason::ScaleUpBlocked);
        v.message = "scale-up needed (…) but no variant can take it: every variant with replicas is at its maxReplicas: v (3/3)".into();
        v.optimization = cond(true, "OptimizationSucceeded", v.message.clone());
        let e = event_for(&v, Some(3), None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("MaxReplicasReached", EventType::Warning)
        );
        assert!(
            event_for(&v, Some(3), Some(v.message.as_str())).is_none(),
            "once per change"
        );
    }

    #[test]
    fn gauges_follow_views_and_disappear_with_the_variant() {
        let metrics = Metrics::new();
        let mut known = GaugeSeries::default();
        let mut other = view(Some(1));
        other.name = "w".into();
        update_gauges(&metrics, &[view(Some(3)), other], &mut known);
        let text = metrics.encode();
        assert!(text.contains(r#"inferno_desired_replicas{variant_name="v",namespace="ns",accelerator_type="H100"} 3.0"#), "{text}");
        assert!(
            text.contains(
                r#"wva_desired_ratio{variant_name="v",namespace="ns",accelerator_type="H100"} 1.5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"variant_name="w""#));
        update_gauges(&metrics, &[view(Some(2))], &mut known);
        let text = metrics.encode();
        assert!(
            !text.contains(r#"variant_name="w""#),
            "a variant that is gone leaves no series: {text}"
        );
        assert!(text.contains(r#"inferno_desired_replicas{variant_name="v",namespace="ns",accelerator_type="H100"} 2.0"#));
        // The decision's inputs and reason, for alerts and the dashboard; a changed reason replaces the old.
        assert!(text.contains(r#"wva_metrics_server_variant_kv_cache_usage{variant_name="v",namespace="ns",accelerator_type="H100"} 0.9"#), "{text}");
        assert!(text.contains(r#"wva_metrics_server_variant_queue_length{variant_name="v",namespace="ns",accelerator_type="H100"} 6.0"#));
        assert!(text.contains(r#"wva_metrics_server_variant_decision{variant_name="v",namespace="ns",reason="scaleUp"} 1"#), "{text}");
        let mut blocked = view(Some(2));
        blocked.desired_reason = Some(TargetReason::ScaleUpBlocked);
        update_gauges(&metrics, &[blocked], &mut known);
        let text = metrics.encode();
        assert!(text.contains(r#"reason="scaleUpBlocked"} 1"#));
        assert!(!text.contains(r#"reason="scaleUp"}"#), "{text}");
    }

    #[test]
    fn events_on_change_only() {
        let e = event_for(&view(Some(3)), Some(2), None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("ScaleUpRecommended", EventType::Normal)
        );
        assert!(e
            .note
            .unwrap()
            .starts_with("desired replicas 2 → 3: scale up"));
        assert_eq!(
            event_for(&view(Some(1)), Some(2), None).unwrap().reason,
            "ScaleDownRecommended"
        );
        let mut zero = view(Some(0));
        zero.desired_reason = Some(TargetReason::ScaleToZero);
        assert_eq!(
            event_for(&zero, Some(1), None).unwrap().reason,
            "ScaleToZeroRecommended"
        );
        let mut back = view(Some(1));
        back.desired_reason = Some(TargetReason::ScaleFromZero);
        assert_eq!(
            event_for(&back, Some(0), None).unwrap().reason,
            "ScaleFromZeroRecommended"
        );
        assert!(event_for(&view(Some(2)), Some(2), None).is_none());
        assert!(
            event_for(&view(Some(2)), None, None).is_none(),
            "first write: no change to report"
        );
        let mut bad = view(None);
        bad.optimization = cond(
            false,
            "InvalidConfiguration",
            "label inference.optimization/acceleratorName is missing",
        );
        bad.target_resolved = cond(true, "TargetFound", "");
        let e = event_for(&bad, None, None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("InvalidConfiguration", EventType::Warning)
        );
        assert!(
            event_for(
                &bad,
                None,
                Some("label inference.optimization/acceleratorName is missing")
            )
            .is_none(),
            "once per change"
        );
        bad.target_resolved = cond(false, "TargetNotFound", "target Deployment ns/x not found");
        assert_eq!(
            event_for(&bad, None, None).unwrap().reason,
            "TargetNotFound"
        );
    }
}
