//! What the reflectors keep of each object: only what the snapshot reads, so 10,000 pods do not cost
//! 10,000 full objects.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, Node, NodeStatus, Pod, PodTemplateSpec,
    ResourceRequirements, Service, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::crd::{InferencePool, LeaderWorkerSet, ScaledObject, VariantAutoscaling};
use super::snapshot;

pub(crate) fn monitor<K: Resource>(m: &mut K) {
    m.meta_mut().managed_fields = None;
    m.meta_mut().annotations = None;
}

pub(crate) fn pool(p: &mut InferencePool) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
}

/// Only the labels, the selector and the ports: they locate an endpoint picker's pods and metrics port,
/// and the pods behind a ServiceMonitor's Services.
pub(crate) fn service(s: &mut Service) {
    s.metadata.managed_fields = None;
    s.metadata.annotations = None;
    // Labels stay: ServiceMonitors select Services by them.
    s.status = None;
    if let Some(spec) = s.spec.as_mut() {
        *spec = ServiceSpec {
            selector: spec.selector.take(),
            ports: spec.ports.take(),
            ..Default::default()
        };
    }
}

/// Drops what we never read, so 10,000 pods do not cost 10,000 full objects.
pub(crate) fn pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.owner_references = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            k == snapshot::PORT_ANNOTATION
                || k == snapshot::PATH_ANNOTATION
                || k == snapshot::SCHEME_ANNOTATION
        });
    }
    if let Some(spec) = p.spec.as_mut() {
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        // Init containers matter only for the GPUs they request (the inventory counts them).
        if let Some(init) = spec.init_containers.as_mut() {
            init.retain(|c| gpu_resources_only(c.resources.clone()).is_some());
            for c in init.iter_mut() {
                *c = Container {
                    name: std::mem::take(&mut c.name),
                    resources: gpu_resources_only(c.resources.take()),
                    ..Default::default()
                };
            }
        }
        if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
            spec.init_containers = None;
        }
        for c in &mut spec.containers {
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.args = None;
            c.command = None;
            c.resources = gpu_resources_only(c.resources.take());
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
        }
    }
    if let Some(s) = p.status.as_mut() {
        s.container_statuses = None;
        s.init_container_statuses = None;
    }
}

/// A container's GPU requests and limits, and nothing else of its resources (`None` without any).
fn gpu_resources_only(r: Option<ResourceRequirements>) -> Option<ResourceRequirements> {
    let keep = |m: Option<BTreeMap<String, Quantity>>| {
        m.map(|mut m| {
            m.retain(|k, _| snapshot::GPU_RESOURCES.contains(&k.as_str()));
            m
        })
        .filter(|m| !m.is_empty())
    };
    let r = r?;
    let out = ResourceRequirements {
        requests: keep(r.requests),
        limits: keep(r.limits),
        ..Default::default()
    };
    (out.requests.is_some() || out.limits.is_some()).then_some(out)
}

/// A node keeps its name, labels (the GPU product, and any `WVA_NODE_SELECTOR` names) and its
/// allocatable GPUs.
pub(crate) fn node(n: &mut Node) {
    let name = n.metadata.name.take();
    let labels = n.metadata.labels.take();
    let allocatable = n
        .status
        .as_mut()
        .and_then(|s| s.allocatable.take())
        .map(|mut a| {
            a.retain(|k, _| snapshot::GPU_RESOURCES.contains(&k.as_str()));
            a
        });
    *n = Node {
        metadata: ObjectMeta {
            name,
            labels,
            ..Default::default()
        },
        status: Some(NodeStatus {
            allocatable,
            ..Default::default()
        }),
        ..Default::default()
    };
}

pub(crate) fn deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    d.metadata.annotations = None;
    if let Some(spec) = d.spec.as_mut() {
        spec.template = template(std::mem::take(&mut spec.template));
    }
}

/// Only what the snapshot reads of a LeaderWorkerSet: replicas, size, its templates (slimmed as a
/// Deployment's) and status.
pub(crate) fn leader_worker_set(l: &mut LeaderWorkerSet) {
    l.metadata.managed_fields = None;
    l.metadata.annotations = None;
    let t = &mut l.spec.leader_worker_template;
    t.leader_template = t.leader_template.take().map(template);
    t.worker_template = template(std::mem::take(&mut t.worker_template));
}

/// Of a pod template, only the pod labels (an InferencePool selects on them; `llm-d.ai/role` is the P/D
/// role), the node selection (it names the accelerator, snapshot::accelerator_of), and of each
/// container its image, command line, literal environment and GPU resources (saturation V2's capacity
/// estimate) survive.
fn template(t: PodTemplateSpec) -> PodTemplateSpec {
    let labels = t.metadata.and_then(|m| m.labels);
    PodTemplateSpec {
        metadata: labels.map(|labels| ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: t.spec.map(|pod| k8s_openapi::api::core::v1::PodSpec {
            containers: pod.containers.into_iter().map(engine_container).collect(),
            node_selector: pod.node_selector,
            affinity: pod.affinity.and_then(|a| {
                a.node_affinity
                    .map(|n| k8s_openapi::api::core::v1::Affinity {
                        node_affinity: Some(n),
                        ..Default::default()
                    })
            }),
            ..Default::default()
        }),
    }
}

/// What saturation V2 reads of a serving container: image, command, args, literal env, GPU resources.
fn engine_container(c: Container) -> Container {
    let gpus = |list: Option<BTreeMap<String, Quantity>>| {
        list.map(|l| {
            l.into_iter()
                .filter(|(k, _)| snapshot::GPU_RESOURCES.contains(&k.as_str()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|l| !l.is_empty())
    };
    Container {
        name: c.name,
        // The image says which server runs (SGLang or vLLM).
        image: c.image,
        command: c.command,
        args: c.args,
        env: c.env.map(|env| {
            env.into_iter()
                .filter(|e| e.value.is_some())
                .map(|e| EnvVar {
                    value_from: None,
                    ..e
                })
                .collect()
        }),
        resources: c.resources.map(|r| ResourceRequirements {
            requests: gpus(r.requests),
            limits: gpus(r.limits),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn hpa(h: &mut HorizontalPodAutoscaler) {
    keep_variant_annotations(&mut h.metadata);
    h.status = None;
}

pub(crate) fn va(v: &mut VariantAutoscaling) {
    v.metadata.managed_fields = None;
}

/// Keeps only the `llm-d.ai/` annotations: they declare variants (`declared`).
fn keep_variant_annotations(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("llm-d.ai/"));
    }
}

pub(crate) fn scaled_object(s: &mut ScaledObject) {
    keep_variant_annotations(&mut s.metadata);
    s.spec.triggers.clear();
}

pub(crate) fn configmap(c: &mut ConfigMap) {
    c.metadata.managed_fields = None;
    c.metadata.annotations = None;
    c.binary_data = None;
}

pub(crate) fn namespace(n: &mut Namespace) {
    n.metadata.managed_fields = None;
    if let Some(a) = n.metadata.annotations.as_mut() {
        a.retain(|k, _| k == snapshot::EXCLUDE_ANNOTATION);
    }
    n.spec = None;
    n.status = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slimming keeps what the snapshot reads from a Deployment's template: its node selection.
    #[test]
    fn slim_deployments_keep_the_node_selection() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "namespace": "ns", "annotations": {"a": "b"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "vllm", "image": "x", "env": [{"name": "K", "value": "V"}]}],
                         "nodeSelector": {"nvidia.com/gpu.product": "H100"}}}}
        }))
        .unwrap();
        deployment(&mut d);
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].image.as_deref(), Some("x"));
        assert_eq!(
            pod.containers[0].env.as_ref().unwrap()[0].value.as_deref(),
            Some("V")
        );
        assert_eq!(
            snapshot::accelerator_of(d.spec.as_ref().map(|s| &s.template)).as_deref(),
            Some("H100"),
            "{pod:?}"
        );
    }
}
