//! The Kubernetes client: from `--kubeconfig`, else in-cluster or the default kubeconfig.

use std::path::Path;

use crate::error::Error;

/// A client for `kubeconfig`, or the inferred configuration (in a pod, then `$KUBECONFIG`/`~/.kube/config`).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client, Error> {
    let kube_err = |context: String, e: Box<dyn std::error::Error + Send + Sync>| Error::Kube {
        context,
        source: e,
    };
    let config = match kubeconfig {
        Some(path) => {
            let context = format!("--kubeconfig {}", path.display());
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| kube_err(context.clone(), Box::new(e)))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| kube_err(context, Box::new(e)))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            kube_err(
                "no Kubernetes configuration: not in a cluster and no kubeconfig found; pass --kubeconfig or use --standalone FILE".into(),
                Box::new(e),
            )
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| kube_err("building the Kubernetes client".into(), Box::new(e)))
}
