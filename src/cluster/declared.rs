//! What declares a variant, before the join: a VariantAutoscaling, or (as WVA v0.8 discovers them) a
//! HorizontalPodAutoscaler or KEDA ScaledObject annotated `llm-d.ai/managed: "true"`. Also the index of
//! autoscalers by target Deployment, whose replica bounds every variant of that Deployment takes.
//!
//! Pure functions of the objects; `snapshot` joins the result with Deployments and Pods.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::crd::{
    parse_cost, ScaledObject, VariantAutoscaling, DEFAULT_VARIANT_COST, KEDA_DEFAULT_MAX_REPLICAS,
    KEDA_DEFAULT_MIN_REPLICAS,
};
use super::exclusion::Exclusion;
use super::snapshot::Bounds;
use super::workload::TargetKind;
use crate::error::MAX_MODEL_ID_BYTES;

/// Opt-in: objects without it (or with `"false"`) are not variants.
pub const MANAGED_ANNOTATION: &str = "llm-d.ai/managed";
/// The model ID, the role of a VariantAutoscaling's `spec.modelID`.
pub const MODEL_ID_ANNOTATION: &str = "llm-d.ai/model-id";
/// Cost per replica, parsed as `spec.variantCost` is.
pub const VARIANT_COST_ANNOTATION: &str = "llm-d.ai/variant-cost";
/// The HPA `minReplicas` default.
const HPA_DEFAULT_MIN_REPLICAS: i32 = 1;

/// The kind of object a variant comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SourceKind {
    #[default]
    VariantAutoscaling,
    HorizontalPodAutoscaler,
    ScaledObject,
}

impl SourceKind {
    pub fn api_version(self) -> &'static str {
        match self {
            SourceKind::VariantAutoscaling => "llmd.ai/v1alpha1",
            SourceKind::HorizontalPodAutoscaler => "autoscaling/v2",
            SourceKind::ScaledObject => "keda.sh/v1alpha1",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::VariantAutoscaling => "VariantAutoscaling",
            SourceKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            SourceKind::ScaledObject => "ScaledObject",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A variant as its object declares it: identity always, and either the model's cost and target
/// Deployment or why the declaration itself is unusable.
pub(crate) struct Declared<'a> {
    pub kind: SourceKind,
    pub meta: &'a ObjectMeta,
    pub model_id: String,
    pub spec: Result<Spec, Exclusion>,
}

pub(crate) struct Spec {
    pub cost: f64,
    pub target_kind: TargetKind,
    /// The scale target's name (a Deployment's or a LeaderWorkerSet's).
    pub deployment: String,
}

impl<'a> Declared<'a> {
    pub fn from_va(va: &'a VariantAutoscaling) -> Self {
        let spec = if va.spec.model_id.is_empty() {
            Err(Exclusion::EmptyModel)
        } else if va.spec.model_id.len() > MAX_MODEL_ID_BYTES {
            Err(Exclusion::ModelIdTooLong {
                bytes: va.spec.model_id.len(),
            })
        } else {
            va.cost().and_then(|cost| {
                va.scale_target().map(|(target_kind, deployment)| Spec {
                    cost,
                    target_kind,
                    deployment,
                })
            })
        };
        Declared {
            kind: SourceKind::VariantAutoscaling,
            meta: &va.metadata,
            model_id: bounded_model_id(&va.spec.model_id),
            spec,
        }
    }

    /// `None` when the HPA is not managed (no annotation, `"false"`, or created by KEDA for a ScaledObject).
    pub fn from_hpa(h: &'a HorizontalPodAutoscaler) -> Option<Self> {
        if owned_by_scaled_object(&h.metadata) {
            return None;
        }
        let target = h.spec.as_ref().map(|s| {
            (
                Some(s.scale_target_ref.kind.as_str()),
                s.scale_target_ref.name.as_str(),
            )
        });
        annotated(SourceKind::HorizontalPodAutoscaler, &h.metadata, target)
    }

    pub fn from_scaled_object(so: &'a ScaledObject) -> Option<Self> {
        let r = &so.spec.scale_target_ref;
        annotated(
            SourceKind::ScaledObject,
            &so.metadata,
            Some((r.kind.as_deref(), r.name.as_str())),
        )
    }
}

fn annotated<'a>(
    kind: SourceKind,
    meta: &'a ObjectMeta,
    target: Option<(Option<&str>, &str)>,
) -> Option<Declared<'a>> {
    let annotations = meta.annotations.as_ref()?;
    let managed = annotations.get(MANAGED_ANNOTATION)?;
    let model_id = annotations
        .get(MODEL_ID_ANNOTATION)
        .map(|m| bounded_model_id(m))
        .unwrap_or_default();
    let spec = match managed.as_str() {
        "true" => annotated_spec(annotations, target),
        "false" => return None,
        other => Err(Exclusion::BadAnnotation {
            annotation: MANAGED_ANNOTATION,
            value: other.to_string(),
            why: "must be \"true\" or \"false\"".into(),
        }),
    };
    Some(Declared {
        kind,
        meta,
        model_id,
        spec,
    })
}

fn annotated_spec(
    annotations: &BTreeMap<String, String>,
    target: Option<(Option<&str>, &str)>,
) -> Result<Spec, Exclusion> {
    match annotations.get(MODEL_ID_ANNOTATION).map(|m| m.trim()) {
        None => {
            return Err(Exclusion::MissingAnnotation {
                annotation: MODEL_ID_ANNOTATION,
            })
        }
        Some("") => {
            return Err(Exclusion::EmptyAnnotation {
                annotation: MODEL_ID_ANNOTATION,
            })
        }
        Some(m) if m.len() > MAX_MODEL_ID_BYTES => {
            return Err(Exclusion::ModelIdTooLong { bytes: m.len() })
        }
        Some(_) => {}
    }
    let cost = match annotations.get(VARIANT_COST_ANNOTATION).map(String::as_str) {
        // WVA v0.8 and later default an annotated object's cost to 10.0, as a VariantAutoscaling's
        // (`internal/annotations/annotations.go`).
        None | Some("") => DEFAULT_VARIANT_COST,
        Some(v) => parse_cost(v).map_err(|why| Exclusion::BadAnnotation {
            annotation: VARIANT_COST_ANNOTATION,
            value: v.to_string(),
            why,
        })?,
    };
    let Some((kind, name)) = target else {
        return Err(Exclusion::EmptyTargetName);
    };
    let target_kind = TargetKind::parse(kind)?;
    if name.is_empty() {
        return Err(Exclusion::EmptyTargetName);
    }
    Ok(Spec {
        cost,
        target_kind,
        deployment: name.to_string(),
    })
}

/// The model ID a declaration is reported under: whole when it is within the bound, else cut (its
/// declaration is then excluded with [`Exclusion::ModelIdTooLong`]), so that no copy of it is large.
fn bounded_model_id(id: &str) -> String {
    crate::error::cap(id, MAX_MODEL_ID_BYTES).into_owned()
}

/// KEDA creates an HPA (`keda-hpa-<name>`) for every ScaledObject; the ScaledObject is the autoscaler.
fn owned_by_scaled_object(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "ScaledObject" && o.api_version.starts_with("keda.sh/"))
}

/// One autoscaler of a Deployment and the bounds it enforces.
pub(crate) struct Autoscaler<'a> {
    pub kind: SourceKind,
    pub name: &'a str,
    pub min_replicas: i64,
    pub max_replicas: i64,
}

/// Autoscalers by their scale target (namespace, kind, name): every HPA not created by KEDA, and
/// every ScaledObject.
pub(crate) type Autoscalers<'a> = BTreeMap<(&'a str, TargetKind, &'a str), Vec<Autoscaler<'a>>>;

/// Every HPA not created by KEDA and every ScaledObject, by the Deployment or LeaderWorkerSet it scales.
pub(crate) fn autoscalers<'a>(
    hpas: impl Iterator<Item = &'a HorizontalPodAutoscaler>,
    scaled_objects: impl Iterator<Item = &'a ScaledObject>,
) -> Autoscalers<'a> {
    let mut out = Autoscalers::new();
    for h in hpas {
        let (Some(ns), Some(name), Some(spec)) = (
            h.metadata.namespace.as_deref(),
            h.metadata.name.as_deref(),
            h.spec.as_ref(),
        ) else {
            continue;
        };
        let Ok(kind) = TargetKind::parse(Some(spec.scale_target_ref.kind.as_str())) else {
            continue;
        };
        if owned_by_scaled_object(&h.metadata) {
            continue;
        }
        out.entry((ns, kind, spec.scale_target_ref.name.as_str()))
            .or_default()
            .push(Autoscaler {
                kind: SourceKind::HorizontalPodAutoscaler,
                name,
                min_replicas: i64::from(spec.min_replicas.unwrap_or(HPA_DEFAULT_MIN_REPLICAS)),
                max_replicas: i64::from(spec.max_replicas),
            });
    }
    for so in scaled_objects {
        let (Some(ns), Some(name)) = (
            so.metadata.namespace.as_deref(),
            so.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let r = &so.spec.scale_target_ref;
        let Ok(kind) = TargetKind::parse(r.kind.as_deref()) else {
            continue;
        };
        out.entry((ns, kind, r.name.as_str()))
            .or_default()
            .push(Autoscaler {
                kind: SourceKind::ScaledObject,
                name,
                min_replicas: i64::from(
                    so.spec
                        .min_replica_count
                        .unwrap_or(KEDA_DEFAULT_MIN_REPLICAS),
                ),
                max_replicas: i64::from(
                    so.spec
                        .max_replica_count
                        .unwrap_or(KEDA_DEFAULT_MAX_REPLICAS),
                ),
            });
    }
    out
}

/// The bounds of a Deployment's one autoscaler; none without one; a configuration error with two,
/// since they would fight over the Deployment.
pub(crate) fn bounds_of(found: &[Autoscaler<'_>], deployment: &str) -> Result<Bounds, Exclusion> {
    match found {
        [] => Ok(Bounds::default()),
        [a] => Ok(Bounds {
            min_replicas: a.min_replicas,
            max_replicas: Some(a.max_replicas),
            autoscaler: Some(format!("{}/{}", a.kind, a.name)),
        }),
        several => Err(Exclusion::SeveralAutoscalers {
            deployment: deployment.to_string(),
            autoscalers: several
                .iter()
                .map(|a| format!("{}/{}", a.kind, a.name))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hpa(annotations: serde_json::Value, owner: Option<&str>) -> HorizontalPodAutoscaler {
        let mut h = json!({"metadata": {"name": "h", "namespace": "ns", "annotations": annotations},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                     "maxReplicas": 4}});
        if let Some(kind) = owner {
            h["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "keda.sh/v1alpha1", "kind": kind, "name": "so", "uid": "u"}]);
        }
        serde_json::from_value(h).unwrap()
    }

    fn outcome(d: Option<Declared<'_>>) -> Option<Result<(String, f64, String), String>> {
        d.map(|d| {
            d.spec
                .map(|s| (d.model_id.clone(), s.cost, s.deployment))
                .map_err(|e| e.to_string())
        })
    }

    /// Each annotation rule, as a table: what the object says and what the join gets.
    #[test]
    fn annotations_declare_variants_or_say_why_not() {
        let ok = |m: &str, c: f64| Some(Ok((m.to_string(), c, "d".to_string())));
        let err = |s: &str| Some(Err(s.to_string()));
        let cases = [
            (json!({}), None, None),
            (json!({"llm-d.ai/model-id": "m"}), None, None),
            (json!({"llm-d.ai/managed": "false", "llm-d.ai/model-id": "m"}), None, None),
            (json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m"}), None, ok("m", 10.0)),
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m", "llm-d.ai/variant-cost": "12.5"}),
                None,
                ok("m", 12.5),
            ),
            (
                json!({"llm-d.ai/managed": "true"}),
                None,
                err("annotation llm-d.ai/model-id is missing (a managed object names its model there)"),
            ),
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": " "}),
                None,
                err("annotation llm-d.ai/model-id is empty"),
            ),
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m", "llm-d.ai/variant-cost": "cheap"}),
                None,
                err("annotation llm-d.ai/variant-cost \"cheap\": must be a non-negative decimal number like \"10\" or \"12.5\""),
            ),
            (
                json!({"llm-d.ai/managed": "yes", "llm-d.ai/model-id": "m"}),
                None,
                err("annotation llm-d.ai/managed \"yes\": must be \"true\" or \"false\""),
            ),
            // Issue 21 item 9: a 16 kB model ID is excluded with its length, not carried everywhere.
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m".repeat(16_384)}),
                None,
                err("the model ID is 16384 bytes long; at most 256 are accepted"),
            ),
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m".repeat(256)}),
                None,
                ok(&"m".repeat(256), 10.0),
            ),
            // KEDA's own HPA for a ScaledObject carries the ScaledObject's annotations; it is not a variant.
            (
                json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m"}),
                Some("ScaledObject"),
                None,
            ),
        ];
        for (annotations, owner, want) in cases {
            let h = hpa(annotations.clone(), owner);
            assert_eq!(outcome(Declared::from_hpa(&h)), want, "{annotations}");
        }
        let long = hpa(
            json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m".repeat(16_384)}),
            None,
        );
        let d = Declared::from_hpa(&long).unwrap();
        assert!(d.model_id.len() < 400, "{} bytes kept", d.model_id.len());
    }

    #[test]
    fn scaled_objects_default_to_deployments_and_keda_bounds() {
        let so: ScaledObject = serde_json::from_value(json!({
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": "so", "namespace": "ns",
                         "annotations": {"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m"}},
            "spec": {"scaleTargetRef": {"name": "d"},
                     "triggers": [{"type": "external", "metadata": {"scalerAddress": "x:1"}}]}}))
        .unwrap();
        assert_eq!(
            outcome(Declared::from_scaled_object(&so)),
            Some(Ok(("m".into(), 10.0, "d".into())))
        );
        let keda_hpa = hpa(json!({}), Some("ScaledObject"));
        let index = autoscalers([&keda_hpa].into_iter(), [&so].into_iter());
        let b = bounds_of(&index[&("ns", TargetKind::Deployment, "d")], "d").unwrap();
        assert_eq!(
            b,
            Bounds {
                min_replicas: 0,
                max_replicas: Some(100),
                autoscaler: Some("ScaledObject/so".into())
            }
        );
        let mut stateful = so.clone();
        stateful.spec.scale_target_ref.kind = Some("StatefulSet".into());
        assert_eq!(
            outcome(Declared::from_scaled_object(&stateful)),
            Some(Err(
                "spec.scaleTargetRef.kind \"StatefulSet\" is not supported (only Deployment and LeaderWorkerSet)"
                    .into()
            ))
        );
    }
}
