use crate::*;

/// Annotation discovery (issue #14, WVA v0.8): an HPA annotated `llm-d.ai/managed` with no
/// VariantAutoscaling is a variant and scales its Deployment; one with a missing model ID is excluded
/// with the reason in the answer and a Warning Event on the HPA; one whose accelerator cannot be resolved
/// is served as `accelerator_type="unresolved"` (WVA v0.8 and later) with a Warning Event
/// `AcceleratorNotResolved`.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    c.apply(&format!(
        "{}---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: embed-l4\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L4}}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: Qwen/Qwen3-Embedding-0.6B, llm-d.ai/variant-cost: \"3\"}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: embed-l4-decode}}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: embed-l4, exported_namespace: {NS}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n    scaleDown: {{stabilizationWindowSeconds: 5}}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: embed-bad\n  namespace: {NS}\n  annotations: {{llm-d.ai/managed: \"true\"}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: embed-missing}}\n  maxReplicas: 2\n",
        deployment_yaml(NS, "embed-l4-decode", "embed-l4", "Qwen/Qwen3-Embedding-0.6B")
    ));
    wait_replicas(c, "embed-l4-decode", 1, Duration::from_secs(60)).await;
    hpa_active(c, "embed-l4", Duration::from_secs(90)).await;
    let started = Instant::now();
    set_load(k, "embed-l4", 30);
    wait_at_least(
        c,
        "embed-l4-decode",
        2,
        "the annotated HPA's Deployment scaled up",
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "e2e[annotated-hpa] HPA embed-l4 (annotated, no VA) scaled embed-l4-decode to 2 after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let err = c
        .kubectl(&["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dembed-bad")])
        .expect_err("an excluded variant has no number");
    assert!(
        err.contains("annotation llm-d.ai/model-id is missing"),
        "{err}"
    );
    warning_event(
        c,
        ("HorizontalPodAutoscaler", "embed-bad"),
        "InvalidConfiguration",
        "llm-d.ai/model-id",
    )
    .await;
    // No accelerator anywhere: served all the same, as "unresolved", with a Warning Event.
    c.apply(&format!(
        "{}---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: embed-unres\n  namespace: {NS}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: Qwen/Qwen3-Embedding-Unres}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: embed-unres-decode}}\n  minReplicas: 1\n  maxReplicas: 1\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: embed-unres}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n",
        deployment_yaml(NS, "embed-unres-decode", "embed-unres", "Qwen/Qwen3-Embedding-Unres")
    ));
    eventually(
        "embed-unres served with accelerator_type=unresolved",
        Duration::from_secs(90),
        || async {
            let body = c.kubectl(&["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dembed-unres")])?;
            if body.contains(r#""accelerator_type":"unresolved""#) && body.contains(r#""value":"1""#) {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    warning_event(
        c,
        ("HorizontalPodAutoscaler", "embed-unres"),
        "AcceleratorNotResolved",
        "nvidia.com/gpu.product",
    )
    .await;
    set_load(k, "embed-l4", 0);
    wait_replicas(c, "embed-l4-decode", 1, Duration::from_secs(180)).await;
    c.kubectl(&[
        "-n",
        NS,
        "delete",
        "hpa",
        "embed-l4",
        "embed-bad",
        "embed-unres",
    ])
    .unwrap();
    c.kubectl(&[
        "-n",
        NS,
        "delete",
        "deployment",
        "embed-l4-decode",
        "embed-unres-decode",
    ])
    .unwrap();
    eprintln!("e2e[annotated-hpa] invalid annotations: 503 with the reason, Warning Event InvalidConfiguration on the HPA; no accelerator: served as \"unresolved\" with a Warning Event AcceleratorNotResolved");
}
