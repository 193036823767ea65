//! The status writer against a test double of the Kubernetes API: server-side-apply patches on the
//! status subresource only, retried with backoff after failures, an event when the recommendation
//! changes, and the Lease deciding who writes.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use wva_metrics_server::cluster::leader::LeaderElector;
use wva_metrics_server::cluster::snapshot;
use wva_metrics_server::engine::Engine;
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::status::StatusWriter;
use wva_metrics_server::telemetry::Metrics;

/// The engine over `snap` with every pod saturated (KV cache 95 %, 9 waiting) and default scaling.
fn saturated_engine(snap: snapshot::Snapshot) -> Arc<Engine> {
    Arc::new(Engine::new(
        snapshot::shared(snap),
        Arc::new(FixedSamples(0.95, 9.0)),
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    ))
}

/// A status writer running as `replica-a` with a Lease of `lease`, writing every 60 s, checking every `tick`.
fn status_writer(
    api: &FakeKubeApi,
    engine: Arc<Engine>,
    lease: Duration,
    metrics: Arc<Metrics>,
    tick: Duration,
) -> StatusWriter {
    StatusWriter {
        client: api.client(),
        engine,
        elector: LeaderElector::new(
            api.client(),
            "wva",
            "wva-metrics-server-status",
            "replica-a",
            lease,
        ),
        metrics,
        interval: Duration::from_secs(60),
        tick,
    }
}

#[tokio::test]
async fn status_patches_are_retried_and_events_recorded() {
    install_provider();
    let va = json!({"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
        "metadata": {"name": "v1", "namespace": "ns", "uid": "uid-v1", "labels": {"inference.optimization/acceleratorName": "H100"}},
        "spec": {"modelID": "m"},
        "status": {"desiredOptimizedAlloc": {"numReplicas": 2, "accelerator": "H100", "lastRunTime": "2026-01-01T00:00:00Z"},
                   "conditions": [{"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let api = FakeKubeApi::start(ApiState {
        vas: [("v1".to_string(), va)].into(),
        fail_status_patches: 2,
        ..Default::default()
    })
    .await;
    let snap = one_variant("v1", 2);
    let writer = status_writer(
        &api,
        saturated_engine(snap),
        Duration::from_secs(15),
        Metrics::new(),
        Duration::from_millis(100),
    );
    let task = tokio::spawn(Arc::new(writer).run());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = api.state.lock().unwrap().vas["v1"]["status"]["desiredOptimizedAlloc"]
            ["numReplicas"]
            == 3;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never written: {:?}",
            api.state.lock().unwrap().status_patches.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    let st = api.state.lock().unwrap();
    // Two failures, then success: retried, with growing backoff between attempts.
    assert!(st.status_patches.len() >= 3, "{}", st.status_patches.len());
    let (name, query, body) = &st.status_patches[2];
    assert_eq!(name, "v1");
    assert!(
        query.contains("fieldManager=wva-metrics-server") && query.contains("force=true"),
        "server-side apply: {query}"
    );
    assert!(body.get("spec").is_none(), "never writes the spec: {body}");
    assert_eq!(body["status"]["desiredOptimizedAlloc"]["numReplicas"], 3);
    let conditions = body["status"]["conditions"].as_array().unwrap();
    let metrics = conditions
        .iter()
        .find(|c| c["type"] == "MetricsAvailable")
        .unwrap();
    assert_eq!(
        metrics["lastTransitionTime"], "2026-01-01T00:00:00Z",
        "unchanged condition keeps its transition time"
    );
    let ready = conditions
        .iter()
        .find(|c| c["type"] == "OptimizationReady")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("True"), Some("OptimizationSucceeded"))
    );
    // The recommendation went 2 → 3: one ScaleUpRecommended event on the VA.
    let ups: Vec<_> = st
        .events
        .iter()
        .filter(|e| e["reason"] == "ScaleUpRecommended")
        .collect();
    assert_eq!(ups.len(), 1, "{:?}", st.events);
    assert_eq!(ups[0]["regarding"]["name"], "v1");
    assert!(
        ups[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("desired replicas 2 → 3"),
        "{}",
        ups[0]
    );
    assert_eq!(
        st.leases["wva-metrics-server-status"]["spec"]["holderIdentity"],
        "replica-a"
    );
}

#[tokio::test]
async fn followers_do_not_write() {
    install_provider();
    let api = FakeKubeApi::start(ApiState::default()).await;
    // Someone else holds a fresh lease.
    let other = LeaderElector::new(
        api.client(),
        "wva",
        "wva-metrics-server-status",
        "replica-b",
        Duration::from_secs(30),
    );
    assert!(other.try_acquire_or_renew().await.unwrap());
    let snap = one_variant("v1", 0);
    let metrics = Metrics::new();
    let writer = status_writer(
        &api,
        saturated_engine(snap),
        Duration::from_secs(30),
        metrics.clone(),
        Duration::from_millis(50),
    );
    let task = tokio::spawn(Arc::new(writer).run());
    tokio::time::sleep(Duration::from_millis(600)).await;
    task.abort();
    assert!(
        api.state.lock().unwrap().status_patches.is_empty(),
        "a follower wrote status"
    );
    // Followers still keep their gauges current. (The variant is parked at 0 and scale to zero is
    // disabled: as in WVA, nothing wakes it but queued demand.)
    assert!(metrics.encode().contains(r#"inferno_desired_replicas{variant_name="v1",namespace="ns",accelerator_type="H100"} 0.0"#), "{}", metrics.encode());
}
