use crate::*;

/// The saturation ConfigMap applies live; an invalid entry is rejected and logged.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    // Saturation thresholds follow the ConfigMap live: a queue trigger above the threshold makes an idle
    // model scale up; an invalid edit is rejected (and logged) with the previous good entry kept.
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    let cm = |body: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wva-saturation-scaling-config, namespace: wva-metrics-server}}\ndata:\n  default: |\n{body}")
    };
    c.apply(&cm("    queueSpareTrigger: 6\n"));
    wait_at_least(
        c,
        "qwen-l40s-decode",
        2,
        "idle model scaled up by the ConfigMap's trigger",
        Duration::from_secs(90),
    )
    .await;
    c.apply(&cm("    queueSpareTrigger: 6\n    kvSpareTrigger: 0.95\n"));
    let log = c.procs["server"].log.clone();
    eventually(
        "the invalid ConfigMap entry logged with its rule",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("saturation config entry rejected")
                && text.contains("kvCacheThreshold (0.8) must be >= kvSpareTrigger (0.95)")
            {
                Ok(())
            } else {
                Err("not logged yet".into())
            }
        },
    )
    .await;
    never_below(c, "qwen-l40s-decode", 2, Duration::from_secs(8)).await;
    delete_saturation_configmap(c);
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    eprintln!("e2e[config] saturation ConfigMap applied live, invalid entry rejected, defaults back on delete");
}
