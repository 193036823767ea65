use crate::*;

/// Data-parallel ranks: a pod that runs one API server per rank, each on its own port with its own
/// metrics page, and a PodMonitor (a minimal CRD standing in for the prometheus-operator's) that names
/// both ports. Each port is a serving instance, keyed `pod:port` as WVA v0.9 keys its rows, and a pod's
/// ranks together are one replica: two pods of two ranks are four rows, not a transition. Idle, the real
/// HPA scales the Deployment down to one pod; saturated, back up.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    const MODEL: &str = "Qwen/Qwen3-DP";
    c.apply("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: podmonitors.monitoring.coreos.com}\nspec:\n  group: monitoring.coreos.com\n  names: {kind: PodMonitor, listKind: PodMonitorList, plural: podmonitors, singular: podmonitor}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n");
    c.kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "crd/podmonitors.monitoring.coreos.com",
        "--timeout=60s",
    ])
    .unwrap();
    set_load(k, "dp-ranks", 0);
    let started = Instant::now();
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: dp-ranks, namespace: {NS}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: dp-ranks}}}}\n  template:\n    metadata:\n      labels: {{app: dp-ranks}}\n      annotations: {{e2e.wva/model: {MODEL}, e2e.wva/rank-ports: \"8000,8001\"}}\n    spec:\n      containers: [{{name: vllm, image: vllm/vllm-openai:emulated, ports: [{{name: rank0, containerPort: 8000}}, {{name: rank1, containerPort: 8001}}]}}]\n---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: dp-ranks\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L40S}}\nspec: {{modelID: {MODEL}, variantCost: \"20\", scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: dp-ranks}}}}\n---\napiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {{name: dp-ranks, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: dp-ranks}}}}\n  podMetricsEndpoints: [{{port: rank0}}, {{port: rank1}}]\n"
    ));
    // The CRD is looked for every 30 s; then each pod is read at both ports.
    let rows = |model: &serde_json::Value| -> Vec<String> {
        model["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["sample"].is_object())
            .filter_map(|p| p["pod"].as_str().map(str::to_string))
            .collect()
    };
    let model = eventually(
        "both pods read at both rank ports, four rows and no transition",
        Duration::from_secs(120),
        || async {
            let model = debug_model(c, MODEL)?;
            let rows = rows(&model);
            let ranks = rows
                .iter()
                .filter(|r| r.ends_with(":8000") || r.ends_with(":8001"))
                .count();
            let analysis = &model["decision"]["analysis"];
            if ranks == 4
                && analysis["totalReplicas"] == 4
                && model["decision"]["inTransition"] == false
            {
                Ok(model)
            } else {
                Err(format!(
                    "rows {rows:?}; analysis {analysis}; inTransition {}",
                    model["decision"]["inTransition"]
                ))
            }
        },
    )
    .await;
    let urls: Vec<&str> = model["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["url"].as_str())
        .collect();
    assert!(
        urls.iter().any(|u| u.ends_with(":8001/metrics")),
        "the second rank is scraped at its own port: {urls:?}"
    );
    eprintln!(
        "e2e[data-parallel] 2 pods x 2 rank ports read as 4 rows of 2 replicas after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    c.apply(&format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: dp-ranks, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: dp-ranks}}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: dp-ranks, exported_namespace: {NS}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n    scaleDown: {{stabilizationWindowSeconds: 5}}\n"
    ));
    let hpa_at = Instant::now();
    wait_replicas(c, "dp-ranks", 1, Duration::from_secs(120)).await;
    eprintln!(
        "e2e[data-parallel] idle: the real HPA scaled 2 -> 1 pod after {:.1}s",
        hpa_at.elapsed().as_secs_f64()
    );
    set_load(k, "dp-ranks", 40);
    let loaded = Instant::now();
    wait_at_least(
        c,
        "dp-ranks",
        2,
        "the saturated ranks scaled their Deployment up",
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "e2e[data-parallel] saturated ranks: scaled up to >= 2 pods after {:.1}s",
        loaded.elapsed().as_secs_f64()
    );
    set_load(k, "dp-ranks", 0);
    for (kind, name) in [
        ("hpa", "dp-ranks"),
        ("va", "dp-ranks"),
        ("podmonitor", "dp-ranks"),
        ("deployment", "dp-ranks"),
    ] {
        c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
            .unwrap();
    }
    c.kubectl(&[
        "delete",
        "crd",
        "podmonitors.monitoring.coreos.com",
        "--wait=false",
    ])
    .unwrap();
}
