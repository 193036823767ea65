use crate::*;

/// 5c. Our server restarted under load: no scale-down while it is down.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    // (c) Our server restarted mid-run, under load.
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    wait_replicas(c, "qwen-l40s-decode", 3, Duration::from_secs(180)).await;
    c.procs.get_mut("server").unwrap().stop();
    set_load(k, "qwen-l40s", 0);
    never_below(c, "qwen-l40s-decode", 3, Duration::from_secs(12)).await;
    c.start_replica("server");
    hpa_active(c, "qwen-l40s-v05", Duration::from_secs(90)).await;
    eprintln!("e2e[5c] server restart: no scale-down while it was down, recovered");
}
