use crate::*;

/// Replica bounds (issue #14): with the cheap variant at its HPA's maxReplicas, the +1 of a saturated
/// model goes to the next cheapest variant, through the real HPA; the cheap one never exceeds its max.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    wait_replicas(c, "qwen-h100-decode", 1, Duration::from_secs(180)).await;
    let set_max = |c: &Cluster, n: u32| {
        let patch = format!("{{\"spec\":{{\"maxReplicas\":{n}}}}}");
        c.kubectl(&[
            "-n",
            NS,
            "patch",
            "hpa",
            "qwen-l40s-v05",
            "--type",
            "merge",
            "-p",
            &patch,
        ])
        .unwrap();
    };
    set_max(c, 1);
    // Let the server see the new bound before the load arrives.
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    let took = wait_replicas(c, "qwen-h100-decode", 2, Duration::from_secs(120)).await;
    let (l40s, _) = replicas(&c.client, "qwen-l40s-decode").await;
    assert_eq!(
        l40s, 1,
        "the cheap variant at its maxReplicas must not grow"
    );
    let served = served_by(c, c.server_port);
    assert!(
        served.contains(&("qwen-l40s".to_string(), "1".to_string())),
        "the cheap variant's target stays within its bound: {served:?}"
    );
    eprintln!(
        "e2e[bounds] cheap variant at maxReplicas 1: the +1 went to qwen-h100-decode after {:.1}s",
        took.as_secs_f64()
    );
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    set_max(c, 4);
    wait_replicas(c, "qwen-h100-decode", 1, Duration::from_secs(180)).await;
}
