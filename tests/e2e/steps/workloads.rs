use crate::*;

/// 2. Workloads and both HPA styles (v0.4.1 and v0.5).
pub(crate) async fn run(c: &mut Cluster) {
    // 2. Workloads and both HPA styles.
    c.apply(&workload_yaml());
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(60)).await;
    wait_replicas(c, "qwen-h100-decode", 1, Duration::from_secs(60)).await;
    let raw = eventually("the metric path answering through kubectl", Duration::from_secs(60), || async {
        c.kubectl(&["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/inferno_desired_replicas?labelSelector=variant_name%3Dqwen-h100-decode")])
    })
    .await;
    let list: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(
        list["items"][0]["metricLabels"]["accelerator_type"], "H100",
        "{list}"
    );
    wait_replicas(c, "chat-a100-decode", 1, Duration::from_secs(60)).await;
    for hpa in ["qwen-l40s-v05", "qwen-h100-v041", "chat-a100-v051"] {
        hpa_active(c, hpa, Duration::from_secs(90)).await;
    }
    eprintln!("e2e[2] v0.4.1, v0.5 and v0.5.1 (controller_instance) HPAs ScalingActive=True");
    // `status` through the kubeconfig's API server (the aggregated /debug/variants path, no port-forward).
    let out = Command::new(SERVER)
        .args(["status", "-n", NS, "--kubeconfig"])
        .arg(&c.admin_kubeconfig)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("qwen-l40s") && table.contains("VARIANT"),
        "status: {table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without `get` on debug in the group, kube-apiserver refuses before proxying.
    let denied = c.kubectl_as(
        Some("system:serviceaccount:default:nobody"),
        &[
            "get",
            "--raw",
            "/apis/external.metrics.k8s.io/v1beta1/debug/variants",
        ],
    );
    assert!(
        denied.as_ref().is_err_and(|e| e.contains("forbidden")),
        "{denied:?}"
    );
    eprintln!("e2e[2] `wva-metrics-server status` reads /debug/variants through the API server");
}
