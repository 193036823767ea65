//! KEDA holds `v1beta1.external.metrics.k8s.io` and our server answers through KEDA's external scaler
//! (issue #15): KEDA's real operator and metrics adapter, built from `github.com/kedacore/keda/v2`
//! (`tests/e2e/build-keda.sh`), run against the e2e control plane. A ScaledObject with an `external`
//! trigger and a TriggerAuthentication with mTLS becomes Ready and scales its Deployment under load; a
//! client certificate from another CA is refused; missing data (UNAVAILABLE) makes KEDA apply its
//! `fallback`; with our server stopped and `minReplicaCount: 0`, KEDA never scales to zero.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::harness::{eventually, Proc};
use super::keda_epp;
use super::kubelet::Kubelet;
use super::support::{free_port, Ca};
use super::{
    deployment_yaml, never_below, replicas, set_load, wait_at_least, wait_replicas, Cluster,
    EPP_TOKEN, NS, ROOT,
};

/// Builds (once) and locates KEDA: `<dir>/bin/keda-{operator,adapter}` and `<dir>/crds/`.
fn keda_dir() -> PathBuf {
    let out = Command::new(format!("{ROOT}/tests/e2e/build-keda.sh"))
        .output()
        .expect("running tests/e2e/build-keda.sh");
    assert!(
        out.status.success(),
        "building KEDA failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Starts KEDA's operator and adapter, and registers the adapter as the external metrics APIService in
/// place of ours. Returns the time it took.
pub async fn start_keda(c: &mut Cluster) -> Duration {
    let started = Instant::now();
    let keda = keda_dir();
    for crd in std::fs::read_dir(keda.join("crds")).unwrap() {
        c.kubectl(&[
            "apply",
            "--server-side",
            "-f",
            crd.unwrap().path().to_str().unwrap(),
        ])
        .unwrap();
    }
    c.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: keda}\n");
    // One certificate for the operator's gRPC service and the adapter (server and client of each other).
    let certs = c.dir.join("keda-certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = Ca::new("keda-e2e-ca");
    let leaf = ca.leaf(
        &[
            "localhost",
            "127.0.0.1",
            "keda-operator.keda.svc",
            "keda-metrics-apiserver.keda.svc",
        ],
        "keda",
        &[],
        vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    std::fs::write(certs.join("ca.crt"), &ca.pem).unwrap();
    std::fs::write(certs.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(certs.join("tls.key"), &leaf.key_pem).unwrap();
    let env = [
        ("KUBECONFIG", c.admin_kubeconfig.display().to_string()),
        ("KEDA_CLUSTER_OBJECT_NAMESPACE", "keda".to_string()),
        ("POD_NAMESPACE", "keda".to_string()),
        ("WATCH_NAMESPACE", String::new()),
    ];
    let grpc = free_port();
    let p = |port: u16| format!("127.0.0.1:{port}");
    let operator = Proc::spawn_with_env(
        &c.dir,
        "keda-operator",
        &keda.join("bin/keda-operator"),
        &[
            format!("--metrics-bind-address={}", p(free_port())),
            format!("--health-probe-bind-address={}", p(free_port())),
            format!("--metrics-service-bind-address={}", p(grpc)),
            format!("--cert-dir={}", certs.display()),
            "--enable-cert-rotation=false".into(),
            "--enable-webhook-patching=false".into(),
            "--enable-apiservice-patching=false".into(),
            "--leader-elect=false".into(),
            "--zap-log-level=info".into(),
        ],
        &env,
    );
    c.procs.insert("keda-operator", operator);
    let adapter_port = free_port();
    let kubeconfig = c.admin_kubeconfig.display().to_string();
    let adapter = Proc::spawn_with_env(
        &c.dir,
        "keda-adapter",
        &keda.join("bin/keda-adapter"),
        &[
            format!("--secure-port={adapter_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--cert-dir={}", certs.display()),
            format!("--tls-cert-file={}", certs.join("tls.crt").display()),
            format!("--tls-private-key-file={}", certs.join("tls.key").display()),
            format!("--metrics-service-address={}", p(grpc)),
            format!("--port={}", free_port()),
            format!("--lister-kubeconfig={kubeconfig}"),
            format!("--authentication-kubeconfig={kubeconfig}"),
            format!("--authorization-kubeconfig={kubeconfig}"),
        ],
        &env,
    );
    c.procs.insert("keda-adapter", adapter);
    // KEDA takes the APIService; ours goes (only one provider can hold it).
    c.kubectl(&["delete", "apiservice", "v1beta1.external.metrics.k8s.io"])
        .unwrap();
    let bundle = base64(&ca.pem);
    c.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: keda-metrics-apiserver, namespace: keda}}\nspec: {{type: ExternalName, externalName: 127.0.0.1}}\n---\napiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata: {{name: v1beta1.external.metrics.k8s.io}}\nspec:\n  group: external.metrics.k8s.io\n  version: v1beta1\n  groupPriorityMinimum: 100\n  versionPriority: 100\n  caBundle: {bundle}\n  service: {{name: keda-metrics-apiserver, namespace: keda, port: {adapter_port}}}\n"
    ));
    eventually(
        "KEDA's APIService Available=True",
        Duration::from_secs(120),
        || async {
            let out = c.kubectl(&["get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "jsonpath={.status.conditions[?(@.type==\"Available\")].status} {.status.conditions[?(@.type==\"Available\")].message}"])?;
            if out.starts_with("True") { Ok(()) } else { Err(out) }
        },
    )
    .await;
    started.elapsed()
}

/// Base64 as Kubernetes wants it in `data` and `caBundle` (coreutils' base64, no line breaks).
fn base64(s: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// Restarts our first replica with the external scaler on `port`, trusting make-certs' CA for clients,
/// and with a bearer token for endpoint pickers.
fn serve_scaler(c: &mut Cluster, port: u16) {
    c.procs.get_mut("server").unwrap().stop();
    let token = c.dir.join("epp-token");
    std::fs::write(&token, EPP_TOKEN).unwrap();
    c.server_args
        .push(format!("--epp-token-file={}", token.display()));
    c.server_args.push(format!("--external-scaler-port={port}"));
    c.server_args.push(format!(
        "--external-scaler-client-ca-file={}",
        c.certs.join("ca.crt").display()
    ));
    c.start_replica("server");
}

fn scaled_object(name: &str, target: &str, variant: &str, port: u16, auth: &str) -> String {
    format!(
        "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{name: {target}}}\n  pollingInterval: 2\n  cooldownPeriod: 30\n  minReplicaCount: 1\n  maxReplicaCount: 3\n  fallback: {{failureThreshold: 2, replicas: 2}}\n  advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleUp: {{stabilizationWindowSeconds: 0}}\n        scaleDown: {{stabilizationWindowSeconds: 5}}\n  triggers:\n  - type: external\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\", variantName: {variant}}}\n    authenticationRef: {{name: {auth}}}\n"
    )
}

async fn condition(c: &Cluster, name: &str) -> String {
    c.kubectl(&[
        "-n",
        NS,
        "get",
        "scaledobject",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}",
    ])
    .unwrap_or_else(|e| e)
}

/// Waits (up to 2 min) for a ScaledObject's Ready condition to be True.
async fn ready(c: &Cluster, name: &str) {
    eventually(
        &format!("ScaledObject {name} Ready=True"),
        Duration::from_secs(120),
        || async {
            let out = condition(c, name).await;
            if out.starts_with("True") {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
}

/// The KEDA scenario, on a cluster where our server is installed (its APIService is replaced by KEDA's).
pub async fn scenario(c: &mut Cluster, k: &Kubelet) {
    let took = start_keda(c).await;
    // The inference extension's InferencePool CRD, early: the server notices it within 30 s.
    c.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        keda_dir()
            .join("inference-crds/inferencepools.yaml")
            .to_str()
            .unwrap(),
    ])
    .unwrap();
    eprintln!(
        "e2e[keda] KEDA operator and adapter up, holding the APIService ({:.1}s incl. build check)",
        took.as_secs_f64()
    );
    let port = free_port();
    serve_scaler(c, port);
    c.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n"
    ));
    // The TriggerAuthentication make-certs.sh wrote, in the workload namespace.
    let auth = std::fs::read_to_string(c.certs.join("keda-trigger-auth.yaml"))
        .unwrap()
        .replace("namespace: default", &format!("namespace: {NS}"));
    c.apply(&auth);
    c.apply(&[
        deployment_yaml(NS, "keda-l4-decode", "keda-l4", "Qwen/Qwen3-4B"),
        format!("apiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: keda-l4\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L4}}\nspec: {{modelID: Qwen/Qwen3-4B, scaleTargetRef: {{name: keda-l4-decode}}}}\n"),
        scaled_object("keda-l4", "keda-l4-decode", "keda-l4", port, "wva-metrics-server"),
    ]
    .join("---\n"));
    ready(c, "keda-l4").await;
    wait_replicas(c, "keda-l4-decode", 1, Duration::from_secs(60)).await;
    let step = Instant::now();
    set_load(k, "keda-l4", 30);
    wait_at_least(
        c,
        "keda-l4-decode",
        2,
        "KEDA's HPA scaled up from our external scaler",
        Duration::from_secs(120),
    )
    .await;
    eprintln!("e2e[keda] ScaledObject Ready; load step → keda-l4-decode at 2 after {:.1}s (KEDA polling 2s, HPA sync 5s)", step.elapsed().as_secs_f64());
    set_load(k, "keda-l4", 0);
    wait_replicas(c, "keda-l4-decode", 1, Duration::from_secs(180)).await;

    // An annotated ScaledObject is itself a variant (issue #14), here with an external-push trigger:
    // no variantName, and activity is pushed over StreamIsActive.
    c.apply(&[
        deployment_yaml(NS, "keda-push-decode", "keda-push", "Qwen/Qwen3-8B"),
        format!("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: keda-push\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: A10}}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: Qwen/Qwen3-8B}}\nspec:\n  scaleTargetRef: {{name: keda-push-decode}}\n  pollingInterval: 2\n  minReplicaCount: 1\n  maxReplicaCount: 3\n  advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleUp: {{stabilizationWindowSeconds: 0}}\n        scaleDown: {{stabilizationWindowSeconds: 5}}\n  triggers:\n  - type: external-push\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\"}}\n    authenticationRef: {{name: wva-metrics-server}}\n"),
    ]
    .join("---\n"));
    ready(c, "keda-push").await;
    wait_replicas(c, "keda-push-decode", 1, Duration::from_secs(60)).await;
    let step = Instant::now();
    set_load(k, "keda-push", 30);
    wait_at_least(
        c,
        "keda-push-decode",
        2,
        "the annotated ScaledObject's Deployment scaled up",
        Duration::from_secs(120),
    )
    .await;
    eprintln!("e2e[keda] annotated ScaledObject with an external-push trigger (no VA, no variantName): Ready, scaled to 2 after {:.1}s", step.elapsed().as_secs_f64());
    set_load(k, "keda-push", 0);
    c.kubectl(&["-n", NS, "delete", "scaledobject", "keda-push"])
        .unwrap();

    // A client certificate from another CA is refused at the handshake.
    let stranger = Ca::new("not-ours").client("keda-operator", &[]);
    let server_ca = std::fs::read_to_string(c.certs.join("ca.crt")).unwrap();
    c.apply(&[
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: stranger, namespace: {NS}}}\ndata: {{caCert: {}, tlsClientCert: {}, tlsClientKey: {}}}\n", base64(&server_ca), base64(&stranger.cert_pem), base64(&stranger.key_pem)),
        format!("apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {{name: stranger, namespace: {NS}}}\nspec:\n  secretTargetRef:\n  - {{parameter: caCert, name: stranger, key: caCert}}\n  - {{parameter: tlsClientCert, name: stranger, key: tlsClientCert}}\n  - {{parameter: tlsClientKey, name: stranger, key: tlsClientKey}}\n"),
        deployment_yaml(NS, "keda-bad-decode", "keda-bad", "Qwen/Qwen3-4B"),
        scaled_object("keda-bad", "keda-bad-decode", "keda-l4", port, "stranger"),
    ]
    .join("---\n"));
    let log = c.procs["server"].log.clone();
    eventually(
        "the stranger's handshake refused and logged",
        Duration::from_secs(90),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let ready = condition(c, "keda-bad").await;
            if text.contains("external scaler: TLS handshake refused") && !ready.starts_with("True")
            {
                Ok(())
            } else {
                Err(format!("ScaledObject keda-bad: {ready}"))
            }
        },
    )
    .await;
    c.kubectl(&["-n", NS, "delete", "scaledobject", "keda-bad"])
        .unwrap();
    eprintln!(
        "e2e[keda] a client certificate from another CA: handshake refused, ScaledObject not Ready"
    );

    // Missing data: GetMetrics answers UNAVAILABLE (the 503's message); KEDA counts failures, not
    // inactivity, and holds its fallback (2 replicas) instead of acting on a number nobody computed.
    let pod = c
        .kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app=keda-l4",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();
    k.control
        .lock()
        .unwrap()
        .faults
        .insert(pod.trim().to_string(), "hang".into());
    let hung = Instant::now();
    wait_at_least(
        c,
        "keda-l4-decode",
        2,
        "KEDA's fallback while the variant's data is missing",
        Duration::from_secs(120),
    )
    .await;
    eprintln!("e2e[keda] pod metrics hung: UNAVAILABLE after --max-metric-age, KEDA applied its fallback (2 replicas) after {:.1}s", hung.elapsed().as_secs_f64());
    k.control.lock().unwrap().faults.clear();
    wait_replicas(c, "keda-l4-decode", 1, Duration::from_secs(180)).await;

    // Our server stopped, with scale to zero allowed: KEDA never scales to zero because of the outage.
    c.kubectl(&[
        "-n",
        NS,
        "patch",
        "scaledobject",
        "keda-l4",
        "--type",
        "merge",
        "-p",
        "{\"spec\":{\"minReplicaCount\":0,\"cooldownPeriod\":5}}",
    ])
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.procs.get_mut("server").unwrap().stop();
    never_below(c, "keda-l4-decode", 1, Duration::from_secs(25)).await;
    c.start_replica("server");
    let (now, _) = replicas(&c.client, "keda-l4-decode").await;
    eprintln!("e2e[keda] our server stopped for 25s with minReplicaCount 0 and cooldown 5s: never scaled to zero (at {now})");
    zero(c, k, port).await;
}

/// One model's workload for scale to zero and from zero: its Deployment (app `<name>`), an annotated
/// ScaledObject (minReplicaCount 0) with the given trigger, and an InferencePool whose endpoint picker
/// (app `<name>-epp`, an emulator behind [`EPP_TOKEN`]) serves the model's queue.
fn zero_workload(name: &str, model: &str, trigger: &str, port: u16) -> String {
    [
        deployment_yaml(NS, &format!("{name}-decode"), name, model),
        keda_epp::picker(name, model, &format!("app: {name}")),
        format!("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: L4}}\n  annotations: {{llm-d.ai/managed: \"true\", llm-d.ai/model-id: {model}}}\nspec:\n  scaleTargetRef: {{name: {name}-decode}}\n  pollingInterval: 10\n  cooldownPeriod: 5\n  minReplicaCount: 0\n  maxReplicaCount: 3\n  triggers:\n  - type: {trigger}\n    metadata: {{scalerAddress: \"127.0.0.1:{port}\"}}\n    authenticationRef: {{name: wva-metrics-server}}\n"),
    ]
    .join("---\n")
}

/// Scale to zero and from zero through KEDA: both models go idle past a 20 s retention and KEDA scales
/// them to 0; then requests queue at each model's endpoint picker and KEDA brings it back to 1, pushed
/// (`external-push`, StreamIsActive) for one and polled (`external`, pollingInterval 10 s) for the other.
async fn zero(c: &mut Cluster, k: &Kubelet, port: u16) {
    let models = [
        ("zero-push", "Qwen/Qwen3-1.7B", "external-push"),
        ("zero-poll", "Qwen/Qwen3-14B", "external"),
    ];
    let entries: Vec<String> = models
        .iter()
        .map(|(name, model, _)| format!("  {name}: |\n    model_id: {model}\n    enable_scale_to_zero: true\n    retention_period: 20s\n"))
        .collect();
    c.apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: wva-model-scale-to-zero-config, namespace: wva-metrics-server}}\ndata:\n  default: |\n    enable_scale_to_zero: false\n{}",
        entries.concat()
    ));
    let workloads: Vec<String> = models
        .iter()
        .map(|(name, model, trigger)| zero_workload(name, model, trigger, port))
        .collect();
    c.apply(&workloads.join("---\n"));
    for (name, _, _) in models {
        ready(c, name).await;
    }
    let idle = Instant::now();
    for (name, _, _) in models {
        wait_replicas(c, &format!("{name}-decode"), 0, Duration::from_secs(180)).await;
    }
    eprintln!(
        "e2e[keda] idle past the 20s retention (plus cooldown 5s): both models scaled to 0 after {:.1}s",
        idle.elapsed().as_secs_f64()
    );
    // A model at 0 stays at 0 while nothing queues.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, _, _) in models {
        assert_eq!(replicas(&c.client, &format!("{name}-decode")).await.0, 0);
    }
    for (name, _, trigger) in models {
        k.control
            .lock()
            .unwrap()
            .queues
            .insert(format!("{name}-epp"), 2);
        let took = wait_spec_at_least_one(c, &format!("{name}-decode")).await;
        eprintln!(
            "e2e[keda] scale from zero ({trigger}): EPP queue 2 → spec.replicas 1 after {:.2}s (pollingInterval 10s, EPP read every 0.5s)",
            took.as_secs_f64()
        );
        wait_replicas(c, &format!("{name}-decode"), 1, Duration::from_secs(60)).await;
    }
    keda_epp::scenario(c, k, models[0].0, models[0].1, port).await;
    for (name, _, _) in models {
        k.control
            .lock()
            .unwrap()
            .queues
            .remove(&format!("{name}-epp"));
        c.kubectl(&["-n", NS, "delete", "scaledobject", name])
            .unwrap();
    }
}

/// Time until the Deployment's `spec.replicas` is at least 1, polled every 50 ms.
async fn wait_spec_at_least_one(c: &Cluster, deployment: &str) -> Duration {
    let start = Instant::now();
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(c.client.clone(), NS);
    loop {
        let spec = deployments
            .get(deployment)
            .await
            .ok()
            .and_then(|d| d.spec.and_then(|s| s.replicas))
            .unwrap_or(0);
        if spec >= 1 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{deployment} did not leave 0 within 90s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
