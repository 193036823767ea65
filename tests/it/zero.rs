//! Scale to zero and from zero through the engine: a real `vllm-emulator` playing an InferencePool's
//! endpoint picker behind a bearer token, the EPP reader, the window cache's success counters, and the
//! answers the HPA path and the external scaler read.

use crate::support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::Engine;
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::saturation::{Demand, TargetReason, ZeroConfig};
use wva_metrics_server::sources::epp::{DemandSource, EppOptions, EppSource};
use wva_metrics_server::sources::window::WindowCache;
use wva_metrics_server::target::{EndpointPicker, PodTarget};
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
        spec_replicas: replicas,
        ready_replicas: replicas,
        ..Variant::new("ns", name, ("m", "L4"), cost, pods)
    }
}

/// An engine over `shared` with no pod samples, scale to zero on (1 min retention) and `epp`'s demand.
fn zero_engine(shared: Arc<ArcSwap<Snapshot>>, epp: &Arc<EppSource>) -> Engine {
    Engine::new(
        shared,
        Arc::new(WindowCache::new(Duration::from_secs(60))),
        Arc::new(ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    )
    .with_zero(
        zero_config("enable_scale_to_zero: true\nretention_period: 1m"),
        epp.clone(),
    )
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
        by_name: Default::default(),
        gpus: Default::default(),
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
            variants: vec!["cheap".into(), "pricey".into()],
            pods: Ok(vec![PodTarget {
                namespace: "ns".into(),
                name: "epp-0".into(),
                ip: "127.0.0.1".into(),
                port,
                path: "/metrics".into(),
                scheme: Default::default(),
                endpoint: Default::default(),
                tls_server_name: None,
                per_port: false,
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
    let engine = zero_engine(shared, &epp);

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
    let snapshot = engine.snapshot();
    let report = engine.explain_at(&snapshot, Some("ns"));
    let decision = &report.models[0].decision;
    let cheap = decision.reasons.iter().find(|r| r.name == "cheap").unwrap();
    assert_eq!(cheap.reason, TargetReason::ScaleFromZero);
    assert!(
        cheap.message.text().contains("3 request(s) queued"),
        "{}",
        cheap.message
    );
    assert_eq!(
        decision.zero.as_ref().unwrap().demand,
        Demand::Queued {
            requests: 3.0,
            bytes: 0.0,
            pool: "ns/pool".into(),
            held: None,
        }
    );

    // The EPP refuses another token: the last good reading stands for its grace period, said as held;
    // then the demand is unknown, and the model stays at zero.
    std::fs::write(&token, "wrong").unwrap();
    let f = std::fs::File::options().write(true).open(&token).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    epp.read_once().await;
    assert_eq!(
        (desired(&engine, "cheap"), desired(&engine, "pricey")),
        (1, 0)
    );
    let snapshot = engine.snapshot();
    let report = engine.explain_at(&snapshot, Some("ns"));
    let demand = &report.models[0].decision.zero.as_ref().unwrap().demand;
    assert!(
        matches!(demand, Demand::Queued { requests, held: Some(why), .. } if *requests == 3.0 && why.contains("HTTP 401")),
        "{demand:?}"
    );
    // Past the grace period (3 × 200 ms + 2 s).
    tokio::time::sleep(Duration::from_millis(2700)).await;
    epp.read_once().await;
    assert_eq!(
        (desired(&engine, "cheap"), desired(&engine, "pricey")),
        (0, 0)
    );
    let snapshot = engine.snapshot();
    let report = engine.explain_at(&snapshot, Some("ns"));
    let demand = &report.models[0].decision.zero.as_ref().unwrap().demand;
    assert!(
        matches!(demand, Demand::Unknown { reason, .. } if reason.contains("HTTP 401")),
        "{demand:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A picker page served by a test: its body changes while the test runs (`"hang"`: never answers).
#[derive(Clone, Default)]
struct Page(Arc<std::sync::Mutex<String>>);

impl Page {
    fn set(&self, body: impl Into<String>) {
        *self.0.lock().unwrap() = body.into();
    }
}

/// A raw HTTP server answering each request with the current page (or never, for `"hang"`).
async fn picker(page: Page) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let body = page.0.lock().unwrap().clone();
                    if body == "hang" {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let (status, body) = match body.strip_prefix("status:") {
                        Some(code) => (code.to_string(), String::new()),
                        None => ("200 OK".to_string(), body),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(body.as_bytes()).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn pool(name: &str, model: &str, ports: &[u16]) -> EndpointPicker {
    EndpointPicker {
        namespace: "ns".into(),
        pool: name.into(),
        service: format!("{name}-epp"),
        models: vec![model.into()],
        variants: vec![],
        pods: Ok(ports
            .iter()
            .enumerate()
            .map(|(i, port)| PodTarget::new("ns", &format!("{name}-epp-{i}"), "127.0.0.1", *port))
            .collect()),
    }
}

fn epp_source(
    pickers: Vec<EndpointPicker>,
    variants: Vec<Variant>,
    interval: Duration,
) -> (Arc<EppSource>, Arc<ArcSwap<Snapshot>>) {
    let dir = std::env::temp_dir().join(format!(
        "wva-epp-{}-{}",
        std::process::id(),
        support::free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "t").unwrap();
    let shared = snapshot::shared(Snapshot {
        by_name: Default::default(),
        gpus: Default::default(),
        variants,
        excluded: vec![],
        synced: true,
        pickers,
    });
    let epp = Arc::new(EppSource::new(
        shared.clone(),
        EppOptions {
            interval,
            timeout: Duration::from_secs(1),
            token_file: token,
        },
        Metrics::new(),
    ));
    (epp, shared)
}

fn queue_line(name: &str, model: &str, value: &str) -> String {
    format!("{name}{{fairness_id=\"a\",inference_pool=\"p\",model_name=\"{model}\",priority=\"0\",target_model_name=\"{model}\"}} {value}\n")
}

const POOL_GAUGE: &str = "inference_pool_ready_pods{name=\"p\"} 1\n";

/// Issue 21 item 3: what is not a readable queue is unknown, never "no demand": a page cut at the 1 MiB
/// limit (its queue of 3 after the cut), a page with no picker metric (an HTML 200), a NaN or negative
/// queue. A picker page without a queue series is 0, and the newest name of the gauge is read alone.
/// And an idle model whose picker page is cut is not taken to zero.
#[tokio::test]
async fn unreadable_picker_pages_are_unknown_never_zero() {
    let page = Page::default();
    let port = picker(page.clone()).await;
    let old = "inference_extension_flow_control_queue_size";
    let new = "llm_d_epp_flow_control_queue_size";
    let cases: Vec<(&str, String, Result<f64, &str>)> = vec![
        (
            "queue of 3",
            format!("{POOL_GAUGE}{}", queue_line(old, "m", "3")),
            Ok(3.0),
        ),
        ("no queue series yet", POOL_GAUGE.to_string(), Ok(0.0)),
        (
            "another model queued",
            format!("{POOL_GAUGE}{}", queue_line(old, "x", "4")),
            Ok(0.0),
        ),
        (
            "cut at 1 MiB",
            format!(
                "{POOL_GAUGE}{}{}",
                format!("# {}\n", "x".repeat(100)).repeat(11_000),
                queue_line(old, "m", "3")
            ),
            Err("cut at 1048576 bytes"),
        ),
        (
            "HTML",
            "<html><body>hello</body></html>\n".to_string(),
            Err("no endpoint-picker metrics"),
        ),
        (
            "NaN",
            format!("{POOL_GAUGE}{}", queue_line(old, "m", "NaN")),
            Err("is NaN"),
        ),
        (
            "negative",
            format!("{POOL_GAUGE}{}", queue_line(old, "m", "-2")),
            Err("is -2"),
        ),
        (
            "twin names",
            format!("{}{}", queue_line(new, "m", "2"), queue_line(old, "m", "2")),
            Ok(2.0),
        ),
        ("new name only", queue_line(new, "m", "5"), Ok(5.0)),
    ];
    for (what, body, want) in cases {
        page.set(body);
        // A reader of its own, so that no earlier reading stands in.
        let (epp, _) = epp_source(
            vec![pool("p", "m", &[port])],
            vec![],
            Duration::from_millis(500),
        );
        epp.read_once().await;
        match (DemandSource::demand(epp.as_ref(), "ns", "m"), want) {
            (
                Demand::Queued {
                    requests,
                    held: None,
                    ..
                },
                Ok(n),
            ) => assert_eq!(requests, n, "{what}"),
            (Demand::Unknown { reason, .. }, Err(part)) => {
                assert!(reason.contains(part), "{what}: {reason}")
            }
            (d, w) => panic!("{what}: {d:?}, wanted {w:?}"),
        }
    }

    // An idle model with one running variant and a cut page: not taken to zero.
    let big = format!(
        "{POOL_GAUGE}{}{}",
        format!("# {}\n", "x".repeat(100)).repeat(11_000),
        queue_line(old, "m", "3")
    );
    page.set(big);
    let (epp, shared) = epp_source(
        vec![pool("p", "m", &[port])],
        vec![variant(
            "only",
            1.0,
            1,
            vec![support::pod_target("ns", "only-0")],
        )],
        Duration::from_millis(500),
    );
    let engine = zero_engine(shared, &epp);
    epp.read_once().await;
    let snapshot = engine.snapshot();
    let report = engine.explain_at(&snapshot, Some("ns"));
    let demand = &report.models[0].decision.zero.as_ref().unwrap().demand;
    assert!(matches!(demand, Demand::Unknown { .. }), "{demand:?}");
}

/// Issue 21 item 4: a picker failing every other read does not flip a parked model's answer: the last
/// good reading stands through a failed read (for its grace period), said as held.
#[tokio::test]
async fn a_flapping_picker_does_not_flip_the_answer() {
    let page = Page::default();
    let port = picker(page.clone()).await;
    let (epp, shared) = epp_source(
        vec![pool("p", "m", &[port])],
        vec![variant("cheap", 1.0, 0, vec![])],
        Duration::from_millis(200),
    );
    let engine = zero_engine(shared, &epp);
    let good = format!(
        "{POOL_GAUGE}{}",
        queue_line("inference_extension_flow_control_queue_size", "m", "3")
    );
    let mut answers = Vec::new();
    for i in 0..30 {
        page.set(if i % 2 == 0 {
            good.clone()
        } else {
            "status:503 Service Unavailable".to_string()
        });
        epp.read_once().await;
        answers.push(desired(&engine, "cheap"));
    }
    assert!(answers.iter().all(|a| *a == 1), "{answers:?}");
    let snapshot = engine.snapshot();
    let report = engine.explain_at(&snapshot, Some("ns"));
    let demand = &report.models[0].decision.zero.as_ref().unwrap().demand;
    assert!(
        matches!(demand, Demand::Queued { held: Some(why), .. } if why.contains("HTTP 503")),
        "{demand:?}"
    );
}

/// Issue 21 items 5 and 6: a picker whose three pods hang does not delay or age another pool's demand,
/// and the reader's heartbeat keeps beating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_picker_delays_only_its_own_pool() {
    let hanging = Page::default();
    hanging.set("hang");
    let healthy = Page::default();
    healthy.set(format!(
        "{POOL_GAUGE}{}",
        queue_line("inference_extension_flow_control_queue_size", "m", "2")
    ));
    let (h1, h2, h3, ok) = (
        picker(hanging.clone()).await,
        picker(hanging.clone()).await,
        picker(hanging.clone()).await,
        picker(healthy.clone()).await,
    );
    let (epp, _) = epp_source(
        vec![
            pool("a-stuck", "other", &[h1, h2, h3]),
            pool("p", "m", &[ok]),
        ],
        vec![],
        Duration::from_millis(100),
    );
    let health = wva_metrics_server::health::Health::new();
    let heartbeat = health.heartbeat("epp-loop", Duration::from_secs(1));
    let task = tokio::spawn(epp.clone().run(heartbeat.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut unknown = 0;
    for _ in 0..40 {
        if !matches!(
            DemandSource::demand(epp.as_ref(), "ns", "m"),
            Demand::Queued { requests, held: None, .. } if requests == 2.0
        ) {
            unknown += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        unknown, 0,
        "the healthy pool's demand was not a fresh 2 in {unknown} of 40 samples"
    );
    assert!(heartbeat.age() < heartbeat.bound(), "{:?}", heartbeat.age());
    let stuck = DemandSource::demand(epp.as_ref(), "ns", "other");
    assert!(matches!(stuck, Demand::Unknown { .. }), "{stuck:?}");
    task.abort();
}
