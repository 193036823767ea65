//! The limiter against WVA v0.9's tests (`internal/accelerator/accelerator_test.go`,
//! `internal/engines/pipeline/greedy_saturation_algorithm_test.go`, `quota_limit_integration_test.go`),
//! and its invariants as properties.

use super::*;
use proptest::prelude::*;

fn req(variant: &str, current: i64, target: i64, gpr: i64, spare: f64) -> Request {
    Request {
        namespace: "ns".into(),
        model: format!("model-{variant}"),
        variant: variant.into(),
        accelerator: "H100".into(),
        current,
        target,
        gpus_per_replica: gpr,
        min_replicas: None,
        max_replicas: None,
        spare_capacity: spare,
        cost: 10.0,
        unschedulable_pods: 0,
    }
}

fn inventory(types: &[(&str, i64, i64)]) -> Inventory {
    let mut i = Inventory::default();
    for (t, allocatable, requested) in types {
        i.add(t, *allocatable, *requested);
    }
    i
}

fn targets(granted: &[Granted]) -> Vec<i64> {
    granted.iter().map(|g| g.target).collect()
}

#[test]
fn product_names_normalise_as_wva_does() {
    for (input, want) in [
        ("NVIDIA-A100-PCIE-80GB", "A100"),
        ("NVIDIA-H100-SXM5-80GB", "H100"),
        ("NVIDIA-L40S-48GB", "L40S"),
        ("nvidia-A100-PCIE-80GB", "A100"),
        ("AMD-MI300X-192G", "MI300X"),
        ("Intel-Gaudi-2-96GB", "Gaudi-2"),
        ("A100", "A100"),
        ("Unknown-GPU-Model-123", "GPU"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
    ] {
        assert_eq!(normalize_accelerator(input), want, "{input}");
    }
    // Both sides normalise: a variant naming the full product finds the nodes' short type.
    let inv = inventory(&[("NVIDIA-H100-80GB-HBM3", 8, 6)]);
    let r = Request {
        accelerator: "NVIDIA-H100-80GB-HBM3".into(),
        ..req("a", 1, 2, 2, 0.1)
    };
    let g = limit(&[r], Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(
        (g[0].target, g[0].gpus_allocated, &g[0].limited_by),
        (2, 2, &None)
    );
}

/// 6 GPUs, three +1 decisions at 2 GPUs with spare 0.05/0.3/0.5: all three allocated.
#[test]
fn enough_gpus_allocate_every_scale_up() {
    let inv = inventory(&[("H100", 6, 0)]);
    let rs = [
        req("c", 1, 2, 2, 0.5),
        req("a", 1, 2, 2, 0.05),
        req("b", 1, 2, 2, 0.3),
    ];
    let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [2, 2, 2]);
    assert!(g
        .iter()
        .all(|g| g.limited_by.is_none() && g.gpus_allocated == 2));
}

/// 4 GPUs, the same three: the two most saturated get theirs, the third is limited.
#[test]
fn the_most_saturated_go_first() {
    let inv = inventory(&[("H100", 8, 4)]);
    let rs = [
        req("c", 1, 2, 2, 0.5),
        req("a", 1, 2, 2, 0.05),
        req("b", 1, 2, 2, 0.3),
    ];
    let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [1, 2, 2]);
    assert_eq!(g[0].limited_by.as_deref(), Some(GPU_LIMITER));
    assert!(
        g[0].steps[0].contains("limited by gpu-limiter: 0 of 2 H100 GPUs free"),
        "{:?}",
        g[0].steps
    );
}

/// 3 GPUs, current 1 → target 3 at 2 GPUs: target 2, 2 GPUs allocated, limited. Max 3 caps 10; with
/// no GPU, min 3 lifts the target (still limited).
#[test]
fn partial_grants_bounds_and_minimum() {
    let inv = inventory(&[("H100", 3, 0)]);
    let g = limit(
        &[req("a", 1, 3, 2, 0.0)],
        Some(&inv),
        &[Limiter::GpuInventory],
    )
    .unwrap();
    assert_eq!((g[0].target, g[0].gpus_allocated), (2, 2));
    assert_eq!(g[0].limited_by.as_deref(), Some(GPU_LIMITER));
    let inv = inventory(&[("H100", 100, 0)]);
    let capped = Request {
        max_replicas: Some(3),
        ..req("a", 1, 10, 1, 0.0)
    };
    let g = limit(&[capped], Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!((g[0].target, &g[0].limited_by), (3, &None));
    let none = inventory(&[("H100", 0, 0)]);
    let floor = Request {
        min_replicas: Some(3),
        ..req("a", 1, 5, 1, 0.0)
    };
    let g = limit(&[floor], Some(&none), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(g[0].target, 3);
    assert_eq!(g[0].limited_by.as_deref(), Some(GPU_LIMITER));
}

/// An unresolved variant runs on the only type; with two types it gets nothing. A type the nodes do
/// not have gets nothing. Without the nodes' inventory the limiter does not run.
#[test]
fn unresolved_and_unknown_types() {
    let one = inventory(&[("NVIDIA-L40S-48GB", 4, 0)]);
    let unresolved = Request {
        accelerator: "unresolved".into(),
        ..req("a", 1, 2, 2, 0.0)
    };
    let g = limit(
        std::slice::from_ref(&unresolved),
        Some(&one),
        &[Limiter::GpuInventory],
    )
    .unwrap();
    assert_eq!(g[0].target, 2);
    let two = inventory(&[("L40S", 4, 0), ("H100", 8, 0)]);
    let g = limit(
        std::slice::from_ref(&unresolved),
        Some(&two),
        &[Limiter::GpuInventory],
    )
    .unwrap();
    assert_eq!(
        (g[0].target, g[0].limited_by.as_deref()),
        (1, Some(GPU_LIMITER))
    );
    let g = limit(
        &[req("a", 1, 2, 1, 0.0)],
        Some(&one),
        &[Limiter::GpuInventory],
    )
    .unwrap();
    assert_eq!(g[0].target, 1);
    assert!(matches!(
        limit(&[req("a", 1, 2, 1, 0.0)], None, &[Limiter::GpuInventory]),
        Err(LimitError::NoInventory(_))
    ));
    // Scale-downs and holds pass untouched.
    let g = limit(
        &[req("a", 3, 1, 1, 0.9)],
        Some(&one),
        &[Limiter::GpuInventory],
    )
    .unwrap();
    assert_eq!((g[0].target, g[0].steps.len()), (1, 0));
}

/// Two variants of one model: the cheap H100 one wants +1 and no H100 is free, so the +1 goes to the
/// L40S variant, which has room; a third variant at its maximum takes nothing, and another model's
/// variant is not offered the GPUs.
#[test]
fn a_cut_scale_up_moves_to_a_variant_with_room() {
    let inv = inventory(&[("H100", 8, 8), ("L40S", 4, 1)]);
    let variant =
        |name: &str, model: &str, accel: &str, target: i64, max: i64, cost: f64| Request {
            model: model.into(),
            accelerator: accel.into(),
            max_replicas: Some(max),
            cost,
            ..req(name, 1, target, 1, 0.1)
        };
    let rs = [
        variant("h100", "m", "H100", 2, 4, 5.0),
        variant("l40s", "m", "NVIDIA-L40S-48GB", 1, 4, 20.0),
        variant("a100-full", "m", "L40S", 1, 1, 1.0),
        variant("other-model", "x", "L40S", 1, 4, 1.0),
    ];
    let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [1, 2, 1, 1]);
    assert_eq!(g[0].limited_by.as_deref(), Some(GPU_LIMITER));
    assert!(
        g[0].steps.iter().any(|s| s == "+1 moved to l40s"),
        "{:?}",
        g[0].steps
    );
    assert!(
        g[1].steps[0].starts_with("+1 moved here from h100"),
        "{:?}",
        g[1].steps
    );
    assert_eq!(g[1].gpus_allocated, 1);
    // No room anywhere: the cut stays.
    let full = inventory(&[("H100", 8, 8), ("L40S", 4, 4)]);
    let g = limit(&rs, Some(&full), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [1, 1, 1, 1]);
}

/// A variant whose pods the scheduler cannot place gives its +1 to a variant of its model that can
/// run it; with nowhere else to go, the +1 stays (a node may yet be added for it). Unschedulable
/// variants take nothing moved.
#[test]
fn unschedulable_variants_pass_their_scale_up_on() {
    let inv = inventory(&[("H100", 8, 0), ("L40S", 4, 0)]);
    let variant = |name: &str, accel: &str, target: i64, cost: f64, unschedulable: i64| Request {
        model: "m".into(),
        accelerator: accel.into(),
        max_replicas: Some(4),
        cost,
        unschedulable_pods: unschedulable,
        ..req(name, 1, target, 1, 0.1)
    };
    let rs = [
        variant("h100", "H100", 2, 5.0, 1),
        variant("l40s", "L40S", 1, 20.0, 0),
        variant("stuck", "L40S", 1, 1.0, 2),
    ];
    let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [1, 2, 1]);
    assert_eq!(g[0].limited_by.as_deref(), Some(UNSCHEDULABLE));
    assert!(
        g[0].steps
            .iter()
            .any(|s| s.contains("Pending as Unschedulable")),
        "{:?}",
        g[0].steps
    );
    assert!(
        g[1].steps[0].contains("the scheduler cannot place"),
        "{:?}",
        g[1].steps
    );
    // The L40S variant at its maximum: the +1 stays with h100.
    let full = [
        rs[0].clone(),
        Request {
            max_replicas: Some(1),
            ..rs[1].clone()
        },
    ];
    let g = limit(&full, Some(&inv), &[Limiter::GpuInventory]).unwrap();
    assert_eq!(targets(&g), [2, 1]);
    assert_eq!(g[0].limited_by, None);
}

fn quota(name: &str, scope: QuotaScope, caps: &[(&str, i64)]) -> Quota {
    let caps: BTreeMap<String, i64> = caps.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    Quota {
        name: name.into(),
        scope,
        quotas: if scope == QuotaScope::Cluster {
            caps.clone()
        } else {
            BTreeMap::new()
        },
        namespace_quotas: if scope == QuotaScope::Namespace {
            BTreeMap::from([("ns".to_string(), caps)])
        } else {
            BTreeMap::new()
        },
        exclude: BTreeSet::new(),
    }
}

/// H100 cap 6, current 2 × 2 GPUs, target 5: 3, limited by the quota; the same per namespace; under a
/// cluster quota of 100 and a namespace quota of 6, the namespace's is the one that cuts; a minimum of 5
/// wins over the quota and the decision is still limited.
#[test]
fn quotas_cap_a_type_for_the_cluster_or_a_namespace() {
    let r = req("a", 2, 5, 2, 0.0);
    let cluster = Limiter::Quota(quota("cluster-quota", QuotaScope::Cluster, &[("H100", 6)]));
    let g = limit(
        std::slice::from_ref(&r),
        None,
        std::slice::from_ref(&cluster),
    )
    .unwrap();
    assert_eq!(
        (g[0].target, g[0].limited_by.as_deref()),
        (3, Some("cluster-quota"))
    );
    let ns = Limiter::Quota(quota(
        "namespace-quota",
        QuotaScope::Namespace,
        &[("H100", 6)],
    ));
    let g = limit(std::slice::from_ref(&r), None, std::slice::from_ref(&ns)).unwrap();
    assert_eq!(
        (g[0].target, g[0].limited_by.as_deref()),
        (3, Some("namespace-quota"))
    );
    let wide = Limiter::Quota(quota(
        "cluster-quota",
        QuotaScope::Cluster,
        &[("H100", 100)],
    ));
    let both = [wide, ns.clone()];
    let g = limit(std::slice::from_ref(&r), None, &both).unwrap();
    assert_eq!(
        (g[0].target, g[0].limited_by.as_deref()),
        (3, Some("namespace-quota"))
    );
    assert_eq!(g[0].steps.len(), 2);
    let floor = Request {
        min_replicas: Some(5),
        ..r.clone()
    };
    let g = limit(&[floor], None, &both).unwrap();
    assert_eq!(
        (g[0].target, g[0].limited_by.as_deref()),
        (5, Some("namespace-quota"))
    );
    // -1 is unlimited; a type the quota does not list is denied; an unresolved type is denied.
    let open = Limiter::Quota(quota("q", QuotaScope::Cluster, &[("H100", -1)]));
    assert_eq!(
        limit(std::slice::from_ref(&r), None, &[open]).unwrap()[0].target,
        5
    );
    let other = Limiter::Quota(quota("q", QuotaScope::Cluster, &[("A100", 100)]));
    assert_eq!(
        limit(std::slice::from_ref(&r), None, std::slice::from_ref(&other)).unwrap()[0].target,
        2
    );
    let unresolved = Request {
        accelerator: String::new(),
        ..r.clone()
    };
    assert_eq!(limit(&[unresolved], None, &[other]).unwrap()[0].target, 2);
}

/// A namespace not listed gets its own copy of `default`; an excluded one is not limited; listed
/// namespaces are closed lists; with neither, nothing.
#[test]
fn namespace_quotas_default_and_exclusions() {
    let mut q = quota("nq", QuotaScope::Namespace, &[("H100", 4)]);
    q.namespace_quotas.insert(
        DEFAULT_NAMESPACE_QUOTA.into(),
        BTreeMap::from([("H100".to_string(), 2)]),
    );
    q.exclude.insert("free".into());
    let in_ns = |ns: &str, accel: &str| Request {
        namespace: ns.into(),
        accelerator: accel.into(),
        ..req(ns, 0, 4, 1, 0.0)
    };
    let rs = [
        in_ns("ns", "H100"),
        in_ns("team-a", "H100"),
        in_ns("team-b", "H100"),
        in_ns("free", "H100"),
        in_ns("ns", "A100"),
    ];
    let g = limit(&rs, None, &[Limiter::Quota(q.clone())]).unwrap();
    assert_eq!(targets(&g), [4, 2, 2, 4, 0]);
    q.namespace_quotas.remove(DEFAULT_NAMESPACE_QUOTA);
    let g = limit(&rs, None, &[Limiter::Quota(q)]).unwrap();
    assert_eq!(targets(&g), [4, 0, 0, 4, 0]);
}

fn arb_request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec!["H100", "L40S", "NVIDIA-A100-PCIE-80GB", "unknown"]),
        prop::sample::select(vec!["ns1", "ns2"]),
        0i64..5,
        0i64..8,
        1i64..4,
        prop::option::of(0i64..3),
        prop::option::of(1i64..8),
        0.0f64..1.0,
        "[a-z]{1,3}",
    )
        .prop_map(
            |(accel, ns, current, target, gpr, min, max, spare, name)| Request {
                namespace: ns.into(),
                model: name.clone(),
                variant: name,
                accelerator: accel.into(),
                current,
                target,
                gpus_per_replica: gpr,
                min_replicas: min,
                max_replicas: max.map(|m| m.max(min.unwrap_or(0)).max(1)),
                spare_capacity: spare,
                cost: 10.0,
                unschedulable_pods: 0,
            },
        )
}

proptest! {
    /// No type is given more GPUs than it has free; no scale-up goes below where the variant was; any
    /// other decision stays, or takes replicas moved from a limited variant of its model; nothing goes
    /// past its maximum.
    #[test]
    fn grants_fit_the_free_gpus(
        rs in prop::collection::vec(arb_request(), 0..12),
        free in prop::collection::vec(0i64..16, 3),
    ) {
        let inv = inventory(&[("H100", free[0], 0), ("L40S", free[1], 0), ("A100", free[2], 0)]);
        let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
        let mut given: BTreeMap<String, i64> = BTreeMap::new();
        for (r, g) in rs.iter().zip(&g) {
            *given.entry(normalize_accelerator(&r.accelerator)).or_default() += g.gpus_allocated;
            if r.target > r.current {
                prop_assert!(g.target >= r.current);
            } else {
                prop_assert!(g.target >= r.target);
                prop_assert!(g.target == r.target || g.steps.iter().any(|s| s.contains("moved here")), "{:?}", g);
            }
            if let Some(max) = r.max_replicas {
                prop_assert!(g.target <= max.max(r.target), "{:?} {:?}", r, g);
            }
        }
        for (t, n) in given {
            let free = inv.types.get(&t).map_or(0, TypeGpus::free);
            prop_assert!(n <= free, "{} given {} of {} free", t, n, free);
        }
    }

    /// One type, no quota, enough GPUs: the limiter changes nothing but the cap at the maximum.
    #[test]
    fn enough_gpus_change_nothing(rs in prop::collection::vec(arb_request(), 0..12)) {
        let rs: Vec<Request> = rs.into_iter().map(|r| Request { accelerator: "H100".into(), ..r }).collect();
        let inv = inventory(&[("H100", 1_000, 0)]);
        let g = limit(&rs, Some(&inv), &[Limiter::GpuInventory]).unwrap();
        for (r, g) in rs.iter().zip(&g) {
            let want = if r.target > r.current {
                let capped = r.max_replicas.map_or(r.target, |m| r.target.min(m)).max(r.current);
                if capped > r.current { capped.max(r.min_replicas.unwrap_or(0)) } else { capped }
            } else {
                r.target
            };
            prop_assert!(g.limited_by.is_none());
            prop_assert_eq!(g.target, want, "{:?}", r);
        }
    }
}

/// GreedyByScore against WVA v0.9's `greedy_score_optimizer_test.go`, and its invariants.
mod score {
    use super::*;
    use crate::saturation::v2::{CapacitySource, VariantCapacity};
    use crate::saturation::Role;

    /// A variant of model `model`: `(name, accelerator, cost, capacity per replica, GPUs per replica)`,
    /// at `current` replicas.
    pub(super) struct V<'a> {
        pub(super) name: &'a str,
        pub(super) accel: &'a str,
        pub(super) cost: f64,
        pub(super) prc: f64,
        pub(super) gpr: i64,
        pub(super) current: i64,
        pub(super) max: Option<i64>,
    }

    pub(super) fn v<'a>(name: &'a str, accel: &'a str, cost: f64, prc: f64, gpr: i64) -> V<'a> {
        V {
            name,
            accel,
            cost,
            prc,
            gpr,
            current: 1,
            max: None,
        }
    }

    pub(super) fn capacity(v: &V<'_>, role: Role) -> VariantCapacity<'static> {
        VariantCapacity {
            name: v.name.to_string().into(),
            role,
            accelerator: v.accel.to_string().into(),
            cost: v.cost,
            replicas: v.current,
            pending: 0,
            per_replica_capacity: v.prc,
            instances_per_replica: 1,
            total_capacity: v.prc * v.current as f64,
            demand: 0.0,
            utilization: 0.0,
            source: CapacitySource::Observed,
            kv_tokens_used: 0,
            kv_tokens_capacity: 0,
            replica_capacities: vec![],
        }
    }

    /// Adds a model (namespace `ns`, priority, required tokens) and its variants; each request's
    /// unlimited target is `unlimited` (the caller's expectation without GPUs limits).
    fn add(
        requests: &mut Vec<Request>,
        models: &mut Vec<ScoreModel>,
        (ns, model, priority, required): (&str, &str, f64, f64),
        variants: &[V<'_>],
    ) {
        let mut m = ScoreModel {
            priority,
            score: 1.0,
            required: vec![(Role::Both, required)],
            demand: vec![(Role::Both, required)],
            capacities: vec![],
            requests: vec![],
        };
        for v in variants {
            m.requests.push(requests.len());
            m.capacities.push(capacity(v, Role::Both));
            requests.push(Request {
                namespace: ns.into(),
                model: model.into(),
                variant: v.name.into(),
                accelerator: v.accel.into(),
                current: v.current,
                target: v.current + 100,
                gpus_per_replica: v.gpr,
                min_replicas: None,
                max_replicas: v.max,
                spare_capacity: 0.0,
                cost: v.cost,
                unschedulable_pods: 0,
            });
        }
        models.push(m);
    }

    fn run(requests: &[Request], models: &[ScoreModel], inv: &Inventory) -> Vec<i64> {
        targets(
            &limit_by_score(
                requests,
                models,
                Some(inv),
                &[Limiter::GpuInventory],
                &RescaleFlags::default(),
            )
            .unwrap(),
        )
    }

    /// RC 20000; cheap A100 (cost 5, 10000 per replica, 2 GPUs) against H100 (15, 20000, 4 GPUs);
    /// 10 A100 free: the cheap variant 1 → 3. With 4 A100 free and RC 50000: +2 only.
    #[test]
    fn one_model_takes_its_cheapest_variant_with_gpus() {
        let variants = [
            v("cheap", "A100", 5.0, 10_000.0, 2),
            v("fast", "H100", 15.0, 20_000.0, 4),
        ];
        let (mut rs, mut ms) = (vec![], vec![]);
        add(&mut rs, &mut ms, ("ns", "m", 1.0, 20_000.0), &variants);
        assert_eq!(run(&rs, &ms, &inventory(&[("A100", 10, 0)])), [3, 1]);
        let (mut rs, mut ms) = (vec![], vec![]);
        add(&mut rs, &mut ms, ("ns", "m", 1.0, 50_000.0), &variants);
        let g = limit_by_score(
            &rs,
            &ms,
            Some(&inventory(&[("A100", 4, 0)])),
            &[Limiter::GpuInventory],
            &RescaleFlags::default(),
        )
        .unwrap();
        assert_eq!(targets(&g), [3, 1]);
        assert_eq!(g[0].gpus_allocated, 4);
        assert_eq!(g[1].limited_by.as_deref(), Some(GPU_LIMITER), "{g:?}");
        // The H100s free: the rest of the need goes to the dearer variant.
        assert_eq!(
            run(&rs, &ms, &inventory(&[("A100", 4, 0), ("H100", 8, 0)])),
            [3, 3]
        );
    }

    /// Models A (RC 50000) and B (10000), 15000 per replica at 2 GPUs, 8 A100: A 4, B 2. Three models
    /// (50000, 30000, 10000) and 12 A100: 4, 3, 2.
    #[test]
    fn models_share_by_fair_share_value() {
        let (mut rs, mut ms) = (vec![], vec![]);
        add(
            &mut rs,
            &mut ms,
            ("ns", "a", 1.0, 50_000.0),
            &[v("a", "A100", 10.0, 15_000.0, 2)],
        );
        add(
            &mut rs,
            &mut ms,
            ("ns", "b", 1.0, 10_000.0),
            &[v("b", "A100", 10.0, 15_000.0, 2)],
        );
        assert_eq!(run(&rs, &ms, &inventory(&[("A100", 8, 0)])), [4, 2]);
        add(
            &mut rs,
            &mut ms,
            ("ns", "c", 1.0, 30_000.0),
            &[v("c", "A100", 10.0, 15_000.0, 2)],
        );
        // Order of the input does not matter: A, B, C with 50000, 10000, 30000.
        let g = limit_by_score(
            &rs,
            &ms,
            Some(&inventory(&[("A100", 12, 0)])),
            &[Limiter::GpuInventory],
            &RescaleFlags::default(),
        )
        .unwrap();
        assert_eq!(targets(&g), [4, 2, 3]);
        assert_eq!(g[1].limited_by.as_deref(), Some(GPU_LIMITER));
    }

    /// Two models with the same need: priority 3 against 1 decides who gets the scarce GPUs.
    #[test]
    fn priority_weighs_the_share() {
        let (mut rs, mut ms) = (vec![], vec![]);
        add(
            &mut rs,
            &mut ms,
            ("ns", "low", 1.0, 45_000.0),
            &[v("low", "A100", 10.0, 15_000.0, 2)],
        );
        add(
            &mut rs,
            &mut ms,
            ("ns", "high", 3.0, 45_000.0),
            &[v("high", "A100", 10.0, 15_000.0, 2)],
        );
        // Two replicas' worth: both go to priority 3, which stays further from its share (3 × 30000
        // tokens still needed after the first, against 45000).
        let g = limit_by_score(
            &rs,
            &ms,
            Some(&inventory(&[("A100", 4, 0)])),
            &[Limiter::GpuInventory],
            &RescaleFlags::default(),
        )
        .unwrap();
        assert_eq!(targets(&g), [1, 3]);
        assert_eq!(g[0].limited_by.as_deref(), Some(GPU_LIMITER));
        // Three: once priority 3 is down to 15000 tokens (45000 weighted), priority 1 gets one.
        assert_eq!(run(&rs, &ms, &inventory(&[("A100", 6, 0)])), [2, 3]);
        // Equal priorities share them.
        ms[1].priority = 1.0;
        let t = run(&rs, &ms, &inventory(&[("A100", 6, 0)]));
        assert_eq!(t.iter().sum::<i64>(), 5, "{t:?}");
        assert!(t.iter().all(|n| *n >= 2), "{t:?}");
    }

    /// Namespace pool team-a: A100 limit 4, 2 used; the cluster has 100: RC 50000 ⇒ 1 → 2. A type the
    /// namespace does not list is not scaled up.
    #[test]
    fn namespace_pools_bound_their_models() {
        let q = |caps: &[(&str, i64)]| {
            let mut q = quota("team-quota", QuotaScope::Namespace, caps);
            q.namespace_quotas = BTreeMap::from([(
                "team-a".to_string(),
                q.namespace_quotas.remove("ns").unwrap_or_default(),
            )]);
            Limiter::Quota(q)
        };
        let (mut rs, mut ms) = (vec![], vec![]);
        add(
            &mut rs,
            &mut ms,
            ("team-a", "m", 1.0, 50_000.0),
            &[v("m", "A100", 10.0, 15_000.0, 2)],
        );
        let inv = inventory(&[("A100", 100, 0), ("H100", 100, 0)]);
        let limiters = [Limiter::GpuInventory, q(&[("A100", 4)])];
        let g = limit_by_score(&rs, &ms, Some(&inv), &limiters, &RescaleFlags::default()).unwrap();
        assert_eq!(
            (g[0].target, g[0].limited_by.as_deref()),
            (2, Some("team-quota"))
        );
        let limiters = [Limiter::GpuInventory, q(&[("H100", 4)])];
        let g = limit_by_score(&rs, &ms, Some(&inv), &limiters, &RescaleFlags::default()).unwrap();
        assert_eq!(g[0].target, 1);
    }

    /// Requests outside the models with work keep their unlimited target (scale-downs included).
    #[test]
    fn models_without_work_pass_unchanged() {
        let (mut rs, mut ms) = (vec![], vec![]);
        add(
            &mut rs,
            &mut ms,
            ("ns", "a", 1.0, 50_000.0),
            &[v("a", "A100", 10.0, 15_000.0, 2)],
        );
        rs.push(req("down", 3, 1, 2, 0.0));
        assert_eq!(run(&rs, &ms, &inventory(&[("A100", 2, 0)])), [2, 1]);
    }

    /// A model's variant: accelerator, cost, capacity per replica, GPUs per replica, current, max.
    type ArbVariant = (String, f64, f64, i64, i64, Option<i64>);
    /// A model: namespace, priority, required tokens, variants.
    type Arb = (String, f64, f64, Vec<ArbVariant>);

    fn arb_model() -> impl Strategy<Value = Arb> {
        (
            prop::sample::select(vec!["ns1", "ns2"]),
            prop::sample::select(vec![1.0, 2.0, 0.5]),
            0.0f64..100_000.0,
            prop::collection::vec(
                (
                    prop::sample::select(vec!["H100", "L40S", "A100"]),
                    1.0f64..20.0,
                    1_000.0f64..30_000.0,
                    1i64..4,
                    1i64..4,
                    prop::option::of(1i64..8),
                ),
                1..4,
            ),
        )
            .prop_map(|(ns, priority, required, vs)| {
                let vs = vs
                    .into_iter()
                    .map(|(a, cost, prc, gpr, cur, max)| {
                        (a.to_string(), cost, prc, gpr, cur, max.map(|m| m.max(cur)))
                    })
                    .collect();
                (ns.to_string(), priority, required, vs)
            })
    }

    fn build(arb: &[Arb]) -> (Vec<Request>, Vec<ScoreModel>, Vec<Vec<String>>) {
        let (mut rs, mut ms, mut names) = (vec![], vec![], vec![]);
        for (m, (ns, priority, required, vs)) in arb.iter().enumerate() {
            let names_m: Vec<String> = (0..vs.len()).map(|i| format!("m{m}v{i}")).collect();
            let variants: Vec<V<'_>> = vs
                .iter()
                .zip(&names_m)
                .map(|((a, cost, prc, gpr, cur, max), name)| V {
                    name,
                    accel: a,
                    cost: *cost,
                    prc: *prc,
                    gpr: *gpr,
                    current: *cur,
                    max: *max,
                })
                .collect();
            add(
                &mut rs,
                &mut ms,
                (ns, &format!("m{m}"), *priority, *required),
                &variants,
            );
            names.push(names_m);
        }
        (rs, ms, names)
    }

    proptest! {
        /// No type is given more GPUs than it has free, no variant goes below its current replicas or
        /// past its maximum.
        #[test]
        fn shares_fit_the_free_gpus(
            arb in prop::collection::vec(arb_model(), 1..5),
            free in prop::collection::vec(0i64..16, 3),
        ) {
            let (rs, ms, _) = build(&arb);
            let inv = inventory(&[("H100", free[0], 0), ("L40S", free[1], 0), ("A100", free[2], 0)]);
            let g = limit_by_score(&rs, &ms, Some(&inv), &[Limiter::GpuInventory], &RescaleFlags::default()).unwrap();
            let mut given: BTreeMap<String, i64> = BTreeMap::new();
            for (r, g) in rs.iter().zip(&g) {
                prop_assert!(g.target >= r.current);
                prop_assert_eq!(g.gpus_allocated, (g.target - r.current) * r.gpus_per_replica);
                if let Some(max) = r.max_replicas {
                    prop_assert!(g.target <= max);
                }
                *given.entry(r.accelerator.clone()).or_default() += g.gpus_allocated;
            }
            for (t, n) in given {
                let free = inv.types.get(&t).map_or(0, TypeGpus::free);
                prop_assert!(n <= free, "{} given {} of {} free", t, n, free);
            }
        }

        /// Enough GPUs: every model gets what the unlimited cost-aware optimizer gives it.
        #[test]
        fn enough_gpus_match_the_unlimited_optimizer(arb in prop::collection::vec(arb_model(), 1..5)) {
            let (rs, ms, _) = build(&arb);
            let inv = inventory(&[("H100", 100_000, 0), ("L40S", 100_000, 0), ("A100", 100_000, 0)]);
            let g = limit_by_score(&rs, &ms, Some(&inv), &[Limiter::GpuInventory], &RescaleFlags::default()).unwrap();
            for m in &ms {
                let analysis = crate::saturation::v2::CapacityAnalysis {
                    thresholds: Default::default(),
                    variants: m.capacities.clone(),
                    model: crate::saturation::v2::Totals { required_capacity: m.required[0].1, ..Default::default() },
                    roles: BTreeMap::new(),
                    scheduler_demand: 0.0,
                    learned: Default::default(),
                };
                let states: Vec<crate::saturation::v2::VariantIn> = m.requests.iter().map(|r| {
                    let r = &rs[*r];
                    crate::saturation::v2::VariantIn {
                        name: r.variant.as_str().into(),
                        cost: r.cost,
                        accelerator: r.accelerator.as_str().into(),
                        role: Role::Both,
                        current: r.current,
                        ready: r.current,
                        gpus_per_replica: r.gpus_per_replica,
                        min_replicas: None,
                        max_replicas: r.max_replicas,
                        params: None,
                        rows: vec![],
                    }
                }).collect();
                let unlimited = crate::saturation::v2::optimize(&states, &analysis);
                let got: Vec<i64> = m.requests.iter().map(|r| g[*r].target).collect();
                prop_assert_eq!(got, unlimited);
            }
        }
    }
}

/// Rescale against WVA v0.9's `rescale_test.go`, and through the optimizer.
mod rescale {
    use super::*;
    use crate::saturation::Role;

    fn input(priority: f64, demand: i64, floor: i64, cap: i64) -> RescaleInput {
        RescaleInput {
            priority,
            demand,
            floor,
            cap,
        }
    }

    #[test]
    fn budgets_split_by_priority_and_demand() {
        for (inputs, budget, want, conflict) in [
            // A (priority 1, demand 8), B (3, 8), caps 8, budget 8: 2 and 6.
            (
                vec![input(1.0, 8, 0, 8), input(3.0, 8, 0, 8)],
                8,
                vec![2, 6],
                false,
            ),
            // B needs 4 (cap 4): it keeps 4, A takes the rest.
            (
                vec![input(1.0, 8, 0, 8), input(3.0, 4, 0, 4)],
                8,
                vec![4, 4],
                false,
            ),
            // A's floor 2, budget 6, equal weights: 2 + 2 and 2.
            (
                vec![input(1.0, 8, 2, 8), input(1.0, 8, 0, 8)],
                6,
                vec![4, 2],
                false,
            ),
            // Equal weights, budget 7: the odd GPU to the first.
            (
                vec![input(1.0, 8, 0, 8), input(1.0, 8, 0, 8)],
                7,
                vec![4, 3],
                false,
            ),
            // Idle (demand 0, floor 1) against busy: 1 and 5.
            (
                vec![input(1.0, 0, 1, 1), input(1.0, 8, 0, 8)],
                6,
                vec![1, 5],
                false,
            ),
            // Floors 4 + 3 over a budget of 6: the floors, and a conflict.
            (
                vec![input(1.0, 8, 4, 8), input(1.0, 8, 3, 8)],
                6,
                vec![4, 3],
                true,
            ),
        ] {
            assert_eq!(
                rescale_targets(&inputs, budget),
                (want, conflict),
                "{inputs:?} {budget}"
            );
        }
    }

    proptest! {
        /// Targets never pass a cap (unless a floor does), never fall below a floor, and never sum
        /// past the budget unless the floors do.
        #[test]
        fn targets_respect_floors_caps_and_budget(
            raw in prop::collection::vec((0.5f64..4.0, 0i64..20, 0i64..5, 0i64..20), 1..6),
            budget in 0i64..60,
        ) {
            let inputs: Vec<RescaleInput> = raw
                .into_iter()
                .map(|(p, d, f, c)| input(p, d, f, c.max(f)))
                .collect();
            let (t, conflict) = rescale_targets(&inputs, budget);
            let floors: i64 = inputs.iter().map(|i| i.floor).sum();
            prop_assert_eq!(conflict, floors > budget);
            for (i, t) in inputs.iter().zip(&t) {
                prop_assert!(*t >= i.floor && *t <= i.cap.max(i.floor));
            }
            prop_assert!(t.iter().sum::<i64>() <= budget.max(floors));
        }
    }

    /// One H100 type, no GPU free: "low" (priority 1) holds 6 GPUs, "high" (priority 3) holds 2 and
    /// both need 8. With rescale on, "low" gives back what is over its share; "high" grows once the
    /// GPUs are free (the next plan, when low's pods are gone). Off, nothing moves.
    #[test]
    fn rescale_moves_gpus_to_the_higher_priority() {
        let model = |name: &str, priority: f64, current: i64| {
            let r = Request {
                model: name.into(),
                current,
                target: current + 2,
                ..req(name, current, current + 2, 2, 0.0)
            };
            let m = ScoreModel {
                priority,
                score: 1.0,
                required: vec![(Role::Both, 30_000.0)],
                demand: vec![(Role::Both, 60_000.0)],
                capacities: vec![super::score::capacity(
                    &super::score::V {
                        current,
                        ..super::score::v(name, "H100", 10.0, 15_000.0, 2)
                    },
                    Role::Both,
                )],
                requests: vec![],
            };
            (r, m)
        };
        let (rl, mut ml) = model("low", 1.0, 3);
        let (rh, mut mh) = model("high", 3.0, 1);
        ml.requests = vec![0];
        mh.requests = vec![1];
        let rs = [rl, rh];
        let ms = [ml, mh];
        let run = |free: i64, flags: &RescaleFlags| {
            let inv = inventory(&[("H100", 8 + free, 8)]);
            limit_by_score(&rs, &ms, Some(&inv), &[Limiter::GpuInventory], flags).unwrap()
        };
        let on = RescaleFlags {
            cluster: true,
            namespaces: BTreeSet::new(),
        };
        // Off: no GPU free, nobody grows, nobody shrinks.
        assert_eq!(targets(&run(0, &RescaleFlags::default())), [3, 1]);
        // On: 8 GPUs, demand 8 each: low's share 2 (1 replica), high's 6. Low gives back 2 replicas;
        // high cannot grow yet.
        let g = run(0, &on);
        assert_eq!(targets(&g), [1, 1]);
        assert_eq!(g[0].limited_by.as_deref(), Some(RESCALE));
        assert!(
            g[0].steps
                .iter()
                .any(|s| s.contains("rescale: 2 of the 8 H100 GPUs")),
            "{g:?}"
        );
        // Once low's 4 GPUs are free (low at 1 replica): high takes them.
        let rs2 = [
            Request {
                current: 1,
                target: 3,
                ..rs[0].clone()
            },
            rs[1].clone(),
        ];
        let inv = inventory(&[("H100", 8, 4)]);
        let g = limit_by_score(&rs2, &ms, Some(&inv), &[Limiter::GpuInventory], &on).unwrap();
        assert_eq!(targets(&g), [1, 3]);
    }
}
