//! The cluster's GPUs by type, from its Nodes and the pods scheduled on them: the inventory the GPU
//! limiter grants scale-ups from.
//!
//! A node has GPUs of a vendor when it carries the vendor's product label (WVA v0.9,
//! github.com/llm-d/llm-d-workload-variant-autoscaler at commit 2976e4ee,
//! `internal/discovery/k8s_with_gpu_operator.go`, `internal/constants/constants.go`):
//!
//! | vendor | product label | allocatable resource |
//! |---|---|---|
//! | NVIDIA | `nvidia.com/gpu.product` | `nvidia.com/gpu` |
//! | AMD | `amd.com/gpu.product-name` | `amd.com/gpu` |
//! | Intel Gaudi | `habana.ai/product.name` | `habana.ai/gaudi` |
//! | Intel | `gpu.intel.com/product` | `gpu.intel.com/i915`, else `gpu.intel.com/xe` |
//!
//! Its GPUs are `status.allocatable` of the resource. WVA counts as used only the GPUs of the variants it
//! manages; here the used GPUs of a node are what every pod bound to it and not finished requests of the
//! resource (as the scheduler counts them: Σ of the containers, or the largest init container when more),
//! so GPUs held by anything else are not offered twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use serde::Serialize;

use crate::provider::selector::Selector;
use crate::saturation::limiter::Inventory;

/// What the limiter knows of the cluster's GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Gpus {
    /// The nodes are listed: GPUs by type.
    Known(Inventory),
    /// Not listed (yet, or not allowed): the limiter runs unlimited, as WVA does, and says why.
    Unknown { reason: String },
}

impl Default for Gpus {
    fn default() -> Self {
        Gpus::Unknown {
            reason: "the nodes have not been listed yet".into(),
        }
    }
}

/// A vendor's node label and resources, in WVA's order.
pub const GPU_VENDORS: [(&str, &str, &[&str]); 4] = [
    ("nvidia", "nvidia.com/gpu.product", &["nvidia.com/gpu"]),
    ("amd", "amd.com/gpu.product-name", &["amd.com/gpu"]),
    ("intel", "habana.ai/product.name", &["habana.ai/gaudi"]),
    (
        "intel",
        "gpu.intel.com/product",
        &["gpu.intel.com/i915", "gpu.intel.com/xe"],
    ),
];

/// One node's GPUs of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeGpus {
    pub node: String,
    pub vendor: &'static str,
    /// The product label's value, as the node says it (`NVIDIA-H100-80GB-HBM3`).
    pub product: String,
    pub resource: &'static str,
    pub allocatable: i64,
}

/// Whole GPUs in a quantity (`"8"`); anything else counts as none.
fn gpus(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i64 {
    q.0.trim().parse::<i64>().unwrap_or(0).max(0)
}

/// A node's GPUs: the first vendor whose product label it carries, with the first of its resources the
/// node has any of allocatable.
pub fn node_gpus(node: &Node) -> Option<NodeGpus> {
    let labels = node.metadata.labels.as_ref()?;
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    GPU_VENDORS.iter().find_map(|(vendor, label, resources)| {
        let product = labels.get(*label)?;
        let count = |r: &str| allocatable.and_then(|a| a.get(r)).map_or(0, gpus);
        let resource = resources
            .iter()
            .copied()
            .find(|r| count(r) > 0)
            .unwrap_or(resources[0]);
        Some(NodeGpus {
            node: node.metadata.name.clone().unwrap_or_default(),
            vendor,
            product: product.clone(),
            resource,
            allocatable: count(resource),
        })
    })
}

/// What a pod requests of a resource, as the scheduler counts it.
pub fn pod_request(pod: &Pod, resource: &str) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let of = |c: &Container| {
        let r = c.resources.as_ref();
        r.and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource))
            .or_else(|| {
                r.and_then(|r| r.limits.as_ref())
                    .and_then(|m| m.get(resource))
            })
            .map_or(0, gpus)
    };
    let containers: i64 = spec.containers.iter().map(of).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(of)
        .max()
        .unwrap_or(0);
    containers.max(init)
}

/// Whether a pod holds what it requests on its node: bound, and neither succeeded nor failed.
fn holds_resources(pod: &Pod) -> bool {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    bound && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The inventory of the nodes `selector` picks (`WVA_NODE_SELECTOR`; every node when `None`): per type,
/// their allocatable GPUs and what the pods bound to them request.
pub fn inventory(nodes: &[Arc<Node>], pods: &[Arc<Pod>], selector: Option<&Selector>) -> Inventory {
    let no_labels = BTreeMap::new();
    let picked: Vec<NodeGpus> = nodes
        .iter()
        .filter(|n| {
            selector.is_none_or(|s| s.matches(n.metadata.labels.as_ref().unwrap_or(&no_labels)))
        })
        .filter_map(|n| node_gpus(n))
        .collect();
    let by_name: BTreeMap<&str, &NodeGpus> = picked.iter().map(|g| (g.node.as_str(), g)).collect();
    let mut requested: BTreeMap<&str, i64> = BTreeMap::new();
    for p in pods.iter().filter(|p| holds_resources(p)) {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        if let Some(g) = by_name.get(node) {
            *requested.entry(g.node.as_str()).or_default() += pod_request(p, g.resource);
        }
    }
    let mut inv = Inventory::default();
    for g in &picked {
        inv.add(
            &g.product,
            g.allocatable,
            requested.get(g.node.as_str()).copied().unwrap_or(0),
        );
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::limiter::TypeGpus;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value, allocatable: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": allocatable}
            }))
            .unwrap(),
        )
    }

    fn pod(node: Option<&str>, phase: &str, gpus: &str, init: Option<&str>) -> Arc<Pod> {
        let mut p = json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"nvidia.com/gpu": gpus}}},
                {"name": "b", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
            ]},
            "status": {"phase": phase}
        });
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if let Some(i) = init {
            p["spec"]["initContainers"] =
                json!([{"name": "i", "resources": {"limits": {"nvidia.com/gpu": i}}}]);
        }
        Arc::new(serde_json::from_value(p).unwrap())
    }

    /// Each vendor's label and resource; Intel's xe when i915 has none; a node without a product label
    /// has no GPUs, whatever it allocates.
    #[test]
    fn vendors_are_read_from_their_labels() {
        let cases = [
            (
                json!({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
                json!({"nvidia.com/gpu": "8"}),
                Some(("nvidia", "nvidia.com/gpu", 8)),
            ),
            (
                json!({"amd.com/gpu.product-name": "AMD-MI300X-192G"}),
                json!({"amd.com/gpu": "4"}),
                Some(("amd", "amd.com/gpu", 4)),
            ),
            (
                json!({"habana.ai/product.name": "Intel-Gaudi-2-96GB"}),
                json!({"habana.ai/gaudi": "8"}),
                Some(("intel", "habana.ai/gaudi", 8)),
            ),
            (
                json!({"gpu.intel.com/product": "Intel-Max-1550"}),
                json!({"gpu.intel.com/i915": "0", "gpu.intel.com/xe": "2"}),
                Some(("intel", "gpu.intel.com/xe", 2)),
            ),
            (
                json!({"gpu.intel.com/product": "Intel-Max-1550"}),
                json!({"gpu.intel.com/i915": "1"}),
                Some(("intel", "gpu.intel.com/i915", 1)),
            ),
            (
                json!({"nvidia.com/gpu.product": "L4"}),
                json!({}),
                Some(("nvidia", "nvidia.com/gpu", 0)),
            ),
            (
                json!({"kubernetes.io/os": "linux"}),
                json!({"nvidia.com/gpu": "8"}),
                None,
            ),
        ];
        for (labels, allocatable, want) in cases {
            let n = node("n", labels.clone(), allocatable);
            let got = node_gpus(&n).map(|g| (g.vendor, g.resource, g.allocatable));
            assert_eq!(got, want, "{labels}");
        }
    }

    /// Allocatable per normalised type less what bound, unfinished pods request there (containers
    /// summed, limits where there is no request, the largest init container when it is more); pods not
    /// bound, finished, or on other nodes do not count; the node selector shards.
    #[test]
    fn the_inventory_is_what_the_scheduler_has_left() {
        let nodes = [
            node(
                "h1",
                json!({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "a"}),
                json!({"nvidia.com/gpu": "8"}),
            ),
            node(
                "h2",
                json!({"nvidia.com/gpu.product": "H100", "pool": "b"}),
                json!({"nvidia.com/gpu": "8"}),
            ),
            node(
                "l1",
                json!({"nvidia.com/gpu.product": "NVIDIA-L40S-48GB", "pool": "a"}),
                json!({"nvidia.com/gpu": "4"}),
            ),
            node("cpu", json!({"pool": "a"}), json!({})),
        ];
        let pods = [
            pod(Some("h1"), "Running", "4", None),
            pod(Some("h1"), "Pending", "1", Some("3")),
            pod(Some("h2"), "Succeeded", "8", None),
            pod(None, "Pending", "8", None),
            pod(Some("l1"), "Running", "0", None),
            pod(Some("cpu"), "Running", "2", None),
        ];
        let inv = inventory(&nodes, &pods, None);
        assert_eq!(
            inv.types,
            BTreeMap::from([
                (
                    "H100".to_string(),
                    TypeGpus {
                        allocatable: 16,
                        requested: 5 + 3
                    }
                ),
                (
                    "L40S".to_string(),
                    TypeGpus {
                        allocatable: 4,
                        requested: 1
                    }
                ),
            ])
        );
        assert_eq!(inv.types["H100"].free(), 8);
        let only_a = Selector::parse("pool=a").unwrap();
        let inv = inventory(&nodes, &pods, Some(&only_a));
        assert_eq!(
            inv.types["H100"],
            TypeGpus {
                allocatable: 8,
                requested: 8
            }
        );
        assert_eq!(inv.types["H100"].free(), 0);
    }
}
