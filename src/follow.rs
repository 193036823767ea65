//! Following one named ConfigMap with a kube-rs watcher (list, then watch, with backoff on errors), and
//! the hint a failed watch's log line carries. Used by `cluster` (saturation and scale-to-zero
//! ConfigMaps, the snapshot's reflectors) and `auth` (the trust configuration), so it depends on nothing
//! else of the crate but metrics, health and the API error codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::error::api_status_code;
use crate::health::Synced;
use crate::telemetry::{Metrics, WatchLabels};

/// Explains the usual reasons a watch fails, so the log line says what to fix.
pub fn hint(err: &watcher::Error) -> &'static str {
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

/// One named ConfigMap and what following it reports to.
#[derive(Clone)]
pub struct ConfigMapWatch {
    pub client: Client,
    pub namespace: String,
    pub name: String,
    pub metrics: Arc<Metrics>,
    /// Set once the first list is applied (the ConfigMap found, or known absent).
    pub synced: Option<Arc<Synced>>,
}

impl ConfigMapWatch {
    /// `namespace/name`, as log lines name it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Calls `apply` with the ConfigMap's data on every change (`None` when it is absent or deleted).
    /// Returns only if the watch stream ends.
    pub async fn follow(&self, mut apply: impl FnMut(Option<&BTreeMap<String, String>>)) {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let labels = WatchLabels {
            resource: format!("configmap/{}", self.key()),
        };
        let stream = watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", self.name)),
        )
        .default_backoff();
        futures::pin_mut!(stream);
        let mut seen_in_init = false;
        let empty = BTreeMap::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => seen_in_init = false,
                Ok(watcher::Event::InitApply(cm) | watcher::Event::Apply(cm)) => {
                    seen_in_init = true;
                    apply(Some(cm.data.as_ref().unwrap_or(&empty)));
                }
                Ok(watcher::Event::InitDone) => {
                    self.metrics.watch_up.get_or_create(&labels).set(1);
                    if !seen_in_init {
                        apply(None);
                    }
                    if let Some(s) = &self.synced {
                        s.set();
                    }
                }
                Ok(watcher::Event::Delete(_)) => apply(None),
                Err(e) => {
                    self.metrics.watch_errors.get_or_create(&labels).inc();
                    self.metrics.watch_up.get_or_create(&labels).set(0);
                    tracing::warn!(configmap = %self.key(), error = %e, "watch failed; retrying with backoff{}", hint(&e));
                }
            }
        }
    }
}
