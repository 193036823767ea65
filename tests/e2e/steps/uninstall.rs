use crate::*;

/// 7. Uninstall in the README's order leaves no stuck namespace.
pub(crate) async fn run(c: &mut Cluster) {
    // 7. Uninstall in the README's order leaves no stuck namespace.
    c.kubectl(&["delete", "apiservice", "v1beta1.external.metrics.k8s.io"])
        .unwrap();
    c.kubectl(&["delete", "namespace", NS, "--wait=false"])
        .unwrap();
    c.kubectl(&[
        "delete",
        "-f",
        &format!("{ROOT}/manifests/rbac.yaml"),
        "--wait=false",
    ])
    .unwrap();
    c.kubectl(&["delete", "namespace", "wva-metrics-server", "--wait=false"])
        .unwrap();
    let nss = Api::<Namespace>::all(c.client.clone());
    eventually(
        "namespaces llm and wva-metrics-server gone",
        Duration::from_secs(120),
        || async {
            let left: Vec<String> = nss
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .filter(|n| n == NS || n == "wva-metrics-server")
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    eprintln!("e2e[7] uninstall: namespaces finalized");
}
