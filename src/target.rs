//! What the metric sources read, and nothing else: the pods to scrape, the models the variants ask
//! for, and the endpoint pickers. `cluster` fills it from its snapshot; `sources` read it through
//! [`TargetFeed`], which the wiring hands them, so neither imports the other.

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde::Serialize;

/// A pod to read samples for: where to scrape it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTarget {
    pub namespace: String,
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub path: String,
    /// `prometheus.io/scheme`: plain HTTP unless the pod says https.
    pub scheme: Scheme,
    /// Which rule chose the port (shown in `/debug/variants`).
    pub endpoint: EndpointRule,
    /// The name the pod's certificate is verified against, from its monitor's `tlsConfig.serverName`
    /// (else `--scrape-tls-server-name`, else the pod's IP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// The pod is read at several ports, one serving instance each (data-parallel ranks, each with its
    /// own API server and metrics), and this target is one of them: its samples are the instance's,
    /// keyed `pod:port` as WVA v0.9 keys its rows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub per_port: bool,
}

impl PodTarget {
    /// A pod scraped over plain HTTP at `ip:port/metrics`, by vLLM's default rule (tools and tests; the
    /// cluster's pods come from `cluster::snapshot::pod_target`).
    pub fn new(namespace: &str, name: &str, ip: &str, port: u16) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            ip: ip.into(),
            port,
            path: "/metrics".into(),
            scheme: Scheme::Http,
            endpoint: EndpointRule::default(),
            tls_server_name: None,
            per_port: false,
        }
    }

    /// The serving instance this target reads: the pod's name, or `pod:port` when the pod serves one
    /// instance per port. Samples, scrape state and decision rows are keyed by it.
    pub fn instance(&self) -> Cow<'_, str> {
        if self.per_port {
            Cow::Owned(format!("{}:{}", self.name, self.port))
        } else {
            Cow::Borrowed(&self.name)
        }
    }
}

/// Which rule chose a pod's metrics port, in the order they are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointRule {
    /// `prometheus.io/port`.
    Annotation,
    /// A PodMonitor that selects the pod (`monitoring.coreos.com/v1`).
    PodMonitor,
    /// A ServiceMonitor that selects a Service in front of the pod.
    ServiceMonitor,
    /// A container port named `metrics`.
    PortNamedMetrics,
    /// A container port named `http`.
    PortNamedHttp,
    /// The only container port the pod declares (WVA's emulator declares one unnamed port, 80).
    OnlyPort,
    /// None of the above: vLLM's 8000.
    #[default]
    VllmDefault,
}

/// How a pod's metrics are fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// One InferencePool's endpoint picker and the models whose variants it selects.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPicker {
    pub namespace: String,
    /// The InferencePool's name.
    pub pool: String,
    /// The EPP Service's name (`spec.endpointPickerRef.name`).
    pub service: String,
    /// Model IDs of the variants whose Deployment's pod template the pool selects.
    pub models: Vec<String>,
    /// Those variants' names (the engine splits the pool's size across them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
    /// The EPP's Ready pods with their metrics port, or why there are none to read.
    pub pods: Result<Vec<PodTarget>, String>,
}

impl EndpointPicker {
    /// `namespace/pool`, as messages name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.pool)
    }
}

/// Where the sources learn what to read. Each call answers from the current state of the cluster (or the
/// standalone file); a source calls it once per round, and [`TargetFeed::picker_of`] on the request path.
pub trait TargetFeed: Send + Sync + 'static {
    /// Every pod to scrape, de-duplicated and sorted.
    fn pods(&self) -> Vec<PodTarget>;
    /// Every `(namespace, model)` some variant serves.
    fn models(&self) -> BTreeSet<(String, String)>;
    /// Every InferencePool's endpoint picker (with the models of the variants whose pods it selects).
    fn pickers(&self) -> Vec<EndpointPicker>;
    /// The key (`namespace/pool`) of the picker whose pool selects a model's pods, if any.
    fn picker_of(&self, namespace: &str, model_id: &str) -> Option<String>;
}

/// A fixed set of targets, for tests and tools that read without a cluster.
#[derive(Debug, Clone, Default)]
pub struct FixedTargets {
    pub pods: Vec<PodTarget>,
    pub models: BTreeSet<(String, String)>,
    pub pickers: Vec<EndpointPicker>,
}

impl TargetFeed for FixedTargets {
    fn pods(&self) -> Vec<PodTarget> {
        self.pods.clone()
    }

    fn models(&self) -> BTreeSet<(String, String)> {
        self.models.clone()
    }

    fn pickers(&self) -> Vec<EndpointPicker> {
        self.pickers.clone()
    }

    fn picker_of(&self, namespace: &str, model_id: &str) -> Option<String> {
        self.pickers
            .iter()
            .find(|p| p.namespace == namespace && p.models.iter().any(|m| m == model_id))
            .map(EndpointPicker::key)
    }
}
