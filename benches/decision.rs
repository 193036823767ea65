//! One decision for a model with 10 variants x 100 replicas: the pure analysis + targets, and the
//! whole engine path (snapshot, sample lookups, analysis, items) as the HPA request runs it, for V1
//! (the KV/queue thresholds) and saturation V2 (token capacity and the cost-aware optimizer). The
//! baseline in the same run is V1's pure decision, so the ratios show what V2 and the engine's joins
//! cost.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)] // Fixtures and measurements, not product code.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use wva_metrics_server::cluster::snapshot::{self, Snapshot, Variant};
use wva_metrics_server::engine::{
    decide, decide_v2, Engine, ModelInput, ReplicaInput, V2Context, VariantInput,
};
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::{ScalingConfig, Thresholds};
use wva_metrics_server::saturation::v2::{CapacityMemory, EngineParams, Role, V2Thresholds};
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
                name: format!("variant-{v}"),
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
                        ..ReplicaInput::new(&format!("variant-{v}-{r}"), kv(v, r), (r % 7) as f64)
                    })
                    .collect(),
                role: Role::Both,
                gpus_per_replica: 1,
                engine_params: Some(EngineParams::default()),
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
            gpus: Default::default(),
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

criterion_group!(benches, bench);
criterion_main!(benches);
