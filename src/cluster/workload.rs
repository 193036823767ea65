//! What a variant scales: a Deployment, or a LeaderWorkerSet (multi-host serving, where one replica is
//! a group of a leader and its workers), read as WVA v0.9 reads them (github.com/llm-d/llm-d-workload-variant-autoscaler at commit 2976e4ee,
//! `internal/utils/scaletarget`):
//! replicas and readiness, the pod template that describes a replica, the pods that are replicas (a
//! Deployment's selected pods; a LeaderWorkerSet's leaders, never its workers), and the GPUs of one
//! replica.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Serialize;

use super::crd::LeaderWorkerSet;
use super::exclusion::Exclusion;
use super::snapshot::{selector_from, template_gpus};
use crate::provider::selector::Selector;

/// The LeaderWorkerSet controller's pod labels: the set a pod belongs to, and its index in its group
/// (`0` is the leader).
pub const LWS_NAME_LABEL: &str = "leaderworkerset.sigs.k8s.io/name";
pub const LWS_WORKER_INDEX_LABEL: &str = "leaderworkerset.sigs.k8s.io/worker-index";

/// The kind of a variant's scale target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TargetKind {
    #[default]
    Deployment,
    LeaderWorkerSet,
}

impl TargetKind {
    /// `scaleTargetRef.kind`: empty or absent means Deployment (the API default).
    pub fn parse(kind: Option<&str>) -> Result<Self, Exclusion> {
        match kind.unwrap_or_default() {
            "" | "Deployment" => Ok(TargetKind::Deployment),
            "LeaderWorkerSet" => Ok(TargetKind::LeaderWorkerSet),
            other => Err(Exclusion::UnsupportedTargetKind {
                kind: other.to_string(),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Deployment => "Deployment",
            TargetKind::LeaderWorkerSet => "LeaderWorkerSet",
        }
    }
}

impl std::fmt::Display for TargetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scale target, borrowed from the store that holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Workload<'a> {
    Deployment(&'a Deployment),
    LeaderWorkerSet(&'a LeaderWorkerSet),
}

/// Scale targets by (namespace, kind, name).
pub(crate) type Workloads<'a> = BTreeMap<(&'a str, TargetKind, &'a str), Workload<'a>>;

/// Indexes Deployments and LeaderWorkerSets by (namespace, kind, name).
pub(crate) fn index<'a>(
    deployments: impl Iterator<Item = &'a Deployment>,
    leader_worker_sets: impl Iterator<Item = &'a LeaderWorkerSet>,
) -> Workloads<'a> {
    let mut out = Workloads::new();
    for d in deployments {
        if let (Some(ns), Some(name)) =
            (d.metadata.namespace.as_deref(), d.metadata.name.as_deref())
        {
            out.insert((ns, TargetKind::Deployment, name), Workload::Deployment(d));
        }
    }
    for l in leader_worker_sets {
        if let (Some(ns), Some(name)) =
            (l.metadata.namespace.as_deref(), l.metadata.name.as_deref())
        {
            out.insert(
                (ns, TargetKind::LeaderWorkerSet, name),
                Workload::LeaderWorkerSet(l),
            );
        }
    }
    out
}

impl<'a> Workload<'a> {
    /// `spec.replicas` (groups for a LeaderWorkerSet); nil means 1, the API default.
    pub fn spec_replicas(&self) -> i64 {
        i64::from(
            match self {
                Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
                Workload::LeaderWorkerSet(l) => l.spec.replicas,
            }
            .unwrap_or(1),
        )
    }

    /// `status.readyReplicas` (ready groups for a LeaderWorkerSet).
    pub fn ready_replicas(&self) -> i64 {
        i64::from(match self {
            Workload::Deployment(d) => d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            Workload::LeaderWorkerSet(l) => l.status.as_ref().map_or(0, |s| s.ready_replicas),
        })
    }

    /// The template of a replica's serving pod: the Deployment's; a LeaderWorkerSet's leader
    /// template, else its worker template (the leader then runs it).
    pub fn template(&self) -> Option<&'a PodTemplateSpec> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
            Workload::LeaderWorkerSet(l) => {
                let t = &l.spec.leader_worker_template;
                Some(t.leader_template.as_ref().unwrap_or(&t.worker_template))
            }
        }
    }

    /// The pods that are replicas: a Deployment's selected pods; a LeaderWorkerSet's leaders (what
    /// its scale subresource's selector, `status.hpaPodSelector`, selects). Workers serve no page of
    /// their own: a group is one replica.
    pub fn pod_selector(&self, name: &str) -> Result<Selector, Exclusion> {
        match self {
            Workload::Deployment(d) => match d.spec.as_ref().map(|s| selector_from(&s.selector)) {
                Some(Ok(s)) if !s.is_empty() => Ok(s),
                Some(Err(why)) => Err(Exclusion::BadSelector {
                    deployment: name.to_string(),
                    why,
                }),
                _ => Err(Exclusion::NoSelector {
                    deployment: name.to_string(),
                }),
            },
            Workload::LeaderWorkerSet(_) => {
                let leaders = LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        (LWS_NAME_LABEL.to_string(), name.to_string()),
                        (LWS_WORKER_INDEX_LABEL.to_string(), "0".to_string()),
                    ])),
                    ..Default::default()
                };
                selector_from(&leaders).map_err(|why| Exclusion::BadSelector {
                    deployment: name.to_string(),
                    why,
                })
            }
        }
    }

    /// GPUs of one replica: the template's GPU requests (limits where a container requests none); a
    /// LeaderWorkerSet's group is its leader's GPUs + (size − 1) × a worker's. 0 counts as 1, as in WVA.
    /// WVA counts a leader without a template of its own as 0 GPUs; it runs the worker template, so
    /// here it counts the worker's.
    pub fn gpus_per_replica(&self) -> i64 {
        let gpus = match self {
            Workload::Deployment(_) => template_gpus(self.template()),
            Workload::LeaderWorkerSet(l) => {
                let t = &l.spec.leader_worker_template;
                let size = i64::from(t.size.unwrap_or(1).max(1));
                let worker = template_gpus(Some(&t.worker_template));
                let leader = t
                    .leader_template
                    .as_ref()
                    .map_or(worker, |lt| template_gpus(Some(lt)));
                leader.saturating_add((size - 1).saturating_mul(worker))
            }
        };
        if gpus > 0 {
            gpus
        } else {
            1
        }
    }

    /// The pod labels of a replica (an InferencePool selects on them).
    pub fn pod_labels(&self) -> Option<&'a BTreeMap<String, String>> {
        self.template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lws(template: serde_json::Value) -> LeaderWorkerSet {
        serde_json::from_value(json!({
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": "big", "namespace": "ns"},
            "spec": {"replicas": 2, "leaderWorkerTemplate": template},
            "status": {"replicas": 2, "readyReplicas": 1, "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=big,leaderworkerset.sigs.k8s.io/worker-index=0"}
        }))
        .unwrap()
    }

    fn gpus(n: u32) -> serde_json::Value {
        json!({"spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": n.to_string()}}}]}})
    }

    /// WVA v0.9's LeaderWorkerSet reading (its `scaletarget/lws.go` and `lws_test.go`): groups are
    /// replicas, leader + (size − 1) workers' GPUs per group, the leader template describes the
    /// replica, and only leaders are its pods.
    #[test]
    fn leader_worker_sets_as_wva_reads_them() {
        let with_leader =
            lws(json!({"size": 4, "leaderTemplate": gpus(1), "workerTemplate": gpus(8)}));
        let w = Workload::LeaderWorkerSet(&with_leader);
        assert_eq!((w.spec_replicas(), w.ready_replicas()), (2, 1));
        assert_eq!(w.gpus_per_replica(), 1 + 3 * 8);
        // Without a leader template the leader runs the worker's: 3 × 2 GPUs (WVA counts 4).
        let no_leader = lws(json!({"size": 3, "workerTemplate": gpus(2)}));
        assert_eq!(Workload::LeaderWorkerSet(&no_leader).gpus_per_replica(), 6);
        // No size: one pod per group; no GPUs: 1.
        let single = lws(json!({"workerTemplate": {"spec": {"containers": [{"name": "c"}]}}}));
        assert_eq!(Workload::LeaderWorkerSet(&single).gpus_per_replica(), 1);
        // Leaders only.
        let sel = w.pod_selector("big").unwrap();
        let labels = |idx: &str| {
            BTreeMap::from([
                (LWS_NAME_LABEL.to_string(), "big".to_string()),
                (LWS_WORKER_INDEX_LABEL.to_string(), idx.to_string()),
            ])
        };
        assert!(sel.matches(&labels("0")));
        assert!(!sel.matches(&labels("1")));
        assert_eq!(
            TargetKind::parse(Some("LeaderWorkerSet")).unwrap(),
            TargetKind::LeaderWorkerSet
        );
        assert_eq!(TargetKind::parse(None).unwrap(), TargetKind::Deployment);
        assert!(matches!(
            TargetKind::parse(Some("StatefulSet")),
            Err(Exclusion::UnsupportedTargetKind { .. })
        ));
    }
}
