//! The shipped manifests agree with the code: CRD fields and the Rust types, examples parse into the
//! types the server reads, RBAC grants what the server calls, and certs/make-certs.sh produces a
//! certificate the server loads and the aggregator would accept.

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use serde_json::Value;
use wva_metrics_server::cluster::crd::VariantAutoscaling;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn docs(path: &str) -> Vec<Value> {
    docs_at(&Path::new(ROOT).join(path))
}

fn docs_at(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .map(|d| serde_saphyr::from_str(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn crd_and_rust_types_agree() {
    let shipped = &docs("manifests/crd-variantautoscalings.yaml")[0];
    let generated = serde_json::to_value(VariantAutoscaling::crd()).unwrap();
    assert_eq!(shipped["metadata"]["name"], generated["metadata"]["name"]);
    assert_eq!(shipped["spec"]["group"], generated["spec"]["group"]);
    assert_eq!(
        shipped["spec"]["names"]["plural"],
        generated["spec"]["names"]["plural"]
    );
    assert_eq!(shipped["spec"]["scope"], "Namespaced");
    let schema = |crd: &Value| crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let (s, g) = (schema(shipped), schema(&generated));
    assert_eq!(
        keys(&s["properties"]["spec"]["properties"]),
        keys(&g["properties"]["spec"]["properties"]),
        "spec fields"
    );
    assert_eq!(
        keys(&s["properties"]["status"]["properties"]),
        keys(&g["properties"]["status"]["properties"]),
        "status fields"
    );
    assert_eq!(
        keys(&s["properties"]["spec"]["properties"]["scaleTargetRef"]["properties"]),
        keys(&g["properties"]["spec"]["properties"]["scaleTargetRef"]["properties"])
    );
    assert_eq!(
        shipped["spec"]["versions"][0]["subresources"],
        serde_json::json!({"status": {}})
    );
}

#[test]
fn examples_parse_into_the_types_the_server_reads() {
    for doc in docs("manifests/examples/variantautoscaling.yaml") {
        let va: VariantAutoscaling = serde_json::from_value(doc).unwrap();
        assert!(va.accelerator().is_ok() && va.cost().is_ok() && va.scale_target().is_ok());
    }
    let (wva_metrics_server::standalone::FileObjects { objects, .. }, problems) =
        wva_metrics_server::standalone::parse(
            Path::new("standalone.yaml"),
            &std::fs::read_to_string(Path::new(ROOT).join("manifests/examples/standalone.yaml"))
                .unwrap(),
        );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        (
            objects.vas.len(),
            objects.hpas.len(),
            objects.deployments.len(),
            objects.pods.len(),
            objects.pools.len(),
            objects.services.len()
        ),
        (2, 1, 3, 4, 1, 1)
    );
    let joined = wva_metrics_server::cluster::snapshot::build(&objects, &Default::default());
    assert!(joined.excluded.is_empty(), "{:?}", joined.excluded);
    let names: Vec<(&str, &str)> = joined
        .variants
        .iter()
        .map(|v| (v.name.as_str(), v.kind.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("qwen-h100", "HorizontalPodAutoscaler"),
            ("qwen-l40s", "VariantAutoscaling"),
            ("granite-l4", "VariantAutoscaling")
        ]
    );
    // The parked model's InferencePool selects its pods and finds its endpoint picker on 19090.
    assert_eq!(joined.pickers.len(), 1);
    let picker = &joined.pickers[0];
    assert_eq!(
        picker.models,
        ["ibm-granite/granite-3.3-8b-instruct".to_string()]
    );
    let epp = picker.pods.as_ref().unwrap();
    assert_eq!((epp[0].ip.as_str(), epp[0].port), ("127.0.0.5", 19090));
    let cm = &docs("manifests/examples/saturation-configmap.yaml")[0];
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(cm["data"].clone()).unwrap();
    let (cfg, report) = wva_metrics_server::saturation::config::ScalingConfig::from_configmap(
        &Default::default(),
        &data,
    );
    assert!(
        report.rejected.is_empty() && report.ignored_keys.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        cfg.resolve("Qwen/Qwen3-0.6B", "llm").0.kv_cache_threshold,
        0.85
    );
    // The example is V2; without its `analyzers:` list it is V1.
    assert_eq!(
        cfg.analyzer(),
        wva_metrics_server::saturation::v2::config::AnalyzerChoice::V2
    );
    let v1: std::collections::BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| {
            let kept: Vec<&str> = v
                .lines()
                .take_while(|l| !l.starts_with("analyzers:"))
                .collect();
            (k.clone(), kept.join("\n"))
        })
        .collect();
    let (cfg, report) = wva_metrics_server::saturation::config::ScalingConfig::from_configmap(
        &Default::default(),
        &v1,
    );
    assert!(report.rejected.is_empty(), "{report:?}");
    assert_eq!(
        cfg.analyzer(),
        wva_metrics_server::saturation::v2::config::AnalyzerChoice::V1
    );
    for f in [
        "manifests/examples/hpa-v041.yaml",
        "manifests/examples/hpa-v05.yaml",
        "manifests/examples/hpa-v051.yaml",
    ] {
        let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
            serde_json::from_value(docs(f)[0].clone()).unwrap();
        let metric = &hpa.spec.unwrap().metrics.unwrap()[0];
        let ext = metric.external.as_ref().unwrap();
        assert!(
            wva_metrics_server::provider::metrics::metric_kind(&ext.metric.name).is_some(),
            "{f}"
        );
        assert_eq!(
            ext.target.average_value.as_ref().map(|q| q.0.as_str()),
            Some("1")
        );
    }
}

/// The disaggregated example: two variants of one model, one per role, the decode pool an SGLang server
/// whose flags are read as SGLang's.
#[test]
fn disaggregated_example_declares_one_variant_per_role() {
    use wva_metrics_server::saturation::v2::args::InferenceEngine;
    use wva_metrics_server::saturation::Role;
    let d = docs("manifests/examples/disaggregated.yaml");
    let objects = wva_metrics_server::cluster::snapshot::Objects {
        deployments: d[..2]
            .iter()
            .map(|v| std::sync::Arc::new(serde_json::from_value(v.clone()).unwrap()))
            .collect(),
        hpas: d[2..]
            .iter()
            .map(|v| std::sync::Arc::new(serde_json::from_value(v.clone()).unwrap()))
            .collect(),
        ..Default::default()
    };
    let joined = wva_metrics_server::cluster::snapshot::build(&objects, &Default::default());
    assert!(joined.excluded.is_empty(), "{:?}", joined.excluded);
    let by_name = |n: &str| joined.variants.iter().find(|v| v.name == n).unwrap();
    let (prefill, decode) = (by_name("qwen-prefill"), by_name("qwen-decode"));
    assert_eq!((prefill.role, decode.role), (Role::Prefill, Role::Decode));
    assert_eq!(prefill.model_id, decode.model_id);
    assert_eq!(prefill.accelerator, "NVIDIA-H100-80GB-HBM3");
    let p = decode.engine_params.as_ref().unwrap();
    assert_eq!(
        (p.engine, p.max_num_seqs, p.block_size),
        (InferenceEngine::Sglang, 128, 1)
    );
    let p = prefill.engine_params.as_ref().unwrap();
    assert_eq!(
        (p.engine, p.effective_max_batched_tokens()),
        (InferenceEngine::Vllm, 16384)
    );
}

/// The LeaderWorkerSet example declares one variant whose replicas are groups of 16 GPUs, bounded by
/// the HPA on the set.
#[test]
fn leaderworkerset_example_declares_a_group_variant() {
    use wva_metrics_server::cluster::workload::TargetKind;
    use wva_metrics_server::saturation::Role;
    let d = docs("manifests/examples/leaderworkerset.yaml");
    fn arc<T: serde::de::DeserializeOwned>(v: &Value) -> std::sync::Arc<T> {
        std::sync::Arc::new(serde_json::from_value(v.clone()).unwrap())
    }
    let objects = wva_metrics_server::cluster::snapshot::Objects {
        leader_worker_sets: vec![arc(&d[0])],
        vas: vec![arc(&d[1])],
        hpas: vec![arc(&d[2])],
        ..Default::default()
    };
    let joined = wva_metrics_server::cluster::snapshot::build(&objects, &Default::default());
    assert!(joined.excluded.is_empty(), "{:?}", joined.excluded);
    let v = &joined.variants[0];
    assert_eq!(v.target_kind, TargetKind::LeaderWorkerSet);
    assert_eq!((v.gpus_per_replica, v.role), (16, Role::Decode));
    assert_eq!(v.accelerator, "NVIDIA-H200");
    assert_eq!((v.bounds.min_replicas, v.bounds.max_replicas), (1, Some(4)));
}

#[test]
fn annotated_and_local_config_examples_are_valid() {
    // The annotated examples declare valid variants (their Deployments are the user's).
    let hpa: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
        serde_json::from_value(docs("manifests/examples/annotated-hpa.yaml")[0].clone()).unwrap();
    let so: wva_metrics_server::cluster::crd::ScaledObject =
        serde_json::from_value(docs("manifests/examples/annotated-scaledobject.yaml")[0].clone())
            .unwrap();
    let joined = wva_metrics_server::cluster::snapshot::build(
        &wva_metrics_server::cluster::snapshot::Objects {
            hpas: vec![std::sync::Arc::new(hpa)],
            scaled_objects: vec![std::sync::Arc::new(so)],
            ..Default::default()
        },
        &Default::default(),
    );
    let reasons: Vec<String> = joined
        .excluded
        .iter()
        .map(|e| e.reason.to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "target Deployment llm/qwen-a100-decode not found",
            "target Deployment llm/qwen-l4-decode not found"
        ]
    );
    // The KEDA examples: an external trigger naming its variant, and an annotated ScaledObject that is one.
    let zero = docs("manifests/examples/keda/scale-to-zero.yaml");
    for (f, doc) in [
        ("manifests/examples/keda/scaledobject.yaml", 0),
        ("manifests/examples/keda/scaledobject-push.yaml", 0),
        ("manifests/examples/keda/scale-to-zero.yaml", 2),
    ] {
        let so: wva_metrics_server::cluster::crd::ScaledObject =
            serde_json::from_value(docs(f)[doc].clone()).unwrap();
        let trigger = &so.spec.triggers[0];
        assert!(
            ["external", "external-push"].contains(&trigger["type"].as_str().unwrap()),
            "{f}"
        );
        assert!(trigger["metadata"]["scalerAddress"]
            .as_str()
            .unwrap()
            .ends_with(":9443"));
        let annotated = so
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("llm-d.ai/managed"));
        assert!(
            annotated || trigger["metadata"]["variantName"].is_string(),
            "{f}"
        );
    }
    // The EPP-signal examples: each trigger names a signal the scaler accepts, with the guide's threshold.
    for (doc, threshold) in docs("manifests/examples/keda/epp-signals.yaml")
        .iter()
        .zip([0.7, 16.0, 1.0])
    {
        let so: wva_metrics_server::cluster::crd::ScaledObject =
            serde_json::from_value(doc.clone()).unwrap();
        let meta: std::collections::HashMap<String, String> =
            serde_json::from_value(so.spec.triggers[0]["metadata"].clone()).unwrap();
        let t = wva_metrics_server::scaler::signal::parse("llm", &meta)
            .unwrap()
            .expect("a signal trigger");
        assert_eq!(t.threshold, threshold);
    }
    // The split example: each variant's ScaledObject asks for its VariantAutoscaling's share of the pool
    // whose selector its pods carry.
    let split = docs("manifests/examples/keda/epp-split.yaml");
    let pool: wva_metrics_server::cluster::crd::InferencePool =
        serde_json::from_value(split[0].clone()).unwrap();
    assert_eq!(pool.spec.selector.match_labels["pool"], "chat");
    for (va, so) in [(&split[1], &split[3]), (&split[2], &split[4])] {
        let so: wva_metrics_server::cluster::crd::ScaledObject =
            serde_json::from_value(so.clone()).unwrap();
        let meta: std::collections::HashMap<String, String> =
            serde_json::from_value(so.spec.triggers[0]["metadata"].clone()).unwrap();
        let t = wva_metrics_server::scaler::signal::parse("llm", &meta)
            .unwrap()
            .expect("a signal trigger");
        assert_eq!(t.variant.as_deref(), va["metadata"]["name"].as_str());
        assert_eq!(
            so.spec.scale_target_ref.name,
            va["spec"]["scaleTargetRef"]["name"].as_str().unwrap()
        );
    }
    // The scale-to-zero example: its ConfigMap parses without a rejected entry, and its InferencePool
    // selects the ScaledObject's pods and names an endpoint picker.
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(zero[0]["data"].clone()).unwrap();
    let (z, report) =
        wva_metrics_server::saturation::ZeroConfig::from_configmap(&Default::default(), &data);
    assert!(
        report.rejected.is_empty() && report.ignored_keys.is_empty(),
        "{report:?}"
    );
    let policy = z.resolve("Qwen/Qwen3-0.6B", "llm");
    assert!(policy.enabled && policy.retention.as_secs() == 600);
    assert!(!z.resolve("other", "llm").enabled);
    let pool: wva_metrics_server::cluster::crd::InferencePool =
        serde_json::from_value(zero[1].clone()).unwrap();
    assert_eq!(pool.spec.selector.match_labels["app"], "qwen-l4");
    assert_eq!(pool.spec.endpoint_picker_ref.name, "qwen-epp");
    assert_eq!(zero[2]["spec"]["minReplicaCount"], 0);
    let local = docs("manifests/examples/namespace-local-configmap.yaml");
    let data: std::collections::BTreeMap<String, String> =
        serde_json::from_value(local[1]["data"].clone()).unwrap();
    let (cfg, report) = wva_metrics_server::saturation::config::ScalingConfig::from_local_configmap(
        &Default::default(),
        &data,
        "team-a",
    );
    assert!(report.rejected.is_empty(), "{report:?}");
    assert_eq!(cfg.resolve("Qwen/Qwen3-0.6B", "team-a").1, Some("qwen"));
}

#[test]
fn rbac_grants_what_the_server_uses() {
    let rbac = docs("manifests/rbac.yaml");
    let find = |kind: &str, name: &str| {
        rbac.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"))
            .clone()
    };
    let role = find("ClusterRole", "wva-metrics-server");
    let grants = |group: &str, resource: &str| {
        role["rules"].as_array().unwrap().iter().any(|r| {
            r["apiGroups"]
                .as_array()
                .is_some_and(|a| a.iter().any(|g| g == group))
                && r["resources"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == resource))
                && ["list", "watch"]
                    .iter()
                    .all(|v| r["verbs"].as_array().unwrap().iter().any(|x| x == v))
        })
    };
    assert!(
        grants("llmd.ai", "variantautoscalings")
            && grants("apps", "deployments")
            && grants("leaderworkerset.x-k8s.io", "leaderworkersets")
            && grants("", "pods")
            && grants("", "nodes")
            && grants("autoscaling", "horizontalpodautoscalers")
            && grants("keda.sh", "scaledobjects")
            && grants("", "namespaces")
            && grants("inference.networking.k8s.io", "inferencepools")
            && grants("", "services")
            && grants("monitoring.coreos.com", "podmonitors")
            && grants("monitoring.coreos.com", "servicemonitors")
    );
    // Endpoint pickers check a SubjectAccessReview on their /metrics.
    assert!(role["rules"].as_array().unwrap().iter().any(|r| {
        r["nonResourceURLs"] == serde_json::json!(["/metrics"])
            && r["verbs"] == serde_json::json!(["get"])
    }));
    // Namespace-local saturation ConfigMaps: readable cluster-wide by their one name, nothing else.
    let local_cms: Vec<&Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"][0] == "configmaps")
        .collect();
    assert_eq!(local_cms.len(), 1);
    assert_eq!(
        local_cms[0]["resourceNames"],
        serde_json::json!(["wva-saturation-scaling-config"])
    );
    assert_eq!(
        find(
            "ClusterRoleBinding",
            "wva-metrics-server:system:auth-delegator"
        )["roleRef"]["name"],
        "system:auth-delegator"
    );
    let reader = find("RoleBinding", "wva-metrics-server-auth-reader");
    assert_eq!(
        (
            reader["metadata"]["namespace"].as_str(),
            reader["roleRef"]["name"].as_str()
        ),
        (
            Some("kube-system"),
            Some("extension-apiserver-authentication-reader")
        )
    );
    assert_eq!(
        find("Role", "wva-metrics-server-config")["rules"][0]["resources"][0],
        "configmaps"
    );

    let kustomization = &docs("manifests/kustomization.yaml")[0];
    for r in kustomization["resources"].as_array().unwrap() {
        assert!(
            Path::new(ROOT)
                .join("manifests")
                .join(r.as_str().unwrap())
                .exists(),
            "{r}"
        );
    }
    let api = &docs("apiservice/apiservice.yaml")[0];
    assert_eq!(api["metadata"]["name"], "v1beta1.external.metrics.k8s.io");
    assert_eq!(
        (
            api["spec"]["groupPriorityMinimum"].as_i64(),
            api["spec"]["versionPriority"].as_i64()
        ),
        (Some(100), Some(100))
    );
    let svc = &docs("manifests/service.yaml")[0];
    assert_eq!(
        (
            svc["spec"]["ports"][0]["port"].as_i64(),
            svc["spec"]["ports"][0]["targetPort"].as_str()
        ),
        (Some(443), Some("https"))
    );
}

/// `make-certs.sh --apply` never takes the external metrics API from another provider without `--force`,
/// and says who holds it. kubectl is a stand-in script here: it answers the APIService lookup with KEDA's
/// adapter and records every other call.
#[test]
fn make_certs_refuses_to_replace_another_providers_apiservice() {
    let dir = std::env::temp_dir().join(format!("wva-make-certs-force-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let calls = dir.join("calls");
    let kubectl = dir.join("kubectl");
    std::fs::write(
        &kubectl,
        format!(
            "#!/usr/bin/env bash\necho \"$*\" >> {}\nif [[ \"$1 $2\" == \"get apiservice\" ]]; then printf keda/keda-metrics-apiserver; fi\ncat >/dev/null 2>&1 || true\n",
            calls.display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", kubectl.to_str().unwrap()])
        .status()
        .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(Path::new(ROOT).join("certs/make-certs.sh"))
            .arg(dir.join("out"))
            .args(extra)
            .env("KUBECTL", &kubectl)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = run(&["--apply"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("points at service keda/keda-metrics-apiserver now"),
        "{stderr}"
    );
    let applied = std::fs::read_to_string(&calls).unwrap();
    assert!(!applied.contains("apply"), "nothing applied: {applied}");
    let forced = run(&["--apply", "--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(std::fs::read_to_string(&calls)
        .unwrap()
        .contains("apply -f"));
}

#[test]
fn make_certs_output_is_accepted_by_the_server_tls_loader() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out = std::env::temp_dir().join(format!("wva-make-certs-{}", std::process::id()));
    let status = std::process::Command::new(Path::new(ROOT).join("certs/make-certs.sh"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let bundle = String::from_utf8(status.stdout).unwrap();
    assert!(
        bundle.trim().starts_with("LS0tLS1CRUdJTi"),
        "prints the base64 caBundle"
    );
    let provider = wva_metrics_server::tls::provider();
    wva_metrics_server::tls::ReloadingCert::load(
        &out.join("tls.crt"),
        &out.join("tls.key"),
        &provider,
    )
    .unwrap();
    // The certificate verifies against the CA for the name the aggregator dials.
    let ca = wva_metrics_server::tls::read_certs(&out.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca[0].clone()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(std::sync::Arc::new(roots))
        .build()
        .unwrap();
    let leaf = wva_metrics_server::tls::read_certs(&out.join("tls.crt")).unwrap();
    let name = rustls::pki_types::ServerName::try_from("wva-metrics-server.wva-metrics-server.svc")
        .unwrap();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        &*verifier,
        &leaf[0],
        &[],
        &name,
        &[],
        rustls::pki_types::UnixTime::now(),
    )
    .unwrap();
    let api = std::fs::read_to_string(out.join("apiservice.yaml")).unwrap();
    assert!(api.contains(&format!("caBundle: {}", bundle.trim())));
    // KEDA's client certificate chains to the CA the scaler port is told to trust.
    let client_roots = {
        let mut r = rustls::RootCertStore::empty();
        r.add(ca[0].clone()).unwrap();
        std::sync::Arc::new(r)
    };
    let client_verifier = rustls::server::WebPkiClientVerifier::builder(client_roots)
        .build()
        .unwrap();
    let keda = wva_metrics_server::tls::read_certs(&out.join("keda-client.crt")).unwrap();
    client_verifier
        .verify_client_cert(&keda[0], &[], rustls::pki_types::UnixTime::now())
        .unwrap();
    // The TriggerAuthentication and its Secret carry the three parameters KEDA reads.
    let auth = docs_at(&out.join("keda-trigger-auth.yaml"));
    assert_eq!(auth[0]["kind"], "Secret");
    for key in ["caCert", "tlsClientCert", "tlsClientKey"] {
        assert!(
            auth[0]["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert_eq!(auth[1]["kind"], "TriggerAuthentication");
    assert_eq!(
        auth[1]["spec"]["secretTargetRef"].as_array().unwrap().len(),
        3
    );
}

/// Fits the clusters people run: the priority metrics-server runs at, no fixed UID (OpenShift's
/// restricted-v2 assigns one), the restricted pod-security settings, and a NetworkPolicy example that
/// opens what the server uses.
#[test]
fn deployment_fits_restricted_clusters_and_the_network_policy_covers_its_traffic() {
    let d = &docs("manifests/deployment.yaml")[0];
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let text = std::fs::read_to_string(Path::new(ROOT).join("manifests/deployment.yaml")).unwrap();
    assert!(
        !text.contains("runAsUser:") && !text.contains("runAsGroup:"),
        "a fixed UID breaks OpenShift's restricted-v2"
    );
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    }
    let np: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(docs("manifests/examples/networkpolicy.yaml")[0].clone()).unwrap();
    let spec = np.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"],
        "wva-metrics-server"
    );
    let ports = |rules: Vec<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>| -> Vec<i32> {
        rules
            .into_iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    };
    let ingress = ports(
        spec.ingress
            .unwrap()
            .into_iter()
            .map(|r| r.ports.unwrap_or_default())
            .collect(),
    );
    let egress = ports(
        spec.egress
            .unwrap()
            .into_iter()
            .map(|r| r.ports.unwrap_or_default())
            .collect(),
    );
    for port in [6443, 9443] {
        assert!(ingress.contains(&port), "ingress {port}");
    }
    for port in [53, 443, 6443, 8000, 9090] {
        assert!(egress.contains(&port), "egress {port}");
    }
}

/// The monitoring kit: the PrometheusRule carries exactly rules.yml's groups (which `just lint` checks
/// with promtool), the ServiceMonitor finds the Service's port, and the dashboard covers what operators
/// need: desired vs current, KV cache and queue, latency, scrape health and decision reasons.
#[test]
fn monitoring_kit_is_consistent() {
    let rules = &docs("manifests/monitoring/rules.yml")[0];
    let rule = &docs("manifests/monitoring/prometheusrule.yaml")[0];
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], rules["groups"]);
    let alerts: Vec<&str> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for wanted in [
        "WvaMetricsServerAPIServiceUnavailable",
        "WvaMetricsServerHigh503Rate",
        "WvaMetricsServerScrapeFailures",
        "WvaMetricsServerModelStuckInTransition",
        "WvaMetricsServerVariantAtMax",
        "WvaMetricsServerStatusWritesFailing",
    ] {
        assert!(alerts.contains(&wanted), "{wanted}");
    }
    let sm = &docs("manifests/monitoring/servicemonitor.yaml")[0];
    let svc = &docs("manifests/service.yaml")[0];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    let port = sm["spec"]["endpoints"][0]["port"].as_str().unwrap();
    assert!(svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == port));
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(ROOT).join("manifests/monitoring/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for metric in [
        "wva_desired_replicas",
        "wva_current_replicas",
        "wva_metrics_server_variant_kv_cache_usage",
        "wva_metrics_server_variant_queue_length",
        "wva_metrics_server_http_request_duration_seconds_bucket",
        "wva_metrics_server_pod_scrapes_total",
        "wva_metrics_server_variant_decision",
    ] {
        assert!(exprs.iter().any(|e| e.contains(metric)), "{metric}");
    }
    // Every metric the rules and the dashboard read is one this server registers (or kube-apiserver's).
    let registered = std::fs::read_to_string(Path::new(ROOT).join("src/telemetry.rs")).unwrap();
    let all = format!(
        "{}\n{}",
        serde_json::to_string(rules).unwrap(),
        exprs.join("\n")
    );
    for name in all
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("wva_metrics_server_"))
    {
        let base = name
            .trim_start_matches("wva_metrics_server_")
            .trim_end_matches("_bucket")
            .trim_end_matches("_total");
        assert!(
            registered.contains(&format!("\"{base}\"")),
            "{name} is not registered in src/telemetry.rs"
        );
    }
}
