//! The endpoint pickers' signals through the real KEDA (issue #24): served on our external metrics API
//! under the pickers' own names; guide-shaped `signal` triggers; a variant-level trigger splitting one
//! pool's size across two variants cost-aware; and the side-by-side the path is about, llm-d's guide's
//! `prometheus` trigger on the real Prometheus against our `external-push` trigger, on one picker.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::harness::eventually;
use super::kubelet::Kubelet;
use super::{
    deployment_yaml, prometheus_query, replicas, wait_replicas, Cluster, EPP_SCRAPE_INTERVAL,
    EPP_TOKEN, NS,
};

/// An InferencePool `<name>` selecting pods labelled `selector` (`key: value`), with its endpoint
/// picker: a Deployment (app `<name>-epp`, an emulator serving `model`'s signals behind [`EPP_TOKEN`])
/// and its Service.
pub fn picker(name: &str, model: &str, selector: &str) -> String {
    let epp = format!("{name}-epp");
    [
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {epp}, namespace: {NS}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {epp}}}}}\n  template:\n    metadata:\n      labels: {{app: {epp}}}\n      annotations: {{e2e.wva/model: {model}, e2e.wva/epp-token: {EPP_TOKEN}, e2e.wva/epp-pool: {name}}}\n    spec:\n      containers: [{{name: epp, image: registry.k8s.io/gateway-api-inference-extension/epp:emulated}}]\n"),
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {epp}, namespace: {NS}}}\nspec:\n  selector: {{app: {epp}}}\n  ports:\n  - {{name: grpc-ext-proc, port: 9002}}\n  - {{name: http-metrics, port: 9090, targetPort: 8000}}\n"),
        format!("apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{{selector}}}}}\n  targetPorts: [{{number: 8000}}]\n  endpointPickerRef: {{name: {epp}, port: {{number: 9002}}}}\n"),
    ]
    .join("---\n")
}

/// Every part, on the pool `pool` (model `model`) the scale-from-zero scenario left at one replica.
pub async fn scenario(c: &mut Cluster, k: &Kubelet, pool: &str, model: &str, port: u16) {
    signals(c, k, pool).await;
    signal_trigger(c, k, pool, model, port).await;
    split(c, k, port).await;
    side_by_side(c, k, pool, port).await;
}

/// The pickers' signals, as the kubelet's emulators are told to publish them.
fn set_signals(k: &Kubelet, epp: &str, saturation: f64, running: usize) {
    k.control
        .lock()
        .unwrap()
        .signals
        .insert(epp.to_string(), (saturation, running));
}

/// The endpoint picker's signals on our external metrics API, under the picker's own names. KEDA's
/// adapter holds the APIService here, so the request goes to our server as the aggregation layer sends
/// it (the front-proxy client certificate and the user in its headers): the pool's saturation and the
/// model's requests in flight, as the picker publishes them; a pool nobody reads is a 404.
async fn signals(c: &Cluster, k: &Kubelet, pool: &str) {
    set_signals(k, &format!("{pool}-epp"), 0.8, 12);
    let get = |metric: &str, selector: &str| -> (String, String) {
        let url = format!(
            "https://127.0.0.1:{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{NS}/{metric}?labelSelector={selector}",
            c.server_port
        );
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "--cacert"])
            .arg(c.certs.join("ca.crt"))
            .arg("--cert")
            .arg(c.dir.join("front-proxy-client.crt"))
            .arg("--key")
            .arg(c.dir.join("front-proxy-client.key"))
            .args([
                "-H",
                "X-Remote-User: system:admin",
                "-H",
                "X-Remote-Group: system:masters",
            ])
            .arg(url)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (status.to_string(), body.to_string())
    };
    let value = |(status, body): (String, String)| -> Result<String, String> {
        let doc: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
        doc["items"][0]["value"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{status}: {body}"))
    };
    let selector = format!("inference_pool%3D{pool}");
    eventually(
        "the pool's saturation and running requests served from its endpoint picker",
        Duration::from_secs(30),
        || async {
            let sat = value(get(
                "llm_d_router_epp_flow_control_pool_saturation",
                &selector,
            ))?;
            // Per model, selected by pool: a model ID with a "/" is not a label value an HPA can select.
            let running = value(get("llm_d_router_epp_running_requests", &selector))?;
            if sat == "800m" && running == "12" {
                Ok(())
            } else {
                Err(format!("saturation {sat}, running {running}"))
            }
        },
    )
    .await;
    let (status, body) = get(
        "llm_d_router_epp_flow_control_pool_saturation",
        "inference_pool%3Dnobody",
    );
    assert_eq!(status, "404", "{body}");
    // A pool no variant of ours is behind (llm-d's KEDA users have no VariantAutoscaling): read all the same.
    let epp = "unmanaged-epp";
    c.apply(&picker(
        "unmanaged",
        "other/model",
        "app: no-variant-of-ours",
    ));
    set_signals(k, epp, 0.5, 0);
    eventually(
        "the saturation of a pool no variant is behind",
        Duration::from_secs(60),
        || async {
            let sat = value(get(
                "llm_d_router_epp_flow_control_pool_saturation",
                "inference_pool%3Dunmanaged",
            ))?;
            (sat == "500m").then_some(()).ok_or(sat)
        },
    )
    .await;
    k.control.lock().unwrap().signals.remove(epp);
    for (kind, name) in [
        ("inferencepool", "unmanaged"),
        ("service", epp),
        ("deployment", epp),
    ] {
        c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
            .unwrap();
    }
    eprintln!("e2e[keda] the endpoint picker's pool saturation (0.8) and requests in flight (12) served as external metrics under its own names; an unknown pool 404; a pool without variants read too");
}

/// A guide-shaped signal trigger through the real KEDA: the ScaledObject (still the annotated variant)
/// now asks for `signal: pool-saturation` with `threshold: 0.3`; at saturation 0.8 KEDA's HPA wants
/// ⌈0.8 / 0.3⌉ = 3 replicas.
async fn signal_trigger(c: &mut Cluster, k: &Kubelet, name: &str, model: &str, port: u16) {
    let started = Instant::now();
    c.apply(&format!("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L4}}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: {model}}}\nspec:\n  scaleTargetRef: {{name: {name}-decode}}\n  pollingInterval: 2\n  cooldownPeriod: 5\n  minReplicaCount: 1\n  maxReplicaCount: 3\n  triggers:\n  - type: external-push\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\", signal: pool-saturation, inferencePool: {name}, threshold: \"0.3\"}}\n    authenticationRef: {{name: wva-metrics-server}}\n"));
    wait_replicas(c, &format!("{name}-decode"), 3, Duration::from_secs(120)).await;
    eprintln!(
        "e2e[keda] signal trigger (pool-saturation 0.8, threshold 0.3): {name}-decode at 3 after {:.1}s through the real KEDA",
        started.elapsed().as_secs_f64()
    );
    k.control
        .lock()
        .unwrap()
        .signals
        .remove(&format!("{name}-epp"));
}

/// Two variants of one model behind one InferencePool, each scaled by KEDA on a variant-level
/// trigger (`signal: running-requests`, `variantName`, `threshold: 8`): at 8 requests running the pool
/// needs 1 replica and both stay at their minimum of 1; at 24 it needs 3, and the one replica more
/// lands on the cheaper variant (A100 at 10 against H100 at 40), never on the dearer one.
async fn split(c: &Cluster, k: &Kubelet, port: u16) {
    let model = "Qwen/Qwen3-8B";
    let variant = |name: &str, accelerator: &str, cost: u32| {
        let deployment = deployment_yaml(NS, name, name, model).replace(
            &format!("      labels: {{app: {name}}}"),
            &format!("      labels: {{app: {name}, pool: split}}"),
        );
        [
            deployment,
            format!("apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: {accelerator}}}\nspec: {{modelID: {model}, variantCost: \"{cost}\", scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}}}\n"),
            format!("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{name: {name}}}\n  pollingInterval: 2\n  minReplicaCount: 1\n  maxReplicaCount: 4\n  advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleUp: {{stabilizationWindowSeconds: 0}}\n        scaleDown: {{stabilizationWindowSeconds: 5}}\n  triggers:\n  - type: external\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\", signal: running-requests, variantName: {name}, threshold: \"8\"}}\n    authenticationRef: {{name: wva-metrics-server}}\n"),
        ]
        .join("---\n")
    };
    set_signals(k, "split-epp", 0.5, 8);
    c.apply(
        &[
            picker("split", model, "pool: split"),
            variant("split-a100", "A100", 10),
            variant("split-h100", "H100", 40),
        ]
        .join("---\n"),
    );
    for name in ["split-a100", "split-h100"] {
        wait_replicas(c, name, 1, Duration::from_secs(90)).await;
    }
    let step = Instant::now();
    set_signals(k, "split-epp", 0.5, 24);
    wait_replicas(c, "split-a100", 2, Duration::from_secs(90)).await;
    let took = step.elapsed();
    // Settled: the pool is at 3, and the dearer variant never moved.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(replicas(&c.client, "split-a100").await, (2, 2));
    assert_eq!(replicas(&c.client, "split-h100").await.0, 1);
    eprintln!(
        "e2e[keda] one pool, two variants (A100 $10, H100 $40), running requests 8 → 24 at threshold 8: +1 on the A100 variant after {:.1}s, the H100 one stayed at 1",
        took.as_secs_f64()
    );
    k.control.lock().unwrap().signals.remove("split-epp");
    for name in ["split-a100", "split-h100"] {
        for kind in ["scaledobject", "variantautoscaling", "deployment"] {
            c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
                .unwrap();
        }
    }
    for (kind, name) in [
        ("inferencepool", "split"),
        ("service", "split-epp"),
        ("deployment", "split-epp"),
    ] {
        c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
            .unwrap();
    }
}

/// Steps in the side-by-side (a median needs several).
const SIDE_BY_SIDE_RUNS: usize = 5;

/// llm-d's guide path and ours on one endpoint picker, in one run: `side-guide` scales on the guide's
/// `prometheus` trigger (the pool's saturation scraped by the real Prometheus every
/// [`EPP_SCRAPE_INTERVAL`], queried over HTTPS with the guide's bearer-token TriggerAuthentication and
/// Prometheus' CA), `side-ours` on our `external-push` trigger with the same threshold. Each run steps
/// the saturation from 0.2 to 0.8 (threshold 0.3: from 1 replica to 3) and times the step to
/// `spec.replicas` 3 for both; the figures are printed, never asserted (machines here are shared).
async fn side_by_side(c: &Cluster, k: &Kubelet, pool: &str, port: u16) {
    let epp = format!("{pool}-epp");
    let pods: kube::Api<Pod> = kube::Api::namespaced(c.client.clone(), NS);
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&format!("app={epp}")))
        .await
        .unwrap();
    let targets: Vec<serde_json::Value> = listed
        .items
        .iter()
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.clone()?;
            Some(serde_json::json!({"targets": [format!("{ip}:8000")], "labels": {"namespace": NS, "pod": p.metadata.name}}))
        })
        .collect();
    assert!(!targets.is_empty(), "no running pod of {epp}");
    std::fs::write(
        c.dir.join("epp-targets.json"),
        serde_json::to_vec(&targets).unwrap(),
    )
    .unwrap();
    let ca = std::fs::read_to_string(c.dir.join("prometheus-ca.crt")).unwrap();
    let indented: String = ca.lines().map(|l| format!("    {l}\n")).collect();
    let prometheus = format!("https://127.0.0.1:{}", c.prometheus_port());
    let query = format!("max(llm_d_router_epp_flow_control_pool_saturation{{inference_pool=\"{pool}\",namespace=\"{NS}\"}})");
    let scaled = |name: &str, trigger: String| {
        format!("{}---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{name: {name}}}\n  pollingInterval: 15\n  minReplicaCount: 1\n  maxReplicaCount: 3\n  advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleUp: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 4, periodSeconds: 1}}]}}\n        scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 4, periodSeconds: 1}}]}}\n  triggers:\n{trigger}", deployment_yaml(NS, name, name, "Qwen/Qwen3-0.6B"))
    };
    set_signals(k, &epp, 0.2, 0);
    c.apply(&[
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: prometheus-token, namespace: {NS}}}\nstringData:\n  token: e2e-unused-by-this-prometheus\n  ca.crt: |\n{indented}"),
        format!("apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {{name: prometheus, namespace: {NS}}}\nspec:\n  secretTargetRef:\n  - {{parameter: bearerToken, name: prometheus-token, key: token}}\n  - {{parameter: ca, name: prometheus-token, key: ca.crt}}\n"),
        scaled("side-guide", format!("  - type: prometheus\n    metadata: {{serverAddress: \"{prometheus}\", query: '{query}', threshold: \"0.3\", authModes: bearer}}\n    authenticationRef: {{name: prometheus}}\n")),
        scaled("side-ours", format!("  - type: external-push\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\", signal: pool-saturation, inferencePool: {pool}, threshold: \"0.3\"}}\n    authenticationRef: {{name: wva-metrics-server}}\n")),
    ].join("---\n"));
    // Prometheus has the picker's series (its first scrape) before the first step.
    eventually(
        "Prometheus scraping the endpoint picker",
        Duration::from_secs(60),
        || async {
            let result = prometheus_query(c, &query)?;
            (!result.is_empty())
                .then_some(())
                .ok_or_else(|| format!("{query}: no series yet"))
        },
    )
    .await;
    let mut guide = Vec::new();
    let mut ours = Vec::new();
    for run in 0..SIDE_BY_SIDE_RUNS {
        set_signals(k, &epp, 0.2, 0);
        for name in ["side-guide", "side-ours"] {
            wait_replicas(c, name, 1, Duration::from_secs(120)).await;
        }
        // A step at no fixed phase of the scrape, the poll or the HPA's sync.
        tokio::time::sleep(Duration::from_millis(700 * run as u64 + 300)).await;
        let step = Instant::now();
        set_signals(k, &epp, 0.8, 0);
        let (mut g, mut o) = (None, None);
        while g.is_none() || o.is_none() {
            assert!(
                step.elapsed() < Duration::from_secs(120),
                "run {run}: not both at 3 after 120s (guide {g:?}, ours {o:?})"
            );
            if g.is_none() && replicas(&c.client, "side-guide").await.0 >= 3 {
                g = Some(step.elapsed());
            }
            if o.is_none() && replicas(&c.client, "side-ours").await.0 >= 3 {
                o = Some(step.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (g, o) = (g.unwrap(), o.unwrap());
        eprintln!(
            "e2e[keda] side-by-side run {}: saturation 0.2 → 0.8, spec.replicas 3 after {:.1}s (guide: Prometheus scrape {EPP_SCRAPE_INTERVAL} + prometheus trigger) and {:.1}s (ours: external-push)",
            run + 1,
            g.as_secs_f64(),
            o.as_secs_f64()
        );
        guide.push(g);
        ours.push(o);
    }
    let summary = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "median {:.1}s, range {:.1}–{:.1}s",
            v[v.len() / 2].as_secs_f64(),
            v[0].as_secs_f64(),
            v[v.len() - 1].as_secs_f64()
        )
    };
    eprintln!(
        "e2e[keda] side-by-side over {SIDE_BY_SIDE_RUNS} steps: guide path (EPP → Prometheus every {EPP_SCRAPE_INTERVAL} → KEDA prometheus trigger → HPA) {}; ours (EPP read every 0.5s → external-push → HPA) {}",
        summary(&mut guide),
        summary(&mut ours)
    );
    k.control.lock().unwrap().signals.remove(&epp);
    for (kind, name) in [
        ("scaledobject", "side-guide"),
        ("scaledobject", "side-ours"),
        ("deployment", "side-guide"),
        ("deployment", "side-ours"),
        ("triggerauthentication", "prometheus"),
        ("secret", "prometheus-token"),
    ] {
        c.kubectl(&["-n", NS, "delete", kind, name, "--wait=false"])
            .unwrap();
    }
}
