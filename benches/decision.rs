//! One decision for a model with 10 variants x 100 replicas: the pure analysis + targets, and the
//! whole engine path (snapshot, sample lookups, analysis, items) as the HPA request runs it. The
//! baseline in the same run is the pure decision, so the ratio shows what the engine's joins cost.
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
use wva_metrics_server::engine::{decide, Engine, ModelInput, ReplicaInput, VariantInput};
use wva_metrics_server::provider::selector::Selector;
use wva_metrics_server::provider::MetricsProvider;
use wva_metrics_server::saturation::config::Thresholds;
use wva_metrics_server::sources::{Lookup, PodSample, SampleSource, SourceKind};
use wva_metrics_server::target::PodTarget;

const VARIANTS: usize = 10;
const REPLICAS: usize = 100;

fn kv(v: usize, r: usize) -> f64 {
    ((v * 31 + r * 17) % 90) as f64 / 100.0
}

fn input() -> ModelInput {
    ModelInput {
        config: Default::default(),
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
                        pod: format!("variant-{v}-{r}"),
                        kv_cache_usage: kv(v, r),
                        queue_length: (r % 7) as f64,
                    })
                    .collect(),
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
            tokens: None,
        })
    }
}

fn engine() -> Engine {
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
            pickers: Vec::new(),
            variants,
            excluded: vec![],
            synced: true,
        }),
        Arc::new(Samples),
        Arc::new(arc_swap::ArcSwap::from_pointee(Thresholds::default())),
        Duration::from_secs(120),
    )
}

fn bench(c: &mut Criterion) {
    let input = input();
    let engine = engine();
    let selector = Selector::parse("variant_name=variant-3").unwrap();
    assert_eq!(
        engine
            .external_metric("ns", "inferno_desired_replicas", &selector)
            .unwrap()
            .len(),
        1
    );
    let mut g = c.benchmark_group("decision/10x100");
    g.bench_function("pure-decide", |b| {
        let config = input.validate().unwrap();
        b.iter(|| decide(&config, std::hint::black_box(&input.variants)))
    });
    g.bench_function("engine-request", |b| {
        b.iter(|| {
            engine
                .external_metric(
                    "ns",
                    "inferno_desired_replicas",
                    std::hint::black_box(&selector),
                )
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
