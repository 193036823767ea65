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
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::crd::VariantAutoscaling;
use super::snapshot::{self, SharedSnapshot, Snapshot};
use crate::auth::config::{
    AuthConfig, AuthOverrides, AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE,
};
use crate::auth::Auth;
use crate::error::{api_status_code, Exclusion};
use crate::health::{Heartbeat, Synced};
use crate::saturation::config::ScalingConfig;
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

/// Runs a reflector into `writer`, poking `changed` on every event.
async fn reflect<K>(
    name: &'static str,
    api: Api<K>,
    writer: reflector::store::Writer<K>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    slim: fn(&mut K),
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let labels = WatchLabels {
        resource: name.into(),
    };
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(slim),
    )
    .default_backoff();
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
                tracing::warn!(resource = name, error = %e, "watch failed; retrying with backoff{}", hint(&e));
            }
            None => return,
        }
    }
}

/// Drops what we never read, so 10,000 pods do not cost 10,000 full objects.
fn slim_pod(p: &mut Pod) {
    p.metadata.managed_fields = None;
    p.metadata.owner_references = None;
    if let Some(a) = p.metadata.annotations.as_mut() {
        a.retain(|k, _| k == snapshot::PORT_ANNOTATION || k == snapshot::PATH_ANNOTATION);
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
        // Only the node selection survives: it names the accelerator (snapshot::accelerator_of).
        let pod = spec.template.spec.take();
        spec.template = Default::default();
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
    h.metadata.managed_fields = None;
    h.metadata.annotations = None;
    h.status = None;
}

fn slim_va(v: &mut VariantAutoscaling) {
    v.metadata.managed_fields = None;
}

/// Coalesces bursts of watch events (a rollout touches many pods at once) into one rebuild.
pub(crate) const SNAPSHOT_DEBOUNCE: Duration = Duration::from_millis(200);
/// The snapshot is rebuilt at least this often even without events, which also proves the loop alive.
pub(crate) const SNAPSHOT_RESYNC: Duration = Duration::from_secs(30);

/// Watches VAs, Deployments and Pods and republishes the snapshot after every change (debounced) and
/// every [`SNAPSHOT_RESYNC`]. The three reflectors run inside this future, so when any of them ends or
/// panics the whole task ends and its supervisor restarts it with fresh watches.
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
    let ns = namespace.as_deref();
    let reflectors = futures::future::join4(
        reflect(
            "variantautoscalings",
            api(&client, ns),
            va_w,
            changed.clone(),
            metrics.clone(),
            slim_va,
        ),
        reflect(
            "deployments",
            api(&client, ns),
            dep_w,
            changed.clone(),
            metrics.clone(),
            slim_deployment,
        ),
        reflect(
            "pods",
            api(&client, ns),
            pod_w,
            changed.clone(),
            metrics.clone(),
            slim_pod,
        ),
        // Variants take their replica bounds from the autoscaler of their Deployment.
        reflect(
            "horizontalpodautoscalers",
            api(&client, ns),
            hpa_w,
            changed.clone(),
            metrics.clone(),
            slim_hpa,
        ),
    );
    let rebuild = async {
        let mut last_excluded: BTreeMap<(String, String), Exclusion> = BTreeMap::new();
        loop {
            // Either an event or the resync period, whichever comes first.
            let _ = tokio::time::timeout(SNAPSHOT_RESYNC, changed.notified()).await;
            tokio::time::sleep(SNAPSHOT_DEBOUNCE).await;
            let all_synced = ready(&vas) && ready(&deps) && ready(&pods) && ready(&hpas);
            // The stores hand out shared objects; the join reads them without copying.
            let mut snap = snapshot::build_full(
                instance.as_deref(),
                &vas.state(),
                &deps.state(),
                &pods.state(),
                &hpas.state(),
            );
            snap.synced = all_synced;
            log_exclusions(&snap, &mut last_excluded);
            shared.store(Arc::new(snap));
            if all_synced {
                synced.set();
            }
            heartbeat.beat();
        }
    };
    tokio::select! {
        _ = reflectors => tracing::warn!("the snapshot's watches ended"),
        () = rebuild => {}
    }
}

fn ready<K: Resource + Clone>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok())
}

/// Logs each exclusion once per change of its reason, and when it clears.
pub(crate) fn log_exclusions(snap: &Snapshot, last: &mut BTreeMap<(String, String), Exclusion>) {
    let now: BTreeMap<(String, String), Exclusion> = snap
        .excluded
        .iter()
        .map(|e| ((e.namespace.clone(), e.name.clone()), e.reason.clone()))
        .collect();
    for (key, reason) in &now {
        if last.get(key) != Some(reason) {
            tracing::warn!(namespace = %key.0, variant = %key.1, %reason, "VariantAutoscaling excluded from decisions");
        }
    }
    for key in last.keys() {
        if !now.contains_key(key) {
            tracing::info!(namespace = %key.0, variant = %key.1, "VariantAutoscaling no longer excluded");
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
    target: Arc<ArcSwap<ScalingConfig>>,
    metrics: Arc<Metrics>,
    synced: Arc<Synced>,
) {
    let cm = format!("{namespace}/{name}");
    follow_configmap(client, namespace, name, metrics, Some(synced), |data| {
        let Some(data) = data else {
            tracing::info!(configmap = %cm, "saturation ConfigMap absent; using the default thresholds 0.80 / 5 / 0.10 / 3");
            target.store(Arc::new(ScalingConfig::default()));
            return;
        };
        let (next, report) = ScalingConfig::from_configmap(&target.load(), data);
        for (key, why) in &report.rejected {
            tracing::error!(configmap = %cm, entry = %key, reason = %why, "saturation config entry rejected; its previous good version (if any) stays in force");
        }
        for (key, note) in &report.ignored_keys {
            tracing::warn!(configmap = %cm, entry = %key, "{note}");
        }
        tracing::info!(configmap = %cm, default = ?next.default_config(), "saturation config loaded");
        target.store(Arc::new(next));
    })
    .await
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
