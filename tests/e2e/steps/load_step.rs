use crate::*;

/// 3 + 4. A load step scales the cheaper variant first; removing the load scales back down.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    // 3 + 4. Load step on both variants of the model: the cheaper variant (L40S) scales first.
    let step = Instant::now();
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    let first = wait_replicas(c, "qwen-l40s-decode", 2, Duration::from_secs(120)).await;
    let (h100, _) = replicas(&c.client, "qwen-h100-decode").await;
    assert_eq!(
        h100, 1,
        "the expensive variant must not scale before the cheap one"
    );
    eprintln!(
        "e2e[3] load step → qwen-l40s-decode spec.replicas 2 after {:.1}s (HPA sync {HPA_SYNC})",
        first.as_secs_f64()
    );
    let up_more = wait_replicas(c, "qwen-l40s-decode", 3, Duration::from_secs(120)).await;
    eprintln!("e2e[4] cheaper variant kept absorbing load: 3 replicas {:.1}s after the step; H100 still {}", step.elapsed().as_secs_f64(), replicas(&c.client, "qwen-h100-decode").await.0);
    let _ = up_more;
    operating_checks(c).await;
    // Load removed: scale-down, most expensive variant above one replica first (here the L40S at 3).
    let drop_at = Instant::now();
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    eprintln!(
        "e2e[3] load removed → qwen-l40s-decode back to 1 after {:.1}s",
        drop_at.elapsed().as_secs_f64()
    );
}
