use crate::*;

/// 5a. Prometheus stopped under load: pod scraping carries on, nothing scales down.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    // 5. Faults, with the model under load so that a wrongful scale-down would be visible.
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    wait_replicas(c, "qwen-l40s-decode", 3, Duration::from_secs(120)).await;
    // (a) Prometheus stopped: pod scraping carries on; nothing scales down and the HPA stays active.
    c.procs.get_mut("prometheus").unwrap().stop();
    never_below(c, "qwen-l40s-decode", 3, Duration::from_secs(15)).await;
    assert_eq!(
        hpa_condition(&c.client, "qwen-l40s-v05", "ScalingActive")
            .await
            .map(|c| c.0),
        Some("True".into())
    );
    eprintln!("e2e[5a] Prometheus down: HPA still active, no scale-down");
}
