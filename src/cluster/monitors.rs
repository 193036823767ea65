//! Where the user's Prometheus scrapes a pod, from the prometheus-operator's PodMonitors and
//! ServiceMonitors (`monitoring.coreos.com/v1`, followed only while their CRDs are served): the port, path,
//! scheme and TLS server name of the first monitor endpoint that selects the pod and resolves on it;
//! when that monitor has endpoints at several ports of the pod, each port is a serving instance
//! (data-parallel ranks).
//!
//! A PodMonitor selects pods by label in its namespace, or in `namespaceSelector.matchNames`, or anywhere
//! with `namespaceSelector.any`; its endpoint names a container port (`port`), a number (`portNumber`) or
//! the deprecated `targetPort`. A ServiceMonitor selects Services the same way; a pod is behind a Service
//! when the Service's `spec.selector` matches its labels in the same namespace; its endpoint names a
//! Service port (`port`), which leads to the pod's port through the Service's `targetPort`, or names the
//! pod's port directly (`targetPort`). Monitors are tried PodMonitors first, then ServiceMonitors, each by
//! namespace and name. What a monitor's `tlsConfig` keeps in Secrets or ConfigMaps (CA, client
//! certificate) is not read: `--scrape-ca-file` applies; its `serverName` is used.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::snapshot::selector_from;
use crate::provider::selector::Selector;
use crate::target::{EndpointRule, Scheme};

/// The prometheus-operator's PodMonitor, as far as this server reads it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    #[serde(default)]
    pub pod_metrics_endpoints: Vec<MonitorEndpoint>,
}

/// The prometheus-operator's ServiceMonitor, as far as this server reads it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,
    #[serde(default)]
    pub endpoints: Vec<MonitorEndpoint>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    #[serde(default)]
    pub any: bool,
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// One endpoint of a PodMonitor (`podMetricsEndpoints[]`) or a ServiceMonitor (`endpoints[]`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEndpoint {
    /// PodMonitor: a container port's name; ServiceMonitor: a Service port's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// PodMonitor: a container port's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<i32>,
    /// The pod's port by number or name (deprecated on PodMonitors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<MonitorTls>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MonitorTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// What a monitor says of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub port: u16,
    pub path: Option<String>,
    pub scheme: Option<Scheme>,
    pub server_name: Option<String>,
    pub rule: EndpointRule,
}

/// Which namespaces a monitor in `own` looks in.
fn in_namespaces(selector: Option<&NamespaceSelector>, own: &str, ns: &str) -> bool {
    match selector {
        Some(s) if s.any => true,
        Some(s) if !s.match_names.is_empty() => s.match_names.iter().any(|n| n == ns),
        _ => own == ns,
    }
}

fn labels(p: &Pod) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    p.metadata.labels.as_ref().unwrap_or(&NONE)
}

/// The pod's container port with this name.
fn named_port(p: &Pod, name: &str) -> Option<u16> {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .find(|port| port.name.as_deref() == Some(name))
        .and_then(|port| u16::try_from(port.container_port).ok())
}

/// A port given as a number or a container port's name, on this pod.
fn int_or_name(p: &Pod, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => named_port(p, name),
    }
}

fn scheme_of(s: Option<&str>) -> Option<Scheme> {
    match s.map(str::to_ascii_lowercase).as_deref() {
        Some("https") => Some(Scheme::Https),
        Some("http") => Some(Scheme::Http),
        _ => None,
    }
}

fn resolved(e: &MonitorEndpoint, port: u16, rule: EndpointRule) -> Resolved {
    Resolved {
        port,
        path: e.path.clone().filter(|p| p.starts_with('/')),
        scheme: scheme_of(e.scheme.as_deref()),
        server_name: e
            .tls_config
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .filter(|n| !n.is_empty()),
        rule,
    }
}

struct CompiledPodMonitor<'a> {
    monitor: &'a PodMonitor,
    namespace: &'a str,
    selector: Selector,
}

struct CompiledServiceMonitor<'a> {
    /// The Services it selects, each with its pod selector.
    services: Vec<(&'a Service, Selector)>,
    endpoints: &'a [MonitorEndpoint],
}

/// The monitors of a snapshot, their selectors parsed once.
#[derive(Default)]
pub(crate) struct MonitorIndex<'a> {
    pod_monitors: Vec<CompiledPodMonitor<'a>>,
    service_monitors: Vec<CompiledServiceMonitor<'a>>,
}

impl<'a> MonitorIndex<'a> {
    /// Monitors whose selector cannot be parsed select nothing (the user's Prometheus would refuse them
    /// too).
    pub(crate) fn new(
        pod_monitors: &'a [std::sync::Arc<PodMonitor>],
        service_monitors: &'a [std::sync::Arc<ServiceMonitor>],
        services: &'a [std::sync::Arc<Service>],
    ) -> Self {
        let key = |m: &kube::core::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        let mut pms: Vec<&PodMonitor> = pod_monitors.iter().map(|m| &**m).collect();
        pms.sort_by_key(|m| key(&m.metadata));
        let mut sms: Vec<&ServiceMonitor> = service_monitors.iter().map(|m| &**m).collect();
        sms.sort_by_key(|m| key(&m.metadata));
        let pod_monitors = pms
            .into_iter()
            .filter_map(|m| {
                Some(CompiledPodMonitor {
                    namespace: m.metadata.namespace.as_deref()?,
                    selector: selector_from(&m.spec.selector).ok()?,
                    monitor: m,
                })
            })
            .collect();
        let service_monitors = sms
            .into_iter()
            .filter_map(|m| {
                let own = m.metadata.namespace.as_deref()?;
                let selector = selector_from(&m.spec.selector).ok()?;
                let services = services
                    .iter()
                    .filter(|s| {
                        s.metadata.namespace.as_deref().is_some_and(|ns| {
                            in_namespaces(m.spec.namespace_selector.as_ref(), own, ns)
                        }) && selector
                            .matches(s.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
                    })
                    .filter_map(|s| {
                        // A Service without a selector has no pods of its own to map.
                        let pods = s
                            .spec
                            .as_ref()?
                            .selector
                            .as_ref()
                            .filter(|m| !m.is_empty())?;
                        let parts: Vec<String> =
                            pods.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        Some((&**s, Selector::parse(&parts.join(",")).ok()?))
                    })
                    .collect();
                Some(CompiledServiceMonitor {
                    services,
                    endpoints: &m.spec.endpoints,
                })
            })
            .collect();
        Self {
            pod_monitors,
            service_monitors,
        }
    }

    /// The first monitor endpoint that selects `pod` and resolves to a port on it.
    #[cfg(test)]
    pub(crate) fn resolve(&self, pod: &Pod) -> Option<Resolved> {
        self.resolve_all(pod).into_iter().next()
    }

    /// Every endpoint of the first monitor that selects `pod` and resolves on it, one per port, in the
    /// monitor's order (an endpoint repeating a port adds nothing). Several ports are several serving
    /// instances of the pod (data-parallel ranks), as Prometheus scrapes each as its own instance.
    pub(crate) fn resolve_all(&self, pod: &Pod) -> Vec<Resolved> {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        let pod_labels = labels(pod);
        let mut out: Vec<Resolved> = Vec::new();
        fn add(out: &mut Vec<Resolved>, r: Resolved) {
            if !out.iter().any(|o| o.port == r.port) {
                out.push(r);
            }
        }
        for m in &self.pod_monitors {
            if !in_namespaces(m.monitor.spec.namespace_selector.as_ref(), m.namespace, ns)
                || !m.selector.matches(pod_labels)
            {
                continue;
            }
            for e in &m.monitor.spec.pod_metrics_endpoints {
                let port = e
                    .port
                    .as_deref()
                    .and_then(|name| named_port(pod, name))
                    .or_else(|| e.port_number.and_then(|n| u16::try_from(n).ok()))
                    .or_else(|| e.target_port.as_ref().and_then(|t| int_or_name(pod, t)));
                if let Some(port) = port {
                    add(&mut out, resolved(e, port, EndpointRule::PodMonitor));
                }
            }
            if !out.is_empty() {
                return out;
            }
        }
        for m in &self.service_monitors {
            for (service, pods) in &m.services {
                if service.metadata.namespace.as_deref() != Some(ns) || !pods.matches(pod_labels) {
                    continue;
                }
                for e in m.endpoints {
                    if let Some(port) = service_endpoint_port(service, e, pod) {
                        add(&mut out, resolved(e, port, EndpointRule::ServiceMonitor));
                    }
                }
                if !out.is_empty() {
                    return out;
                }
            }
        }
        out
    }
}

/// A ServiceMonitor endpoint's port on a pod behind `service`: its `targetPort` on the pod, or its
/// Service port's `targetPort` (the Service port's own number when unset).
fn service_endpoint_port(service: &Service, e: &MonitorEndpoint, pod: &Pod) -> Option<u16> {
    if let Some(t) = &e.target_port {
        return int_or_name(pod, t);
    }
    let name = e.port.as_deref()?;
    let sp = service
        .spec
        .as_ref()?
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))?;
    match &sp.target_port {
        Some(t) => int_or_name(pod, t),
        None => u16::try_from(sp.port).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn pod(ns: &str, labels: serde_json::Value, ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "ports": ports}]}
        }))
        .unwrap()
    }

    fn pm(ns: &str, name: &str, spec: serde_json::Value) -> Arc<PodMonitor> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                "metadata": {"name": name, "namespace": ns}, "spec": spec
            }))
            .unwrap(),
        )
    }

    fn sm(ns: &str, name: &str, spec: serde_json::Value) -> Arc<ServiceMonitor> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": name, "namespace": ns}, "spec": spec
            }))
            .unwrap(),
        )
    }

    fn svc(ns: &str, labels: serde_json::Value, spec: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "s", "namespace": ns, "labels": labels}, "spec": spec
            }))
            .unwrap(),
        )
    }

    /// WVA's emulator sample: one unnamed container port 80, a Service whose port `http` targets 80, and
    /// a ServiceMonitor on that port; and the same with a PodMonitor naming a container port.
    #[test]
    fn monitors_resolve_as_prometheus_would() {
        let emulator = pod(
            "llm",
            json!({"app": "vllm-emulator"}),
            json!([{"containerPort": 80}]),
        );
        let service = svc(
            "llm",
            json!({"app": "vllm-emulator"}),
            json!({"selector": {"app": "vllm-emulator"}, "ports": [{"name": "http", "port": 8080, "targetPort": 80}]}),
        );
        let monitor = sm(
            "monitoring",
            "emulator",
            json!({"selector": {"matchLabels": {"app": "vllm-emulator"}},
                   "namespaceSelector": {"matchNames": ["llm"]},
                   "endpoints": [{"port": "http", "path": "/metrics", "tlsConfig": {"serverName": "vllm.llm.svc"}, "scheme": "https"}]}),
        );
        let services = [service];
        let sms = [monitor];
        let index = MonitorIndex::new(&[], &sms, &services);
        assert_eq!(
            index.resolve(&emulator),
            Some(Resolved {
                port: 80,
                path: Some("/metrics".into()),
                scheme: Some(Scheme::Https),
                server_name: Some("vllm.llm.svc".into()),
                rule: EndpointRule::ServiceMonitor
            })
        );
        // Another namespace than the monitor's matchNames: not selected.
        let elsewhere = pod(
            "other",
            json!({"app": "vllm-emulator"}),
            json!([{"containerPort": 80}]),
        );
        assert_eq!(index.resolve(&elsewhere), None);

        // A PodMonitor comes first, by container port name; an endpoint whose port the pod lacks is skipped.
        let vllm = pod(
            "llm",
            json!({"app": "vllm-emulator"}),
            json!([{"name": "metrics", "containerPort": 8200}, {"containerPort": 80}]),
        );
        let pms = [pm(
            "llm",
            "vllm",
            json!({"selector": {"matchLabels": {"app": "vllm-emulator"}},
                   "podMetricsEndpoints": [{"port": "nope"}, {"port": "metrics", "path": "/m"}]}),
        )];
        let index = MonitorIndex::new(&pms, &sms, &services);
        let r = index.resolve(&vllm).unwrap();
        assert_eq!(
            (r.port, r.path.as_deref(), r.rule),
            (8200, Some("/m"), EndpointRule::PodMonitor)
        );
        // By number, and the deprecated targetPort; a selector that does not match is passed over.
        let pms = [
            pm(
                "llm",
                "a-other",
                json!({"selector": {"matchLabels": {"app": "x"}}, "podMetricsEndpoints": [{"portNumber": 1}]}),
            ),
            pm(
                "llm",
                "b-number",
                json!({"selector": {}, "podMetricsEndpoints": [{"portNumber": 9400}]}),
            ),
        ];
        let index = MonitorIndex::new(&pms, &[], &[]);
        assert_eq!(index.resolve(&vllm).map(|r| r.port), Some(9400));
        let pms = [pm(
            "llm",
            "t",
            json!({"selector": {}, "podMetricsEndpoints": [{"targetPort": "metrics"}]}),
        )];
        assert_eq!(
            MonitorIndex::new(&pms, &[], &[])
                .resolve(&vllm)
                .map(|r| r.port),
            Some(8200)
        );
        // `any` reaches every namespace.
        let pms = [pm(
            "monitoring",
            "any",
            json!({"selector": {}, "namespaceSelector": {"any": true}, "podMetricsEndpoints": [{"portNumber": 9}]}),
        )];
        assert_eq!(
            MonitorIndex::new(&pms, &[], &[])
                .resolve(&elsewhere)
                .map(|r| r.port),
            Some(9)
        );
    }

    /// A monitor with endpoints at several ports of a pod reads each (data-parallel ranks, one API
    /// server and one metrics page per rank); a repeated port counts once; only the first monitor that
    /// resolves on the pod is read.
    #[test]
    fn several_ports_of_the_first_monitor_are_several_instances() {
        let ranks = pod(
            "llm",
            json!({"app": "dp"}),
            json!([{"name": "rank0", "containerPort": 8000}, {"name": "rank1", "containerPort": 8001}]),
        );
        let pms = [
            pm(
                "llm",
                "a-ranks",
                json!({"selector": {"matchLabels": {"app": "dp"}},
                       "podMetricsEndpoints": [{"port": "rank0"}, {"port": "rank1", "path": "/m"},
                                               {"portNumber": 8000}, {"port": "absent"}]}),
            ),
            pm(
                "llm",
                "b-later",
                json!({"selector": {}, "podMetricsEndpoints": [{"portNumber": 9400}]}),
            ),
        ];
        let all = MonitorIndex::new(&pms, &[], &[]).resolve_all(&ranks);
        assert_eq!(
            all.iter()
                .map(|r| (r.port, r.path.as_deref()))
                .collect::<Vec<_>>(),
            vec![(8000, None), (8001, Some("/m"))]
        );
        // A ServiceMonitor's endpoints likewise.
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "dp", "namespace": "llm"},
            "spec": {"selector": {"app": "dp"}, "ports": [
                {"name": "r0", "port": 80, "targetPort": 8000}, {"name": "r1", "port": 81, "targetPort": "rank1"}]}
        }))
        .unwrap();
        let sm: Arc<ServiceMonitor> = Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": {"name": "dp", "namespace": "llm"},
                "spec": {"selector": {}, "endpoints": [{"port": "r0"}, {"port": "r1"}]}
            }))
            .unwrap(),
        );
        let services = [Arc::new(svc)];
        let all = MonitorIndex::new(&[], &[sm], &services).resolve_all(&ranks);
        assert_eq!(
            all.iter().map(|r| (r.port, r.rule)).collect::<Vec<_>>(),
            vec![
                (8000, EndpointRule::ServiceMonitor),
                (8001, EndpointRule::ServiceMonitor)
            ]
        );
    }
}
