use crate::*;

const LWS_NS: &str = "lws-system";

/// Multi-host serving: a VariantAutoscaling whose scale target is a LeaderWorkerSet, scaled by a real
/// HPA through the set's scale subresource. The LeaderWorkerSet is the real one: its CRD and its
/// controller manager (with its admission webhooks and internal certificate rotation) built from
/// `sigs.k8s.io/lws`, and kube-controller-manager's StatefulSet controller under it. The CRD is
/// installed while the server runs, so the server also proves it starts watching a CRD that appears.
/// The leader pods are the variant's replicas and its only scraped pods; the worker pods exist and are
/// nobody's.
pub(crate) async fn run(c: &mut Cluster, k: &kubelet::Kubelet) {
    install_lws(c).await;
    const MODEL: &str = "Qwen/Qwen3-LWS";
    let template = |app: &str| {
        format!("metadata:\n          labels: {{app: {app}}}\n          annotations: {{prometheus.io/port: \"8000\", e2e.wva/model: {MODEL}}}\n        spec:\n          containers: [{{name: vllm, image: \"vllm/vllm-openai:emulated\", ports: [{{name: http, containerPort: 8000}}], resources: {{limits: {{nvidia.com/gpu: \"8\"}}}}}}]")
    };
    // Saturated from the start: 40 requests on one leader of 16 slots.
    set_load(k, "lws-big", 40);
    let started = Instant::now();
    c.apply(&format!(
        "apiVersion: leaderworkerset.x-k8s.io/v1\nkind: LeaderWorkerSet\nmetadata: {{name: lws-big, namespace: {NS}}}\nspec:\n  replicas: 1\n  leaderWorkerTemplate:\n    size: 2\n    leaderTemplate:\n        {leader}\n    workerTemplate:\n        {worker}\n---\napiVersion: llmd.ai/v1alpha1\nkind: VariantAutoscaling\nmetadata:\n  name: lws-big\n  namespace: {NS}\n  labels: {{inference.optimization/acceleratorName: H100}}\nspec:\n  modelID: {MODEL}\n  variantCost: \"80\"\n  scaleTargetRef: {{apiVersion: leaderworkerset.x-k8s.io/v1, kind: LeaderWorkerSet, name: lws-big}}\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: lws-big, namespace: {NS}}}\nspec:\n  scaleTargetRef: {{apiVersion: leaderworkerset.x-k8s.io/v1, kind: LeaderWorkerSet, name: lws-big}}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n  - type: External\n    external:\n      metric:\n        name: wva_desired_replicas\n        selector: {{matchLabels: {{variant_name: lws-big, exported_namespace: {NS}}}}}\n      target: {{type: AverageValue, averageValue: \"1\"}}\n  behavior:\n    scaleUp: {{stabilizationWindowSeconds: 0}}\n",
        leader = template("lws-big"),
        worker = template("lws-big-worker"),
    ));
    let lws_replicas = || async {
        let out = c.kubectl(&[
            "get",
            "-n",
            NS,
            "leaderworkerset/lws-big",
            "-o",
            "jsonpath={.spec.replicas} {.status.readyReplicas}",
        ])?;
        let mut parts = out
            .split_whitespace()
            .map(|p| p.parse::<i32>().unwrap_or(0));
        Ok::<_, String>((parts.next().unwrap_or(0), parts.next().unwrap_or(0)))
    };
    eventually(
        "the saturated LeaderWorkerSet scaled to 2 ready groups by the HPA",
        Duration::from_secs(240),
        || async {
            let (spec, ready) = lws_replicas().await?;
            if spec >= 2 && ready >= 2 {
                Ok(())
            } else {
                Err(format!(
                    "spec {spec}, ready {ready}; HPA: {}",
                    c.kubectl(&["get", "-n", NS, "hpa/lws-big", "-o", "jsonpath={.status}"])
                        .unwrap_or_else(|e| e)
                ))
            }
        },
    )
    .await;
    eprintln!(
        "e2e[leader-worker-set] the real HPA scaled the real LeaderWorkerSet to >= 2 ready groups after {:.1}s (CRD and controller installed while the server ran)",
        started.elapsed().as_secs_f64()
    );
    // Every group has its worker; only leaders are the variant's pods.
    let members = c
        .kubectl(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "leaderworkerset.sigs.k8s.io/name=lws-big",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.leaderworkerset\\.sigs\\.k8s\\.io/worker-index} {end}",
        ])
        .expect("the set's pods");
    let workers = members
        .split_whitespace()
        .filter(|m| !m.ends_with("=0"))
        .count();
    assert!(workers >= 2, "each group has a worker pod: {members}");
    let doc = eventually(
        "the LeaderWorkerSet variant with its leaders' samples in /debug/variants",
        Duration::from_secs(60),
        || async {
            let model = debug_model(c, MODEL)?;
            let sampled = model["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["sample"].is_object())
                .count();
            if sampled >= 2 {
                Ok(model)
            } else {
                Err(format!("{sampled} sampled pods: {model}"))
            }
        },
    )
    .await;
    let variant = doc["variants"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "lws-big")
        .cloned()
        .unwrap_or_default();
    assert_eq!(variant["targetKind"], "LeaderWorkerSet", "{doc}");
    let pods: Vec<String> = doc["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pod"].as_str().map(str::to_string))
        .collect();
    assert!(
        !pods.is_empty() && pods.iter().all(|p| members.contains(&format!("{p}=0 "))),
        "only leaders are the variant's pods: {pods:?} of {members}"
    );
    set_load(k, "lws-big", 0);
    c.kubectl(&[
        "delete",
        "-n",
        NS,
        "hpa/lws-big",
        "variantautoscaling/lws-big",
        "leaderworkerset/lws-big",
        "--wait=false",
    ])
    .expect("cleaning up the LeaderWorkerSet");
}

/// Installs the LeaderWorkerSet CRD and runs its controller manager as its release does: internal
/// certificate rotation for its admission webhooks (defaulting and validating sets, and labelling
/// their pods with group and worker indexes), reached through an ExternalName Service to loopback.
/// The manager runs with the admin kubeconfig, in place of its ServiceAccount.
async fn install_lws(c: &mut Cluster) {
    let dir = lws();
    c.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        dir.join("crds/leaderworkersets.yaml").to_str().unwrap(),
    ])
    .expect("the LeaderWorkerSet CRD");
    eventually(
        "the LeaderWorkerSet CRD established",
        Duration::from_secs(60),
        || async {
            let established = c.kubectl(&[
                "get",
                "crd/leaderworkersets.leaderworkerset.x-k8s.io",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ])?;
            if established.trim() == "True" {
                Ok(())
            } else {
                Err(format!("Established: {established:?}"))
            }
        },
    )
    .await;
    let port = free_port();
    // As the release's config/webhook manifests and patches, under the names its certificate rotator
    // updates (pkg/cert/cert.go).
    let hooks = |kind: &str, name: &str, prefix: &str, extra: &str, pod_ops: &str| {
        let hook = |name: &str,
                    path: &str,
                    group: &str,
                    resource: &str,
                    ops: &str,
                    selector: &str| {
            format!("- name: {name}\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  failurePolicy: Fail\n  clientConfig:\n    service: {{name: lws-webhook-service, namespace: {LWS_NS}, path: {path}, port: {port}}}\n  rules: [{{apiGroups: [\"{group}\"], apiVersions: [v1], operations: [{ops}], resources: [{resource}]}}]\n{selector}")
        };
        let pods = "  objectSelector: {matchExpressions: [{key: leaderworkerset.sigs.k8s.io/name, operator: Exists}]}\n";
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nwebhooks:\n{}{}",
            hook(&format!("{prefix}leaderworkerset.kb.io"), &format!("/{extra}-leaderworkerset-x-k8s-io-v1-leaderworkerset"), "leaderworkerset.x-k8s.io", "leaderworkersets", "CREATE, UPDATE", ""),
            hook(&format!("{prefix}pod.kb.io"), &format!("/{extra}--v1-pod"), "", "pods", pod_ops, pods),
        )
    };
    c.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {LWS_NS}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: lws-webhook-server-cert, namespace: {LWS_NS}}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: lws-webhook-service, namespace: {LWS_NS}}}\nspec: {{type: ExternalName, externalName: 127.0.0.1}}\n---\n{}---\n{}",
        hooks("MutatingWebhookConfiguration", "lws-mutating-webhook-configuration", "m", "mutate", "CREATE"),
        hooks("ValidatingWebhookConfiguration", "lws-validating-webhook-configuration", "v", "validate", "CREATE, UPDATE"),
    ));
    let config = c.dir.join("lws-config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: config.lws.x-k8s.io/v1alpha1\nkind: Configuration\nleaderElection: {{leaderElect: false}}\ninternalCertManagement: {{enable: true}}\nwebhook: {{port: {port}, host: 127.0.0.1, certDir: {}}}\nmetrics: {{bindAddress: \"0\"}}\nhealth: {{healthProbeBindAddress: \"127.0.0.1:{}\"}}\n",
            c.dir.join("lws-certs").display(),
            free_port()
        ),
    )
    .unwrap();
    let manager = Proc::spawn(
        &c.dir,
        "lws-manager",
        &dir.join("bin/lws-manager"),
        &[
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", c.admin_kubeconfig.display()),
        ],
    );
    c.procs.insert("lws-manager", manager);
    // The rotator writes the webhook certificate to the Secret and waits for it in its certificate
    // directory, where the kubelet mounts the Secret in a real install; this harness mounts it.
    let certs = c.dir.join("lws-certs");
    std::fs::create_dir_all(&certs).unwrap();
    eventually(
        "the LeaderWorkerSet webhook certificate written to its Secret",
        Duration::from_secs(60),
        || async {
            let mut files = Vec::new();
            for key in ["tls.key", "ca.crt", "tls.crt"] {
                let pem = c.kubectl(&[
                    "get",
                    "-n",
                    LWS_NS,
                    "secret/lws-webhook-server-cert",
                    "-o",
                    &format!("go-template={{{{index .data \"{key}\" | base64decode}}}}"),
                ])?;
                if !pem.contains("-----BEGIN") {
                    return Err(format!("{key}: {pem:?}"));
                }
                files.push((key, pem));
            }
            // tls.crt last: the rotator starts serving once it exists.
            for (key, pem) in files {
                std::fs::write(certs.join(key), pem).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
    .await;
    // Ready when its webhooks answer with the rotated certificate (a server-side dry run passes them).
    let probe = c.dir.join("lws-probe.yaml");
    std::fs::write(
        &probe,
        format!("apiVersion: leaderworkerset.x-k8s.io/v1\nkind: LeaderWorkerSet\nmetadata: {{name: probe, namespace: {NS}}}\nspec:\n  leaderWorkerTemplate:\n    workerTemplate:\n      spec:\n        containers: [{{name: c, image: x}}]\n"),
    )
    .unwrap();
    eventually(
        "the LeaderWorkerSet webhooks serving",
        Duration::from_secs(90),
        || async {
            c.kubectl(&["create", "--dry-run=server", "-f", probe.to_str().unwrap()])
                .map(|_| ())
        },
    )
    .await;
}
