use crate::*;

/// The port the user's Prometheus scrapes: a pod whose container port named `metrics` is not the one
/// vLLM serves on, behind a Service whose ServiceMonitor names the right one. Once the ServiceMonitor CRD
/// is served, the server follows it and scrapes the pod where the monitor says; without the monitor it
/// falls back to the named port. (A minimal CRD stands in for the prometheus-operator's: the server reads
/// only the fields it needs.)
pub(crate) async fn run(c: &mut Cluster) {
    c.apply("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: servicemonitors.monitoring.coreos.com}\nspec:\n  group: monitoring.coreos.com\n  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n");
    c.kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=60s",
    ])
    .unwrap();
    c.apply(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: mon-l4-decode, namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: mon-l4}}}}\n  template:\n    metadata:\n      labels: {{app: mon-l4}}\n      annotations: {{e2e.wva/model: Qwen/Qwen3-Monitor}}\n    spec:\n      containers: [{{name: vllm, image: vllm/vllm-openai:emulated, ports: [{{name: metrics, containerPort: 9999}}, {{name: api, containerPort: 8000}}]}}]\n---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: mon-l4\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L4}}\nspec: {{modelID: Qwen/Qwen3-Monitor, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: mon-l4-decode}}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: mon-l4, namespace: {NS}, labels: {{app: mon-l4}}}}\nspec:\n  selector: {{app: mon-l4}}\n  ports: [{{name: web, port: 80, targetPort: api}}]\n---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {{name: mon-l4, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: mon-l4}}}}\n  endpoints: [{{port: web, path: /metrics}}]\n"
    ));
    let started = Instant::now();
    let endpoint_of = |c: &Cluster| -> Result<(String, String), String> {
        let doc = debug_variants(c)?;
        doc["models"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|m| m["pods"].as_array().into_iter().flatten())
            .find(|p| p["variant"] == "mon-l4")
            .map(|p| {
                (
                    p["endpointFrom"].as_str().unwrap_or_default().to_string(),
                    p["url"].as_str().unwrap_or_default().to_string(),
                )
            })
            .ok_or_else(|| "no pod of mon-l4 yet".to_string())
    };
    // The CRD is looked for every 30 s; then the monitor's port is scraped and the variant answers.
    eventually(
        "the ServiceMonitor's port scraped",
        Duration::from_secs(120),
        || async {
            let (from, url) = endpoint_of(c)?;
            if from != "service-monitor" || !url.ends_with(":8000/metrics") {
                return Err(format!("{from} {url}"));
            }
            let raw = c.kubectl(&["get", "--raw", &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/wva_desired_replicas?labelSelector=variant_name%3Dmon-l4")])?;
            if raw.contains("\"value\"") {
                Ok(())
            } else {
                Err(raw)
            }
        },
    )
    .await;
    eprintln!(
        "e2e[scrape-monitors] the ServiceMonitor's port (Service port web -> container port api, 8000) scraped after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    c.kubectl(&["-n", NS, "delete", "servicemonitor", "mon-l4"])
        .unwrap();
    eventually(
        "the named port without the monitor",
        Duration::from_secs(60),
        || async {
            match endpoint_of(c)? {
                (from, url) if from == "port-named-metrics" && url.ends_with(":9999/metrics") => {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    for (kind, name) in [
        ("deployment", "mon-l4-decode"),
        ("va", "mon-l4"),
        ("service", "mon-l4"),
    ] {
        c.kubectl(&["-n", NS, "delete", kind, name]).unwrap();
    }
    c.kubectl(&["delete", "crd", "servicemonitors.monitoring.coreos.com"])
        .unwrap();
    eprintln!("e2e[scrape-monitors] without the ServiceMonitor the pod is scraped at its port named metrics (9999)");
}
