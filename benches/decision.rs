//! One decision for a model with 10 variants x 100 replicas: the pure analysis + targets, and the
//! whole engine path (snapshot, sample lookups, analysis, items) as the HPA request runs it, for V1
//! (the KV/queue thresholds) and saturation V2 (token capacity and the cost-aware optimizer). The
//! baseline in the same run is V1's pure decision, so the ratios show what V2 and the engine's joins
//! cost. And the GPU limiter: one grant over 1,000 variants (V1's, and saturation V2's GreedyByScore
//! with and without rescale), the inventory from 1,000 nodes and
//! 10,000 pods, a planning round over 100 models, and the request with the limiter's plan applied,
//! against the same request with the limiter off.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use k8s_openapi::api::core::v1::{Node, Pod as K8sPod};
use wva_metrics_server::cluster::nodes::{self, Gpus};
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::{
    decide, decide_v2, Engine, ModelInput, ReplicaInput, V2Context, VariantInput,
};
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::{ScalingConfig, Thresholds};
use wva_metrics_server::saturation::limiter::{
    limit, limit_by_score, Inventory, Limiter, Request, RescaleFlags, ScoreModel,
};
use wva_metrics_server::saturation::v2::{CapacityMemory, EngineParams, Role, V2Thresholds};
use wva_metrics_server::saturation::v2::{CapacitySource, VariantCapacity};
use wva_metrics_server::sources::{Lookup, PodSample, SampleSource, SourceKind, TokenFigures};
use wva_metrics_server::target::PodTarget;

const TOTAL_KV: i64 = 16 * 4574;
const VARIANTS: usize = 10;
const REPLICAS: usize = 100;

fn kv(v: usize, r: usize) -> f64 {
    ((v * 31 + r * 17) % 90) as f64 / 100.0
}

fn input() -> ModelInput {
    ModelInput {
        config: Default::default(),
        model_id: None,
        scheduler_queue: None,
        gpus: None,
        quotas: None,
        variants: (0..VARIANTS)
            .map(|v| VariantInput {
                min_replicas: None,
                max_replicas: None,
                name: format!("variant-{v}").into(),
                cost: 5.0 + v as f64,
                accelerator: "H100".into(),
                spec_replicas: REPLICAS as i64,
                ready_replicas: REPLICAS as i64,
                replicas: (0..REPLICAS)
                    .map(|r| ReplicaInput {
                        total_kv_tokens: Some(TOTAL_KV),
                        avg_input_tokens: 400.0 + r as f64,
                        avg_output_tokens: 150.0,
                        prefix_cache_hit_rate: 0.2,
                        ..ReplicaInput::new(format!("variant-{v}-{r}"), kv(v, r), (r % 7) as f64)
                    })
                    .collect(),
                role: Role::Both,
                gpus_per_replica: 1,
                engine_params: Some(std::borrow::Cow::Owned(EngineParams::default())),
            })
            .collect(),
    }
}

struct Samples;
impl SampleSource for Samples {
    fn lookup(&self, pod: &PodTarget, _: &str) -> Lookup {
        let (v, r) = pod
            .name
            .trim_start_matches("variant-")
            .split_once('-')
            .map_or((0, 0), |(a, b)| {
                (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
            });
        Lookup::Fresh(PodSample {
            kv_cache_usage: kv(v, r),
            queue_length: (r % 7) as f64,
            running_requests: None,
            age: Duration::from_secs(1),
            source: SourceKind::Pods,
            tokens: Some(TokenFigures {
                total_kv_tokens: Some(TOTAL_KV),
                avg_input_tokens: 400.0 + r as f64,
                avg_output_tokens: 150.0,
                prefix_cache_hit_rate: 0.2,
            }),
        })
    }
}

fn engine_with(thresholds: Thresholds) -> Engine {
    engine_of(thresholds, Gpus::default())
}

fn engine_of(thresholds: Thresholds, gpus: Gpus) -> Engine {
    let variants = (0..VARIANTS)
        .map(|v| {
            let pods = (0..REPLICAS)
                .map(|r| PodTarget::new("ns", &format!("variant-{v}-{r}"), "10.0.0.1", 8000))
                .collect();
            Variant::new(
                "ns",
                &format!("variant-{v}"),
                ("m", "H100"),
                5.0 + v as f64,
                pods,
            )
        })
        .collect();
    Engine::new(
        snapshot::shared(Snapshot {
            by_name: Default::default(),
            gpus,
            pickers: Vec::new(),
            variants,
            excluded: vec![],
            synced: true,
        }),
        Arc::new(Samples),
        Arc::new(arc_swap::ArcSwap::from_pointee(thresholds)),
        Duration::from_secs(120),
    )
}

/// The global saturation ConfigMap with WVA v0.9's shipped `default` entry (V2).
fn v2_thresholds() -> Thresholds {
    let data = std::collections::BTreeMap::from([(
        "default".to_string(),
        "kvCacheThreshold: 0.8\nqueueLengthThreshold: 5\nanalyzers:\n  - name: saturation\n"
            .to_string(),
    )]);
    let (global, issues) = ScalingConfig::from_configmap(&ScalingConfig::default(), &data);
    assert!(issues.rejected.is_empty(), "{issues:?}");
    Thresholds::default().with_global(global)
}

fn bench(c: &mut Criterion) {
    let input = input();
    let engine = engine_with(Thresholds::default());
    let engine_v2 = engine_with(v2_thresholds());
    engine_v2.learn_once(std::time::Instant::now());
    let selector = Selector::parse("variant_name=variant-3").unwrap();
    for e in [&engine, &engine_v2] {
        assert_eq!(
            e.external_metric("ns", "inferno_desired_replicas", &selector)
                .unwrap()
                .len(),
            1
        );
    }
    let memory = CapacityMemory::default();
    let config = input.validate().unwrap();
    let ctx = V2Context {
        namespace: "ns",
        model: "m",
        config,
        thresholds: V2Thresholds::default(),
        votes: true,
        scheduler: None,
        memory: &memory,
    };
    assert_eq!(
        decide_v2(&ctx, &input.variants, None).analyzer,
        "saturation-v2"
    );
    let mut g = c.benchmark_group("decision/10x100");
    g.bench_function("pure-decide", |b| {
        let config = input.validate().unwrap();
        b.iter(|| decide(&config, std::hint::black_box(&input.variants)))
    });
    g.bench_function("pure-decide-v2", |b| {
        b.iter(|| decide_v2(&ctx, std::hint::black_box(&input.variants), None))
    });
    for (name, e) in [
        ("engine-request", &engine),
        ("engine-request-v2", &engine_v2),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                e.external_metric(
                    "ns",
                    "inferno_desired_replicas",
                    std::hint::black_box(&selector),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

const TYPES: [&str; 4] = [
    "NVIDIA-H100-80GB-HBM3",
    "NVIDIA-A100-SXM4-80GB",
    "NVIDIA-L40S-48GB",
    "AMD-MI300X-192G",
];

/// 1,000 nodes of four GPU types (8 GPUs each) and 10,000 pods bound to them, one GPU each.
fn fleet() -> (Vec<Arc<Node>>, Vec<Arc<K8sPod>>) {
    let nodes = (0..1000)
        .map(|i| {
            let label = if i % 4 == 3 { "amd.com/gpu.product-name" } else { "nvidia.com/gpu.product" };
            let resource = if i % 4 == 3 { "amd.com/gpu" } else { "nvidia.com/gpu" };
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("node-{i}"), "labels": {label: TYPES[i % 4], "pool": "a"}},
                    "status": {"allocatable": {resource: "8"}}
                }))
                .unwrap(),
            )
        })
        .collect();
    let pods = (0..10_000)
        .map(|i| {
            let resource = if (i % 1000) % 4 == 3 { "amd.com/gpu" } else { "nvidia.com/gpu" };
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("pod-{i}"), "namespace": "ns"},
                    "spec": {"nodeName": format!("node-{}", i % 1000),
                             "containers": [{"name": "c", "resources": {"limits": {resource: "1"}}}]},
                    "status": {"phase": "Running"}
                }))
                .unwrap(),
            )
        })
        .collect();
    (nodes, pods)
}

fn limiter_thresholds() -> Thresholds {
    let data = std::collections::BTreeMap::from([(
        "default".to_string(),
        "enableLimiter: true\n".to_string(),
    )]);
    let (global, issues) = ScalingConfig::from_configmap(&ScalingConfig::default(), &data);
    assert!(issues.rejected.is_empty(), "{issues:?}");
    Thresholds::default().with_global(global)
}

/// The requests with each model's variants on one type, and each model's V2 view: 20,000 tokens per
/// replica, a need of 50,000 tokens more, a demand of 1,000,000 (50 replicas).
fn score_models(requests: &[Request]) -> (Vec<Request>, Vec<ScoreModel>) {
    let requests: Vec<Request> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| Request {
            accelerator: TYPES[(i / 10) % 4].into(),
            ..r.clone()
        })
        .collect();
    let models = (0..100)
        .map(|m| {
            let capacities = (m * 10..m * 10 + 10)
                .map(|i| VariantCapacity {
                    name: requests[i].variant.clone().into(),
                    role: Role::Both,
                    accelerator: requests[i].accelerator.clone().into(),
                    cost: requests[i].cost,
                    replicas: 2,
                    pending: 0,
                    per_replica_capacity: 20_000.0,
                    instances_per_replica: 1,
                    total_capacity: 40_000.0,
                    demand: 10_000.0,
                    utilization: 0.25,
                    source: CapacitySource::Observed,
                    kv_tokens_used: 0,
                    kv_tokens_capacity: 0,
                    replica_capacities: vec![],
                })
                .collect();
            ScoreModel {
                priority: 1.0 + (m % 3) as f64,
                score: 1.0,
                required: vec![(Role::Both, 50_000.0)],
                demand: vec![(Role::Both, 1_000_000.0)],
                capacities,
                requests: (m * 10..m * 10 + 10).collect(),
            }
        })
        .collect();
    (requests, models)
}

fn bench_limiter(c: &mut Criterion) {
    let (nodes, pods) = fleet();
    let inventory = nodes::inventory(&nodes, &pods, None);
    assert_eq!(inventory.types.len(), 4);
    // 100 models x 10 variants, every one asking for +2.
    let requests: Vec<Request> = (0..1000)
        .map(|i| Request {
            namespace: "ns".into(),
            model: format!("model-{}", i / 10),
            variant: format!("variant-{i}"),
            accelerator: TYPES[i % 4].into(),
            current: 2,
            target: 4,
            gpus_per_replica: 1 + (i % 2) as i64,
            min_replicas: Some(1),
            max_replicas: Some(8),
            spare_capacity: (i % 97) as f64 / 100.0,
            cost: 5.0 + (i % 10) as f64,
            unschedulable_pods: 0,
        })
        .collect();
    let limiters = [Limiter::GpuInventory];
    let input = input();
    let config = input.validate().unwrap();
    let mut g = c.benchmark_group("limiter");
    g.bench_function("pure-decide-10x100-baseline", |b| {
        b.iter(|| decide(&config, std::hint::black_box(&input.variants)))
    });
    g.bench_function("grant-1000-variants", |b| {
        b.iter(|| limit(std::hint::black_box(&requests), Some(&inventory), &limiters).unwrap())
    });
    // Saturation V2 under the limiter: the same 1,000 variants, each model on one type and needing
    // capacity; GreedyByScore's turns, then with rescale on as well.
    let (v2_requests, models) = score_models(&requests);
    // 50 GPUs free per type: some models are cut, and every type's group is contended for rescale.
    let mut scarce = Inventory::default();
    for t in TYPES {
        scarce.add(t, 1_000, 950);
    }
    let run = |flags: &RescaleFlags| {
        limit_by_score(
            std::hint::black_box(&v2_requests),
            &models,
            Some(&scarce),
            &limiters,
            flags,
        )
        .unwrap()
    };
    let rescale = RescaleFlags {
        cluster: true,
        namespaces: Default::default(),
    };
    for (name, flags, by) in [
        (
            "greedy-by-score-1000-variants",
            RescaleFlags::default(),
            "gpu-limiter",
        ),
        ("greedy-by-score-rescale-1000-variants", rescale, "rescale"),
    ] {
        assert!(
            run(&flags)
                .iter()
                .any(|g| g.limited_by.as_deref() == Some(by)),
            "nothing limited by {by}"
        );
        g.bench_function(name, |b| b.iter(|| run(&flags)));
    }
    g.bench_function("inventory-1000-nodes-10000-pods", |b| {
        b.iter(|| nodes::inventory(std::hint::black_box(&nodes), &pods, None))
    });
    // The request path, limiter off and on (the plan applied), on the 10x100 model.
    let off = engine_with(Thresholds::default());
    let on = engine_of(limiter_thresholds(), Gpus::Known(inventory.clone()));
    on.plan_limits(std::time::Instant::now());
    let selector = Selector::parse("variant_name=variant-3").unwrap();
    for (name, e) in [("request-limiter-off", &off), ("request-limiter-on", &on)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                e.external_metric(
                    "ns",
                    "inferno_desired_replicas",
                    std::hint::black_box(&selector),
                )
                .unwrap()
            })
        });
    }
    // One planning round: every model decided, then limited (10 models x 100 replicas here).
    g.bench_function("plan-round-10x100", |b| {
        b.iter(|| on.plan_limits(std::time::Instant::now()))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_limiter);
criterion_main!(benches);
