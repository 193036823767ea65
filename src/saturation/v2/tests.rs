//! The worked examples of WVA v0.9's saturation V2 (its `saturation_v2/analyzer_test.go`,
//! `engine_v2_threshold_test.go` and `cost_aware_optimizer_test.go` at 2976e4ee, and cases derived from
//! the code), as golden tests; then properties.

use std::time::Instant;

use proptest::prelude::*;

use super::*;

const MODEL: &str = "test-model";

/// A row `(tokensInUse, totalKv, queue, I, O)` as the examples write them.
fn row(tokens: i64, total: i64, queue: i64, i: f64, o: f64) -> ReplicaRow<'static> {
    ReplicaRow {
        pod: format!("p{tokens}-{queue}").into(),
        kv_cache_usage: if total > 0 {
            tokens as f64 / total as f64
        } else {
            0.0
        },
        queue_length: queue,
        total_kv_tokens: total,
        avg_input_tokens: i,
        avg_output_tokens: o,
        prefix_cache_hit_rate: 0.0,
    }
}

fn variant(
    name: &str,
    cost: f64,
    current: i64,
    rows: Vec<ReplicaRow<'static>>,
) -> VariantIn<'static> {
    VariantIn {
        name: name.to_string().into(),
        cost,
        accelerator: "H100".into(),
        role: Role::Both,
        current,
        ready: current,
        gpus_per_replica: 1,
        min_replicas: None,
        max_replicas: None,
        params: None,
        rows,
    }
}

fn run<'a>(variants: &[VariantIn<'a>], memory: &CapacityMemory) -> CapacityAnalysis<'a> {
    analyze(
        "ns",
        MODEL,
        variants,
        None,
        &V2Thresholds::default(),
        memory,
    )
}

fn params(b: i64, s: i64) -> EngineParams {
    EngineParams {
        max_num_batched_tokens: b,
        max_num_seqs: s,
        ..EngineParams::default()
    }
}

#[test]
fn v1_memory_bound_only() {
    let vs = [variant(
        "a",
        10.0,
        1,
        vec![row(5000, 16000, 0, 100.0, 50.0)],
    )];
    let a = run(&vs, &CapacityMemory::default());
    let v = &a.variants[0];
    assert_eq!(v.per_replica_capacity, 12800.0);
    assert_eq!(v.source, CapacitySource::Fallback);
    assert_eq!(a.model.demand, 5000.0);
    assert_eq!(a.model.required_capacity, 0.0);
    assert!((a.model.spare_capacity - 5657.142857142857).abs() < 1e-9);
    assert_eq!(optimize(&vs, &a), [1]);
}

#[test]
fn v2_observed_capacity_feeds_the_history() {
    let mut memory = CapacityMemory::default();
    let vs = [variant(
        "a",
        10.0,
        1,
        vec![row(8000, 16000, 6, 100.0, 50.0)],
    )];
    let a = run(&vs, &memory);
    assert_eq!(a.variants[0].per_replica_capacity, 8000.0);
    assert_eq!(a.variants[0].source, CapacitySource::Observed);
    assert_eq!(a.model.demand, 8900.0);
    assert!((a.model.required_capacity - 2470.588235294118).abs() < 1e-9);
    assert_eq!(optimize(&vs, &a), [2]);
    let key = HistoryKey {
        model: MODEL.into(),
        accelerator: "H100".into(),
        gpus: 1,
        bucket: Bucket::Short,
    };
    assert_eq!(a.learned.observations, [(key.clone(), 8000)]);
    memory.learn("ns", MODEL, &a.learned, Instant::now());
    assert_eq!(memory.history_mean(&key), 8000.0);
    // The next cycle: queue below the threshold, the history answers.
    let next = [variant(
        "a",
        10.0,
        1,
        vec![row(6000, 16000, 2, 100.0, 50.0)],
    )];
    let b = run(&next, &memory);
    assert_eq!(b.variants[0].per_replica_capacity, 8000.0);
    assert_eq!(b.variants[0].source, CapacitySource::History);
    // V4: a long-output workload has its own bucket, with no history: k1.
    let long = [variant(
        "a",
        10.0,
        1,
        vec![row(6000, 16000, 2, 100.0, 600.0)],
    )];
    let c = run(&long, &memory);
    assert_eq!(c.variants[0].per_replica_capacity, 12800.0);
    assert_eq!(c.variants[0].source, CapacitySource::Fallback);
}

#[test]
fn v3_compute_bound_below_memory_bound() {
    let vs = [variant(
        "a",
        10.0,
        1,
        vec![row(4000, 16000, 10, 100.0, 50.0)],
    )];
    assert_eq!(
        run(&vs, &CapacityMemory::default()).variants[0].per_replica_capacity,
        4000.0
    );
}

#[test]
fn v5_capacity_estimated_from_the_deployment() {
    let mut v = variant("a", 10.0, 1, vec![row(5000, 16000, 2, 500.0, 100.0)]);
    v.params = Some(Cow::Owned(params(2048, 256)));
    let a = run(&[v], &CapacityMemory::default());
    // N = min(341.3, 256) = 256; k2 = 256 × 550 = 140800 > k1.
    assert_eq!(a.variants[0].replica_capacities[0].k2, 140_800);
    assert_eq!(a.variants[0].source, CapacitySource::Deployment);
    assert_eq!(a.variants[0].per_replica_capacity, 12800.0);
    assert_eq!(
        estimate_capacity(Some(&params(4096, 256)), 500.0, 100.0),
        140_800
    );
    assert_eq!(
        estimate_capacity(Some(&params(8192, 64)), 100.0, 200.0),
        12_800
    );
    assert_eq!(estimate_capacity(Some(&params(8192, 64)), 100.0, 0.0), 0);
    assert_eq!(estimate_capacity(None, 100.0, 50.0), 0);
}

/// V6: a variant with replicas but no rows (all pending, or unattributed) takes its capacity from what
/// is known of it.
#[test]
fn v6_variants_without_rows_use_their_record() {
    let waiting = |p: Option<EngineParams>| VariantIn {
        ready: 0,
        params: p.map(Cow::Owned),
        ..variant("cold", 10.0, 1, vec![])
    };
    let sibling = {
        let mut s = variant("warm", 10.0, 1, vec![row(5000, 0, 0, 500.0, 100.0)]);
        // No cache_config_info and no record: the row is dropped, but its workload counts.
        s.params = None;
        s
    };
    // A live record of its own.
    let mut memory = CapacityMemory::default();
    memory.learn(
        "ns",
        MODEL,
        &Learned {
            observations: vec![],
            live: vec![LiveCapacity {
                variant: "cold".into(),
                accelerator: "H100".into(),
                gpus: 1,
                total_kv_tokens: 16000,
                effective_capacity: 12000,
            }],
        },
        Instant::now(),
    );
    let a = run(&[waiting(Some(params(8192, 256)))], &memory);
    assert_eq!(
        (a.variants[0].per_replica_capacity, a.variants[0].source),
        (12000.0, CapacitySource::Store)
    );
    // Deployment-derived, with the sibling's workload: 256 × 550.
    let fresh = CapacityMemory::default();
    let a = run(&[waiting(Some(params(8192, 256))), sibling.clone()], &fresh);
    assert_eq!(a.variants[0].per_replica_capacity, 140_800.0);
    // Bounded by a compatible live sibling.
    let mut with_live = CapacityMemory::default();
    with_live.load_deployment(
        ("other".into(), MODEL.into(), "twin".into()),
        CapacityRecord::from_deployment("H100", 1, &params(8192, 256)),
    );
    with_live.learn(
        "other",
        MODEL,
        &Learned {
            observations: vec![],
            live: vec![LiveCapacity {
                variant: "twin".into(),
                accelerator: "H100".into(),
                gpus: 1,
                total_kv_tokens: 64000,
                effective_capacity: 40000,
            }],
        },
        Instant::now(),
    );
    let a = run(
        &[waiting(Some(params(8192, 256))), sibling.clone()],
        &with_live,
    );
    assert_eq!(a.variants[0].per_replica_capacity, 40_000.0);
    // Bounded by its own k1 when the flags fix its KV tokens (1875 blocks × 16 = 30000; × 0.8).
    let fixed = EngineParams {
        num_gpu_blocks_override: 1875,
        ..params(8192, 256)
    };
    let a = run(&[waiting(Some(fixed)), sibling], &fresh);
    assert_eq!(a.variants[0].per_replica_capacity, 24_000.0);
    // No workload: the per-step budget.
    let a = run(&[waiting(Some(params(8192, 256)))], &fresh);
    assert_eq!(a.variants[0].per_replica_capacity, 8192.0);
    // Nothing known.
    let a = run(&[waiting(None)], &fresh);
    assert_eq!(a.variants[0].source, CapacitySource::NoData);
    assert!(!a.informative());
}

#[test]
fn v7_fallback_path_without_cache_config() {
    let mut rows = vec![
        row(0, 0, 0, 500.0, 0.0),
        row(0, 0, 0, 500.0, 0.0),
        row(0, 0, 3, 500.0, 0.0),
    ];
    rows[0].kv_cache_usage = 0.6;
    rows[1].kv_cache_usage = 1.0;
    rows[2].kv_cache_usage = 0.5;
    let mut v = variant("a", 10.0, 3, rows);
    v.params = Some(Cow::Owned(params(10000, 256)));
    let a = run(&[v], &CapacityMemory::default());
    let demands: Vec<(i64, i64, bool)> = a.variants[0]
        .replica_capacities
        .iter()
        .map(|r| (r.effective_capacity, r.demand, r.saturated))
        .collect();
    assert_eq!(
        demands,
        [(8000, 4800, false), (8000, 8000, true), (8000, 5500, false)]
    );
    assert!(a.learned.live.is_empty(), "fallback rows teach nothing");
}

#[test]
fn v8_scheduler_queue_demand() {
    let mut r = row(5000, 16000, 0, 100.0, 50.0);
    r.prefix_cache_hit_rate = 0.5;
    let vs = [variant("a", 10.0, 1, vec![r.clone()])];
    let t = V2Thresholds::default();
    let m = CapacityMemory::default();
    let q = |requests, bytes| Some(SchedulerQueue { requests, bytes });
    let a = analyze("ns", MODEL, &vs, q(10, 4000), &t, &m);
    assert_eq!((a.scheduler_demand, a.model.demand), (1000.0, 6000.0));
    r.prefix_cache_hit_rate = 0.0;
    let vs = [variant("a", 10.0, 1, vec![r])];
    let a = analyze("ns", MODEL, &vs, q(10, 20000), &t, &m);
    assert_eq!(a.model.demand, 10500.0);
    let a = analyze("ns", MODEL, &vs, q(0, 0), &t, &m);
    assert_eq!(a.model.demand, 5000.0);
}

#[test]
fn v9_prefill_decode_demand() {
    let mut p = variant("p", 10.0, 1, vec![row(3000, 16000, 0, 100.0, 50.0)]);
    p.role = Role::Prefill;
    let mut d = variant("d", 10.0, 1, vec![row(2000, 16000, 0, 100.0, 50.0)]);
    d.role = Role::Decode;
    let a = analyze(
        "ns",
        MODEL,
        &[p, d],
        Some(SchedulerQueue {
            requests: 10,
            bytes: 0,
        }),
        &V2Thresholds::default(),
        &CapacityMemory::default(),
    );
    assert_eq!(a.roles[&Role::Prefill].demand, 4000.0);
    assert_eq!(a.roles[&Role::Decode].demand, 3500.0);
    assert_eq!(a.model.demand, 6500.0);
}

#[test]
fn v10_data_parallel_ranks_are_replicas() {
    let rows = (0..8)
        .map(|i| ReplicaRow {
            pod: format!("p:{i}").into(),
            ..row(8000, 16000, 0, 100.0, 50.0)
        })
        .collect();
    let vs = [VariantIn {
        ready: 1,
        ..variant("a", 10.0, 2, rows)
    }];
    let a = run(&vs, &CapacityMemory::default());
    let v = &a.variants[0];
    assert_eq!((v.replicas, v.pending), (8, 8));
    assert_eq!(
        (a.model.supply, a.model.anticipated_supply, a.model.demand),
        (102_400.0, 204_800.0, 64_000.0)
    );
    assert_eq!(a.model.required_capacity, 0.0);
    assert!((a.model.spare_capacity - 10971.428571428572).abs() < 1e-9);
    assert_eq!(optimize(&vs, &a), [2]);
}

/// A replica of several data-parallel ranks adds and removes all of them: two pods of four ranks
/// that need one rank's capacity more get one pod more (WVA: ceil(RC/PRC) pods, four times too many),
/// and a spare of five ranks' capacity removes one pod (WVA: five, down to the last).
#[test]
fn ranks_move_with_their_replica() {
    let ranked = |tokens: i64, queue: i64| -> Vec<ReplicaRow> {
        (0..8)
            .map(|i| ReplicaRow {
                pod: format!("p{}:{}", i / 4, 8000 + i % 4).into(),
                ..row(tokens, 16000, queue, 100.0, 50.0)
            })
            .collect()
    };
    // Saturated: 8 × (12000 + 3·150) demand over 8 × 12800 supply: RC = 117176.5 − 102400 = 14776.5,
    // between one and two ranks' capacity.
    let vs = [variant("a", 10.0, 2, ranked(12000, 3))];
    let a = run(&vs, &CapacityMemory::default());
    assert_eq!(a.variants[0].instances_per_replica, 4);
    assert!(a.model.required_capacity > 12800.0 && a.model.required_capacity < 2.0 * 12800.0);
    assert_eq!(optimize(&vs, &a), [3]);
    // Idle enough that four ranks' capacity and more is spare, not eight: one pod of four goes.
    let vs = [variant("a", 10.0, 4, {
        let mut rows = ranked(6000, 0);
        rows.extend(ranked(6000, 0).into_iter().map(|r| ReplicaRow {
            pod: format!("q{}", r.pod).into(),
            ..r
        }));
        rows
    })];
    let a = run(&vs, &CapacityMemory::default());
    assert_eq!(
        (a.variants[0].replicas, a.variants[0].instances_per_replica),
        (16, 4)
    );
    let spare_ranks = a.model.spare_capacity / 12800.0;
    assert!((4.0..8.0).contains(&spare_ranks), "{spare_ranks}");
    assert_eq!(optimize(&vs, &a), [3]);
}

#[test]
fn v11_required_and_spare_capacity() {
    let cases = [
        ((10000.0, 10000.0, 10000.0), (1764.705882352941, 0.0)),
        ((5000.0, 10000.0, 10000.0), (0.0, 2857.142857142857)),
        ((8000.0, 10000.0, 10000.0), (0.0, 0.0)),
        ((8000.0, 7000.0, 10000.0), (0.0, 0.0)),
    ];
    for ((demand, supply, anticipated), (rc, sc)) in cases {
        let mut t = Totals {
            supply,
            anticipated_supply: anticipated,
            demand,
            ..Totals::default()
        };
        t.apply_thresholds(0.85, 0.70);
        assert!((t.required_capacity - rc).abs() < 1e-9, "{t:?}");
        assert!((t.spare_capacity - sc).abs() < 1e-9, "{t:?}");
    }
}

/// An analysis with the given variants `(name, cost, prc, role)` and the model's (or roles') required
/// and spare capacity.
fn sized(
    variants: &[(&str, f64, f64, Role)],
    roles: &[(Role, f64, f64)],
) -> CapacityAnalysis<'static> {
    let vcs = variants
        .iter()
        .map(|(name, cost, prc, role)| VariantCapacity {
            name: name.to_string().into(),
            role: *role,
            accelerator: "H100".into(),
            cost: *cost,
            replicas: 1,
            pending: 0,
            per_replica_capacity: *prc,
            instances_per_replica: 1,
            total_capacity: *prc,
            demand: 0.0,
            utilization: 0.0,
            source: CapacitySource::Observed,
            kv_tokens_used: 0,
            kv_tokens_capacity: 0,
            replica_capacities: vec![],
        })
        .collect();
    let totals = |rc, sc| Totals {
        required_capacity: rc,
        spare_capacity: sc,
        ..Totals::default()
    };
    let disaggregated = roles.iter().any(|(r, _, _)| *r != Role::Both);
    CapacityAnalysis {
        thresholds: V2Thresholds::default(),
        variants: vcs,
        model: roles
            .iter()
            .find(|(r, _, _)| *r == Role::Both)
            .map_or_else(Totals::default, |(_, rc, sc)| totals(*rc, *sc)),
        roles: if disaggregated {
            roles
                .iter()
                .map(|(r, rc, sc)| (*r, totals(*rc, *sc)))
                .collect()
        } else {
            BTreeMap::new()
        },
        scheduler_demand: 0.0,
        learned: Learned::default(),
    }
}

fn states(v: &[(&str, i64, Option<i64>, Option<i64>)]) -> Vec<VariantIn<'static>> {
    v.iter()
        .map(|(name, current, min, max)| VariantIn {
            min_replicas: *min,
            max_replicas: *max,
            ..variant(name, 0.0, *current, vec![])
        })
        .collect()
}

const B: Role = Role::Both;

#[test]
fn v12_scale_up_goes_to_the_cheapest_capacity() {
    let a = sized(
        &[("cheap", 5.0, 10000.0, B), ("expensive", 15.0, 20000.0, B)],
        &[(B, 5000.0, 0.0)],
    );
    let s = states(&[("cheap", 2, None, None), ("expensive", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [3, 1]);
    let a = sized(
        &[("cheap", 5.0, 10000.0, B), ("mid", 10.0, 15000.0, B)],
        &[(B, 25000.0, 0.0)],
    );
    let s = states(&[("cheap", 1, None, None), ("mid", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [4, 1]);
    let a = sized(
        &[("cheap", 5.0, 10000.0, B), ("expensive", 15.0, 20000.0, B)],
        &[(B, 30000.0, 0.0)],
    );
    let s = states(&[("cheap", 1, None, Some(3)), ("expensive", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [3, 2]);
}

#[test]
fn v13_scale_down_from_the_most_expensive() {
    let three = [
        ("expensive", 15.0, 20000.0, B),
        ("mid", 10.0, 15000.0, B),
        ("cheap", 5.0, 10000.0, B),
    ];
    let s = states(&[
        ("expensive", 2, None, None),
        ("mid", 2, None, None),
        ("cheap", 2, None, None),
    ]);
    assert_eq!(
        optimize(&s, &sized(&three, &[(B, 0.0, 50000.0)])),
        [0, 2, 1]
    );
    let two = [("expensive", 15.0, 20000.0, B), ("cheap", 5.0, 10000.0, B)];
    let s = states(&[("expensive", 1, None, None), ("cheap", 1, None, None)]);
    assert_eq!(optimize(&s, &sized(&two, &[(B, 0.0, 30000.0)])), [0, 1]);
    assert_eq!(optimize(&s, &sized(&two, &[(B, 0.0, 15000.0)])), [1, 0]);
    let s = states(&[("expensive", 3, Some(2), None), ("cheap", 3, None, None)]);
    assert_eq!(optimize(&s, &sized(&two, &[(B, 0.0, 50000.0)])), [2, 0]);
}

#[test]
fn v14_end_to_end() {
    let vs = [variant(
        "a",
        10.0,
        1,
        vec![row(11000, 16000, 3, 100.0, 50.0)],
    )];
    let a = run(&vs, &CapacityMemory::default());
    assert_eq!(a.model.demand, 11450.0);
    assert_eq!(a.variants[0].per_replica_capacity, 12800.0);
    assert!((a.model.required_capacity - 670.5882352941189).abs() < 1e-6);
    assert_eq!(optimize(&vs, &a), [2]);
}

/// WVA's prefill/decode examples (`internal/engines/pipeline/cost_aware_optimizer_test.go:758-935` at 2976e4ee).
#[test]
fn prefill_decode_scale_together() {
    let (p, d) = (Role::Prefill, Role::Decode);
    let a = sized(
        &[("p", 10.0, 10000.0, p), ("d", 10.0, 10000.0, d)],
        &[(p, 20000.0, 0.0), (d, 20000.0, 0.0)],
    );
    let s = states(&[("p", 1, None, None), ("d", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [3, 3]);
    let four = [
        ("p-cheap", 5.0, 10000.0, p),
        ("p-dear", 15.0, 10000.0, p),
        ("d-cheap", 5.0, 10000.0, d),
        ("d-dear", 15.0, 10000.0, d),
    ];
    let s = states(&[
        ("p-cheap", 1, None, None),
        ("p-dear", 1, None, None),
        ("d-cheap", 1, None, None),
        ("d-dear", 1, None, None),
    ]);
    assert_eq!(
        optimize(&s, &sized(&four, &[(p, 10000.0, 0.0), (d, 10000.0, 0.0)])),
        [2, 1, 2, 1]
    );
    let a = sized(
        &[("p", 10.0, 10000.0, p), ("d", 10.0, 10000.0, d)],
        &[(p, 0.0, 0.0), (d, 10000.0, 0.0)],
    );
    let s = states(&[("p", 2, None, None), ("d", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [2, 2]);
    let a = sized(
        &[
            ("cheap-p", 5.0, 10000.0, p),
            ("expensive-p", 15.0, 10000.0, p),
            ("decode", 10.0, 10000.0, d),
        ],
        &[(p, 0.0, 20000.0), (d, 0.0, 10000.0)],
    );
    let s = states(&[
        ("cheap-p", 2, None, None),
        ("expensive-p", 2, None, None),
        ("decode", 3, None, None),
    ]);
    assert_eq!(optimize(&s, &a), [2, 0, 2]);
    // A role with nowhere to grow (at its maximum) stops the other role too.
    let a = sized(
        &[("p", 10.0, 10000.0, p), ("d", 10.0, 10000.0, d)],
        &[(p, 0.0, 0.0), (d, 10000.0, 0.0)],
    );
    let s = states(&[("p", 2, None, Some(2)), ("d", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [2, 1]);
}

/// Without any variant's capacity known, nothing is added (PRC 0 is never picked).
#[test]
fn no_capacity_no_scale_up() {
    let a = sized(&[("a", 5.0, 0.0, B)], &[(B, 5000.0, 0.0)]);
    let s = states(&[("a", 1, None, None)]);
    assert_eq!(optimize(&s, &a), [1]);
}

fn arb_row() -> impl Strategy<Value = ReplicaRow<'static>> {
    (
        0.0f64..=1.0,
        0i64..20,
        prop_oneof![Just(0i64), 1000i64..100_000],
        0.0f64..2000.0,
        0.0f64..2000.0,
    )
        .prop_map(|(kv, q, total, i, o)| ReplicaRow {
            pod: "".into(),
            kv_cache_usage: kv,
            queue_length: q,
            total_kv_tokens: total,
            avg_input_tokens: i,
            avg_output_tokens: o,
            prefix_cache_hit_rate: 0.0,
        })
}

fn arb_variant(i: usize) -> impl Strategy<Value = VariantIn<'static>> {
    (
        1i64..6,
        0i64..4,
        proptest::option::of(0i64..3),
        proptest::option::of(1i64..10),
        0.5f64..50.0,
        proptest::collection::vec(arb_row(), 0..6),
        proptest::bool::ANY,
    )
        .prop_map(
            move |(current, not_ready, min, extra, cost, rows, with_params)| {
                let min_replicas = min.map(|m| m.min(current));
                VariantIn {
                    name: format!("v{i}").into(),
                    cost,
                    accelerator: "H100".into(),
                    role: Role::Both,
                    current,
                    ready: (current - not_ready).max(0),
                    gpus_per_replica: 1,
                    min_replicas,
                    max_replicas: extra.map(|e| current + e - 1),
                    params: with_params.then(|| Cow::Owned(EngineParams::default())),
                    rows,
                }
            },
        )
}

proptest! {
    /// Targets stay within [min, max] when the current replicas do; no scale-up without required
    /// capacity; no scale-down while capacity is required; a model keeps at least one replica.
    #[test]
    fn optimizer_properties(
        vs in (arb_variant(0), arb_variant(1), arb_variant(2)).prop_map(|(a, b, c)| vec![a, b, c]),
        requests in 0i64..50,
    ) {
        let a = analyze("ns", MODEL, &vs, Some(SchedulerQueue { requests, bytes: 0 }), &V2Thresholds::default(), &CapacityMemory::default());
        let t = optimize(&vs, &a);
        for (v, target) in vs.iter().zip(&t) {
            if let Some(max) = v.max_replicas {
                prop_assert!(*target <= max.max(v.current), "{} > max {}", target, max);
            }
            prop_assert!(*target >= v.min_replicas.unwrap_or(0).min(v.current));
            if a.model.required_capacity == 0.0 {
                prop_assert!(*target <= v.current, "scale-up without required capacity");
            } else {
                prop_assert!(*target >= v.current, "scale-down while capacity is required");
            }
        }
        prop_assert!(t.iter().sum::<i64>() >= 1);
    }
}

fn arb_pd_model() -> impl Strategy<Value = Vec<VariantIn<'static>>> {
    proptest::collection::vec(
        (
            arb_variant(0),
            prop_oneof![Just(Role::Prefill), Just(Role::Decode), Just(Role::Both)],
        ),
        2..5,
    )
    .prop_map(|vs| {
        let mut vs: Vec<VariantIn> = vs
            .into_iter()
            .enumerate()
            .map(|(i, (v, role))| VariantIn {
                name: format!("v{i}").into(),
                role,
                ..v
            })
            .collect();
        // Disaggregated: both phases present.
        vs[0].role = Role::Prefill;
        vs[1].role = Role::Decode;
        vs
    })
}

proptest! {
    /// Paired roles never move apart on scale-up: when any variant of a disaggregated model gains a
    /// replica, no variant of any role loses one, and every role had a variant that could grow (a
    /// role with nowhere to grow stops the others, so prefill never outgrows a decode pool at its max).
    #[test]
    fn paired_roles_scale_up_together(
        vs in arb_pd_model(),
        requests in 0i64..50,
    ) {
        let a = analyze("ns", MODEL, &vs, Some(SchedulerQueue { requests, bytes: 0 }), &V2Thresholds::default(), &CapacityMemory::default());
        let t = optimize(&vs, &a);
        if vs.iter().zip(&t).any(|(v, t)| *t > v.current) {
            for (v, t) in vs.iter().zip(&t) {
                prop_assert!(*t >= v.current, "{} went down from {} to {t} during a scale-up", v.name, v.current);
            }
            for role in a.roles.keys() {
                let can_grow = vs.iter().any(|v| {
                    v.role == *role && v.max_replicas.is_none_or(|m| m <= 0 || v.current < m)
                });
                prop_assert!(can_grow, "role {role:?} could not grow, yet others did: {t:?}");
            }
        }
    }
}
