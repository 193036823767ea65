//! Scale to zero and from zero through the engine: a real `vllm-emulator` playing an InferencePool's
//! endpoint picker behind a bearer token, the EPP reader, the window cache's success counters, and the
//! answers the HPA path and the external scaler read.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wva_metrics_server::cluster::snapshot::{self, EndpointPicker, PodTarget, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::saturation::{Activity, Demand, TargetReason, ZeroConfig};
use wva_metrics_server::sources::epp::{EppOptions, EppSource};
use wva_metrics_server::sources::exposition::ModelSignals;
use wva_metrics_server::sources::window::WindowCache;
use wva_metrics_server::telemetry::Metrics;

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn epp_emulator(token: &str) -> (Emulator, u16) {
    support::install_provider();
    let port = support::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_vllm-emulator"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--model",
            "m",
            "--epp-token",
            token,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let emulator = Emulator(child);
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok()
        {
            return (emulator, port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the emulator did not start");
}

fn variant(name: &str, cost: f64, replicas: i64, pods: Vec<PodTarget>) -> Variant {
    Variant {
        namespace: "ns".into(),
        name: name.into(),
        kind: Default::default(),
        uid: None,
        model_id: "m".into(),
        accelerator: "L4".into(),
        cost,
        deployment: name.into(),
        spec_replicas: replicas,
        ready_replicas: replicas,
        pods,
        controller_instance: None,
        bounds: Default::default(),
    }
}

fn desired(engine: &Engine, name: &str) -> i64 {
    let items = engine
        .external_metric(
            "ns",
            "wva_desired_replicas",
            &Selector::parse(&format!("variant_name={name}")).unwrap(),
        )
        .unwrap();
    items[0].value_milli / 1000
}

fn zero_config(yaml: &str) -> Arc<ArcSwap<ZeroConfig>> {
    let (config, report) = ZeroConfig::from_configmap(
        &ZeroConfig::default(),
        &BTreeMap::from([("default".to_string(), yaml.to_string())]),
    );
    assert!(report.rejected.is_empty(), "{report:?}");
    Arc::new(ArcSwap::from_pointee(config))
}

async fn post_queue(port: u16, size: usize) {
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/emulator/queue"))
        .json(&serde_json::json!({ "size": size }))
        .send()
        .await
        .unwrap();
}

/// A model at zero comes back when requests queue at its endpoint picker: the cheapest variant gets 1,
/// the other stays at 0. A wrong token is an unknown demand, which never moves a model.
#[tokio::test]
async fn queued_requests_at_the_endpoint_picker_bring_the_cheapest_variant_back() {
    let (_epp, port) = epp_emulator("s3cret").await;
    let dir = std::env::temp_dir().join(format!("wva-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let shared = snapshot::shared(Snapshot {
        variants: vec![
            variant("cheap", 1.0, 0, vec![]),
            variant("pricey", 5.0, 0, vec![]),
        ],
        excluded: vec![],
        synced: true,
        pickers: vec![EndpointPicker {
            namespace: "ns".into(),
            pool: "pool".into(),
            service: "epp".into(),
            models: vec!["m".into()],
            pods: Ok(vec![PodTarget {
                namespace: "ns".into(),
                name: "epp-0".into(),
                ip: "127.0.0.1".into(),
                port,
                path: "/metrics".into(),
                scheme: Default::default(),
            }]),
        }],
    });
    let epp = Arc::new(EppSource::new(
        shared.clone(),
        EppOptions {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(2),
            token_file: token.clone(),
        },
        Metrics::new(),
    ));
    let engine = Engine::new(
        shared,
        Arc::new(WindowCache::new(Duration::from_secs(60))),
        Arc::new(ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    )
    .with_zero(
        zero_config("enable_scale_to_zero: true\nretention_period: 1m"),
        epp.clone(),
    );

    epp.read_once().await;
    assert_eq!(
        (desired(&engine, "cheap"), desired(&engine, "pricey")),
        (0, 0)
    );
    post_queue(port, 3).await;
    epp.read_once().await;
    assert_eq!(
        (desired(&engine, "cheap"), desired(&engine, "pricey")),
        (1, 0)
    );
    let report = engine.explain(Some("ns"));
    let decision = &report.models[0].decision;
    let cheap = decision.reasons.iter().find(|r| r.name == "cheap").unwrap();
    assert_eq!(cheap.reason, TargetReason::ScaleFromZero);
    assert!(
        cheap.message.contains("3 request(s) queued"),
        "{}",
        cheap.message
    );
    assert_eq!(
        decision.zero.as_ref().unwrap().demand,
        Demand::Queued {
            requests: 3.0,
            pool: "ns/pool".into()
        }
    );

    // The EPP refuses another token: the demand is unknown, and the model stays at zero.
    std::fs::write(&token, "wrong").unwrap();
    let f = std::fs::File::options().write(true).open(&token).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    epp.read_once().await;
    assert_eq!(
        (desired(&engine, "cheap"), desired(&engine, "pricey")),
        (0, 0)
    );
    let report = engine.explain(Some("ns"));
    let demand = &report.models[0].decision.zero.as_ref().unwrap().demand;
    assert!(
        matches!(demand, Demand::Unknown { reason, .. } if reason.contains("HTTP 401")),
        "{demand:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn counter_page(total: f64) -> BTreeMap<String, ModelSignals> {
    BTreeMap::from([(
        "m".to_string(),
        ModelSignals {
            kv_cache_usage: Some(0.1),
            queue_length: Some(0.0),
            running_requests: Some(0.0),
            success_total: Some(total),
        },
    )])
}

/// A model idle for its retention period goes to zero; a request brings it back to its saturation
/// target; with scale to zero disabled, a model at zero keeps one replica on its cheapest variant.
#[tokio::test]
async fn idle_models_go_to_zero_only_on_complete_data() {
    let pod = support::pod_target("ns", "a-0");
    let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
    let now = Instant::now();
    let long_ago = now - Duration::from_secs(100);
    cache.retain(std::slice::from_ref(&pod), long_ago);
    cache.record(&pod, long_ago, &counter_page(5.0));
    cache.record(&pod, now, &counter_page(5.0));
    let shared = snapshot::shared(Snapshot {
        variants: vec![variant("a", 1.0, 1, vec![pod.clone()])],
        excluded: vec![],
        synced: true,
        pickers: vec![],
    });
    let engine = |zero: Arc<ArcSwap<ZeroConfig>>| {
        Engine::new(
            shared.clone(),
            cache.clone(),
            Arc::new(ArcSwap::from_pointee(Thresholds::default())),
            Duration::from_secs(120),
        )
        .with_zero(zero, Arc::new(wva_metrics_server::sources::epp::NoDemand))
    };
    // Retention 60 s: the last request was 100 s ago.
    let on = engine(zero_config(
        "enable_scale_to_zero: true\nretention_period: 1m",
    ));
    assert_eq!(desired(&on, "a"), 0);
    let zero = on.explain(None).models[0].decision.zero.clone().unwrap();
    assert_eq!(zero.activity, Activity::Idle);
    assert_eq!(zero.policy.source, "entry \"default\"");
    // Retention 5 min: observed for only 100 s, so unknown, so the target stays.
    let long = engine(zero_config(
        "enable_scale_to_zero: true\nretention_period: 5m",
    ));
    assert_eq!(desired(&long, "a"), 1);
    // Disabled: the saturation target.
    let off = engine(zero_config("enable_scale_to_zero: false"));
    assert_eq!(desired(&off, "a"), 1);
    // A request: active again.
    cache.record(&pod, Instant::now(), &counter_page(6.0));
    assert_eq!(desired(&on, "a"), 1);

    // Everything at zero and scale to zero disabled: the cheapest variant keeps one.
    shared.store(Arc::new(Snapshot {
        variants: vec![variant("a", 1.0, 0, vec![]), variant("b", 3.0, 0, vec![])],
        excluded: vec![],
        synced: true,
        pickers: vec![],
    }));
    assert_eq!((desired(&off, "a"), desired(&off, "b")), (1, 0));
    assert_eq!((desired(&on, "a"), desired(&on, "b")), (0, 0));
}
