//! The VariantAutoscaling CRD (`llmd.ai/v1alpha1`), as WVA defines it. We read the spec fields of v0.4.1
//! (`modelID`, `variantCost`, `modelProfile`) and v0.5 (`scaleTargetRef`), and write only `status`.
//! The CRD itself belongs to WVA; `manifests/crd-variantautoscalings.yaml` ships a compatible schema
//! and a test keeps it and these types in agreement.

use std::collections::BTreeMap;

use super::exclusion::{Exclusion, UnresolvedAccelerator};
use super::workload::TargetKind;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label carrying the variant's accelerator (required by WVA v0.4.1 and v0.5).
pub const ACCELERATOR_LABEL: &str = "inference.optimization/acceleratorName";
/// WVA's default `spec.variantCost`.
pub(crate) const DEFAULT_VARIANT_COST: f64 = 10.0;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[kube(
    group = "llmd.ai",
    version = "v1alpha1",
    kind = "VariantAutoscaling",
    plural = "variantautoscalings",
    shortname = "va",
    namespaced,
    status = "VariantAutoscalingStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingSpec {
    /// Model served by the variant; equals vLLM's `model_name` label.
    #[serde(rename = "modelID")]
    pub model_id: String,
    /// Cost per replica as a decimal string (default "10.0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_cost: Option<String>,
    /// v0.5+: the Deployment this VA scales. Absent in v0.4.1, where the Deployment has the VA's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,
    /// v0.4.1 model-based optimizer profile; kept so such objects round-trip, unused here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub model_profile: Option<serde_json::Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTargetRef {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
}

/// Status as WVA writes it; every field optional so v0.4.1 and v0.5 objects both parse.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct VariantAutoscalingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub current_alloc: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub desired_optimized_alloc: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub actuation: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<serde_json::Value>>")]
    pub conditions: Option<Vec<serde_json::Value>>,
}

impl VariantAutoscaling {
    /// The target Deployment's name: `spec.scaleTargetRef.name` (v0.5) or the VA's own name (v0.4.1).
    /// The scale target: `spec.scaleTargetRef`, else (WVA v0.4.1) the Deployment named like the VA.
    pub fn scale_target(&self) -> Result<(TargetKind, String), Exclusion> {
        match &self.spec.scale_target_ref {
            Some(r) => {
                let kind = TargetKind::parse(r.kind.as_deref())?;
                if r.name.is_empty() {
                    return Err(Exclusion::EmptyTargetName);
                }
                Ok((kind, r.name.clone()))
            }
            None => self
                .metadata
                .name
                .clone()
                .map(|n| (TargetKind::Deployment, n))
                .ok_or(Exclusion::NoName),
        }
    }

    pub fn accelerator(&self) -> Result<String, UnresolvedAccelerator> {
        labelled_accelerator(&self.metadata)
    }

    /// `spec.variantCost` as a number. Unlike WVA (which silently uses 10.0), an unparsable cost is an error:
    /// a variant ranked at the wrong cost would take scale-ups meant for another.
    pub fn cost(&self) -> Result<f64, Exclusion> {
        match self.spec.variant_cost.as_deref() {
            None | Some("") => Ok(DEFAULT_VARIANT_COST),
            Some(s) => parse_cost(s).map_err(|why| Exclusion::BadCost {
                value: s.to_string(),
                why,
            }),
        }
    }
}

/// LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`, multi-host serving), as far as this server reads it:
/// a replica is a group of `size` pods (a leader and `size − 1` workers); `spec.replicas` counts groups.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "leaderworkerset.x-k8s.io",
    version = "v1",
    kind = "LeaderWorkerSet",
    plural = "leaderworkersets",
    namespaced,
    schema = "disabled",
    status = "LeaderWorkerSetStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerSetSpec {
    /// Groups; nil means 1 (the API default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub leader_worker_template: LeaderWorkerTemplate,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerTemplate {
    /// The leader's template; without one the leader runs the worker template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>,
    #[serde(default)]
    pub worker_template: k8s_openapi::api::core::v1::PodTemplateSpec,
    /// Pods per group, leader included; nil means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaderWorkerSetStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// The scale subresource's selector: the set's leader pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_pod_selector: Option<String>,
}

/// KEDA's ScaledObject (`keda.sh/v1alpha1`), as far as this server reads it: the target, the replica
/// bounds, and the triggers. The CRD belongs to KEDA; the watch on it runs only while it is installed.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "keda.sh",
    version = "v1alpha1",
    kind = "ScaledObject",
    plural = "scaledobjects",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    /// KEDA's default is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replica_count: Option<i32>,
    /// KEDA's default is 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replica_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<serde_json::Value>,
}

/// Gateway API Inference Extension's InferencePool (`inference.networking.k8s.io/v1`), as far as scale
/// from zero reads it: which pods it selects and its endpoint picker (EPP). The CRD belongs to the
/// inference extension; the watch on it runs only while it is installed.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "inference.networking.k8s.io",
    version = "v1",
    kind = "InferencePool",
    plural = "inferencepools",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct InferencePoolSpec {
    #[serde(default)]
    pub selector: PoolSelector,
    #[serde(default)]
    pub endpoint_picker_ref: EndpointPickerRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PoolSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPickerRef {
    #[serde(default)]
    pub name: String,
    /// `Service` when unset (the only kind this server follows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// KEDA's `minReplicaCount` default.
pub(crate) const KEDA_DEFAULT_MIN_REPLICAS: i32 = 0;
/// KEDA's `maxReplicaCount` default.
pub(crate) const KEDA_DEFAULT_MAX_REPLICAS: i32 = 100;

/// The [`ACCELERATOR_LABEL`] of a declaring object (a VariantAutoscaling, or an annotated HPA or
/// ScaledObject, whose labels WVA v0.8 copies onto its variant).
pub(crate) fn labelled_accelerator(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Result<String, UnresolvedAccelerator> {
    match meta.labels.as_ref().and_then(|l| l.get(ACCELERATOR_LABEL)) {
        Some(a) if !a.is_empty() => Ok(a.clone()),
        Some(_) => Err(UnresolvedAccelerator::Empty {
            label: ACCELERATOR_LABEL,
        }),
        None => Err(UnresolvedAccelerator::Missing {
            label: ACCELERATOR_LABEL,
        }),
    }
}

/// WVA's pattern `^\d+(\.\d+)?$`, parsed as f64.
pub(crate) fn parse_cost(s: &str) -> Result<f64, String> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err("must be a non-negative decimal number like \"10\" or \"12.5\"".to_string());
    }
    s.parse::<f64>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_pattern() {
        for (s, ok) in [
            ("10", true),
            ("10.0", true),
            ("0.5", true),
            ("-1", false),
            ("1e3", false),
            ("abc", false),
            (".5", false),
            ("5.", false),
        ] {
            assert_eq!(parse_cost(s).is_ok(), ok, "{s}");
        }
    }

    #[test]
    fn v041_and_v05_objects_parse() {
        let v041: VariantAutoscaling = serde_json::from_value(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": "llama-decode", "namespace": "ns", "labels": {ACCELERATOR_LABEL: "H100"}},
            "spec": {"modelID": "meta/llama", "variantCost": "20.5",
                     "modelProfile": {"accelerators": [{"acc": "H100", "accCount": 1, "maxBatchSize": 256}]}},
            "status": {"currentAlloc": {"accelerator": "H100", "numReplicas": 2}}
        }))
        .unwrap();
        assert_eq!(
            v041.scale_target(),
            Ok((TargetKind::Deployment, "llama-decode".to_string()))
        );
        assert_eq!(v041.cost(), Ok(20.5));
        assert_eq!(v041.accelerator(), Ok("H100".to_string()));

        let v05: VariantAutoscaling = serde_json::from_value(serde_json::json!({
            "apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": "llama-va", "namespace": "ns"},
            "spec": {"modelID": "meta/llama", "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-decode"}}
        }))
        .unwrap();
        assert_eq!(
            v05.scale_target(),
            Ok((TargetKind::Deployment, "llama-decode".to_string()))
        );
        assert_eq!(v05.cost(), Ok(DEFAULT_VARIANT_COST));
        assert_eq!(
            v05.accelerator(),
            Err(UnresolvedAccelerator::Missing {
                label: ACCELERATOR_LABEL
            })
        );
    }
}
