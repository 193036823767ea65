//! Endpoint pickers for scale from zero: which InferencePool selects each model's pods, and where its
//! EPP's metrics are. A variant at 0 replicas has no pods to scrape; the demand for it waits in the
//! flow-control queue of the EPP of the InferencePool that selects its Deployment's pods.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::crd::InferencePool;
use super::snapshot::{pod_target, Variant};
use crate::target::{EndpointPicker, PodTarget};

/// The EPP's metrics port in the inference extension's charts (Service port `http-metrics`).
pub const DEFAULT_EPP_METRICS_PORT: u16 = 9090;
/// Service port names that carry the EPP's metrics.
const METRICS_PORT_NAMES: &[&str] = &["http-metrics", "metrics"];

fn selects(
    match_labels: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !match_labels.is_empty()
        && labels.is_some_and(|l| match_labels.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// The Service port that serves the EPP's metrics, resolved against one of its pods.
fn metrics_port(service: &Service, pod: &Pod) -> u16 {
    let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
    let Some(port) = ports.into_iter().find(|p| {
        p.name
            .as_deref()
            .is_some_and(|n| METRICS_PORT_NAMES.contains(&n))
    }) else {
        return DEFAULT_EPP_METRICS_PORT;
    };
    match &port.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).unwrap_or(DEFAULT_EPP_METRICS_PORT),
        Some(IntOrString::String(name)) => pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(DEFAULT_EPP_METRICS_PORT),
        None => u16::try_from(port.port).unwrap_or(DEFAULT_EPP_METRICS_PORT),
    }
}

/// The EPP pods behind one pool's Service.
fn picker_pods(
    pool: &InferencePool,
    namespace: &str,
    services: &BTreeMap<(&str, &str), &Service>,
    pods: &[&Pod],
) -> Result<Vec<PodTarget>, String> {
    let reference = &pool.spec.endpoint_picker_ref;
    if reference.name.is_empty() {
        return Err("spec.endpointPickerRef.name is empty".into());
    }
    if let Some(kind) = reference.kind.as_deref().filter(|k| *k != "Service") {
        return Err(format!(
            "spec.endpointPickerRef.kind {kind:?}: only Service is supported"
        ));
    }
    let Some(service) = services.get(&(namespace, reference.name.as_str())) else {
        return Err(format!(
            "the endpoint picker's Service {namespace}/{} was not found",
            reference.name
        ));
    };
    let selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return Err(format!(
            "the endpoint picker's Service {namespace}/{} has no selector",
            reference.name
        ));
    }
    let mut targets: Vec<PodTarget> = pods
        .iter()
        .filter(|p| selects(&selector, p.metadata.labels.as_ref()))
        .filter_map(|p| {
            let mut t = pod_target(p, &super::monitors::MonitorIndex::default())?;
            t.port = metrics_port(service, p);
            t.path = "/metrics".into();
            Some(t)
        })
        .collect();
    targets.sort();
    if targets.is_empty() {
        return Err(format!(
            "the endpoint picker's Service {namespace}/{} selects no Ready pod",
            reference.name
        ));
    }
    Ok(targets)
}

/// Every InferencePool with its EPP pods and the models of the variants whose pods it selects (none for a
/// pool this server does not manage: its picker is still read, for the signals served to KEDA and HPAs).
/// `variants` are the snapshot's (sorted), `workloads` their scale targets (a replica's pod labels are
/// what a pool selects).
pub(crate) fn endpoint_pickers(
    pools: &[Arc<InferencePool>],
    services: &[Arc<Service>],
    workloads: &super::workload::Workloads<'_>,
    pods_by_ns: &BTreeMap<&str, Vec<&Pod>>,
    variants: &[Variant],
) -> Vec<EndpointPicker> {
    let mut services_by_key: BTreeMap<(&str, &str), &Service> = BTreeMap::new();
    for s in services {
        if let (Some(ns), Some(name)) =
            (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        {
            services_by_key.insert((ns, name), s);
        }
    }
    let mut out = Vec::new();
    for pool in pools {
        let (Some(namespace), Some(name)) = (
            pool.metadata.namespace.as_deref(),
            pool.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if pool.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let match_labels = &pool.spec.selector.match_labels;
        let selected: Vec<&Variant> = variants
            .iter()
            .filter(|v| v.namespace == namespace)
            .filter(|v| {
                workloads
                    .get(&(namespace, v.target_kind, v.deployment.as_str()))
                    .is_some_and(|w| selects(match_labels, w.pod_labels()))
            })
            .collect();
        let mut models: Vec<String> = selected.iter().map(|v| v.model_id.clone()).collect();
        models.dedup();
        let mut names: Vec<String> = selected.iter().map(|v| v.name.clone()).collect();
        names.sort();
        names.dedup();
        let pods = pods_by_ns.get(namespace).map_or(&[][..], Vec::as_slice);
        out.push(EndpointPicker {
            namespace: namespace.to_string(),
            pool: name.to_string(),
            service: pool.spec.endpoint_picker_ref.name.clone(),
            models,
            variants: names,
            pods: picker_pods(pool, namespace, &services_by_key, pods),
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.pool).cmp(&(&b.namespace, &b.pool)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, labels: serde_json::Value, epp: &str) -> Arc<InferencePool> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"selector": {"matchLabels": labels}, "targetPorts": [{"number": 8000}],
                         "endpointPickerRef": {"name": epp, "port": {"number": 9002}}}
            }))
            .unwrap(),
        )
    }

    fn service(name: &str, target: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"selector": {"app": "epp"}, "ports": [
                    {"name": "grpc-ext-proc", "port": 9002},
                    {"name": "http-metrics", "port": 9090, "targetPort": target}]}
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, app: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {"containers": [{"name": "epp", "ports": [{"name": "metrics", "containerPort": 9191}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn deployment(name: &str, app: &str) -> k8s_openapi::api::apps::v1::Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app, "pool": "p"}}}}
        }))
        .unwrap()
    }

    fn variant(name: &str, model: &str, deployment: &str) -> Variant {
        Variant {
            deployment: deployment.into(),
            spec_replicas: 0,
            ready_replicas: 0,
            ..Variant::new("ns", name, (model, "A100"), 1.0, vec![])
        }
    }

    #[test]
    fn pools_select_variants_and_find_their_epp() {
        let d1 = deployment("d1", "vllm");
        let d2 = deployment("d2", "other");
        let deployments =
            crate::cluster::workload::index([&d1, &d2].into_iter(), std::iter::empty());
        let epp = pod("epp-0", "epp", "10.0.0.9");
        let vllm = pod("vllm-0", "vllm", "10.0.0.1");
        let pods = BTreeMap::from([("ns", vec![&epp, &vllm])]);
        let variants = [variant("a", "m", "d1"), variant("b", "m2", "d2")];
        let pools = [
            pool("p", json!({"app": "vllm"}), "epp-svc"),
            pool("unused", json!({"app": "nothing"}), "epp-svc"),
            pool("missing", json!({"pool": "p"}), "gone"),
        ];
        let pickers = endpoint_pickers(
            &pools,
            &[service("epp-svc", json!(9191))],
            &deployments,
            &pods,
            &variants,
        );
        assert_eq!(pickers.len(), 3, "{pickers:?}");
        let missing = &pickers[0];
        assert_eq!(missing.models, ["m", "m2"]);
        assert!(missing
            .pods
            .as_ref()
            .unwrap_err()
            .contains("ns/gone was not found"));
        let p = &pickers[1];
        assert_eq!(
            (p.pool.as_str(), p.models.clone()),
            ("p", vec!["m".to_string()])
        );
        // A pool that selects no variant's pods is read too (its signals), serving no model of ours.
        assert_eq!(
            (pickers[2].pool.as_str(), pickers[2].models.len()),
            ("unused", 0)
        );
        let targets = p.pods.as_ref().unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(
            (targets[0].ip.as_str(), targets[0].port),
            ("10.0.0.9", 9191)
        );
        // A named target port resolves against the pod's container ports; no metrics port: 9090.
        let named = endpoint_pickers(
            &pools[..1],
            &[service("epp-svc", json!("metrics"))],
            &deployments,
            &pods,
            &variants,
        );
        assert_eq!(named[0].pods.as_ref().unwrap()[0].port, 9191);
        let mut bare = (*service("epp-svc", json!(1))).clone();
        bare.spec
            .as_mut()
            .unwrap()
            .ports
            .as_mut()
            .unwrap()
            .truncate(1);
        let default = endpoint_pickers(
            &pools[..1],
            &[Arc::new(bare)],
            &deployments,
            &pods,
            &variants,
        );
        assert_eq!(
            default[0].pods.as_ref().unwrap()[0].port,
            DEFAULT_EPP_METRICS_PORT
        );
    }
}
