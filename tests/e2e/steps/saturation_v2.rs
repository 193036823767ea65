use crate::*;

/// WVA v0.9's saturation V2, selected by the global ConfigMap's `default` entry: a saturated model is
/// given replicas of its cheaper capacity by the cost-aware optimizer, which go again once it is idle,
/// through the real HPA;
/// `/debug/variants` shows the token capacity and where it came from. Deleting the ConfigMap brings
/// V1 back.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    wait_replicas(c, "qwen-h100-decode", 1, Duration::from_secs(180)).await;
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: wva-saturation-scaling-config, namespace: wva-metrics-server}\ndata:\n  default: |\n    kvCacheThreshold: 0.8\n    queueLengthThreshold: 5\n    analyzers:\n      - name: saturation\n        enabled: true\n");
    let capacity = |c: &Cluster| -> Result<Value, String> {
        let doc = debug_variants(c)?;
        let model = doc["models"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["modelId"] == "Qwen/Qwen3-0.6B")
            .cloned()
            .ok_or("no model Qwen/Qwen3-0.6B")?;
        if model["decision"]["analyzer"] != "saturation-v2" {
            return Err(format!("analyzer {}", model["decision"]["analyzer"]));
        }
        Ok(model["decision"]["capacity"].clone())
    };
    eventually(
        "the model decided by saturation V2",
        Duration::from_secs(60),
        || async { capacity(c).map(|_| ()) },
    )
    .await;

    // Saturated: 40 requests on each variant's one replica of 16 slots. The model needs capacity (V2
    // sizes the model, not one variant: an idle replica elsewhere would absorb load), and the cheaper
    // capacity per token (L40S, cost 5, the same tokens as the H100 at 20) takes all of it.
    let step = Instant::now();
    set_load(k, "qwen-l40s", 40);
    set_load(k, "qwen-h100", 40);
    wait_at_least(
        c,
        "qwen-l40s-decode",
        2,
        "saturation V2 scaled the saturated variant up",
        Duration::from_secs(120),
    )
    .await;
    let (h100, _) = replicas(&c.client, "qwen-h100-decode").await;
    assert_eq!(h100, 1, "the dearer capacity must not grow first");
    let cap = capacity(c).expect("V2 capacity");
    let l40s = cap["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "qwen-l40s")
        .cloned()
        .expect("qwen-l40s in the V2 analysis");
    assert!(
        l40s["perReplicaCapacity"].as_f64().unwrap_or(0.0) > 0.0,
        "{l40s}"
    );
    let source = l40s["source"].as_str().unwrap_or_default().to_string();
    assert!(
        ["observed", "history", "deployment", "fallback"].contains(&source.as_str()),
        "{l40s}"
    );
    eprintln!(
        "e2e[v2] saturated model: qwen-l40s scaled to 2 (qwen-h100 stays 1) after {:.1}s by saturation V2 ({} tokens per replica, source {source}; model required {} tokens)",
        step.elapsed().as_secs_f64(),
        l40s["perReplicaCapacity"],
        cap["model"]["requiredCapacity"]
    );
    // Idle: spare capacity covers the added replicas; the variant goes back to its minimum.
    let idle = Instant::now();
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    eprintln!(
        "e2e[v2] idle qwen-l40s back to 1 after {:.1}s ({:.1}s since the step)",
        idle.elapsed().as_secs_f64(),
        step.elapsed().as_secs_f64()
    );
    delete_saturation_configmap(c);
    eventually(
        "V1 back after the ConfigMap is deleted",
        Duration::from_secs(60),
        || async {
            match capacity(c) {
                Err(why) if why.contains("analyzer \"v1\"") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}
