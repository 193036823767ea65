//! The harness plays kubelet for the test namespaces: every new pod gets a loopback IP and a
//! `vllm-emulator` process (an SGLang page when annotated `e2e.wva/engine: sglang`), and is marked
//! Running and Ready; a deleted pod's emulator is stopped and
//! the pod removed. It also spreads each app's offered load over its running pods (as a gateway
//! would), applies per-pod faults, and writes Prometheus' file_sd targets with the `namespace` and
//! `pod` labels a PodMonitor adds.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::harness::Proc;

pub const EMULATOR_PORT: u16 = 8000;

#[derive(Default)]
pub struct Control {
    /// Offered load per `app` label: requests in flight across all its pods.
    pub load: BTreeMap<String, usize>,
    /// Metrics faults per pod name ("hang", "error", …); absent = ok.
    pub faults: BTreeMap<String, String>,
    /// Requests waiting in the flow-control queue of endpoint-picker pods, per `app` label.
    pub queues: BTreeMap<String, usize>,
    /// Endpoint-picker pods' pool saturation and requests in flight, per `app` label.
    pub signals: BTreeMap<String, (f64, usize)>,
}

struct Running {
    namespace: String,
    ip: String,
    /// Where its emulated servers listen: 8000, and one port per data-parallel rank more when the pod
    /// is annotated `e2e.wva/rank-ports: "8000,8001"` (each rank its own API server and page).
    ports: Vec<u16>,
    app: String,
    _proc: Proc,
    applied_load: Option<usize>,
    applied_fault: String,
    applied_queue: usize,
    applied_signals: Option<(f64, usize)>,
}

pub struct Kubelet {
    pub control: Arc<Mutex<Control>>,
    pub handle: tokio::task::JoinHandle<()>,
}

pub fn start(
    client: Client,
    namespaces: &[&str],
    emulator: PathBuf,
    dir: PathBuf,
    targets_file: PathBuf,
) -> Kubelet {
    let control = Arc::new(Mutex::new(Control::default()));
    let ctl = control.clone();
    let namespaces: Vec<String> = namespaces.iter().map(ToString::to_string).collect();
    let handle = tokio::spawn(async move {
        let all: Api<Pod> = Api::all(client.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut next_ip = 10u32;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let Ok(list) = all.list(&ListParams::default()).await else {
                continue;
            };
            let mut seen = Vec::new();
            for pod in list.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let pod_ns = pod.metadata.namespace.clone().unwrap_or_default();
                if !namespaces.contains(&pod_ns) {
                    continue;
                }
                let pods: Api<Pod> = Api::namespaced(client.clone(), &pod_ns);
                if pod.metadata.deletion_timestamp.is_some() {
                    running.remove(&name);
                    let _ = pods
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..Default::default()
                            },
                        )
                        .await;
                    continue;
                }
                seen.push(name.clone());
                if running.contains_key(&name) {
                    continue;
                }
                let ip = format!("127.0.1.{next_ip}");
                next_ip += 1;
                let labels = pod.metadata.labels.clone().unwrap_or_default();
                let app = labels.get("app").cloned().unwrap_or_default();
                let model = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("e2e.wva/model"))
                    .cloned()
                    .unwrap_or_else(|| "Qwen/Qwen3-0.6B".into());
                let ports: Vec<u16> = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("e2e.wva/rank-ports"))
                    .map(|v| v.split(',').filter_map(|p| p.trim().parse().ok()).collect())
                    .filter(|p: &Vec<u16>| !p.is_empty())
                    .unwrap_or_else(|| vec![EMULATOR_PORT]);
                let mut args: Vec<String> = ports
                    .iter()
                    .flat_map(|port| ["--listen".to_string(), format!("{ip}:{port}")])
                    .collect();
                args.extend([
                    "--model".into(),
                    model,
                    "--max-num-seqs".into(),
                    "16".into(),
                ]);
                // Annotations that become flags: an SGLang server (its page instead of vLLM's); an
                // endpoint picker (its signals behind a bearer token), and the InferencePool its series
                // name (`inference_pool`, as a Prometheus query selects).
                let annotations = pod.metadata.annotations.clone().unwrap_or_default();
                for (annotation, flag) in [
                    ("e2e.wva/engine", "--engine"),
                    ("e2e.wva/epp-token", "--epp-token"),
                    ("e2e.wva/epp-pool", "--epp-pool"),
                ] {
                    if let Some(v) = annotations.get(annotation) {
                        args.extend([flag.to_string(), v.clone()]);
                    }
                }
                let proc = Proc::spawn(&dir, &format!("emulator-{name}"), &emulator, &args);
                // Wait for the emulator to listen before declaring the pod Ready.
                for _ in 0..40 {
                    if http
                        .get(format!("http://{ip}:{}/health", ports[ports.len() - 1]))
                        .send()
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let now = jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let status = json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1", "startTime": now,
                "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "lastTransitionTime": now}
                ]}});
                if let Err(e) = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    eprintln!("kubelet: marking {name} ready failed: {e}");
                    continue;
                }
                running.insert(
                    name,
                    Running {
                        namespace: pod_ns,
                        ip,
                        ports,
                        app,
                        _proc: proc,
                        applied_load: None,
                        applied_fault: "ok".into(),
                        applied_queue: 0,
                        applied_signals: None,
                    },
                );
            }
            running.retain(|name, _| seen.contains(name));

            // Spread each app's load over its pods, and apply faults.
            let (load, faults, queues, signals) = {
                let c = ctl.lock().unwrap();
                (
                    c.load.clone(),
                    c.faults.clone(),
                    c.queues.clone(),
                    c.signals.clone(),
                )
            };
            let mut per_app: BTreeMap<String, usize> = BTreeMap::new();
            for r in running.values() {
                *per_app.entry(r.app.clone()).or_default() += 1;
            }
            for (name, r) in running.iter_mut() {
                let total = load.get(&r.app).copied().unwrap_or(0);
                let n = per_app[&r.app].max(1);
                let share = total.div_ceil(n);
                if r.applied_load != Some(share) {
                    let ok = post_all(&http, r, "load", json!({"inFlight": share})).await;
                    if ok {
                        r.applied_load = Some(share);
                    }
                }
                let queue = queues.get(&r.app).copied().unwrap_or(0);
                if r.applied_queue != queue {
                    let ok = post_all(&http, r, "queue", json!({"size": queue})).await;
                    if ok {
                        r.applied_queue = queue;
                    }
                }
                if let Some(&(saturation, running)) = signals.get(&r.app) {
                    if r.applied_signals != Some((saturation, running)) {
                        let body = json!({"saturation": saturation, "running": running});
                        if post_all(&http, r, "signals", body).await {
                            r.applied_signals = Some((saturation, running));
                        }
                    }
                }
                let fault = faults.get(name).cloned().unwrap_or_else(|| "ok".into());
                if r.applied_fault != fault {
                    let ok = post_all(&http, r, "fault", json!({"metrics": fault})).await;
                    if ok {
                        r.applied_fault = fault;
                    }
                }
            }
            let targets: Vec<serde_json::Value> = running
                .iter()
                .map(|(name, r)| json!({"targets": r.ports.iter().map(|p| format!("{}:{p}", r.ip)).collect::<Vec<_>>(), "labels": {"namespace": r.namespace, "pod": name}}))
                .collect();
            let tmp = targets_file.with_extension("tmp");
            if std::fs::write(&tmp, serde_json::to_vec(&targets).unwrap()).is_ok() {
                let _ = std::fs::rename(&tmp, &targets_file);
            }
        }
    });
    Kubelet { control, handle }
}

/// Posts one control call to every emulated server of a pod (each rank); true when all took it.
async fn post_all(
    http: &reqwest::Client,
    r: &Running,
    what: &str,
    body: serde_json::Value,
) -> bool {
    let mut ok = true;
    for port in &r.ports {
        ok &= http
            .post(format!("http://{}:{port}/emulator/{what}", r.ip))
            .json(&body)
            .send()
            .await
            .is_ok();
    }
    ok
}
