//! Why a declared variant (a VariantAutoscaling, an annotated HPA or ScaledObject) cannot be decided.
//! Status conditions and Events match on the variant, never on its text.

use serde::{Serialize, Serializer};
use thiserror::Error;

use crate::error::MAX_MODEL_ID_BYTES;

/// Why a VariantAutoscaling (or another variant source) is excluded from decisions.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Exclusion {
    #[error("spec.modelID is empty")]
    EmptyModel,
    /// A model ID is a name vLLM serves (`--served-model-name`), not a document: it is copied into
    /// every decision, gauge and answer, so it is bounded.
    #[error("the model ID is {bytes} bytes long; at most {MAX_MODEL_ID_BYTES} are accepted")]
    ModelIdTooLong { bytes: usize },
    #[error("spec.variantCost {value:?}: {why}")]
    BadCost { value: String, why: String },
    #[error(
        "spec.scaleTargetRef.kind {kind:?} is not supported (only Deployment and LeaderWorkerSet)"
    )]
    UnsupportedTargetKind { kind: String },
    #[error("spec.scaleTargetRef.name is empty")]
    EmptyTargetName,
    #[error("the object has no name")]
    NoName,
    #[error("target {kind} {namespace}/{name} not found")]
    TargetNotFound {
        kind: super::workload::TargetKind,
        namespace: String,
        name: String,
    },
    #[error("Deployment {deployment} has an unusable selector: {why}")]
    BadSelector { deployment: String, why: String },
    #[error("Deployment {deployment} has no pod selector")]
    NoSelector { deployment: String },
    #[error("scale target {deployment} has several autoscalers ({autoscalers}); keep one, they would fight over its replicas")]
    SeveralAutoscalers {
        deployment: String,
        autoscalers: String,
    },
    #[error("annotation {annotation} is missing (a managed object names its model there)")]
    MissingAnnotation { annotation: &'static str },
    #[error("annotation {annotation} is empty")]
    EmptyAnnotation { annotation: &'static str },
    #[error("annotation {annotation} {value:?}: {why}")]
    BadAnnotation {
        annotation: &'static str,
        value: String,
        why: String,
    },
    #[error("namespace {namespace} is annotated {annotation}=\"true\"; its variants are left to another controller")]
    NamespaceExcluded {
        namespace: String,
        annotation: &'static str,
    },
}

/// Why a variant's accelerator could not be resolved. Not an exclusion: as WVA v0.8 and later, the variant
/// is decided and served with `accelerator_type="unresolved"` ([`UNRESOLVED_ACCELERATOR`]), and a Warning
/// Event `AcceleratorNotResolved` says why ("the signal must never be withheld").
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnresolvedAccelerator {
    #[error("label {label} is missing and the pod template selects no GPU product (nodeSelector or required nodeAffinity on nvidia.com/gpu.product, amd.com/gpu.product-name or cloud.google.com/gke-accelerator)")]
    Missing { label: &'static str },
    #[error("label {label} is empty")]
    Empty { label: &'static str },
}

/// The `accelerator_type` of a variant whose accelerator could not be resolved (WVA v0.8 and later).
pub const UNRESOLVED_ACCELERATOR: &str = "unresolved";

impl Serialize for UnresolvedAccelerator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Exclusion {
    /// Whether the variant's scale target could be resolved (the `TargetResolved` condition).
    pub(crate) fn target_resolved(&self) -> bool {
        !matches!(
            self,
            Exclusion::UnsupportedTargetKind { .. }
                | Exclusion::EmptyTargetName
                | Exclusion::NoName
                | Exclusion::TargetNotFound { .. }
        )
    }

    /// Whether the object is someone else's (an excluded namespace): it is reported where asked
    /// about, but gets no status or Events from us.
    pub(crate) fn not_ours(&self) -> bool {
        matches!(self, Exclusion::NamespaceExcluded { .. })
    }
}

impl Serialize for Exclusion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusion_target_resolution_is_by_variant() {
        let cases = [
            (Exclusion::EmptyModel, true),
            (
                Exclusion::BadCost {
                    value: "x".into(),
                    why: "not a number".into(),
                },
                true,
            ),
            (
                Exclusion::TargetNotFound {
                    kind: super::super::workload::TargetKind::Deployment,
                    namespace: "ns".into(),
                    name: "d".into(),
                },
                false,
            ),
            (Exclusion::EmptyTargetName, false),
            (
                Exclusion::UnsupportedTargetKind {
                    kind: "StatefulSet".into(),
                },
                false,
            ),
            (
                Exclusion::NoSelector {
                    deployment: "d".into(),
                },
                true,
            ),
        ];
        for (e, resolved) in cases {
            assert_eq!(e.target_resolved(), resolved, "{e}");
        }
    }
}
