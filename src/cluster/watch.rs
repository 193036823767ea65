//! kube-rs watchers that keep the cluster snapshot, the saturation thresholds and the authentication
//! configuration current. Each concern follows its objects with a watcher (list, then watch, with
//! backoff on errors) and publishes whole values; nothing here is on the request path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::crd::{InferencePool, ScaledObject, VariantAutoscaling};
use super::monitors::{PodMonitor, ServiceMonitor};
use super::snapshot::{self, Objects, Scope, SharedSnapshot, Snapshot, SourceKind};
use crate::auth::config::{
    AuthConfig, AuthOverrides, AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE,
};
use crate::auth::Auth;
use crate::error::{api_status_code, Exclusion};
use crate::health::{Heartbeat, Synced};
use crate::saturation::config::{ScalingConfig, Thresholds, UpdateReport};
use crate::saturation::ZeroConfig;
use crate::telemetry::{Metrics, WatchLabels};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Explains the usual reasons a watch fails, so the log line says what to fix.
fn hint(err: &watcher::Error) -> &'static str {
    match api_status_code(err) {
        Some(401 | 403) => {
            " (RBAC: apply manifests/rbac.yaml so the service account can list and watch this resource)"
        }
        Some(404) => {
            " (is the resource's CRD installed? kubectl apply -f manifests/crd-variantautoscalings.yaml)"
        }
        _ => "",
    }
}

/// Runs a reflector into `writer`, poking `changed` on every event. With `until_not_found`, returns when
/// the API answers 404 (the resource's CRD was removed) instead of retrying.
async fn reflect<K>(
    name: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    slim: fn(&mut K),
    until_not_found: bool,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let config = watcher::Config::default();
    reflect_selected(
        name,
        api,
        config,
        writer,
        changed,
        metrics,
        slim,
        until_not_found,
    )
    .await;
}

/// [`reflect`] of the objects a field or label selector picks.
#[allow(clippy::too_many_arguments)]
async fn reflect_selected<K>(
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    slim: fn(&mut K),
    until_not_found: bool,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let labels = WatchLabels {
        resource: name.into(),
    };
    let stream = reflector::reflector(writer, watcher(api, config).modify(slim)).default_backoff();
    futures::pin_mut!(stream);
    loop {
        match stream.next().await {
            Some(Ok(event)) => {
                if matches!(event, watcher::Event::InitDone) {
                    metrics.watch_up.get_or_create(&labels).set(1);
                    tracing::info!(resource = name, "initial list loaded");
                }
                changed.notify_one();
            }
            Some(Err(e)) => {
                metrics.watch_errors.get_or_create(&labels).inc();
                metrics.watch_up.get_or_create(&labels).set(0);
                if until_not_found && api_status_code(&e) == Some(404) {
                    return;
                }
                tracing::warn!(resource = name, error = %e, "watch failed; retrying with backoff{}", hint(&e));
            }
            None => return,
        }
    }
}

/// A kind whose CRD may not be installed (KEDA's ScaledObject): unknown until discovery answered,
/// then absent (an empty, complete list) or followed by a reflector.
pub(crate) enum Optional<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    Unknown,
    Absent,
    Present(Store<K>),
}

impl<K: Resource + Clone + 'static> Optional<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// The objects, and whether the list is complete.
    fn state(&self) -> (Vec<Arc<K>>, bool) {
        match self {
            Optional::Unknown => (Vec::new(), false),
            Optional::Absent => (Vec::new(), true),
            Optional::Present(store) => (store.state(), ready(store)),
        }
    }
}

/// Namespaces (exclusion, local-config opt-in) matter only when watching every namespace; otherwise
/// this never ends.
async fn reflect_namespaces(
    client: &Client,
    watching_all: bool,
    (name, config): (&'static str, watcher::Config),
    writer: reflector::store::Writer<Namespace>,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) {
    if watching_all {
        let (changed, metrics) = (changed.clone(), metrics.clone());
        let api = Api::all(client.clone());
        reflect_selected(
            name,
            api,
            config,
            writer,
            changed,
            metrics,
            slim_namespace,
            false,
        )
        .await;
    } else {
        futures::future::pending::<()>().await;
    }
}

/// How often the API's discovery is asked whether an optional CRD appeared.
pub(crate) const CRD_POLL: Duration = Duration::from_secs(30);

/// Whether `group_version` serves `plural` (its CRD is installed and established).
async fn served(client: &Client, group_version: &str, plural: &str) -> Result<bool, kube::Error> {
    match client.list_api_group_resources(group_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Err(e) if crate::error::client_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

/// An optional CRD this server follows while it is installed.
struct OptionalCrd<K> {
    group_version: &'static str,
    plural: &'static str,
    /// Who ships the CRD, for log lines ("KEDA's ScaledObject").
    what: &'static str,
    slim: fn(&mut K),
}

/// Follows an optional CRD's objects while it is installed: asks discovery every [`CRD_POLL`] until it
/// is, then reflects them until the API answers 404, and starts over. While the CRD is absent the list
/// is empty and complete, so a cluster without it is not held unready.
async fn reflect_optional<K>(
    client: Client,
    namespace: Option<String>,
    crd: OptionalCrd<K>,
    state: Arc<ArcSwap<Optional<K>>>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
) where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let what = crd.what;
    loop {
        match served(&client, crd.group_version, crd.plural).await {
            Ok(true) => {
                tracing::info!("{what} CRD is installed; following {}", crd.plural);
                let (store, writer) = reflector::store::<K>();
                state.store(Arc::new(Optional::Present(store)));
                reflect(
                    crd.plural,
                    api(&client, namespace.as_deref()),
                    writer,
                    changed.clone(),
                    metrics.clone(),
                    crd.slim,
                    true,
                )
                .await;
                tracing::info!(
                    "{} are no longer served ({what} CRD was removed?); checking again",
                    crd.plural
                );
                state.store(Arc::new(Optional::Absent));
                changed.notify_one();
                continue;
            }
            Ok(false) => {
                if !matches!(**state.load(), Optional::Absent) {
                    tracing::info!(
                        "{what} CRD is not installed; {} are followed once it is",
                        crd.plural
                    );
                    state.store(Arc::new(Optional::Absent));
                    changed.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "asking the API whether {what} CRD is installed failed; retrying");
            }
        }
        tokio::time::sleep(CRD_POLL).await;
    }
}

/// The optional CRDs' reflectors: KEDA's ScaledObjects (variants and bounds), the inference
/// extension's InferencePools (scale from zero: they select the pods and name the endpoint picker), and
/// the prometheus-operator's PodMonitors and ServiceMonitors (where pods are scraped).
async fn optional_reflectors(
    client: &Client,
    namespace: Option<&String>,
    stores: &OptionalStores,
    changed: &Arc<Notify>,
    metrics: &Arc<Metrics>,
) {
    let OptionalStores {
        scaled_objects,
        pools,
        pod_monitors,
        service_monitors,
    } = stores;
    futures::join!(
        reflect_optional(
            client.clone(),
            namespace.cloned(),
            OptionalCrd {
                group_version: "monitoring.coreos.com/v1",
                plural: "podmonitors",
                what: "the prometheus-operator's PodMonitor",
                slim: slim_monitor::<PodMonitor>,
            },
            pod_monitors.clone(),
            changed.clone(),
            metrics.clone(),
        ),
        reflect_optional(
            client.clone(),
            namespace.cloned(),
            OptionalCrd {
                group_version: "monitoring.coreos.com/v1",
                plural: "servicemonitors",
                what: "the prometheus-operator's ServiceMonitor",
                slim: slim_monitor::<ServiceMonitor>,
            },
            service_monitors.clone(),
            changed.clone(),
            metrics.clone(),
        ),
        reflect_optional(
            client.clone(),
            namespace.cloned(),
            OptionalCrd {
                group_version: "keda.sh/v1alpha1",
                plural: "scaledobjects",
                what: "KEDA's ScaledObject",
                slim: slim_scaled_object,
            },
            scaled_objects.clone(),
            changed.clone(),
            metrics.clone(),
        ),
        reflect_optional(
            client.clone(),
            namespace.cloned(),
            OptionalCrd {
                group_version: "inference.networking.k8s.io/v1",
                plural: "inferencepools",
                what: "the inference extension's InferencePool",
                slim: slim_pool,
            },
            pools.clone(),
            changed.clone(),
            metrics.clone(),
        ),
    );
}

fn slim_monitor<K: Resource>(m: &mut K) {
    m.meta_mut().managed_fields = None;
    m.meta_mut().annotations = None;
}

fn slim_pool(p: &mut InferencePool) {
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
}

/// Only the labels, the selector and the ports: they locate an endpoint picker's pods and metrics port,
/// and the pods behind a ServiceMonitor's Services.
fn slim_service(s: &mut Service) {
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
fn slim_pod(p: &mut Pod) {
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
        spec.init_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        for c in &mut spec.containers {
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.args = None;
            c.command = None;
            c.resources = None;
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

fn slim_deployment(d: &mut Deployment) {
    d.metadata.managed_fields = None;
    d.metadata.annotations = None;
    if let Some(spec) = d.spec.as_mut() {
        // Only the pod labels (an InferencePool selects on them) and the node selection survive: it
        // names the accelerator (snapshot::accelerator_of).
        let pod = spec.template.spec.take();
        let labels = spec.template.metadata.take().and_then(|m| m.labels);
        spec.template = Default::default();
        spec.template.metadata = labels.map(|labels| ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        });
        if let Some(pod) = pod {
            spec.template.spec = Some(k8s_openapi::api::core::v1::PodSpec {
                node_selector: pod.node_selector,
                affinity: pod.affinity.and_then(|a| {
                    a.node_affinity
                        .map(|n| k8s_openapi::api::core::v1::Affinity {
                            node_affinity: Some(n),
                            ..Default::default()
                        })
                }),
                ..Default::default()
            });
        }
    }
}

fn slim_hpa(h: &mut HorizontalPodAutoscaler) {
    keep_variant_annotations(&mut h.metadata);
    h.status = None;
}

fn slim_va(v: &mut VariantAutoscaling) {
    v.metadata.managed_fields = None;
}

/// Keeps only the `llm-d.ai/` annotations: they declare variants (`declared`).
fn keep_variant_annotations(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.retain(|k, _| k.starts_with("llm-d.ai/"));
    }
}

fn slim_scaled_object(s: &mut ScaledObject) {
    keep_variant_annotations(&mut s.metadata);
    s.spec.triggers.clear();
}

fn slim_configmap(c: &mut ConfigMap) {
    c.metadata.managed_fields = None;
    c.metadata.annotations = None;
    c.binary_data = None;
}

fn slim_namespace(n: &mut Namespace) {
    n.metadata.managed_fields = None;
    if let Some(a) = n.metadata.annotations.as_mut() {
        a.retain(|k, _| k == snapshot::EXCLUDE_ANNOTATION);
    }
    n.spec = None;
    n.status = None;
}

/// Coalesces bursts of watch events (a rollout touches many pods at once) into one rebuild.
pub(crate) const SNAPSHOT_DEBOUNCE: Duration = Duration::from_millis(200);
/// The snapshot is rebuilt at least this often even without events, which also proves the loop alive.
pub(crate) const SNAPSHOT_RESYNC: Duration = Duration::from_secs(30);

/// Watches what declares variants (VAs, HPAs, ScaledObjects while KEDA's CRD is installed), Deployments,
/// Pods and (watching every namespace) Namespaces, and republishes the snapshot after every change
/// (debounced) and every [`SNAPSHOT_RESYNC`]. The reflectors run inside this future, so when any of them
/// ends or panics the whole task ends and its supervisor restarts it with fresh watches.
pub(crate) async fn run_snapshot(
    client: Client,
    namespace: Option<String>,
    shared: SharedSnapshot,
    metrics: Arc<Metrics>,
    heartbeat: Arc<Heartbeat>,
    synced: Arc<Synced>,
    instance: Option<String>,
) {
    let changed = Arc::new(Notify::new());
    let (vas, va_w) = reflector::store::<VariantAutoscaling>();
    let (deps, dep_w) = reflector::store::<Deployment>();
    let (pods, pod_w) = reflector::store::<Pod>();
    let (hpas, hpa_w) = reflector::store::<HorizontalPodAutoscaler>();
    let (namespaces, ns_w) = reflector::store::<Namespace>();
    let (services, svc_w) = reflector::store::<Service>();
    let optional = OptionalStores::new();
    let ns = namespace.as_deref();
    let reflectors = async {
        futures::join!(
            reflect(
                "variantautoscalings",
                api(&client, ns),
                va_w,
                changed.clone(),
                metrics.clone(),
                slim_va,
                false,
            ),
            reflect(
                "deployments",
                api(&client, ns),
                dep_w,
                changed.clone(),
                metrics.clone(),
                slim_deployment,
                false,
            ),
            reflect(
                "pods",
                api(&client, ns),
                pod_w,
                changed.clone(),
                metrics.clone(),
                slim_pod,
                false,
            ),
            // Annotated HPAs are variants, and every variant takes its bounds from its Deployment's autoscaler.
            reflect(
                "horizontalpodautoscalers",
                api(&client, ns),
                hpa_w,
                changed.clone(),
                metrics.clone(),
                slim_hpa,
                false,
            ),
            optional_reflectors(&client, namespace.as_ref(), &optional, &changed, &metrics),
            reflect(
                "services",
                api(&client, ns),
                svc_w,
                changed.clone(),
                metrics.clone(),
                slim_service,
                false,
            ),
            reflect_namespaces(
                &client,
                ns.is_none(),
                ("namespaces", watcher::Config::default()),
                ns_w,
                &changed,
                &metrics
            ),
        )
    };
    let scope = Scope {
        instance,
        watched_namespace: namespace.clone(),
    };
    let stores = Stores {
        vas,
        deps,
        pods,
        hpas,
        namespaces,
        services,
        optional: optional.clone(),
        watching_all: ns.is_none(),
    };
    let rebuild = rebuild(&stores, &scope, &changed, &shared, (&heartbeat, &synced));
    tokio::select! {
        _ = reflectors => tracing::warn!("the snapshot's watches ended"),
        () = rebuild => {}
    }
}

/// Republishes the snapshot after every change (debounced) and every [`SNAPSHOT_RESYNC`].
async fn rebuild(
    stores: &Stores,
    scope: &Scope,
    changed: &Notify,
    shared: &SharedSnapshot,
    (heartbeat, synced): (&Heartbeat, &Synced),
) {
    let mut last_excluded = LoggedExclusions::new();
    loop {
        // Either an event or the resync period, whichever comes first.
        let _ = tokio::time::timeout(SNAPSHOT_RESYNC, changed.notified()).await;
        tokio::time::sleep(SNAPSHOT_DEBOUNCE).await;
        let (objects, all_synced) = stores.objects();
        let mut snap = snapshot::build(&objects, scope);
        snap.synced = all_synced;
        log_exclusions(&snap, &mut last_excluded);
        shared.store(Arc::new(snap));
        if all_synced {
            synced.set();
        }
        heartbeat.beat();
    }
}

/// An optional CRD's objects, swapped whole as the CRD comes and goes.
type OptionalStore<K> = Arc<ArcSwap<Optional<K>>>;

/// The snapshot's stores, read together.
struct Stores {
    vas: Store<VariantAutoscaling>,
    deps: Store<Deployment>,
    pods: Store<Pod>,
    hpas: Store<HorizontalPodAutoscaler>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    optional: OptionalStores,
    /// Namespaces are followed only when watching every namespace.
    watching_all: bool,
}

/// The stores of the optional CRDs' objects.
#[derive(Clone)]
struct OptionalStores {
    scaled_objects: OptionalStore<ScaledObject>,
    pools: OptionalStore<InferencePool>,
    pod_monitors: OptionalStore<PodMonitor>,
    service_monitors: OptionalStore<ServiceMonitor>,
}

impl OptionalStores {
    fn new() -> Self {
        Self {
            scaled_objects: Arc::new(ArcSwap::from_pointee(Optional::Unknown)),
            pools: Arc::new(ArcSwap::from_pointee(Optional::Unknown)),
            pod_monitors: Arc::new(ArcSwap::from_pointee(Optional::Unknown)),
            service_monitors: Arc::new(ArcSwap::from_pointee(Optional::Unknown)),
        }
    }
}

impl Stores {
    /// The objects the join reads (shared, not copied), and whether every list is complete.
    fn objects(&self) -> (Objects, bool) {
        let (scaled, scaled_ready) = self.optional.scaled_objects.load().state();
        let (pools, pools_ready) = self.optional.pools.load().state();
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
            && pools_ready
            && (!self.watching_all || ready(&self.namespaces));
        let objects = Objects {
            vas: self.vas.state(),
            deployments: self.deps.state(),
            pods: self.pods.state(),
            hpas: self.hpas.state(),
            scaled_objects: scaled,
            namespaces: self.namespaces.state(),
            configmaps: Vec::new(),
            pools,
            services: self.services.state(),
            pod_monitors,
            service_monitors,
        };
        (objects, all_synced)
    }
}

fn ready<K: Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
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

/// Follows one named ConfigMap, calling `apply` with its data (or `None` when it is absent or deleted).
async fn follow_configmap(
    client: Client,
    namespace: String,
    name: String,
    metrics: Arc<Metrics>,
    synced: Option<Arc<Synced>>,
    mut apply: impl FnMut(Option<&BTreeMap<String, String>>),
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let labels = WatchLabels {
        resource: format!("configmap/{namespace}/{name}"),
    };
    let stream = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff();
    futures::pin_mut!(stream);
    let mut seen_in_init = false;
    let empty = BTreeMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => seen_in_init = false,
            Ok(watcher::Event::InitApply(cm)) | Ok(watcher::Event::Apply(cm)) => {
                seen_in_init = true;
                apply(Some(cm.data.as_ref().unwrap_or(&empty)));
            }
            Ok(watcher::Event::InitDone) => {
                metrics.watch_up.get_or_create(&labels).set(1);
                if !seen_in_init {
                    apply(None);
                }
                if let Some(s) = &synced {
                    s.set();
                }
            }
            Ok(watcher::Event::Delete(_)) => apply(None),
            Err(e) => {
                metrics.watch_errors.get_or_create(&labels).inc();
                metrics.watch_up.get_or_create(&labels).set(0);
                tracing::warn!(configmap = %format!("{namespace}/{name}"), error = %e, "watch failed; retrying with backoff{}", hint(&e));
            }
        }
    }
}

/// Keeps the saturation thresholds current from the WVA ConfigMap.
pub(crate) async fn run_scaling_config(
    client: Client,
    namespace: String,
    name: String,
    target: Arc<ArcSwap<Thresholds>>,
    metrics: Arc<Metrics>,
    synced: Arc<Synced>,
) {
    let cm = format!("{namespace}/{name}");
    follow_configmap(client, namespace, name, metrics, Some(synced), |data| {
        let Some(data) = data else {
            tracing::info!(configmap = %cm, "saturation ConfigMap absent; using the default thresholds 0.80 / 5 / 0.10 / 3");
            target.rcu(|t| t.with_global(ScalingConfig::default()));
            return;
        };
        let (next, report) = ScalingConfig::from_configmap(target.load().global(), data);
        log_report("saturation", &cm, &report);
        tracing::info!(configmap = %cm, default = ?next.default_config(), "saturation config loaded");
        target.rcu(|t| t.with_global(next.clone()));
    })
    .await
}

/// Keeps the scale-to-zero configuration current from WVA's `wva-model-scale-to-zero-config`.
pub(crate) async fn run_zero_config(
    client: Client,
    namespace: String,
    name: String,
    target: Arc<ArcSwap<ZeroConfig>>,
    metrics: Arc<Metrics>,
    synced: Arc<Synced>,
) {
    let cm = format!("{namespace}/{name}");
    follow_configmap(client, namespace, name, metrics, Some(synced), |data| {
        let Some(data) = data else {
            tracing::info!(configmap = %cm, "scale-to-zero ConfigMap absent; WVA_SCALE_TO_ZERO decides for every model");
            target.rcu(|z| z.without_entries());
            return;
        };
        let (next, report) = ZeroConfig::from_configmap(&target.load(), data);
        log_report("scale-to-zero", &cm, &report);
        tracing::info!(configmap = %cm, entries = data.len(), "scale-to-zero config loaded");
        target.store(Arc::new(next));
    })
    .await
}

fn log_report(what: &str, cm: &str, report: &UpdateReport) {
    for (key, why) in &report.rejected {
        tracing::error!(configmap = %cm, entry = %key, reason = %why, "{what} config entry rejected; its previous good version (if any) stays in force");
    }
    for (key, note) in &report.ignored_keys {
        tracing::warn!(configmap = %cm, entry = %key, "{note}");
    }
}

/// Namespaces labelled this way opt in to a namespace-local saturation ConfigMap (WVA v0.5.1).
pub const CONFIG_ENABLED_LABEL: &str = "wva.llmd.ai/config-enabled";

/// Keeps the namespace-local saturation ConfigMaps current: ConfigMaps named like the global one in
/// namespaces labelled [`CONFIG_ENABLED_LABEL`]` = "true"` (or, with `--watch-namespace`, in the watched
/// namespace), except the global one itself. Each is parsed on top of its previous version, so a bad
/// entry keeps its last good one; a ConfigMap or opt-in that goes away takes its overrides with it.
pub(crate) async fn run_local_configs(
    client: Client,
    watched: Option<String>,
    global_namespace: String,
    name: String,
    target: Arc<ArcSwap<Thresholds>>,
    metrics: Arc<Metrics>,
    synced: Arc<Synced>,
) {
    let changed = Arc::new(Notify::new());
    let (cms, cm_w) = reflector::store::<ConfigMap>();
    let (opted, ns_w) = reflector::store::<Namespace>();
    let watch_namespaces = watched.is_none();
    let watches = async {
        let configmaps = reflect_selected(
            "configmaps/local-saturation",
            api(&client, watched.as_deref()),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            cm_w,
            changed.clone(),
            metrics.clone(),
            slim_configmap,
            false,
        );
        // With --watch-namespace, only the watched namespace's ConfigMap applies: no opt-in to follow.
        let opted_in = reflect_namespaces(
            &client,
            watch_namespaces,
            (
                "namespaces/config-enabled",
                watcher::Config::default().labels(&format!("{CONFIG_ENABLED_LABEL}=true")),
            ),
            ns_w,
            &changed,
            &metrics,
        );
        futures::join!(configmaps, opted_in);
    };
    let apply = async {
        let mut versions: BTreeMap<String, Option<String>> = BTreeMap::new();
        loop {
            changed.notified().await;
            tokio::time::sleep(SNAPSHOT_DEBOUNCE).await;
            if !ready(&cms) || (watch_namespaces && !ready(&opted)) {
                continue;
            }
            let enabled: std::collections::BTreeSet<String> = match &watched {
                Some(ns) => [ns.clone()].into(),
                None => opted
                    .state()
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect(),
            };
            let current = target.load_full();
            let mut local = BTreeMap::new();
            let mut seen = BTreeMap::new();
            for cm in cms.state() {
                let Some(ns) = cm.metadata.namespace.clone() else {
                    continue;
                };
                if ns == global_namespace || !enabled.contains(&ns) {
                    continue;
                }
                let empty = BTreeMap::new();
                let data = cm.data.as_ref().unwrap_or(&empty);
                let previous = current.local(&ns).cloned().unwrap_or_default();
                let (next, report) = ScalingConfig::from_local_configmap(&previous, data, &ns);
                let version = cm.metadata.resource_version.clone();
                if versions.get(&ns) != Some(&version) {
                    let where_ = format!("{ns}/{name}");
                    log_report("saturation", &where_, &report);
                    tracing::info!(configmap = %where_, default = ?next.default_config(), "namespace-local saturation config loaded");
                }
                seen.insert(ns.clone(), version);
                local.insert(ns, next);
            }
            for gone in versions.keys().filter(|ns| !seen.contains_key(*ns)) {
                tracing::info!(namespace = %gone, "namespace-local saturation config removed (ConfigMap deleted or namespace no longer opted in); the global one applies");
            }
            versions = seen;
            target.rcu(|t| t.with_local(local.clone()));
            synced.set();
        }
    };
    tokio::select! {
        () = watches => tracing::warn!("the namespace-local config watches ended"),
        () = apply => {}
    }
}

/// Keeps the trust configuration current from `kube-system/extension-apiserver-authentication`.
pub async fn run_auth_config(
    client: Client,
    auth: Arc<Auth>,
    overrides: AuthOverrides,
    metrics: Arc<Metrics>,
) {
    let provider = crate::tls::provider();
    follow_configmap(client, AUTH_CONFIGMAP_NAMESPACE.into(), AUTH_CONFIGMAP_NAME.into(), metrics, None, |data| {
        let empty = BTreeMap::new();
        if data.is_none() {
            tracing::error!(
                "ConfigMap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME} not found: kube-apiserver publishes it when the aggregation layer is configured \
                 (--requestheader-client-ca-file); only the command-line overrides apply"
            );
        }
        match AuthConfig::from_configmap(data.unwrap_or(&empty), &overrides, &provider) {
            Ok(cfg) => {
                tracing::info!(
                    request_header = cfg.request_header.is_some(),
                    client_ca = cfg.client_ca.is_some(),
                    allowed_names = ?cfg.request_header.as_ref().map(|r| r.allowed_names.clone()),
                    "authentication configuration loaded"
                );
                auth.set_config(cfg);
            }
            Err(e) => tracing::error!(error = %e, "authentication configuration rejected; the previous one stays in force"),
        }
    })
    .await
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
        slim_deployment(&mut d);
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.containers.is_empty());
        assert_eq!(
            snapshot::accelerator_of(&d).as_deref(),
            Some("H100"),
            "{pod:?}"
        );
    }
}
