use crate::*;

/// The GPU limiter: two Nodes (objects only, as a GPU operator labels them) with 2 H100 and 4 L40S, and
/// another tenant's pod bound to the H100 node holding both its GPUs. A model with a cheap H100 variant
/// and a pricier L40S one is saturated: unlimited, the +1 would go to H100, whose pod could not be
/// scheduled; with `enableLimiter: true` in the global ConfigMap the cut +1 goes to L40S, through the
/// real HPA, and the H100 variant's reason says it was limited. Then the tenant leaves and a cluster
/// quota of 1 H100 holds the H100 variant where the nodes alone would let it grow. Last, saturation V2
/// shares the last GPU of a quota between two models by priority.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    const MODEL: &str = "Qwen/Qwen3-Limited";
    for (node, product, gpus) in [
        ("gpu-h100", "NVIDIA-H100-80GB-HBM3", 2),
        ("gpu-l40s", "NVIDIA-L40S-48GB", 4),
    ] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{nvidia.com/gpu.product: {product}}}\n"
        ));
        c.kubectl(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &format!("{{\"status\":{{\"capacity\":{{\"nvidia.com/gpu\":\"{gpus}\"}},\"allocatable\":{{\"nvidia.com/gpu\":\"{gpus}\"}}}}}}"),
        ])
        .expect("the node's allocatable GPUs");
    }
    // Another tenant's pod, bound to the H100 node, requests both its GPUs (it never runs: no kubelet
    // serves its namespace, and it holds its GPUs all the same).
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: gpu-tenant}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: training, namespace: gpu-tenant}\nspec:\n  nodeName: gpu-h100\n  containers: [{name: train, image: trainer, resources: {limits: {nvidia.com/gpu: \"2\"}}}]\n");
    let variant = |name: &str, product: &str, cost: u32, model: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n      annotations: {{prometheus.io/port: \"8000\", e2e.wva/model: {model}}}\n    spec:\n      nodeSelector: {{nvidia.com/gpu.product: {product}}}\n      containers: [{{name: vllm, image: \"vllm/vllm-openai:emulated\", ports: [{{name: http, containerPort: 8000}}], resources: {{limits: {{nvidia.com/gpu: \"1\"}}}}}}]\n---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata: {{name: {name}, namespace: {NS}}}\nspec: {{modelID: {model}, variantCost: \"{cost}\", scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}}}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: {name}, exported_namespace: {NS}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n")
    };
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: wva-saturation-scaling-config, namespace: wva-metrics-server}\ndata:\n  default: |\n    enableLimiter: true\n");
    set_load(k, "lim-h100", 40);
    set_load(k, "lim-l40s", 40);
    let started = Instant::now();
    c.apply(&format!(
        "{}---\n{}",
        variant("lim-h100", "NVIDIA-H100-80GB-HBM3", 5, MODEL),
        variant("lim-l40s", "NVIDIA-L40S-48GB", 20, MODEL)
    ));
    wait_at_least(
        c,
        "lim-l40s",
        2,
        "the +1 cut from the full H100 type reached the L40S variant",
        Duration::from_secs(180),
    )
    .await;
    eprintln!(
        "e2e[gpu-limiter] H100 full (another tenant holds both GPUs): the +1 went to L40S through the real HPA after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let (h100, _) = replicas(&c.client, "lim-h100").await;
    assert_eq!(h100, 1, "the H100 variant must not grow: no H100 is free");
    // A decision read between two plans may differ from the last plan (new samples) and show the
    // plan capping it ("capped"); the next plan applies.
    eventually(
        "the H100 variant's decision says the GPU limiter cut it",
        Duration::from_secs(30),
        || async {
            let model = debug_model(c, MODEL)?;
            let reason = model["decision"]["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["name"] == "lim-h100")
                .map(|r| r["reason"].clone());
            let limiter = &model["decision"]["limiter"];
            if reason == Some(serde_json::json!("limited"))
                && limiter["state"] == "applied"
                && limiter["variants"]["lim-h100"]["limitedBy"] == "gpu-limiter"
            {
                Ok(())
            } else {
                Err(format!("lim-h100 reason {reason:?}: {limiter}"))
            }
        },
    )
    .await;
    // A cluster quota caps a type even where the nodes have room: the tenant leaves (both H100 free)
    // and a quota of 1 H100 keeps the H100 variant at its one replica, cut by the quota.
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: wva-saturation-scaling-config, namespace: wva-metrics-server}\ndata:\n  default: |\n    enableLimiter: true\n    limiters:\n    - type: gpu-inventory\n    - type: quota\n      name: cluster-quota\n      scope: cluster\n      quotas: {H100: 1, L40S: -1}\n");
    set_load(k, "lim-h100", 60);
    set_load(k, "lim-l40s", 80);
    c.kubectl(&[
        "delete",
        "-n",
        "gpu-tenant",
        "pod/training",
        "--grace-period=0",
        "--force",
    ])
    .expect("the tenant leaves");
    eventually(
        "the H100 variant cut by the cluster quota, with H100 GPUs free",
        Duration::from_secs(60),
        || async {
            let model = debug_model(c, MODEL)?;
            let by = &model["decision"]["limiter"]["variants"]["lim-h100"]["limitedBy"];
            if by == "cluster-quota" {
                Ok(())
            } else {
                Err(format!(
                    "lim-h100 limited by {by}: {}",
                    model["decision"]["limiter"]
                ))
            }
        },
    )
    .await;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let (h100, _) = replicas(&c.client, "lim-h100").await;
        assert_eq!(
            h100, 1,
            "the quota of 1 H100 must hold the H100 variant at 1"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("e2e[gpu-limiter] a cluster quota of 1 H100 holds the H100 variant at 1 while 2 H100 are free");
    set_load(k, "lim-h100", 0);
    set_load(k, "lim-l40s", 0);
    delete_saturation_configmap(c);
    remove(c, &["lim-h100", "lim-l40s"]);
    by_priority(c, k, &variant).await;
    delete_saturation_configmap(c);
    c.kubectl(&["delete", "namespace", "gpu-tenant", "--wait=false"])
        .unwrap();
    c.kubectl(&["delete", "node", "gpu-h100", "gpu-l40s", "--wait=false"])
        .unwrap();
}

/// Deletes the variants' HPAs, VariantAutoscalings and Deployments.
fn remove(c: &Cluster, names: &[&str]) {
    for name in names {
        for kind in ["hpa", "va", "deployment"] {
            c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
                .unwrap();
        }
    }
}

/// Saturation V2 under the limiter, two models under one budget: a cluster quota of 3 B200 (a type no
/// other variant of the cluster uses), two held by the models' first replicas. Both saturated, each wants a replica more; the model of priority 10
/// gets the one left through the real HPA, the other (first in the fair-share order when priorities
/// are equal) stays, limited by the quota.
async fn by_priority(
    c: &mut Cluster,
    k: &kubelet::Kubelet,
    variant: &impl Fn(&str, &str, u32, &str) -> String,
) {
    const LOW: &str = "Qwen/Qwen3-Priority-A";
    const HIGH: &str = "Qwen/Qwen3-Priority-B";
    c.apply(&format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wva-saturation-scaling-config, namespace: wva-metrics-server}}\ndata:\n  default: |\n    analyzers:\n      - name: saturation\n    enableLimiter: true\n    limiters:\n    - type: quota\n      name: shared-b200\n      scope: cluster\n      quotas: {{B200: 3}}\n  priority-b: |\n    model_id: {HIGH}\n    namespace: {NS}\n    priority: 10\n"));
    set_load(k, "prio-a", 40);
    set_load(k, "prio-b", 40);
    let started = Instant::now();
    c.apply(&format!(
        "{}---\n{}",
        variant("prio-a", "NVIDIA-B200-180GB", 5, LOW),
        variant("prio-b", "NVIDIA-B200-180GB", 5, HIGH)
    ));
    eventually(
        "the one B200 left went to the model of priority 10",
        Duration::from_secs(180),
        || async {
            let (spec, _) = replicas(&c.client, "prio-b").await;
            if spec >= 2 {
                return Ok(());
            }
            let decision = |m: &str| debug_model(c, m).map(|m| m["decision"].clone());
            Err(format!(
                "prio-b spec {spec}; {HIGH}: {:?}; {LOW}: {:?}",
                decision(HIGH),
                decision(LOW)
            ))
        },
    )
    .await;
    eprintln!(
        "e2e[gpu-limiter] saturation V2, one B200 left in the budget of two saturated models: priority 10 took it through the real HPA after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    eventually(
        "the other model's variant limited by the quota",
        Duration::from_secs(30),
        || async {
            let model = debug_model(c, LOW)?;
            let d = &model["decision"];
            let by = &d["limiter"]["variants"]["prio-a"]["limitedBy"];
            if d["analyzer"] == "saturation-v2" && by == "shared-b200" {
                Ok(())
            } else {
                Err(format!(
                    "analyzer {}, prio-a limited by {by}: {}",
                    d["analyzer"], d["limiter"]
                ))
            }
        },
    )
    .await;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        let (low, _) = replicas(&c.client, "prio-a").await;
        assert_eq!(
            low, 1,
            "the model of priority 1 must not take the B200 the other needs"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    set_load(k, "prio-a", 0);
    set_load(k, "prio-b", 0);
    remove(c, &["prio-a", "prio-b"]);
}
