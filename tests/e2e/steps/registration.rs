use crate::*;

/// 1. Registration and discovery through the real aggregator.
pub(crate) async fn run(c: &mut Cluster) {
    // 1. Registration and discovery through the real aggregator.
    eventually("APIService v1beta1.external.metrics.k8s.io Available=True", Duration::from_secs(60), || async {
        let out = c.kubectl(&["get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "jsonpath={.status.conditions[?(@.type==\"Available\")].status} {.status.conditions[?(@.type==\"Available\")].message}"])?;
        if out.starts_with("True") { Ok(()) } else { Err(out) }
    })
    .await;
    let discovery: Value = serde_json::from_str(
        &c.kubectl(&["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        discovery["resources"][0]["name"], "externalmetrics",
        "{discovery}"
    );
    let resources = c.kubectl(&["api-resources"]).unwrap();
    assert!(
        !resources.to_lowercase().contains("unable to retrieve")
            && !resources.contains("couldn't get resource list"),
        "kubectl api-resources warned:\n{resources}"
    );
    conformance(c).await;
    eprintln!("e2e[1] APIService available, discovery clean; aggregated discovery and OpenAPI v2/v3 taken by the aggregator");
}
