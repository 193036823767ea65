//! Keeps the trust configuration current from `kube-system/extension-apiserver-authentication`, which
//! kube-apiserver publishes when its aggregation layer is configured.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::config::{AuthConfig, AuthOverrides, AUTH_CONFIGMAP_NAME, AUTH_CONFIGMAP_NAMESPACE};
use super::Auth;
use crate::follow::ConfigMapWatch;
use crate::telemetry::Metrics;

/// The trust configuration's follower.
pub struct AuthConfigWatch {
    configmap: ConfigMapWatch,
    auth: Arc<Auth>,
    /// The command line's CA files, which win over the ConfigMap's.
    overrides: AuthOverrides,
}

impl AuthConfigWatch {
    pub fn new(
        client: kube::Client,
        auth: Arc<Auth>,
        overrides: AuthOverrides,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            configmap: ConfigMapWatch {
                client,
                namespace: AUTH_CONFIGMAP_NAMESPACE.into(),
                name: AUTH_CONFIGMAP_NAME.into(),
                metrics,
                synced: None,
            },
            auth,
            overrides,
        }
    }

    /// Applies every version of the ConfigMap; a rejected one leaves the previous configuration in force.
    pub async fn run(self: Arc<Self>) {
        let provider = crate::tls::provider();
        self.configmap.follow(|data| {
            let empty = BTreeMap::new();
            if data.is_none() {
                tracing::error!(
                    "ConfigMap {AUTH_CONFIGMAP_NAMESPACE}/{AUTH_CONFIGMAP_NAME} not found: kube-apiserver publishes it when the aggregation layer is configured \
                     (--requestheader-client-ca-file); only the command-line overrides apply"
                );
            }
            match AuthConfig::from_configmap(data.unwrap_or(&empty), &self.overrides, &provider) {
                Ok(cfg) => {
                    tracing::info!(
                        request_header = cfg.request_header.is_some(),
                        client_ca = cfg.client_ca.is_some(),
                        allowed_names = ?cfg.request_header.as_ref().map(|r| r.allowed_names.clone()),
                        "authentication configuration loaded"
                    );
                    self.auth.set_config(cfg);
                }
                Err(e) => tracing::error!(error = %e, "authentication configuration rejected; the previous one stays in force"),
            }
        })
        .await;
    }
}
