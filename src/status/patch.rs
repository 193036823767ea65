//! The server-side-apply body of a VariantAutoscaling's status subresource (never its spec), in WVA's shape.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as MetaCondition, Time};
use serde::Serialize;
use serde_json::Value;

use super::view::{Condition, VariantView};
use super::*;

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

pub(super) fn truncate(s: &str, max: usize) -> String {
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
