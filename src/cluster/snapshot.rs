//! A read-only view of the variants, joined from their declarations (VariantAutoscalings, annotated
//! HPAs and ScaledObjects), Deployments, Pods and autoscalers.
//!
//! Built by a pure function from object lists, so the kube reflectors and the standalone file produce
//! the same thing, and the request path only reads an `Arc<Snapshot>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

use super::crd::LeaderWorkerSet;
use super::crd::{InferencePool, ScaledObject, VariantAutoscaling};
use super::declared::Autoscalers;
pub use super::declared::SourceKind;
use super::declared::{self, Declared};
use super::exclusion::{Exclusion, UnresolvedAccelerator, UNRESOLVED_ACCELERATOR};
use super::monitors::{MonitorIndex, PodMonitor, ServiceMonitor};
use super::workload::{self, TargetKind, Workloads};
use crate::provider::selector::Selector;
use crate::saturation::v2::args::{ContainerArgs, EngineParams};
use crate::saturation::v2::Role;
use crate::target::{EndpointPicker, EndpointRule, PodTarget, Scheme, TargetFeed};
use k8s_openapi::api::core::v1::PodTemplateSpec;

/// A variant the engine can decide for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    pub namespace: String,
    pub name: String,
    /// The kind of object that declares the variant (the name is that object's).
    pub kind: SourceKind,
    /// That object's UID, for Events.
    #[serde(skip)]
    pub uid: Option<String>,
    pub model_id: String,
    /// The GPU product, or [`UNRESOLVED_ACCELERATOR`] with the reason in `accelerator_unresolved`.
    pub accelerator: String,
    /// Why the accelerator could not be resolved: the variant is still decided and served (as WVA v0.8
    /// and later serve it), and a Warning Event says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accelerator_unresolved: Option<UnresolvedAccelerator>,
    pub cost: f64,
    /// The scale target's kind and name (a Deployment, or a LeaderWorkerSet whose groups are replicas).
    pub target_kind: TargetKind,
    pub deployment: String,
    pub spec_replicas: i64,
    pub ready_replicas: i64,
    /// Ready pods only, sorted by name.
    pub pods: Vec<PodTarget>,
    /// The declaring object's `wva.llmd.ai/controller-instance` label (WVA v0.5.1 isolation), carried on its items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller_instance: Option<String>,
    /// Replica bounds from the autoscaler of the target Deployment (none without one).
    pub bounds: Bounds,
    /// The pod template's P/D role (`llm-d.ai/role`).
    pub role: Role,
    /// GPUs per replica (at least 1).
    pub gpus_per_replica: i64,
    /// The serving engine's parameters, from the pod template's command lines (saturation V2's estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_params: Option<EngineParams>,
    /// Its pods the scheduler could not place (Pending, `PodScheduled=False` with reason
    /// `Unschedulable`): the GPU limiter moves its scale-ups to a variant of the model that can run them.
    #[serde(skip_serializing_if = "is_zero")]
    pub unschedulable_pods: i64,
}

pub(crate) fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// A pod the scheduler tried and could not place.
fn unschedulable(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Pending")
                && s.conditions.iter().flatten().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
        })
}

impl Variant {
    /// A variant declared by a VariantAutoscaling of its Deployment's name, with `pods` ready and as many
    /// replicas, no bounds and no controller instance (tools and tests; the cluster's come from [`build`]).
    pub fn new(
        namespace: &str,
        name: &str,
        (model_id, accelerator): (&str, &str),
        cost: f64,
        pods: Vec<PodTarget>,
    ) -> Self {
        let replicas = i64::try_from(pods.len()).unwrap_or(i64::MAX);
        Self {
            namespace: namespace.into(),
            name: name.into(),
            kind: SourceKind::VariantAutoscaling,
            uid: None,
            model_id: model_id.into(),
            accelerator: accelerator.into(),
            accelerator_unresolved: None,
            cost,
            target_kind: TargetKind::Deployment,
            deployment: name.into(),
            spec_replicas: replicas,
            ready_replicas: replicas,
            pods,
            controller_instance: None,
            bounds: Bounds::default(),
            role: Role::Both,
            gpus_per_replica: 1,
            engine_params: None,
            unschedulable_pods: 0,
        }
    }
}

/// An autoscaler's replica bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bounds {
    pub min_replicas: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    /// The autoscaler the bounds come from, as `Kind/name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<String>,
}

/// The label WVA v0.5.1 uses to assign a VariantAutoscaling to one controller instance.
pub const CONTROLLER_INSTANCE_LABEL: &str = "wva.llmd.ai/controller-instance";

/// A declared variant that cannot be decided, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedVariant {
    pub namespace: String,
    pub name: String,
    pub kind: SourceKind,
    #[serde(skip)]
    pub uid: Option<String>,
    pub model_id: String,
    pub reason: Exclusion,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Sorted by (namespace, model, name).
    pub variants: Vec<Variant>,
    pub excluded: Vec<ExcludedVariant>,
    /// `false` until every source has delivered its initial list; the server answers 503 before that.
    pub synced: bool,
    /// InferencePools that select variants' pods, with their endpoint pickers (scale from zero).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pickers: Vec<EndpointPicker>,
    /// Positions in `variants` by namespace and name, and each model's range, built on first use and
    /// kept with this snapshot (the request path looks a variant and its model up on every call).
    #[serde(skip)]
    pub by_name: NameIndex,
    /// The cluster's GPUs by type, for the GPU limiter.
    pub gpus: super::nodes::Gpus,
}

/// Variant positions by namespace, then name (an HPA and a VA may share a name); and the range of each
/// model's variants by namespace, then model.
#[derive(Debug, Clone, Default)]
pub struct NameIndex(OnceLock<Positions>);

#[derive(Debug, Clone, Default)]
struct Positions {
    names: HashMap<String, HashMap<String, Vec<usize>>>,
    models: HashMap<String, HashMap<String, std::ops::Range<usize>>>,
}

/// The index is derived from the variants, so it never makes two snapshots differ.
impl PartialEq for NameIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Snapshot {
    /// Variants of one namespace: a slice of the sorted list, found by binary search, because the request
    /// path looks this up on every call and a linear scan costs microseconds at thousands of variants.
    pub fn namespace(&self, namespace: &str) -> &[Variant] {
        debug_assert!(
            self.variants.is_sorted_by(|a, b| {
                (&a.namespace, &a.model_id, &a.name) <= (&b.namespace, &b.model_id, &b.name)
            }),
            "Snapshot.variants must be sorted by (namespace, model, name)"
        );
        let start = self
            .variants
            .partition_point(|v| v.namespace.as_str() < namespace);
        let len = self.variants[start..].partition_point(|v| v.namespace == namespace);
        &self.variants[start..start + len]
    }

    /// Variants of one model in one namespace (a sub-slice of [`Snapshot::namespace`]).
    pub fn model(&self, namespace: &str, model_id: &str) -> &[Variant] {
        self.positions()
            .models
            .get(namespace)
            .and_then(|models| models.get(model_id))
            .map_or(&[], |r| &self.variants[r.clone()])
    }

    /// The variants of `namespace` named `name`, in snapshot order.
    pub fn named(&self, namespace: &str, name: &str) -> impl Iterator<Item = &Variant> {
        self.positions()
            .names
            .get(namespace)
            .and_then(|names| names.get(name))
            .into_iter()
            .flatten()
            .map(|&i| &self.variants[i])
    }

    fn positions(&self) -> &Positions {
        self.by_name.0.get_or_init(|| {
            let mut p = Positions::default();
            for (i, v) in self.variants.iter().enumerate() {
                p.names
                    .entry(v.namespace.clone())
                    .or_default()
                    .entry(v.name.clone())
                    .or_default()
                    .push(i);
                // Sorted by (namespace, model, name): a model's variants are contiguous.
                p.models
                    .entry(v.namespace.clone())
                    .or_default()
                    .entry(v.model_id.clone())
                    .and_modify(|r| r.end = i + 1)
                    .or_insert(i..i + 1);
            }
            p
        })
    }

    /// The endpoint picker of the InferencePool that selects the model's pods (the first by name).
    pub fn picker(&self, namespace: &str, model_id: &str) -> Option<&EndpointPicker> {
        self.pickers
            .iter()
            .find(|p| p.namespace == namespace && p.models.iter().any(|m| m == model_id))
    }

    /// Every pod the scraper should follow, de-duplicated.
    pub(crate) fn pod_targets(&self) -> Vec<PodTarget> {
        let mut pods: Vec<PodTarget> = self
            .variants
            .iter()
            .flat_map(|v| v.pods.iter().cloned())
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }
}

/// The shared, swappable snapshot: writers publish whole snapshots, readers load them lock-free.
pub(crate) type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

/// The sources read the current snapshot's pods, models and pickers, and nothing else of it.
impl TargetFeed for ArcSwap<Snapshot> {
    fn pods(&self) -> Vec<PodTarget> {
        self.load().pod_targets()
    }

    fn models(&self) -> BTreeSet<(String, String)> {
        self.load()
            .variants
            .iter()
            .map(|v| (v.namespace.clone(), v.model_id.clone()))
            .collect()
    }

    fn pickers(&self) -> Vec<EndpointPicker> {
        self.load().pickers.clone()
    }

    fn picker_of(&self, namespace: &str, model_id: &str) -> Option<String> {
        self.load()
            .picker(namespace, model_id)
            .map(EndpointPicker::key)
    }
}

pub fn shared(snapshot: Snapshot) -> SharedSnapshot {
    Arc::new(ArcSwap::from_pointee(snapshot))
}

pub(crate) const PORT_ANNOTATION: &str = "prometheus.io/port";
pub(crate) const PATH_ANNOTATION: &str = "prometheus.io/path";
pub(crate) const SCHEME_ANNOTATION: &str = "prometheus.io/scheme";
/// vLLM's default port when nothing else names one.
pub(crate) const DEFAULT_METRICS_PORT: u16 = 8000;

/// Everything the join reads, shared with the reflector stores that hold it (or loaded from the
/// standalone file).
#[derive(Debug, Clone, Default)]
pub struct Objects {
    pub vas: Vec<Arc<VariantAutoscaling>>,
    pub deployments: Vec<Arc<Deployment>>,
    /// LeaderWorkerSets (while their CRD is installed): scale targets of multi-host variants.
    pub leader_worker_sets: Vec<Arc<LeaderWorkerSet>>,
    pub pods: Vec<Arc<Pod>>,
    pub hpas: Vec<Arc<HorizontalPodAutoscaler>>,
    pub scaled_objects: Vec<Arc<ScaledObject>>,
    pub namespaces: Vec<Arc<Namespace>>,
    /// Saturation ConfigMaps (standalone file only): the thresholds read them, the join does not.
    /// InferencePools (while their CRD is installed) and Services (for their endpoint pickers, and
    /// ServiceMonitors).
    pub pools: Vec<Arc<InferencePool>>,
    pub services: Vec<Arc<Service>>,
    /// The prometheus-operator's monitors (while their CRDs are installed): where pods are scraped.
    pub pod_monitors: Vec<Arc<PodMonitor>>,
    pub service_monitors: Vec<Arc<ServiceMonitor>>,
    /// Nodes (the GPU inventory).
    pub nodes: Vec<Arc<Node>>,
    /// Why the nodes are not known (not listed yet, or not allowed); `None`: `nodes` is complete.
    pub nodes_unknown: Option<String>,
}

/// Which variants are this server's.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only variants labelled for this instance (`--controller-instance`, WVA's `CONTROLLER_INSTANCE`);
    /// others are not ours and are not reported.
    pub instance: Option<String>,
    /// Single-namespace mode: this namespace is never excluded by its annotation.
    pub watched_namespace: Option<String>,
    /// The nodes whose GPUs the limiter grants (`WVA_NODE_SELECTOR`; all when unset).
    pub node_selector: Option<crate::provider::selector::Selector>,
}

/// Namespaces annotated this way are left alone (WVA v0.5.1).
pub const EXCLUDE_ANNOTATION: &str = "wva.llmd.ai/exclude";

/// Joins the objects into a snapshot: every VariantAutoscaling, and every HPA or ScaledObject annotated
/// `llm-d.ai/managed: "true"` without a VariantAutoscaling of the same namespace and name (the VA wins),
/// each with its Deployment, Ready pods and the bounds of the Deployment's autoscaler.
pub fn build(objects: &Objects, scope: &Scope) -> Snapshot {
    let autoscalers = declared::autoscalers(
        objects.hpas.iter().map(|h| &**h),
        objects.scaled_objects.iter().map(|s| &**s),
    );
    let workloads = workload::index(
        objects.deployments.iter().map(|d| &**d),
        objects.leader_worker_sets.iter().map(|l| &**l),
    );
    let mut pods_by_ns: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in &objects.pods {
        if let Some(ns) = p.metadata.namespace.as_deref() {
            pods_by_ns.entry(ns).or_default().push(p);
        }
    }
    let excluded_namespaces = excluded_namespaces(objects, scope);
    let declared = declarations(objects);
    let monitors = MonitorIndex::new(
        &objects.pod_monitors,
        &objects.service_monitors,
        &objects.services,
    );

    let mut snapshot = Snapshot {
        synced: true,
        gpus: match &objects.nodes_unknown {
            None => super::nodes::Gpus::Known(super::nodes::inventory(
                &objects.nodes,
                &objects.pods,
                scope.node_selector.as_ref(),
            )),
            Some(reason) => super::nodes::Gpus::Unknown {
                reason: reason.clone(),
            },
        },
        ..Default::default()
    };
    for d in declared {
        if d.meta.deletion_timestamp.is_some() {
            continue;
        }
        if scope
            .instance
            .as_deref()
            .is_some_and(|i| instance_of(d.meta) != Some(i))
        {
            continue;
        }
        let namespace = d.meta.namespace.clone().unwrap_or_default();
        let joined = if excluded_namespaces.contains(namespace.as_str()) {
            Err(Exclusion::NamespaceExcluded {
                namespace: namespace.clone(),
                annotation: EXCLUDE_ANNOTATION,
            })
        } else {
            variant_of(&d, &workloads, &pods_by_ns, &autoscalers, &monitors)
        };
        match joined {
            Ok(v) => snapshot.variants.push(v),
            Err(reason) => snapshot.excluded.push(ExcludedVariant {
                namespace,
                name: d.meta.name.clone().unwrap_or_default(),
                kind: d.kind,
                uid: d.meta.uid.clone(),
                model_id: d.model_id,
                reason,
            }),
        }
    }
    snapshot.variants.sort_by(|a, b| {
        (&a.namespace, &a.model_id, &a.name).cmp(&(&b.namespace, &b.model_id, &b.name))
    });
    snapshot
        .excluded
        .sort_by(|a, b| (&a.namespace, &a.name, a.kind).cmp(&(&b.namespace, &b.name, b.kind)));
    snapshot.pickers = super::pools::endpoint_pickers(
        &objects.pools,
        &objects.services,
        &workloads,
        &pods_by_ns,
        &snapshot.variants,
    );
    snapshot
}

/// Namespaces annotated [`EXCLUDE_ANNOTATION`], except the one a single-namespace server watches.
fn excluded_namespaces<'a>(objects: &'a Objects, scope: &Scope) -> BTreeSet<&'a str> {
    objects
        .namespaces
        .iter()
        .filter(|n| {
            n.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(EXCLUDE_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .filter(|n| scope.watched_namespace.as_deref() != Some(*n))
        .collect()
}

/// Every declared variant: the VariantAutoscalings, then the annotated HPAs and ScaledObjects that no
/// VariantAutoscaling of the same namespace and name overrides.
fn declarations(objects: &Objects) -> impl Iterator<Item = Declared<'_>> {
    let va_names: BTreeSet<(&str, &str)> = objects
        .vas
        .iter()
        .filter_map(|v| {
            Some((
                v.metadata.namespace.as_deref()?,
                v.metadata.name.as_deref()?,
            ))
        })
        .collect();
    let annotated = objects
        .hpas
        .iter()
        .filter_map(|h| Declared::from_hpa(h))
        .chain(
            objects
                .scaled_objects
                .iter()
                .filter_map(|s| Declared::from_scaled_object(s)),
        )
        .filter(move |d| {
            !va_names.contains(&(
                d.meta.namespace.as_deref().unwrap_or_default(),
                d.meta.name.as_deref().unwrap_or_default(),
            ))
        });
    objects
        .vas
        .iter()
        .map(|v| Declared::from_va(v))
        .chain(annotated)
}

/// Extended resources that are GPUs (WVA's list, `internal/resources/resource.go`).
pub const GPU_RESOURCES: [&str; 5] = [
    "nvidia.com/gpu",
    "amd.com/gpu",
    "habana.ai/gaudi",
    "gpu.intel.com/i915",
    "gpu.intel.com/xe",
];

/// GPUs a pod template's containers ask for: Σ GPU requests, limits where a container requests none.
pub(crate) fn template_gpus(template: Option<&PodTemplateSpec>) -> i64 {
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map_or(&[][..], |p| p.containers.as_slice());
    containers
        .iter()
        .map(|c| {
            let r = c.resources.as_ref();
            let count = |list: Option<
                &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >|
             -> Option<i64> {
                let list = list?;
                let n: i64 = GPU_RESOURCES
                    .iter()
                    .filter_map(|k| list.get(*k))
                    .filter_map(|q| q.0.trim().parse::<i64>().ok())
                    .sum();
                (n > 0).then_some(n)
            };
            count(r.and_then(|r| r.requests.as_ref()))
                .or_else(|| count(r.and_then(|r| r.limits.as_ref())))
                .unwrap_or(0)
        })
        .sum()
}

/// What saturation V2 reads of a replica's pod template: the P/D role (`llm-d.ai/role` label) and the
/// serving engine with its parameters, from its images and command lines.
pub fn engine_of(template: Option<&PodTemplateSpec>) -> (Role, Option<EngineParams>) {
    let role = Role::from_label(
        template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(Role::LABEL))
            .map(String::as_str),
    );
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map_or(&[][..], |p| p.containers.as_slice());
    let params = (!containers.is_empty()).then(|| {
        let env: Vec<Vec<(String, String)>> = containers
            .iter()
            .map(|c| {
                c.env
                    .iter()
                    .flatten()
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                    .collect()
            })
            .collect();
        let args: Vec<ContainerArgs<'_>> = containers
            .iter()
            .zip(&env)
            .map(|(c, env)| ContainerArgs {
                image: c.image.as_deref().unwrap_or_default(),
                command: c.command.as_deref().unwrap_or_default(),
                args: c.args.as_deref().unwrap_or_default(),
                env,
            })
            .collect();
        EngineParams::from_containers(&args)
    });
    (role, params)
}

/// Node labels that name a GPU product, in WVA's order.
pub const ACCELERATOR_NODE_LABELS: [&str; 3] = [
    "nvidia.com/gpu.product",
    "amd.com/gpu.product-name",
    "cloud.google.com/gke-accelerator",
];

/// The accelerator a replica's pods are pinned to: its pod template's `nodeSelector`, then the
/// required node-affinity terms (`In` with one value), for the first of [`ACCELERATOR_NODE_LABELS`] found.
pub fn accelerator_of(template: Option<&PodTemplateSpec>) -> Option<String> {
    let pod = template?.spec.as_ref()?;
    for key in ACCELERATOR_NODE_LABELS {
        if let Some(v) = pod.node_selector.as_ref().and_then(|s| s.get(key)) {
            if !v.is_empty() {
                return Some(v.clone());
            }
        }
        let terms = pod
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| r.node_selector_terms.as_slice())
            .unwrap_or_default();
        for term in terms {
            for e in term.match_expressions.iter().flatten() {
                if e.key == key && e.operator == "In" {
                    if let Some([v]) = e.values.as_deref() {
                        return Some(v.clone());
                    }
                }
            }
        }
    }
    None
}

fn instance_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(CONTROLLER_INSTANCE_LABEL)
        .map(String::as_str)
}

/// One declared variant joined with its scale target (a Deployment or a LeaderWorkerSet) and Ready
/// pods, or why it cannot be decided.
fn variant_of(
    d: &Declared<'_>,
    workloads: &Workloads<'_>,
    pods_by_ns: &BTreeMap<&str, Vec<&Pod>>,
    autoscalers: &Autoscalers<'_>,
    monitors: &MonitorIndex<'_>,
) -> Result<Variant, Exclusion> {
    let namespace = d.meta.namespace.clone().unwrap_or_default();
    let name = d.meta.name.clone().unwrap_or_default();
    let declared = d.spec.as_ref().map_err(Clone::clone)?;
    let deployment_name = declared.deployment.clone();
    let key = (
        d.meta.namespace.as_deref().unwrap_or_default(),
        declared.target_kind,
        declared.deployment.as_str(),
    );
    let Some(target) = workloads.get(&key) else {
        return Err(Exclusion::TargetNotFound {
            kind: declared.target_kind,
            namespace,
            name: deployment_name,
        });
    };
    let template = target.template();
    // WVA's order: the GPU product the pod template selects, then the declaring object's label; when
    // neither names one the variant is served as "unresolved" (WVA v0.8 and later).
    let (accelerator, accelerator_unresolved) = match accelerator_of(template)
        .ok_or(())
        .or_else(|()| super::crd::labelled_accelerator(d.meta))
    {
        Ok(a) => (a, None),
        Err(why) => (UNRESOLVED_ACCELERATOR.to_string(), Some(why)),
    };
    let bounds = declared::bounds_of(
        autoscalers.get(&key).map_or(&[][..], Vec::as_slice),
        &deployment_name,
    )?;
    let selector = target.pod_selector(&deployment_name)?;
    let no_labels = BTreeMap::new();
    let selected: Vec<&Pod> = pods_by_ns
        .get(namespace.as_str())
        .into_iter()
        .flatten()
        .copied()
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&no_labels)))
        .collect();
    let unschedulable_pods =
        i64::try_from(selected.iter().filter(|p| unschedulable(p)).count()).unwrap_or(i64::MAX);
    let mut targets: Vec<PodTarget> = selected
        .into_iter()
        .flat_map(|p| pod_targets(p, monitors))
        .collect();
    targets.sort();
    let (role, engine_params) = engine_of(template);
    Ok(Variant {
        role,
        gpus_per_replica: target.gpus_per_replica(),
        engine_params,
        bounds,
        namespace,
        name,
        kind: d.kind,
        uid: d.meta.uid.clone(),
        model_id: d.model_id.clone(),
        accelerator,
        accelerator_unresolved,
        cost: declared.cost,
        target_kind: declared.target_kind,
        deployment: deployment_name,
        spec_replicas: target.spec_replicas(),
        ready_replicas: target.ready_replicas(),
        pods: targets,
        controller_instance: instance_of(d.meta).map(str::to_string),
        unschedulable_pods,
    })
}

/// A Deployment's `spec.selector` as our selector type.
pub(crate) fn selector_from(ls: &LabelSelector) -> Result<Selector, String> {
    let mut parts = Vec::new();
    for (k, v) in ls.match_labels.iter().flatten() {
        parts.push(format!("{k}={v}"));
    }
    for e in ls.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            op => return Err(format!("unknown operator {op:?}")),
        });
    }
    Selector::parse(&parts.join(",")).map_err(|e| e.to_string())
}

/// A Ready, running pod with an IP becomes a scrape target, at the endpoint its annotations, its monitors
/// or its ports say.
pub(crate) fn pod_target(p: &Pod, monitors: &MonitorIndex) -> Option<PodTarget> {
    pod_targets(p, monitors).into_iter().next()
}

/// A Ready, running pod's scrape targets: one, or one per port when its monitor reads it at several
/// (data-parallel ranks, each its own serving instance). An annotated port is always the only one.
pub(crate) fn pod_targets(p: &Pod, monitors: &MonitorIndex) -> Vec<PodTarget> {
    let resolved = monitors.resolve_all(p);
    let annotated = p.metadata.annotations.as_ref().is_some_and(|a| {
        a.get(PORT_ANNOTATION)
            .is_some_and(|v| v.parse::<u16>().is_ok())
    });
    if resolved.len() > 1 && !annotated {
        resolved
            .into_iter()
            .filter_map(|r| {
                let mut t = target_at(p, Some(r))?;
                t.per_port = true;
                Some(t)
            })
            .collect()
    } else {
        target_at(p, resolved.into_iter().next())
            .into_iter()
            .collect()
    }
}

fn target_at(p: &Pod, monitor: Option<super::monitors::Resolved>) -> Option<PodTarget> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = p.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
    if !ready {
        return None;
    }
    let (port, path, endpoint) = scrape_endpoint(p, monitor.as_ref());
    let annotated = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEME_ANNOTATION))
        .map(|s| s.trim().to_ascii_lowercase());
    let scheme = match annotated.as_deref() {
        Some("https") => Scheme::Https,
        Some(_) => Scheme::Http,
        None => monitor
            .as_ref()
            .filter(|_| endpoint != EndpointRule::Annotation)
            .and_then(|m| m.scheme)
            .unwrap_or_default(),
    };
    let tls_server_name = monitor
        .filter(|_| endpoint != EndpointRule::Annotation)
        .and_then(|m| m.server_name);
    Some(PodTarget {
        namespace: p.metadata.namespace.clone()?,
        name: p.metadata.name.clone()?,
        ip,
        port,
        path,
        scheme,
        endpoint,
        tls_server_name,
        per_port: false,
    })
}

/// Port and path, and the rule that chose the port: the `prometheus.io/*` annotations, else the pod's
/// monitor (PodMonitor or ServiceMonitor), else the container port named `metrics`, else `http`, else the
/// only container port the pod declares, else vLLM's 8000; path from the annotation, else the monitor,
/// else `/metrics`.
pub(crate) fn scrape_endpoint(
    p: &Pod,
    monitor: Option<&super::monitors::Resolved>,
) -> (u16, String, EndpointRule) {
    let annotations = p.metadata.annotations.as_ref();
    let path = annotations
        .and_then(|a| a.get(PATH_ANNOTATION))
        .filter(|p| p.starts_with('/'))
        .cloned()
        .or_else(|| monitor.and_then(|m| m.path.clone()))
        .unwrap_or_else(|| "/metrics".to_string());
    let annotated = annotations
        .and_then(|a| a.get(PORT_ANNOTATION))
        .and_then(|p| p.parse::<u16>().ok());
    let ports = || {
        p.spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
    };
    let named = |wanted: &str| {
        ports()
            .find(|port| port.name.as_deref() == Some(wanted))
            .and_then(|port| u16::try_from(port.container_port).ok())
    };
    let only = || {
        let mut all = ports();
        match (all.next(), all.next()) {
            (Some(one), None) => u16::try_from(one.container_port).ok(),
            _ => None,
        }
    };
    let (port, rule) = annotated
        .map(|p| (p, EndpointRule::Annotation))
        .or_else(|| monitor.map(|m| (m.port, m.rule)))
        .or_else(|| named("metrics").map(|p| (p, EndpointRule::PortNamedMetrics)))
        .or_else(|| named("http").map(|p| (p, EndpointRule::PortNamedHttp)))
        .or_else(|| only().map(|p| (p, EndpointRule::OnlyPort)))
        .unwrap_or((DEFAULT_METRICS_PORT, EndpointRule::VllmDefault));
    (port, path, rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arcs<T>(items: &[T]) -> Vec<Arc<T>>
    where
        T: Clone,
    {
        items.iter().cloned().map(Arc::new).collect()
    }

    fn join(
        vas: &[VariantAutoscaling],
        deps: &[Deployment],
        pods: &[Pod],
        hpas: &[HorizontalPodAutoscaler],
        instance: Option<&str>,
    ) -> Snapshot {
        build(
            &Objects {
                vas: arcs(vas),
                deployments: arcs(deps),
                pods: arcs(pods),
                hpas: arcs(hpas),
                ..Default::default()
            },
            &Scope {
                instance: instance.map(str::to_string),
                ..Default::default()
            },
        )
    }

    fn va(name: &str, labels: serde_json::Value, spec: serde_json::Value) -> VariantAutoscaling {
        serde_json::from_value(
            json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
            "metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": spec}),
        )
        .unwrap()
    }

    fn deployment(name: &str, app: &str, spec: i32, ready: i32) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
            "spec": {"replicas": spec, "selector": {"matchLabels": {"app": app}}, "template": {}},
            "status": {"readyReplicas": ready}}))
        .unwrap()
    }

    fn pod(name: &str, app: &str, ready: bool, extra: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": app}},
            "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}});
        if let Some(a) = extra.get("annotations") {
            p["metadata"]["annotations"] = a.clone();
        }
        serde_json::from_value(p).unwrap()
    }

    /// The name index finds every variant of a name in its namespace (two kinds may share a name), in
    /// snapshot order, and nothing elsewhere; a model's variants are its contiguous range.
    #[test]
    fn variants_are_found_by_name() {
        let v = |ns: &str, model: &str, name: &str, kind: SourceKind| Variant {
            kind,
            ..Variant::new(ns, name, (model, "L4"), 1.0, vec![])
        };
        let snap = Snapshot {
            variants: vec![
                v("a", "m1", "x", SourceKind::VariantAutoscaling),
                v("a", "m2", "x", SourceKind::HorizontalPodAutoscaler),
                v("a", "m2", "y", SourceKind::VariantAutoscaling),
                v("b", "m1", "x", SourceKind::VariantAutoscaling),
            ],
            synced: true,
            ..Snapshot::default()
        };
        let found = |ns, name| {
            snap.named(ns, name)
                .map(|v| (v.namespace.as_str(), v.model_id.as_str(), v.kind))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            found("a", "x"),
            [
                ("a", "m1", SourceKind::VariantAutoscaling),
                ("a", "m2", SourceKind::HorizontalPodAutoscaler)
            ]
        );
        assert_eq!(
            found("b", "x"),
            [("b", "m1", SourceKind::VariantAutoscaling)]
        );
        assert!(found("b", "y").is_empty() && found("c", "x").is_empty());
        let model = |ns, model| {
            snap.model(ns, model)
                .iter()
                .map(|v| (v.namespace.as_str(), v.name.as_str()))
                .collect::<Vec<_>>()
        };
        assert_eq!(model("a", "m2"), [("a", "x"), ("a", "y")]);
        assert_eq!(model("a", "m1"), [("a", "x")]);
        assert_eq!(model("b", "m1"), [("b", "x")]);
        assert!(model("b", "m2").is_empty() && model("c", "m1").is_empty());
    }

    /// WVA's order: the GPU product the pod template selects (nodeSelector, then required node
    /// affinity), then the VA's label; with neither the variant is served as "unresolved", the reason
    /// naming both sources.
    /// Saturation V2's view of a template: role label, GPUs (requests, else limits; 0 counts as 1),
    /// engine flags; slimming keeps all of it.
    #[test]
    fn engine_facts_come_from_the_pod_template() {
        let mut d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d", "namespace": "ns"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d", "llm-d.ai/role": "decode"}},
                "spec": {"containers": [
                    {"name": "vllm", "image": "vllm/vllm-openai", "command": ["vllm", "serve"], "args": ["m", "--max-num-seqs", "64"],
                     "env": [{"name": "VLLM_USE_V1", "value": "1"}, {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                     "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2", "memory": "1Gi"}}},
                    {"name": "sidecar", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}}}))
        .unwrap();
        super::super::slim::deployment(&mut d);
        let template = d.spec.as_ref().map(|s| &s.template);
        let (role, params) = engine_of(template);
        assert_eq!((role, template_gpus(template)), (Role::Decode, 3));
        assert_eq!(params.unwrap().max_num_seqs, 64);
        let bare: Deployment = serde_json::from_value(
            json!({"metadata": {"name": "d"}, "spec": {"selector": {}, "template": {}}}),
        )
        .unwrap();
        let template = bare.spec.as_ref().map(|s| &s.template);
        assert_eq!(engine_of(template), (Role::Both, None));
        assert_eq!(workload::Workload::Deployment(&bare).gpus_per_replica(), 1);
    }

    #[test]
    fn accelerators_come_from_the_node_selection_first() {
        let with_template = |name: &str, pod_spec: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                         "template": {"spec": pod_spec}},
                "status": {"readyReplicas": 1}}))
            .unwrap()
        };
        let deps = [
            with_template(
                "sel",
                json!({"containers": [], "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}),
            ),
            with_template(
                "aff",
                json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "cloud.google.com/gke-accelerator", "operator": "In", "values": ["nvidia-l4"]}]}]}}}}),
            ),
            with_template("label", json!({"containers": []})),
            with_template("none", json!({"containers": []})),
        ];
        let vas = [
            va(
                "sel",
                json!({"inference.optimization/acceleratorName": "ignored"}),
                json!({"modelID": "m"}),
            ),
            va("aff", json!({}), json!({"modelID": "m"})),
            va(
                "label",
                json!({"inference.optimization/acceleratorName": "L40S"}),
                json!({"modelID": "m"}),
            ),
            va("none", json!({}), json!({"modelID": "m"})),
        ];
        let pods: [Pod; 0] = [];
        let s = join(&vas, &deps, &pods, &[], None);
        let acc: Vec<(&str, &str)> = s
            .variants
            .iter()
            .map(|v| (v.name.as_str(), v.accelerator.as_str()))
            .collect();
        assert_eq!(
            acc,
            vec![
                ("aff", "nvidia-l4"),
                ("label", "L40S"),
                ("none", "unresolved"),
                ("sel", "NVIDIA-H100-80GB-HBM3")
            ]
        );
        assert!(s.excluded.is_empty());
        let none = s.variants.iter().find(|v| v.name == "none").unwrap();
        assert!(matches!(
            none.accelerator_unresolved,
            Some(UnresolvedAccelerator::Missing { .. })
        ));
        assert!(none
            .accelerator_unresolved
            .as_ref()
            .unwrap()
            .to_string()
            .contains("nvidia.com/gpu.product"));
        assert!(s
            .variants
            .iter()
            .filter(|v| v.name != "none")
            .all(|v| v.accelerator_unresolved.is_none()));
    }

    /// Pods belong to a variant by its Deployment's selector, never by their names: rank suffixes
    /// (`-rank-0`, as KServe and data-parallel deployments name pods) or names that prefix another
    /// variant's do not move a pod (KServe #5701's stall).
    #[test]
    fn pod_names_do_not_decide_the_variant() {
        let acc = json!({"inference.optimization/acceleratorName": "H100"});
        let vas = [
            va(
                "llama",
                acc.clone(),
                json!({"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "llama"}}),
            ),
            va(
                "llama-rank",
                acc,
                json!({"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "llama-rank"}}),
            ),
        ];
        let deps = [
            deployment("llama", "a", 2, 2),
            deployment("llama-rank", "b", 1, 1),
        ];
        let pods = [
            pod("llama-rank-0", "a", true, json!({})),
            pod("llama-rank-1", "a", true, json!({})),
            pod("llama-7f9c-rank-0", "b", true, json!({})),
        ];
        let s = join(&vas, &deps, &pods, &[], None);
        let names = |v: &str| -> Vec<String> {
            s.variants
                .iter()
                .find(|x| x.name == v)
                .unwrap()
                .pods
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert_eq!(names("llama"), ["llama-rank-0", "llama-rank-1"]);
        assert_eq!(names("llama-rank"), ["llama-7f9c-rank-0"]);
    }

    /// Pods the scheduler could not place are counted on their variant (for the GPU limiter); other
    /// Pending pods, and Ready ones, are not.
    #[test]
    fn unschedulable_pods_are_counted() {
        let vas = [va(
            "a",
            json!({"inference.optimization/acceleratorName": "H100"}),
            json!({"modelID": "m"}),
        )];
        let pending = |name: &str, reason: &str| -> Pod {
            let mut p = pod(name, "a", false, json!({}));
            p.status = Some(
                serde_json::from_value(json!({"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": reason}]}))
                .unwrap(),
            );
            p
        };
        let pods = [
            pod("a-0", "a", true, json!({})),
            pending("a-1", "Unschedulable"),
            pending("a-2", "SchedulerError"),
        ];
        let s = build(
            &Objects {
                vas: arcs(&vas),
                deployments: arcs(&[deployment("a", "a", 3, 1)]),
                pods: arcs(&pods),
                ..Default::default()
            },
            &Scope::default(),
        );
        assert_eq!(
            (s.variants[0].unschedulable_pods, s.variants[0].pods.len()),
            (1, 1)
        );
    }

    /// A LeaderWorkerSet `big` of two groups of four (one Ready), decode role, 8 H200 GPUs a pod.
    fn big_lws() -> LeaderWorkerSet {
        serde_json::from_value(json!({
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": {"name": "big", "namespace": "ns"},
            "spec": {"replicas": 2, "leaderWorkerTemplate": {"size": 4,
                "leaderTemplate": {"metadata": {"labels": {"llm-d.ai/role": "decode"}},
                    "spec": {"nodeSelector": {"nvidia.com/gpu.product": "H200"},
                             "containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}},
                "workerTemplate": {"spec": {"containers": [{"name": "vllm", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}}}},
            "status": {"replicas": 2, "readyReplicas": 1,
                       "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=big,leaderworkerset.sigs.k8s.io/worker-index=0"}}))
        .unwrap()
    }

    /// The pods of `big`: two leaders and two workers, with labels that select nothing else.
    fn big_members() -> Vec<Pod> {
        let member = |name: &str, index: &str| -> Pod {
            let mut p = pod(name, "unrelated", true, json!({}));
            p.metadata.labels = Some(BTreeMap::from([
                (workload::LWS_NAME_LABEL.to_string(), "big".to_string()),
                (
                    workload::LWS_WORKER_INDEX_LABEL.to_string(),
                    index.to_string(),
                ),
            ]));
            p
        };
        vec![
            member("big-0", "0"),
            member("big-0-1", "1"),
            member("big-0-2", "2"),
            member("big-1", "0"),
        ]
    }

    /// A LeaderWorkerSet variant (WVA v0.9's `scaletarget/lws.go`): its groups are its replicas, its
    /// leaders (worker-index 0) are its pods whatever their other labels, its workers are nobody's,
    /// a group's GPUs are the leader's and the workers', the leader template gives role and accelerator,
    /// and an HPA on the LeaderWorkerSet gives its bounds. An HPA on a Deployment of the same name
    /// does not.
    #[test]
    fn leader_worker_sets_join_by_their_leaders() {
        let lws = big_lws();
        let vas = [va(
            "big",
            json!({}),
            json!({"modelID": "m", "scaleTargetRef": {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": "big"}}),
        )];
        let pods = big_members();
        let mut on_lws = hpa("big-hpa", "big", Some(1), 4);
        on_lws.spec.as_mut().unwrap().scale_target_ref.kind = "LeaderWorkerSet".into();
        on_lws.spec.as_mut().unwrap().scale_target_ref.api_version =
            Some("leaderworkerset.x-k8s.io/v1".into());
        let hpas = [on_lws];
        let s = build(
            &Objects {
                vas: arcs(&vas),
                leader_worker_sets: vec![Arc::new(lws)],
                pods: arcs(&pods),
                hpas: arcs(&hpas),
                ..Default::default()
            },
            &Scope::default(),
        );
        assert!(s.excluded.is_empty(), "{:?}", s.excluded);
        let v = &s.variants[0];
        let pod_names: Vec<&str> = v.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pod_names, ["big-0", "big-1"]);
        assert_eq!(
            (v.target_kind, v.spec_replicas, v.ready_replicas),
            (workload::TargetKind::LeaderWorkerSet, 2, 1)
        );
        assert_eq!((v.gpus_per_replica, v.role), (32, Role::Decode));
        assert_eq!(v.accelerator, "H200");
        assert_eq!((v.bounds.min_replicas, v.bounds.max_replicas), (1, Some(4)));
        // The same VA without the LeaderWorkerSet (its CRD not installed, or the set deleted): excluded,
        // naming the kind it looked for; an HPA on a Deployment `big` is not the set's.
        let s = build(
            &Objects {
                vas: arcs(&vas),
                deployments: arcs(&[deployment("big", "x", 1, 1)]),
                hpas: arcs(&[hpa("d-hpa", "big", Some(1), 9)]),
                ..Default::default()
            },
            &Scope::default(),
        );
        assert!(s.variants.is_empty());
        assert!(matches!(
            &s.excluded[0].reason,
            Exclusion::TargetNotFound {
                kind: workload::TargetKind::LeaderWorkerSet,
                ..
            }
        ));
    }

    /// An annotated ScaledObject on a LeaderWorkerSet declares it as a variant, with KEDA's bounds.
    #[test]
    fn scaled_objects_declare_leader_worker_set_variants() {
        let mut so = scaled_object(
            "big-so",
            "big",
            Some(0),
            json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m"}),
        );
        so.spec.scale_target_ref.kind = Some("LeaderWorkerSet".into());
        so.spec.scale_target_ref.api_version = Some("leaderworkerset.x-k8s.io/v1".into());
        let s = build(
            &Objects {
                scaled_objects: arcs(&[so]),
                leader_worker_sets: vec![Arc::new(big_lws())],
                pods: arcs(&big_members()),
                ..Default::default()
            },
            &Scope::default(),
        );
        assert!(s.excluded.is_empty(), "{:?}", s.excluded);
        let v = &s.variants[0];
        assert_eq!(
            (
                v.target_kind,
                v.pods.len(),
                v.bounds.min_replicas,
                v.bounds.max_replicas
            ),
            (workload::TargetKind::LeaderWorkerSet, 2, 0, Some(3))
        );
    }

    fn hpa(name: &str, target: &str, min: Option<i32>, max: i32) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": min, "maxReplicas": max}}))
        .unwrap()
    }

    /// Bounds come from the autoscaler of the variant's Deployment; two autoscalers on one Deployment
    /// exclude the variant with a reason that names both.
    #[test]
    fn bounds_come_from_the_deployments_autoscaler() {
        let acc = json!({"inference.optimization/acceleratorName": "H100"});
        let vas = [
            va("a", acc.clone(), json!({"modelID": "m"})),
            va("b", acc.clone(), json!({"modelID": "m"})),
            va("c", acc, json!({"modelID": "m"})),
        ];
        let deps = [
            deployment("a", "a", 1, 1),
            deployment("b", "b", 1, 1),
            deployment("c", "c", 1, 1),
        ];
        let hpas = [
            hpa("a-hpa", "a", None, 3),
            hpa("b-1", "b", Some(2), 5),
            hpa("b-2", "b", Some(1), 4),
        ];
        let pods: [Pod; 0] = [];
        let s = join(&vas, &deps, &pods, &hpas, None);
        let bounds: Vec<(&str, &Bounds)> = s
            .variants
            .iter()
            .map(|v| (v.name.as_str(), &v.bounds))
            .collect();
        assert_eq!(
            bounds,
            vec![
                (
                    "a",
                    &Bounds {
                        min_replicas: 1,
                        max_replicas: Some(3),
                        autoscaler: Some("HorizontalPodAutoscaler/a-hpa".into())
                    }
                ),
                ("c", &Bounds::default()),
            ]
        );
        assert_eq!(
            s.excluded[0].reason,
            Exclusion::SeveralAutoscalers {
                deployment: "b".into(),
                autoscalers: "HorizontalPodAutoscaler/b-1, HorizontalPodAutoscaler/b-2".into()
            }
        );
    }

    /// WVA v0.5.1 isolation: a VA labelled for an instance carries it on its variant; with an instance
    /// configured, VAs of other instances (or none) are not ours.
    #[test]
    fn controller_instances_are_carried_and_filtered() {
        let acc = "inference.optimization/acceleratorName";
        let vas = [
            va(
                "a",
                json!({acc: "H100", CONTROLLER_INSTANCE_LABEL: "team-a"}),
                json!({"modelID": "m"}),
            ),
            va(
                "b",
                json!({acc: "H100", CONTROLLER_INSTANCE_LABEL: "team-b"}),
                json!({"modelID": "m"}),
            ),
            va("c", json!({acc: "H100"}), json!({"modelID": "m"})),
        ];
        let deps = [
            deployment("a", "a", 1, 1),
            deployment("b", "b", 1, 1),
            deployment("c", "c", 1, 1),
        ];
        let pods: [Pod; 0] = [];
        let all = join(&vas, &deps, &pods, &[], None);
        let instances: Vec<(&str, Option<&str>)> = all
            .variants
            .iter()
            .map(|v| (v.name.as_str(), v.controller_instance.as_deref()))
            .collect();
        assert_eq!(
            instances,
            vec![("a", Some("team-a")), ("b", Some("team-b")), ("c", None)]
        );
        let mine = join(&vas, &deps, &pods, &[], Some("team-a"));
        let names: Vec<&str> = mine.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, vec!["a"]);
        assert!(mine.excluded.is_empty());
    }

    fn annotated_hpa(
        name: &str,
        target: &str,
        annotations: serde_json::Value,
    ) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                "annotations": annotations,
                "labels": {"inference.optimization/acceleratorName": "L4"}},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": 2, "maxReplicas": 6}}))
        .unwrap()
    }

    fn scaled_object(
        name: &str,
        target: &str,
        min: Option<i32>,
        annotations: serde_json::Value,
    ) -> ScaledObject {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "annotations": annotations,
                "labels": {"inference.optimization/acceleratorName": "A100"}},
            "spec": {"scaleTargetRef": {"name": target}, "minReplicaCount": min, "maxReplicaCount": 3}}))
        .unwrap()
    }

    /// Annotated HPAs and ScaledObjects are variants next to VAs in one model; a VA of the same name
    /// wins; invalid annotations exclude the object with its kind; a ScaledObject on a VA's Deployment
    /// gives it KEDA's bounds.
    #[test]
    fn annotated_autoscalers_are_variants_and_vas_win() {
        let acc = json!({"inference.optimization/acceleratorName": "H100"});
        let vas = [
            va(
                "va",
                acc.clone(),
                json!({"modelID": "m", "variantCost": "20"}),
            ),
            va(
                "same",
                acc.clone(),
                json!({"modelID": "m", "scaleTargetRef": {"name": "same-d"}}),
            ),
            va("keda-va", acc, json!({"modelID": "m"})),
        ];
        let deps = [
            deployment("va", "va", 1, 1),
            deployment("hpa-d", "h", 2, 2),
            deployment("same-d", "s", 1, 1),
            deployment("so-d", "so", 1, 1),
            deployment("keda-va", "k", 1, 1),
        ];
        let managed = json!({"llm-d.ai/managed": "true", "llm-d.ai/model-id": "m", "llm-d.ai/variant-cost": "5"});
        let hpas = [
            annotated_hpa("hpa", "hpa-d", managed.clone()),
            annotated_hpa("same", "same-d", managed.clone()),
            annotated_hpa("bad", "va", json!({"llm-d.ai/managed": "true"})),
        ];
        let objects = Objects {
            vas: arcs(&vas),
            deployments: arcs(&deps),
            hpas: arcs(&hpas),
            scaled_objects: arcs(&[
                scaled_object("so", "so-d", None, managed),
                scaled_object("plain", "keda-va", Some(0), json!({})),
            ]),
            ..Default::default()
        };
        let s = build(&objects, &Scope::default());
        type Row<'a> = (&'a str, SourceKind, f64, &'a str, i64, Option<i64>);
        let got: Vec<Row<'_>> = s
            .variants
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.kind,
                    v.cost,
                    v.accelerator.as_str(),
                    v.bounds.min_replicas,
                    v.bounds.max_replicas,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "hpa",
                    SourceKind::HorizontalPodAutoscaler,
                    5.0,
                    "L4",
                    2,
                    Some(6)
                ),
                (
                    "keda-va",
                    SourceKind::VariantAutoscaling,
                    10.0,
                    "H100",
                    0,
                    Some(3)
                ),
                // The VA named like the annotated HPA wins; the HPA still bounds its Deployment.
                (
                    "same",
                    SourceKind::VariantAutoscaling,
                    10.0,
                    "H100",
                    2,
                    Some(6)
                ),
                ("so", SourceKind::ScaledObject, 5.0, "A100", 0, Some(3)),
                (
                    "va",
                    SourceKind::VariantAutoscaling,
                    20.0,
                    "H100",
                    2,
                    Some(6)
                ),
            ]
        );
        assert_eq!(s.variants[0].uid.as_deref(), Some("uid-hpa"));
        let bad = &s.excluded[..];
        assert!(
            matches!(bad, [e] if e.name == "bad" && e.kind == SourceKind::HorizontalPodAutoscaler
                && matches!(e.reason, Exclusion::MissingAnnotation { .. })),
            "{bad:?}"
        );
    }

    /// Namespaces annotated `wva.llmd.ai/exclude: "true"` are reported as not ours, except the
    /// namespace a single-namespace server watches.
    #[test]
    fn excluded_namespaces_are_not_ours_unless_watched() {
        let vas = [va(
            "a",
            json!({"inference.optimization/acceleratorName": "H100"}),
            json!({"modelID": "m"}),
        )];
        let ns = |value: &str| -> Namespace {
            serde_json::from_value(json!({"metadata": {"name": "ns",
                "annotations": {EXCLUDE_ANNOTATION: value}}}))
            .unwrap()
        };
        let objects = |value: &str| Objects {
            vas: arcs(&vas),
            deployments: arcs(&[deployment("a", "a", 1, 1)]),
            namespaces: arcs(&[ns(value)]),
            ..Default::default()
        };
        let all = build(&objects("true"), &Scope::default());
        assert!(all.variants.is_empty());
        assert!(all.excluded[0].reason.not_ours());
        assert_eq!(
            all.excluded[0].reason.to_string(),
            "namespace ns is annotated wva.llmd.ai/exclude=\"true\"; its variants are left to another controller"
        );
        assert_eq!(
            build(&objects("false"), &Scope::default()).variants.len(),
            1
        );
        let watched = Scope {
            watched_namespace: Some("ns".into()),
            ..Default::default()
        };
        assert_eq!(build(&objects("true"), &watched).variants.len(), 1);
    }

    #[test]
    fn joins_and_excludes_with_reasons() {
        let acc = json!({"inference.optimization/acceleratorName": "H100"});
        let vas = vec![
            va(
                "a",
                acc.clone(),
                json!({"modelID": "m", "variantCost": "5"}),
            ),
            va(
                "b-va",
                acc.clone(),
                json!({"modelID": "m", "scaleTargetRef": {"kind": "Deployment", "name": "b"}}),
            ),
            va("no-acc", json!({}), json!({"modelID": "m"})),
            va(
                "bad-cost",
                acc.clone(),
                json!({"modelID": "m", "variantCost": "cheap"}),
            ),
            va("no-deploy", acc.clone(), json!({"modelID": "m"})),
        ];
        let deployments = vec![
            deployment("a", "a", 2, 2),
            deployment("b", "b", 3, 1),
            deployment("no-acc", "x", 1, 1),
            deployment("bad-cost", "y", 1, 1),
        ];
        let pods = vec![
            pod("a-1", "a", true, json!({})),
            pod("a-2", "a", false, json!({})),
            pod(
                "b-1",
                "b",
                true,
                json!({"annotations": {"prometheus.io/port": "9100", "prometheus.io/path": "/m"}}),
            ),
        ];
        let s = join(&vas, &deployments, &pods, &[], None);
        assert_eq!(
            s.variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "b-va", "no-acc"]
        );
        let a = &s.variants[0];
        assert_eq!(
            (a.cost, a.spec_replicas, a.ready_replicas, a.pods.len()),
            (5.0, 2, 2, 1)
        );
        assert_eq!(
            (a.pods[0].port, a.pods[0].path.as_str()),
            (8080, "/metrics")
        );
        let b = &s.variants[1];
        assert_eq!(
            (
                b.deployment.as_str(),
                b.cost,
                b.pods[0].port,
                b.pods[0].path.as_str()
            ),
            ("b", 10.0, 9100, "/m")
        );
        let texts: Vec<(&str, String)> = s
            .excluded
            .iter()
            .map(|e| (e.name.as_str(), e.reason.to_string()))
            .collect();
        let reasons: Vec<(&str, &str)> = texts.iter().map(|(n, r)| (*n, r.as_str())).collect();
        assert_eq!(reasons.len(), 2);
        // An unresolved accelerator is no exclusion: the variant is served as "unresolved".
        let no_acc = s.variants.iter().find(|v| v.name == "no-acc").unwrap();
        assert_eq!(no_acc.accelerator, "unresolved");
        assert_eq!(
            no_acc.accelerator_unresolved.as_ref().unwrap().to_string(),
            "label inference.optimization/acceleratorName is missing and the pod template selects no GPU product (nodeSelector or required nodeAffinity on nvidia.com/gpu.product, amd.com/gpu.product-name or cloud.google.com/gke-accelerator)"
        );
        assert!(reasons
            .iter()
            .any(|(n, r)| *n == "bad-cost" && r.contains("spec.variantCost \"cheap\"")));
        assert!(reasons.contains(&("no-deploy", "target Deployment ns/no-deploy not found")));
    }

    #[test]
    fn port_fallbacks() {
        let mut p = pod("p", "a", true, json!({}));
        assert_eq!(scrape_endpoint(&p, None).0, 8080);
        p.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()
            .push(
                serde_json::from_value(json!({"name": "metrics", "containerPort": 9000})).unwrap(),
            );
        assert_eq!(
            scrape_endpoint(&p, None),
            (9000, "/metrics".to_string(), EndpointRule::PortNamedMetrics)
        );
        p.spec.as_mut().unwrap().containers[0].ports = None;
        assert_eq!(
            scrape_endpoint(&p, None),
            (8000, "/metrics".to_string(), EndpointRule::VllmDefault)
        );
    }

    /// A pod whose PodMonitor reads it at two ports is two serving instances (data-parallel ranks),
    /// keyed `pod:port`; an annotated port, or a monitor with one port, keeps one target keyed by the
    /// pod's name.
    #[test]
    fn a_pod_read_at_several_ports_is_one_target_per_port() {
        let p = pod("p", "a", true, json!({}));
        let pms = [Arc::new(
            serde_json::from_value::<super::super::monitors::PodMonitor>(json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                "metadata": {"name": "ranks", "namespace": "ns"},
                "spec": {"selector": {}, "podMetricsEndpoints": [{"portNumber": 8000}, {"portNumber": 8001}]}
            }))
            .unwrap(),
        )];
        let index = MonitorIndex::new(&pms, &[], &[]);
        let targets = pod_targets(&p, &index);
        assert_eq!(
            targets
                .iter()
                .map(|t| (t.instance().into_owned(), t.port, t.per_port, t.endpoint))
                .collect::<Vec<_>>(),
            vec![
                ("p:8000".to_string(), 8000, true, EndpointRule::PodMonitor),
                ("p:8001".to_string(), 8001, true, EndpointRule::PodMonitor),
            ]
        );
        let annotated = pod(
            "p",
            "a",
            true,
            json!({"annotations": {"prometheus.io/port": "9400"}}),
        );
        let targets = pod_targets(&annotated, &index);
        assert_eq!(targets.len(), 1);
        assert_eq!((targets[0].instance(), targets[0].port), ("p".into(), 9400));
        let targets = pod_targets(&p, &MonitorIndex::default());
        assert_eq!((targets.len(), targets[0].per_port), (1, false));
        assert!(pod_targets(&pod("q", "a", false, json!({})), &index).is_empty());
    }

    /// Issue 21 item 11: WVA's emulator Deployment (v0.4.1 and v0.5.1 samples) declares one unnamed
    /// port, 80, which its ServiceMonitor scrapes: so do we. Two unnamed ports choose neither.
    #[test]
    fn the_only_declared_port_is_scraped() {
        let mut p = pod("p", "a", true, json!({}));
        let set_ports = |p: &mut Pod, ports: serde_json::Value| {
            p.spec.as_mut().unwrap().containers[0].ports =
                Some(serde_json::from_value(ports).unwrap());
        };
        set_ports(&mut p, json!([{"containerPort": 80}]));
        assert_eq!(
            scrape_endpoint(&p, None),
            (80, "/metrics".to_string(), EndpointRule::OnlyPort)
        );
        set_ports(
            &mut p,
            json!([{"containerPort": 80}, {"containerPort": 81}]),
        );
        assert_eq!(scrape_endpoint(&p, None).2, EndpointRule::VllmDefault);
        set_ports(
            &mut p,
            json!([{"containerPort": 80}, {"name": "http", "containerPort": 8081}]),
        );
        assert_eq!(
            scrape_endpoint(&p, None),
            (8081, "/metrics".to_string(), EndpointRule::PortNamedHttp)
        );
        p.metadata.annotations =
            Some([("prometheus.io/port".to_string(), "9400".to_string())].into());
        assert_eq!(
            scrape_endpoint(&p, None),
            (9400, "/metrics".to_string(), EndpointRule::Annotation)
        );
    }
}
