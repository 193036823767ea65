use crate::*;

/// Disaggregated serving: a prefill and a decode Deployment of one model, each with its own real HPA
/// (annotated, no VariantAutoscaling). The prefill pool is saturated and the decode pool idle; decided
/// per role (as WVA v0.9 decides), prefill grows and decode shrinks; pooled, the idle decode replicas
/// would hide the saturation and the −1 would land on prefill. The decode pool serves SGLang's pages:
/// its scale-down needs fresh samples from both of its pods, so it proves SGLang pages decide like
/// vLLM's. (The decision gauge's `role` label is covered by the status unit tests.)
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    const MODEL: &str = "Qwen/Qwen3-PD";
    let pool = |name: &str, role: &str, engine: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}, llm-d.ai/role: {role}}}\n      annotations: {{prometheus.io/port: \"8000\", e2e.wva/model: {MODEL}, e2e.wva/engine: {engine}}}\n    spec:\n      containers: [{{name: server, image: \"{image}\", ports: [{{name: http, containerPort: 8000}}]}}]\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: H100}}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: {MODEL}, llm-d.ai/variant-cost: \"10\"}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: {name}, exported_namespace: {NS}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n    scaleDown: {{stabilizationWindowSeconds: 5}}\n",
            image = if engine == "sglang" { "lmsysorg/sglang:emulated" } else { "vllm/vllm-openai:emulated" }
        )
    };
    // Saturated from the start: 40 requests over the prefill pool's two pods of 16 slots each.
    set_load(k, "pd-prefill", 40);
    set_load(k, "pd-decode", 0);
    let started = Instant::now();
    c.apply(&format!(
        "{}---\n{}",
        pool("pd-prefill", "prefill", "vllm"),
        pool("pd-decode", "decode", "sglang")
    ));
    wait_at_least(
        c,
        "pd-prefill",
        3,
        "the saturated prefill pool scaled up on its own analysis",
        Duration::from_secs(180),
    )
    .await;
    wait_replicas(c, "pd-decode", 1, Duration::from_secs(180)).await;
    eprintln!(
        "e2e[disaggregated] prefill grew to >= 3 and the idle SGLang decode pool shrank to 1 after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let model = debug_model(c, MODEL).expect("the P/D model in /debug/variants");
    let role_of = |name: &str| {
        model["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name)
            .map(|v| v["role"].clone())
    };
    assert_eq!(
        role_of("pd-prefill"),
        Some(serde_json::json!("prefill")),
        "{model}"
    );
    assert_eq!(
        role_of("pd-decode"),
        Some(serde_json::json!("decode")),
        "{model}"
    );
    let by_role = &model["decision"]["analysisByRole"];
    assert!(
        by_role["prefill"].is_object() && by_role["decode"].is_object(),
        "V1 analyses each role: {model}"
    );
    // SGLang's pods were read: their samples are in the explanation.
    let sglang_samples = model["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["variant"] == "pd-decode" && p["sample"].is_object())
        .count();
    assert!(
        sglang_samples >= 1,
        "no sample from the SGLang pods: {model}"
    );
    set_load(k, "pd-prefill", 0);
    c.kubectl(&[
        "delete",
        "-n",
        NS,
        "hpa/pd-prefill",
        "hpa/pd-decode",
        "deployment/pd-prefill",
        "deployment/pd-decode",
        "--wait=false",
    ])
    .expect("cleaning up the P/D pools");
}
