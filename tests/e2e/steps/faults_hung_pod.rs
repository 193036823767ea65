use crate::*;

/// 5b. A hung pod: spec.replicas held, then a 503 the HPA reports; never a scale-down.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    // Under load at 3 replicas, so that a wrongful scale-down would be visible.
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    wait_replicas(c, "qwen-l40s-decode", 3, Duration::from_secs(180)).await;
    // (b) One emulator pod hangs and the load goes away: with data, that would be a scale-down; with a
    // pod missing, the answer holds spec.replicas, then turns into a 503 the HPA reports. Never a scale-down.
    let pod = c
        .kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app=qwen-l40s",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();
    k.control
        .lock()
        .unwrap()
        .faults
        .insert(pod.trim().to_string(), "hang".into());
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    let reported = eventually(
        "HPA reporting FailedGetExternalMetric for the hung pod",
        Duration::from_secs(90),
        || async {
            match hpa_condition(&c.client, "qwen-l40s-v05", "ScalingActive").await {
                Some((s, r, m)) if s == "False" && r == "FailedGetExternalMetric" => Ok(m),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        reported.contains(pod.trim()),
        "the HPA message names the pod: {reported}"
    );
    never_below(c, "qwen-l40s-decode", 3, Duration::from_secs(10)).await;
    k.control.lock().unwrap().faults.clear();
    hpa_active(c, "qwen-l40s-v05", Duration::from_secs(90)).await;
    eprintln!("e2e[5b] hung pod: HPA reported FailedGetExternalMetric, no scale-down, recovered");
}
