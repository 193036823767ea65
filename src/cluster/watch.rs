//! The snapshot loop: reflectors for everything that declares or locates a variant, and a rebuild of
//! the joined [`Snapshot`] after every change (debounced) and every `SNAPSHOT_RESYNC`. Nothing here is
//! on the request path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::runtime::reflector::{self, Store};
use kube::{Api, Client};
use tokio::sync::Notify;

use super::crd::{InferencePool, LeaderWorkerSet, ScaledObject, VariantAutoscaling};
use super::exclusion::Exclusion;
use super::monitors::{PodMonitor, ServiceMonitor};
use super::reflect::{optional_store, ready, OptionalCrd, OptionalStore, Reflect, Watched};
use super::slim;
use super::snapshot::{self, Objects, Scope, SharedSnapshot, Snapshot, SourceKind};
use crate::changes::Changes;
use crate::health::{Heartbeat, Synced};
use crate::telemetry::Metrics;

/// Coalesces bursts of watch events (a rollout touches many pods at once) into one rebuild.
pub(crate) const SNAPSHOT_DEBOUNCE: Duration = Duration::from_millis(200);
/// The snapshot is rebuilt at least this often even without events, which also proves the loop alive.
pub(crate) const SNAPSHOT_RESYNC: Duration = Duration::from_secs(30);

/// The snapshot loop's context.
pub struct SnapshotWatch {
    pub client: Client,
    /// `--watch-namespace`, or every namespace.
    pub namespace: Option<String>,
    /// `--controller-instance` (WVA v0.5.1 isolation).
    pub instance: Option<String>,
    /// `--node-selector`: the nodes whose GPUs the limiter grants.
    pub node_selector: Option<crate::provider::selector::Selector>,
    pub shared: SharedSnapshot,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Arc<Heartbeat>,
    pub synced: Arc<Synced>,
    /// Bumped after each rebuild (push streams wake on it).
    pub changes: Changes,
}

impl SnapshotWatch {
    /// Watches what declares variants (VAs, HPAs, ScaledObjects while KEDA's CRD is installed),
    /// Deployments, Pods, Services, the optional CRDs and (watching every namespace) Namespaces, and
    /// republishes the snapshot. The reflectors run inside this future, so when any of them ends or
    /// panics the whole task ends and its supervisor restarts it with fresh watches.
    pub async fn run(self: Arc<Self>) {
        let reflect = Reflect {
            client: self.client.clone(),
            changed: Arc::new(Notify::new()),
            metrics: self.metrics.clone(),
        };
        let (vas, va_w) = reflector::store::<VariantAutoscaling>();
        let (deps, dep_w) = reflector::store::<Deployment>();
        let (pods, pod_w) = reflector::store::<Pod>();
        let (hpas, hpa_w) = reflector::store::<HorizontalPodAutoscaler>();
        let (namespaces, ns_w) = reflector::store::<Namespace>();
        let (services, svc_w) = reflector::store::<Service>();
        let (nodes, node_w) = reflector::store::<Node>();
        let optional = OptionalStores::new();
        let ns = self.namespace.as_deref();
        let r = &reflect;
        let reflectors = async {
            futures::join!(
                r.run(
                    Watched::all("variantautoscalings", slim::va),
                    r.api(ns),
                    va_w
                ),
                r.run(
                    Watched::all("deployments", slim::deployment),
                    r.api(ns),
                    dep_w
                ),
                r.run(Watched::all("pods", slim::pod), r.api(ns), pod_w),
                // Annotated HPAs are variants, and every variant takes its bounds from its
                // Deployment's autoscaler.
                r.run(
                    Watched::all("horizontalpodautoscalers", slim::hpa),
                    r.api(ns),
                    hpa_w
                ),
                r.run(Watched::all("services", slim::service), r.api(ns), svc_w),
                // The GPU limiter's inventory. Never holds readiness: without `list`/`watch` on nodes
                // the limiter runs unlimited and says so.
                r.run(
                    Watched::all("nodes", slim::node),
                    Api::all(self.client.clone()),
                    node_w
                ),
                optional.reflect(r, ns),
                r.namespaces(
                    ns.is_none(),
                    Watched::all("namespaces", slim::namespace),
                    ns_w
                ),
            )
        };
        let stores = Stores {
            vas,
            deps,
            pods,
            hpas,
            namespaces,
            services,
            nodes,
            optional: optional.clone(),
            watching_all: ns.is_none(),
        };
        tokio::select! {
            _ = reflectors => tracing::warn!("the snapshot's watches ended"),
            () = self.rebuild(&stores, &reflect.changed) => {}
        }
    }

    /// Republishes the snapshot after every change (debounced) and every [`SNAPSHOT_RESYNC`].
    async fn rebuild(&self, stores: &Stores, changed: &Notify) {
        let scope = Scope {
            instance: self.instance.clone(),
            watched_namespace: self.namespace.clone(),
            node_selector: self.node_selector.clone(),
        };
        let mut last_excluded = LoggedExclusions::new();
        loop {
            // Either an event or the resync period, whichever comes first.
            let _ = tokio::time::timeout(SNAPSHOT_RESYNC, changed.notified()).await;
            tokio::time::sleep(SNAPSHOT_DEBOUNCE).await;
            let (objects, all_synced) = stores.objects();
            let mut snap = snapshot::build(&objects, &scope);
            snap.synced = all_synced;
            log_exclusions(&snap, &mut last_excluded);
            self.shared.store(Arc::new(snap));
            self.changes.notify();
            if all_synced {
                self.synced.set();
            }
            self.heartbeat.beat();
        }
    }
}

/// The snapshot's stores, read together.
struct Stores {
    vas: Store<VariantAutoscaling>,
    deps: Store<Deployment>,
    pods: Store<Pod>,
    hpas: Store<HorizontalPodAutoscaler>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    nodes: Store<Node>,
    optional: OptionalStores,
    /// Namespaces are followed only when watching every namespace.
    watching_all: bool,
}

/// The stores of the optional CRDs' objects.
#[derive(Clone)]
struct OptionalStores {
    scaled_objects: OptionalStore<ScaledObject>,
    leader_worker_sets: OptionalStore<LeaderWorkerSet>,
    pools: OptionalStore<InferencePool>,
    pod_monitors: OptionalStore<PodMonitor>,
    service_monitors: OptionalStore<ServiceMonitor>,
}

impl OptionalStores {
    fn new() -> Self {
        Self {
            scaled_objects: optional_store(),
            leader_worker_sets: optional_store(),
            pools: optional_store(),
            pod_monitors: optional_store(),
            service_monitors: optional_store(),
        }
    }
}

impl Stores {
    /// The objects the join reads (shared, not copied), and whether every list is complete.
    fn objects(&self) -> (Objects, bool) {
        let (scaled, scaled_ready) = self.optional.scaled_objects.load().state();
        let (pools, pools_ready) = self.optional.pools.load().state();
        let (leader_worker_sets, lws_ready) = self.optional.leader_worker_sets.load().state();
        // Monitors only move a pod's scrape port: they never hold readiness (a cluster whose RBAC
        // predates them would otherwise never be ready).
        let (pod_monitors, _) = self.optional.pod_monitors.load().state();
        let (service_monitors, _) = self.optional.service_monitors.load().state();
        let all_synced = ready(&self.vas)
            && ready(&self.deps)
            && ready(&self.pods)
            && ready(&self.hpas)
            && ready(&self.services)
            && scaled_ready
            && lws_ready
            && pools_ready
            && (!self.watching_all || ready(&self.namespaces));
        let objects = Objects {
            vas: self.vas.state(),
            deployments: self.deps.state(),
            leader_worker_sets,
            pods: self.pods.state(),
            hpas: self.hpas.state(),
            scaled_objects: scaled,
            namespaces: self.namespaces.state(),
            pools,
            services: self.services.state(),
            pod_monitors,
            service_monitors,
            nodes: self.nodes.state(),
            nodes_unknown: (!ready(&self.nodes)).then(|| {
                "the nodes are not listed (yet, or RBAC lacks list/watch on nodes; see the nodes watch in the log)".to_string()
            }),
        };
        (objects, all_synced)
    }
}

impl OptionalStores {
    /// The optional CRDs' reflectors: KEDA's ScaledObjects (variants and bounds), LeaderWorkerSets
    /// (multi-host scale targets), the inference
    /// extension's InferencePools (scale from zero: they select the pods and name the endpoint picker),
    /// and the prometheus-operator's PodMonitors and ServiceMonitors (where pods are scraped).
    async fn reflect(&self, r: &Reflect, namespace: Option<&str>) {
        futures::join!(
            r.optional(
                namespace,
                OptionalCrd {
                    group_version: "monitoring.coreos.com/v1",
                    plural: "podmonitors",
                    what: "the prometheus-operator's PodMonitor",
                    slim: slim::monitor::<PodMonitor>,
                },
                &self.pod_monitors,
            ),
            r.optional(
                namespace,
                OptionalCrd {
                    group_version: "monitoring.coreos.com/v1",
                    plural: "servicemonitors",
                    what: "the prometheus-operator's ServiceMonitor",
                    slim: slim::monitor::<ServiceMonitor>,
                },
                &self.service_monitors,
            ),
            r.optional(
                namespace,
                OptionalCrd {
                    group_version: "keda.sh/v1alpha1",
                    plural: "scaledobjects",
                    what: "KEDA's ScaledObject",
                    slim: slim::scaled_object,
                },
                &self.scaled_objects,
            ),
            r.optional(
                namespace,
                OptionalCrd {
                    group_version: "leaderworkerset.x-k8s.io/v1",
                    plural: "leaderworkersets",
                    what: "LeaderWorkerSet",
                    slim: slim::leader_worker_set,
                },
                &self.leader_worker_sets,
            ),
            r.optional(
                namespace,
                OptionalCrd {
                    group_version: "inference.networking.k8s.io/v1",
                    plural: "inferencepools",
                    what: "the inference extension's InferencePool",
                    slim: slim::pool,
                },
                &self.pools,
            ),
        );
    }
}

/// The last logged exclusions, by (namespace, kind, name).
pub(crate) type LoggedExclusions = BTreeMap<(String, SourceKind, String), Exclusion>;

/// Logs each exclusion once per change of its reason, and when it clears.
pub(crate) fn log_exclusions(snap: &Snapshot, last: &mut LoggedExclusions) {
    let now: LoggedExclusions = snap
        .excluded
        .iter()
        .map(|e| {
            (
                (e.namespace.clone(), e.kind, e.name.clone()),
                e.reason.clone(),
            )
        })
        .collect();
    for ((namespace, kind, name), reason) in &now {
        if last.get(&(namespace.clone(), *kind, name.clone())) != Some(reason) {
            tracing::warn!(%namespace, %kind, variant = %name, %reason, "variant excluded from decisions");
        }
    }
    for key @ (namespace, kind, name) in last.keys() {
        if !now.contains_key(key) {
            tracing::info!(%namespace, %kind, variant = %name, "variant no longer excluded");
        }
    }
    *last = now;
}
