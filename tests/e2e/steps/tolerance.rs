use crate::*;

/// The HPA ignores a usage ratio within its tolerance (10 %): at 11 replicas a target of 12 is a ratio of
/// 1.09 and is lost. A per-HPA `behavior.scaleUp.tolerance` (HPAConfigurableTolerance) makes the +1 land.
pub(crate) async fn run(c: &Cluster, k: &kubelet::Kubelet) {
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: tol-decode, namespace: {NS}}}\nspec:\n  replicas: 11\n  selector: {{matchLabels: {{app: tol}}}}\n  template:\n    metadata:\n      labels: {{app: tol}}\n      annotations: {{prometheus.io/port: \"8000\", e2e.wva/model: Tol/Model}}\n    spec:\n      containers: [{{name: vllm, image: vllm/vllm-openai:emulated}}]\n---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata: {{name: tol-decode, namespace: {NS}, labels: {{inference.optimization/acceleratorName: A100}}}}\nspec: {{modelID: Tol/Model, variantCost: \"1\"}}\n---\n{}",
        std::fs::read_to_string(format!("{ROOT}/manifests/examples/hpa-tolerance.yaml")).unwrap().replace("namespace: llm", &format!("namespace: {NS}"))
    ));
    wait_replicas(c, "tol-decode", 11, Duration::from_secs(120)).await;
    // Without a per-HPA tolerance (strip it): the served target is 12, the HPA stays at 11.
    patch_hpa(
        c,
        "--type=json",
        r#"[{"op": "remove", "path": "/spec/behavior/scaleUp/tolerance"}]"#,
    );
    set_load(k, "tol", 11 * 30);
    eventually("the served target for tol-decode at 12", Duration::from_secs(60), || async {
        let raw = c.kubectl(&["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/inferno_desired_replicas?labelSelector=variant_name%3Dtol-decode")])?;
        if raw.contains("\"value\":\"12\"") { Ok(()) } else { Err(raw) }
    })
    .await;
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        assert_eq!(
            replicas(&c.client, "tol-decode").await.0,
            11,
            "a +1 at 11 replicas is within the default 10 % tolerance"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // With the example's tolerance (0.05) the +1 lands.
    patch_hpa(
        c,
        "--type=merge",
        r#"{"spec": {"behavior": {"scaleUp": {"tolerance": "0.05"}}}}"#,
    );
    wait_at_least(
        c,
        "tol-decode",
        12,
        "tol-decode scaled past 11 with tolerance 0.05",
        Duration::from_secs(60),
    )
    .await;
    set_load(k, "tol", 0);
    c.kubectl(&["-n", NS, "delete", "hpa,deployment,va", "tol-decode"])
        .unwrap();
    eprintln!("e2e[8.6] HPA tolerance: +1 at 11 replicas ignored by default, applied with behavior.scaleUp.tolerance 0.05");
}

/// Patches the tol-decode HPA with `kubectl patch --type=… -p …`.
fn patch_hpa(c: &Cluster, patch_type: &str, patch: &str) {
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        "hpa",
        "tol-decode",
        patch_type,
        "-p",
        patch,
    ])
    .unwrap();
}
