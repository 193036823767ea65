use crate::*;

/// Namespace exclusion (WVA v0.5.1): annotating the namespace `wva.llmd.ai/exclude: "true"` turns its
/// answers into a 503 that says why (the HPA holds its size, nothing scales down), and removing the
/// annotation brings them back.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    set_load(k, "qwen-l40s", 30);
    set_load(k, "qwen-h100", 30);
    wait_at_least(
        c,
        "qwen-l40s-decode",
        2,
        "load before the exclusion",
        Duration::from_secs(120),
    )
    .await;
    let (before, _) = replicas(&c.client, "qwen-l40s-decode").await;
    c.kubectl(&["annotate", "namespace", NS, "wva.llmd.ai/exclude=true"])
        .unwrap();
    let path = format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dqwen-l40s");
    eventually(
        "the excluded namespace answered with its reason",
        Duration::from_secs(30),
        || async {
            match c.kubectl(&["get", "--raw", &path]) {
                Err(e) if e.contains("wva.llmd.ai/exclude") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The load goes away while excluded: with data this would be a scale-down; excluded, nothing moves.
    set_load(k, "qwen-l40s", 0);
    set_load(k, "qwen-h100", 0);
    never_below(c, "qwen-l40s-decode", before, Duration::from_secs(15)).await;
    c.kubectl(&["annotate", "namespace", NS, "wva.llmd.ai/exclude-"])
        .unwrap();
    wait_replicas(c, "qwen-l40s-decode", 1, Duration::from_secs(180)).await;
    eprintln!("e2e[namespace-exclusion] excluded: 503 naming wva.llmd.ai/exclude, {NS} held at {before}; annotation removed: answers back, scaled down to 1");
}
