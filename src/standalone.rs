//! The embedded default: the cluster stores filled from a local multi-document YAML file of
//! VariantAutoscalings, Deployments, Pods, HorizontalPodAutoscalers, ScaledObjects and Namespaces instead of a kube API, reloaded when the file changes.
//! Everything downstream (scraper, engine, server) is the same code as in a cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use serde::de::DeserializeOwned;

use crate::cluster::configs::CONFIG_ENABLED_LABEL;
use crate::cluster::crd::{InferencePool, LeaderWorkerSet, ScaledObject, VariantAutoscaling};
use crate::cluster::monitors::{PodMonitor, ServiceMonitor};
use crate::cluster::snapshot::{self, Objects, Scope, SharedSnapshot, Snapshot};
use crate::cluster::watch::log_exclusions;
use crate::health::Heartbeat;
use crate::saturation::config::{ScalingConfig, Thresholds};
use crate::saturation::ZeroConfig;

/// One problem in the file, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    /// 0-based index of the YAML document.
    pub document: usize,
    /// First line of the document in the file (1-based).
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: document {} (line {}): {}",
            self.file.display(),
            self.document,
            self.line,
            self.message
        )
    }
}

/// Splits on `---` document separators, keeping each document's first line number.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs.into_iter()
        .filter(|(_, d)| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("field {path}: {}", e.inner())
    })
}

/// What the file holds: the objects the join reads, and the ConfigMaps that configure decisions (which
/// in a cluster are followed by their own watches, not by the join).
#[derive(Debug, Default)]
pub struct FileObjects {
    pub objects: Objects,
    pub configmaps: Vec<Arc<ConfigMap>>,
}

/// Parses the file's objects. Malformed documents are reported and skipped; the rest is kept.
pub fn parse(file: &Path, text: &str) -> (FileObjects, Vec<FileProblem>) {
    let mut configmaps = Vec::new();
    let mut objects = Objects::default();
    let mut problems = Vec::new();
    let docs = documents(text);
    if docs.is_empty() {
        problems.push(FileProblem {
            file: file.to_path_buf(),
            document: 0,
            line: 1,
            message: "no objects: the file is empty or holds only comments".into(),
        });
    }
    for (index, (line, doc)) in docs.into_iter().enumerate() {
        let problem = |message: String| FileProblem {
            file: file.to_path_buf(),
            document: index,
            line,
            message,
        };
        let value: serde_json::Value = match serde_saphyr::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(problem(format!("invalid YAML: {e}")));
                continue;
            }
        };
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            problems.push(problem(format!("{kind}: field metadata.name is missing")));
            continue;
        }
        let result = match kind.as_str() {
            "VariantAutoscaling" => {
                typed::<VariantAutoscaling>(value).map(|o| objects.vas.push(namespaced(o)))
            }
            "Deployment" => {
                typed::<Deployment>(value).map(|o| objects.deployments.push(namespaced(o)))
            }
            "LeaderWorkerSet" => typed::<LeaderWorkerSet>(value)
                .map(|o| objects.leader_worker_sets.push(namespaced(o))),
            "Pod" => typed::<Pod>(value).map(|o| objects.pods.push(namespaced(o))),
            "Node" => typed::<Node>(value).map(|o| objects.nodes.push(Arc::new(o))),
            "HorizontalPodAutoscaler" => {
                typed::<HorizontalPodAutoscaler>(value).map(|o| objects.hpas.push(namespaced(o)))
            }
            "ScaledObject" => {
                typed::<ScaledObject>(value).map(|o| objects.scaled_objects.push(namespaced(o)))
            }
            "Namespace" => typed::<Namespace>(value).map(|o| objects.namespaces.push(Arc::new(o))),
            "InferencePool" => {
                typed::<InferencePool>(value).map(|o| objects.pools.push(namespaced(o)))
            }
            "Service" => typed::<Service>(value).map(|o| objects.services.push(namespaced(o))),
            "PodMonitor" => {
                typed::<PodMonitor>(value).map(|o| objects.pod_monitors.push(namespaced(o)))
            }
            "ServiceMonitor" => {
                typed::<ServiceMonitor>(value).map(|o| objects.service_monitors.push(namespaced(o)))
            }
            "ConfigMap" => typed::<ConfigMap>(value).map(|o| configmaps.push(namespaced(o))),
            "" => Err("field kind is missing".into()),
            other => Err(format!(
                "kind {other:?} is not used here (expected {KINDS})"
            )),
        };
        if let Err(message) = result {
            problems.push(problem(format!("{kind} {name}: {message}")));
        }
    }
    (
        FileObjects {
            objects,
            configmaps,
        },
        problems,
    )
}

/// The kinds the file may hold.
pub const KINDS: &str = "VariantAutoscaling, Deployment, LeaderWorkerSet, Pod, Node, HorizontalPodAutoscaler, ScaledObject, InferencePool, Service, PodMonitor, ServiceMonitor, Namespace or ConfigMap";

/// Objects without a namespace land in `default`, as `kubectl apply` would put them.
fn namespaced<K: kube::Resource>(mut o: K) -> Arc<K> {
    if o.meta().namespace.is_none() {
        o.meta_mut().namespace = Some("default".into());
    }
    Arc::new(o)
}

/// What the file is read with: the settings a server in a cluster would use.
#[derive(Debug, Clone, Default)]
pub struct FileScope {
    /// `--controller-instance`: only variants labelled for it.
    pub instance: Option<String>,
    /// `--namespace`: where the global saturation ConfigMap is.
    pub namespace: String,
    /// `--saturation-configmap`.
    pub configmap: String,
    /// `--scale-to-zero-configmap` (read in `namespace`).
    pub zero_configmap: String,
}

/// What the file configures besides the objects: thresholds and scale to zero.
#[derive(Debug, Clone, Default)]
pub struct FileConfig {
    pub thresholds: Thresholds,
    pub zero: ZeroConfig,
}

/// Reads the file: the joined snapshot, the thresholds (parsed on top of `previous`, so a bad entry
/// keeps its last good version), and every problem found.
pub fn load(
    file: &Path,
    scope: &FileScope,
    previous: (&Thresholds, &ZeroConfig),
) -> Result<(Snapshot, FileConfig, Vec<FileProblem>), String> {
    let text =
        std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let (mut file_objects, problems) = parse(file, &text);
    if file_objects.objects.nodes.is_empty() {
        file_objects.objects.nodes_unknown =
            Some("the standalone file has no Node, so no GPU inventory".into());
    }
    let join_scope = Scope {
        instance: scope.instance.clone(),
        watched_namespace: None,
        node_selector: None,
    };
    Ok((
        snapshot::build(&file_objects.objects, &join_scope),
        FileConfig {
            thresholds: thresholds(&file_objects, scope, previous.0),
            zero: zero_config(&file_objects.configmaps, scope, previous.1),
        },
        problems,
    ))
}

/// The scale-to-zero ConfigMap of `scope.namespace`, parsed on top of `previous`.
fn zero_config(
    configmaps: &[Arc<ConfigMap>],
    scope: &FileScope,
    previous: &ZeroConfig,
) -> ZeroConfig {
    let found = configmaps.iter().find(|cm| {
        cm.metadata.name.as_deref() == Some(scope.zero_configmap.as_str())
            && cm.metadata.namespace.as_deref() == Some(scope.namespace.as_str())
    });
    let Some(cm) = found else {
        return previous.without_entries();
    };
    let (zero, issues) =
        ZeroConfig::from_configmap(previous, cm.data.as_ref().unwrap_or(&BTreeMap::new()));
    for (key, why) in &issues.rejected {
        tracing::error!(configmap = %format!("{}/{}", scope.namespace, scope.zero_configmap), entry = %key, reason = %why, "scale-to-zero config entry rejected; its previous good version (if any) stays in force");
    }
    zero
}

/// The file's saturation ConfigMaps as a cluster server would read them: the one named
/// `scope.configmap` in `scope.namespace` is global; one of that name in a namespace whose Namespace
/// document is labelled `wva.llmd.ai/config-enabled: "true"` overrides it there.
fn thresholds(file: &FileObjects, scope: &FileScope, previous: &Thresholds) -> Thresholds {
    let opted_in: Vec<&str> = file
        .objects
        .namespaces
        .iter()
        .filter(|n| {
            n.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CONFIG_ENABLED_LABEL))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let empty = BTreeMap::new();
    let mut global = ScalingConfig::default();
    let mut local = BTreeMap::new();
    for cm in &file.configmaps {
        let (ns, name) = (
            cm.metadata.namespace.as_deref().unwrap_or_default(),
            cm.metadata.name.as_deref().unwrap_or_default(),
        );
        let data = cm.data.as_ref().unwrap_or(&empty);
        let (parsed, issues) = if name == scope.zero_configmap {
            continue;
        } else if name != scope.configmap {
            tracing::warn!(configmap = %format!("{ns}/{name}"), "ConfigMap ignored: only {} is read", scope.configmap);
            continue;
        } else if ns == scope.namespace {
            let (g, issues) = ScalingConfig::from_configmap(previous.global(), data);
            global = g;
            (None, issues)
        } else if opted_in.contains(&ns) {
            let prev = previous.local(ns).cloned().unwrap_or_default();
            let (l, issues) = ScalingConfig::from_local_configmap(&prev, data, ns);
            (Some(l), issues)
        } else {
            tracing::warn!(configmap = %format!("{ns}/{name}"), "namespace-local ConfigMap ignored: add a Namespace document labelled {CONFIG_ENABLED_LABEL}: \"true\"");
            continue;
        };
        for (key, why) in &issues.rejected {
            tracing::error!(configmap = %format!("{ns}/{name}"), entry = %key, reason = %why, "saturation config entry rejected; its previous good version (if any) stays in force");
        }
        if let Some(l) = parsed {
            local.insert(ns.to_string(), l);
        }
    }
    Thresholds::new(&scope.namespace, &scope.configmap)
        .with_global(global)
        .with_local(local)
}

/// Re-reads the file when its content changes and republishes the snapshot and thresholds. A file that
/// cannot be read, or whose new content has any problem (bad YAML, a bad object, nothing at all: an
/// editor's truncate before write), leaves the last good state in place, and every problem is logged
/// with its place.
pub struct FileWatch {
    pub file: PathBuf,
    pub shared: SharedSnapshot,
    pub thresholds: Arc<ArcSwap<Thresholds>>,
    pub zero: Arc<ArcSwap<ZeroConfig>>,
    pub every: Duration,
    pub heartbeat: Arc<Heartbeat>,
    pub scope: FileScope,
}

impl FileWatch {
    pub async fn run(self: Arc<Self>) {
        let Self {
            file,
            shared,
            thresholds,
            zero,
            every,
            heartbeat,
            scope,
        } = &*self;
        let every = *every;
        let mut last = std::fs::read(file).ok();
        let mut excluded = Default::default();
        log_exclusions(&shared.load(), &mut excluded);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            heartbeat.beat();
            let now = match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "standalone file unreadable; keeping the last good state");
                    continue;
                }
            };
            if last.as_deref() == Some(now.as_slice()) {
                continue;
            }
            last = Some(now);
            match load(file, scope, (&thresholds.load(), &zero.load())) {
                Ok((_, _, problems)) if !problems.is_empty() => {
                    for p in &problems {
                        tracing::error!("{p}");
                    }
                    tracing::warn!(file = %file.display(), problems = problems.len(), "standalone file has problems; keeping the last good state until they are fixed");
                }
                Ok((snap, next, _)) => {
                    log_exclusions(&snap, &mut excluded);
                    tracing::info!(file = %file.display(), variants = snap.variants.len(), "standalone file reloaded");
                    shared.store(Arc::new(snap));
                    thresholds.store(Arc::new(next.thresholds));
                    zero.store(Arc::new(next.zero));
                }
                Err(e) => tracing::warn!(error = %e, "standalone file not reloaded"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's ConfigMaps are read as in a cluster: the global one in `--namespace`, a local one
    /// only where a Namespace document opts in; Namespaces also carry the exclusion annotation.
    #[test]
    fn configmaps_and_namespaces_in_the_file() {
        let text = r#"
kind: Namespace
metadata: {name: team-a, labels: {wva.llmd.ai/config-enabled: "true"}}
---
kind: Namespace
metadata: {name: gone, annotations: {wva.llmd.ai/exclude: "true"}}
---
kind: ConfigMap
metadata: {name: cm, namespace: wva}
data: {default: "kvCacheThreshold: 0.7"}
---
kind: ConfigMap
metadata: {name: cm, namespace: team-a}
data: {default: "kvCacheThreshold: 0.9"}
---
kind: ConfigMap
metadata: {name: cm, namespace: team-b}
data: {default: "kvCacheThreshold: 0.95"}
---
kind: VariantAutoscaling
metadata: {name: v, namespace: gone, labels: {inference.optimization/acceleratorName: L4}}
spec: {modelID: m}
"#;
        let dir = std::env::temp_dir().join(format!("wva-standalone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.yaml");
        std::fs::write(&file, text).unwrap();
        let scope = FileScope {
            instance: None,
            namespace: "wva".into(),
            configmap: "cm".into(),
            zero_configmap: "zero".into(),
        };
        let (snap, config, problems) = load(
            &file,
            &scope,
            (&Thresholds::default(), &ZeroConfig::default()),
        )
        .unwrap();
        let t = config.thresholds;
        assert!(problems.is_empty(), "{problems:?}");
        let kv = |ns: &str| t.resolve("m", ns).0.kv_cache_threshold;
        assert_eq!((kv("team-a"), kv("team-b"), kv("x")), (0.9, 0.7, 0.7));
        assert!(snap.excluded[0].reason.not_ours());
        // No Node in the file: no GPU inventory (the limiter would not limit).
        assert!(matches!(
            snap.gpus,
            crate::cluster::nodes::Gpus::Unknown { .. }
        ));
        // With Nodes and a bound pod, the file's inventory.
        let nodes = "kind: Node\nmetadata: {name: n1, labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}\nstatus: {allocatable: {nvidia.com/gpu: \"8\"}}\n---\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {nodeName: n1, containers: [{name: c, resources: {requests: {nvidia.com/gpu: \"3\"}}}]}\nstatus: {phase: Running}\n";
        std::fs::write(&file, nodes).unwrap();
        let (snap, _, problems) = load(
            &file,
            &scope,
            (&Thresholds::default(), &ZeroConfig::default()),
        )
        .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let crate::cluster::nodes::Gpus::Known(inventory) = &snap.gpus else {
            panic!("{:?}", snap.gpus)
        };
        assert_eq!(inventory.types["H100"].free(), 5);
    }

    #[test]
    fn malformed_objects_are_located_and_the_rest_is_served() {
        let text = r#"
apiVersion: llmd.ai/v1alpha1
kind: VariantAutoscaling
metadata: {name: a, namespace: ns, labels: {inference.optimization/acceleratorName: L40S}}
spec: {modelID: m}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: ns}
spec: {replicas: "two", selector: {matchLabels: {app: a}}, template: {}}
---
kind: Deployment
metadata: {name: a, namespace: ns}
spec: {replicas: 1, selector: {matchLabels: {app: a}}, template: {}}
status: {readyReplicas: 1}
---
kind: Secret
metadata: {name: s}
---
kind: Pod
metadata: {namespace: ns}
---
key: [unclosed
"#;
        let (FileObjects { objects, .. }, problems) = parse(Path::new("f.yaml"), text);
        assert_eq!(
            (
                objects.vas.len(),
                objects.deployments.len(),
                objects.pods.len()
            ),
            (1, 1, 0)
        );
        let p: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].starts_with("f.yaml: document 1 (line 7): Deployment a: field spec.replicas:"),
            "{}",
            p[0]
        );
        assert!(
            p[1].contains("document 3") && p[1].contains("kind \"Secret\" is not used here"),
            "{}",
            p[1]
        );
        assert!(
            p[2].contains("document 4") && p[2].contains("metadata.name is missing"),
            "{}",
            p[2]
        );
        assert!(
            p[3].contains("document 5") && p[3].contains("invalid YAML"),
            "{}",
            p[3]
        );
    }
}
