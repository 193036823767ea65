//! The ConfigMaps that configure decisions, followed and parsed on top of their last good version: the
//! global saturation ConfigMap, the namespace-local ones (WVA v0.5.1) and the scale-to-zero one. A bad
//! entry is logged and keeps its previous version; an absent ConfigMap means the defaults.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::runtime::reflector;
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::Notify;

use super::reflect::{ready, Reflect, Watched};
use super::slim;
use super::watch::SNAPSHOT_DEBOUNCE;
use crate::follow::ConfigMapWatch;
use crate::health::Synced;
use crate::saturation::config::{ConfigIssues, ScalingConfig, Thresholds};
use crate::saturation::ZeroConfig;
use crate::telemetry::Metrics;

/// A ConfigMap's data, `None` when it is absent.
type Data<'a> = Option<&'a BTreeMap<String, String>>;

/// One ConfigMap followed into a configuration store: every version (or its absence) is applied by
/// `apply`, which parses it on top of what the store holds.
pub struct FollowedConfig<T> {
    pub configmap: ConfigMapWatch,
    pub target: Arc<ArcSwap<T>>,
    apply: fn(&ArcSwap<T>, &str, Data<'_>),
}

impl<T> FollowedConfig<T> {
    pub async fn run(self: Arc<Self>) {
        let cm = self.configmap.key();
        self.configmap
            .follow(|data| (self.apply)(&self.target, &cm, data))
            .await;
    }
}

impl FollowedConfig<Thresholds> {
    /// The global WVA saturation ConfigMap into the thresholds.
    pub fn saturation(configmap: ConfigMapWatch, target: Arc<ArcSwap<Thresholds>>) -> Self {
        Self {
            configmap,
            target,
            apply: |target, cm, data| {
                let Some(data) = data else {
                    tracing::info!(configmap = %cm, "saturation ConfigMap absent; using the default thresholds 0.80 / 5 / 0.10 / 3");
                    target.rcu(|t| t.with_global(ScalingConfig::default()));
                    return;
                };
                let (next, issues) = ScalingConfig::from_configmap(target.load().global(), data);
                log_rejections("saturation", cm, &issues);
                tracing::info!(configmap = %cm, default = ?next.default_config(), "saturation config loaded");
                target.rcu(|t| t.with_global(next.clone()));
            },
        }
    }
}

impl FollowedConfig<ZeroConfig> {
    /// WVA's `wva-model-scale-to-zero-config` into the scale-to-zero configuration.
    pub fn scale_to_zero(configmap: ConfigMapWatch, target: Arc<ArcSwap<ZeroConfig>>) -> Self {
        Self {
            configmap,
            target,
            apply: |target, cm, data| {
                let Some(data) = data else {
                    tracing::info!(configmap = %cm, "scale-to-zero ConfigMap absent; WVA_SCALE_TO_ZERO decides for every model");
                    target.rcu(|z| z.without_entries());
                    return;
                };
                let (next, issues) = ZeroConfig::from_configmap(&target.load(), data);
                log_rejections("scale-to-zero", cm, &issues);
                tracing::info!(configmap = %cm, entries = data.len(), "scale-to-zero config loaded");
                target.store(Arc::new(next));
            },
        }
    }
}

fn log_rejections(what: &str, cm: &str, issues: &ConfigIssues) {
    for (key, why) in &issues.rejected {
        tracing::error!(configmap = %cm, entry = %key, reason = %why, "{what} config entry rejected; its previous good version (if any) stays in force");
    }
    for (key, note) in &issues.ignored_keys {
        tracing::warn!(configmap = %cm, entry = %key, "{note}");
    }
}

/// Namespaces labelled this way opt in to a namespace-local saturation ConfigMap (WVA v0.5.1).
pub const CONFIG_ENABLED_LABEL: &str = "wva.llmd.ai/config-enabled";

/// Keeps the namespace-local saturation ConfigMaps current: ConfigMaps named like the global one in
/// namespaces labelled [`CONFIG_ENABLED_LABEL`]` = "true"` (or, with `--watch-namespace`, in the watched
/// namespace), except the global one itself. Each is parsed on top of its previous version, so a bad
/// entry keeps its last good one; a ConfigMap or opt-in that goes away takes its overrides with it.
pub struct LocalSaturationConfigs {
    pub client: Client,
    /// `--watch-namespace`, or every namespace (then opted-in namespaces only).
    pub watched: Option<String>,
    /// The global ConfigMap's namespace, whose ConfigMap is not a local one.
    pub global_namespace: String,
    /// The ConfigMap name, the same as the global one's.
    pub name: String,
    pub target: Arc<ArcSwap<Thresholds>>,
    pub metrics: Arc<Metrics>,
    pub synced: Arc<Synced>,
}

impl LocalSaturationConfigs {
    pub async fn run(self: Arc<Self>) {
        let r = Reflect {
            client: self.client.clone(),
            changed: Arc::new(Notify::new()),
            metrics: self.metrics.clone(),
        };
        let changed = &r.changed;
        let (watched, name, target) = (&self.watched, &self.name, &self.target);
        let (cms, cm_w) = reflector::store::<ConfigMap>();
        let (opted, ns_w) = reflector::store::<Namespace>();
        let watch_namespaces = watched.is_none();
        let watches = async {
            let configmaps = r.run(
                Watched::all("configmaps/local-saturation", slim::configmap)
                    .selected(watcher::Config::default().fields(&format!("metadata.name={name}"))),
                r.api(watched.as_deref()),
                cm_w,
            );
            // With --watch-namespace, only the watched namespace's ConfigMap applies: no opt-in to follow.
            let opted_in = r.namespaces(
                watch_namespaces,
                Watched::all("namespaces/config-enabled", slim::namespace).selected(
                    watcher::Config::default().labels(&format!("{CONFIG_ENABLED_LABEL}=true")),
                ),
                ns_w,
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
                    if ns == self.global_namespace || !enabled.contains(&ns) {
                        continue;
                    }
                    let empty = BTreeMap::new();
                    let data = cm.data.as_ref().unwrap_or(&empty);
                    let previous = current.local(&ns).cloned().unwrap_or_default();
                    let (next, issues) = ScalingConfig::from_local_configmap(&previous, data, &ns);
                    let version = cm.metadata.resource_version.clone();
                    if versions.get(&ns) != Some(&version) {
                        let where_ = format!("{ns}/{name}");
                        log_rejections("saturation", &where_, &issues);
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
                self.synced.set();
            }
        };
        tokio::select! {
            () = watches => tracing::warn!("the namespace-local config watches ended"),
            () = apply => {}
        }
    }
}
