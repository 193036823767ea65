use crate::*;

/// Namespace-local saturation ConfigMaps (WVA v0.5.1): in a namespace labelled
/// `wva.llmd.ai/config-enabled`, a ConfigMap named like the global one changes that namespace's
/// decisions live, and no other namespace's; deleting it brings the global thresholds back.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    c.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS_B}}}\n---\n{}---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: qwen-b\n  namespace: {NS_B}\n  labels: {{inference.optimization/acceleratorName: L40S}}\nspec: {{modelID: Qwen/Qwen3-0.6B, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: qwen-b-decode}}}}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: qwen-b, namespace: {NS_B}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: qwen-b-decode}}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: qwen-b, exported_namespace: {NS_B}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n",
        deployment_yaml(NS_B, "qwen-b-decode", "qwen-b", "Qwen/Qwen3-0.6B")
    ));
    let other = Api::<Deployment>::namespaced(c.client.clone(), NS_B);
    let spec_b = || async {
        other
            .get("qwen-b-decode")
            .await
            .ok()
            .and_then(|d| d.spec?.replicas)
            .unwrap_or(0)
    };
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    eventually(
        &format!("HPA {NS_B}/qwen-b ScalingActive=True"),
        Duration::from_secs(90),
        || async {
            let out = c.kubectl(&[
                "-n",
                NS_B,
                "get",
                "hpa",
                "qwen-b",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"ScalingActive\")].status}",
            ])?;
            if out.trim() == "True" {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    c.kubectl(&["label", "namespace", NS, "wva.llmd.ai/config-enabled=true"])
        .unwrap();
    c.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wva-saturation-scaling-config, namespace: {NS}}}\ndata:\n  default: |\n    queueSpareTrigger: 6\n"));
    wait_at_least(
        c,
        "qwen-l40s-decode",
        2,
        "the idle model in the opted-in namespace scaled up by its local ConfigMap",
        Duration::from_secs(90),
    )
    .await;
    // The same idle model in the other namespace keeps the global thresholds: it stays at 1.
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        assert_eq!(
            spec_b().await,
            1,
            "{NS_B} must not follow {NS}'s local ConfigMap"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.kubectl(&[
        "-n",
        NS,
        "delete",
        "configmap",
        "wva-saturation-scaling-config",
    ])
    .unwrap();
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    c.kubectl(&["label", "namespace", NS, "wva.llmd.ai/config-enabled-"])
        .unwrap();
    c.kubectl(&["delete", "namespace", NS_B, "--wait=false"])
        .unwrap();
    eprintln!("e2e[namespace-local-config] {NS}'s local ConfigMap scaled its idle model up, {NS_B} stayed at 1; deleted: back to 1");
}
