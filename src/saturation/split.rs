//! The cost-aware split of an InferencePool's size across the variants of one model it serves: what
//! llm-d's KEDA + endpoint-picker path lacks (each Deployment scales on its own there).
//!
//! The pool's demand, in units of replica capacity, is what the guide's trigger would ask of the pool:
//! - a **per-replica** signal (the pool's flow-control saturation, a ratio its ready replicas share):
//!   `ready capacity × signal / threshold`, the HPA's own rule `ceil(ready × signal / threshold)`
//!   when every replica is alike;
//! - a **total** signal (running requests, queued requests: counts over the pool): `signal / threshold`
//!   replicas of the ready replicas' mean capacity, the HPA's `AverageValue` rule `ceil(signal /
//!   threshold)`. Multiplying a total by the replicas would count the load once per replica.
//!
//! Then, from every variant's current replicas (clamped to its bounds):
//! - demand above what every replica gives, pending ones included: replicas are added to the variant
//!   with the lowest cost per unit of capacity that has room (below its maximum and, under the GPU
//!   limiter, GPUs of its type free), then the next;
//! - demand between the ready replicas' capacity and every replica's: nothing changes. Pending replicas
//!   count as supply (the overshoot guard: a slow cold start is not answered twice), and are not
//!   removed while the ready ones are short;
//! - demand below the ready replicas' capacity: replicas are removed from the most expensive per unit of
//!   capacity while what is left still covers the demand, never below a variant's minimum.
//!
//! With no replica anywhere, a signal above the activation threshold asks for one replica (on the
//! cheapest variant with room): a per-replica signal of a pool without replicas cannot say more.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// How a signal relates to the pool's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A ratio the pool's ready replicas share (pool saturation).
    PerReplica,
    /// A count over the whole pool (running or queued requests).
    Total,
}

/// One variant of the model in the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitVariant {
    pub name: String,
    /// Cost of one replica.
    pub cost: f64,
    /// Capacity of one replica, in a unit common to the pool's variants (> 0; 1 when every replica is
    /// taken to be alike).
    pub capacity: f64,
    /// `spec.replicas` of its scale target.
    pub current: i64,
    pub ready: i64,
    pub min: i64,
    pub max: Option<i64>,
    /// Its accelerator type, normalised, and GPUs per replica: what the GPU limiter charges an
    /// added replica.
    pub accelerator: String,
    pub gpus: i64,
}

/// What the split found.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The pool's demand, in replica capacity.
    pub demand: f64,
    /// What the ready replicas give, and every replica (pending ones included).
    pub ready_supply: f64,
    pub supply: f64,
    /// Each variant's target, in the order given.
    pub targets: Vec<i64>,
    /// Demand no variant had room for (maxima, or GPUs under the limiter).
    pub unplaced: f64,
}

/// Figures closer than this are equal (a signal of 0.6 over a threshold of 0.3 is 1.9999999999999998).
const EPSILON: f64 = 1e-9;

fn per_unit(v: &SplitVariant) -> f64 {
    v.cost / v.capacity
}

/// Cheapest per unit of capacity first, then by name.
fn cheaper(a: &SplitVariant, b: &SplitVariant) -> Ordering {
    per_unit(a)
        .total_cmp(&per_unit(b))
        .then_with(|| a.name.cmp(&b.name))
}

/// What the ready replicas give, in replica capacity.
fn ready_supply(variants: &[SplitVariant]) -> f64 {
    variants
        .iter()
        .map(|v| v.ready.max(0) as f64 * v.capacity)
        .sum()
}

/// The pool's demand in replica capacity, given what its ready replicas give.
fn demand(variants: &[SplitVariant], ready_supply: f64, shape: Shape, ratio: f64) -> f64 {
    let ready: i64 = variants.iter().map(|v| v.ready.max(0)).sum();
    match shape {
        Shape::PerReplica => ready_supply * ratio,
        Shape::Total => {
            let mean = if ready > 0 {
                ready_supply / ready as f64
            } else if variants.is_empty() {
                1.0
            } else {
                variants.iter().map(|v| v.capacity).sum::<f64>() / variants.len() as f64
            };
            ratio * mean
        }
    }
}

/// Splits the pool's size across `variants` (see the module doc). `free_gpus` is the GPU limiter's free
/// GPUs by type when it is on (a type it does not list has none); `None` when it is off.
pub fn split(
    variants: &[SplitVariant],
    shape: Shape,
    signal: f64,
    threshold: f64,
    activation: f64,
    free_gpus: Option<&BTreeMap<String, i64>>,
) -> Split {
    let ready_supply = ready_supply(variants);
    let mut demand = demand(variants, ready_supply, shape, signal / threshold);
    let mut targets: Vec<i64> = variants
        .iter()
        .map(|v| {
            let t = v.current.max(v.min).max(0);
            v.max.map_or(t, |m| t.min(m.max(v.min)))
        })
        .collect();
    let supply = |targets: &[i64]| -> f64 {
        variants
            .iter()
            .zip(targets)
            .map(|(v, t)| *t as f64 * v.capacity)
            .sum()
    };
    let mut have = supply(&targets);
    if have <= 0.0 && signal > activation {
        demand = demand.max(EPSILON * 2.0);
    }
    let mut unplaced = 0.0;
    let mut order: Vec<usize> = (0..variants.len()).collect();
    order.sort_by(|a, b| cheaper(&variants[*a], &variants[*b]));
    if demand > have + EPSILON {
        let mut free = free_gpus.cloned();
        for &i in &order {
            let need = demand - have;
            if need <= EPSILON {
                break;
            }
            let v = &variants[i];
            #[allow(clippy::cast_possible_truncation)]
            // Bounded by the room below, which is an i64.
            let wanted = ((need / v.capacity) - EPSILON).ceil().min(i64::MAX as f64) as i64;
            let mut room = v.max.map_or(i64::MAX, |m| (m - targets[i]).max(0));
            if let Some(free) = &free {
                let gpus = free.get(&v.accelerator).copied().unwrap_or(0);
                room = room.min(gpus / v.gpus.max(1));
            }
            let n = wanted.min(room).max(0);
            if n == 0 {
                continue;
            }
            targets[i] += n;
            have += n as f64 * v.capacity;
            if let Some(g) = free.as_mut().and_then(|f| f.get_mut(&v.accelerator)) {
                *g -= n * v.gpus.max(1);
            }
        }
        unplaced = (demand - have).max(0.0);
        if unplaced <= EPSILON {
            unplaced = 0.0;
        }
    } else if demand < ready_supply - EPSILON {
        for &i in order.iter().rev() {
            let v = &variants[i];
            #[allow(clippy::cast_possible_truncation)]
            // Bounded by the replicas above the minimum, which is an i64.
            let spare = (((have - demand) / v.capacity) + EPSILON)
                .floor()
                .min(i64::MAX as f64) as i64;
            let n = spare.min(targets[i] - v.min.max(0)).max(0);
            targets[i] -= n;
            have -= n as f64 * v.capacity;
        }
    }
    Split {
        demand,
        ready_supply,
        supply: supply(&targets),
        targets,
        unplaced,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn v(name: &str, cost: f64, current: i64, ready: i64) -> SplitVariant {
        SplitVariant {
            name: name.into(),
            cost,
            capacity: 1.0,
            current,
            ready,
            min: 0,
            max: None,
            accelerator: "A100".into(),
            gpus: 1,
        }
    }

    fn targets(variants: &[SplitVariant], shape: Shape, signal: f64, threshold: f64) -> Vec<i64> {
        split(variants, shape, signal, threshold, 0.0, None).targets
    }

    #[test]
    fn additions_go_to_the_cheapest_and_removals_come_from_the_dearest() {
        use Shape::*;
        let pool = || vec![v("dear", 40.0, 1, 1), v("cheap", 10.0, 1, 1)];
        for (what, shape, signal, threshold, want) in [
            // 2 ready × 0.6 / 0.4 = 3 replicas: the third on the cheaper variant.
            ("+1 on the cheaper", PerReplica, 0.6, 0.4, vec![1, 2]),
            // 2 × 1.2 / 0.3 = 8 (1.2 / 0.3 is 3.9999999999999996 in floats).
            ("many on the cheaper", PerReplica, 1.2, 0.3, vec![1, 7]),
            ("steady", PerReplica, 0.3, 0.3, vec![1, 1]),
            // 2 × 0.1 / 0.3 = 0.67: one replica is enough; the dearer goes.
            ("-1 from the dearer", PerReplica, 0.1, 0.3, vec![0, 1]),
            ("idle: none left", PerReplica, 0.0, 0.3, vec![0, 0]),
            // 40 running / 16 per replica = 2.5 → 3.
            ("total: a count", Total, 40.0, 16.0, vec![1, 2]),
            ("total: fewer", Total, 10.0, 16.0, vec![0, 1]),
        ] {
            assert_eq!(targets(&pool(), shape, signal, threshold), want, "{what}");
        }
    }

    /// README's worked example ("One pool, several variants").
    #[test]
    fn the_readmes_worked_example() {
        let pool = vec![v("chat-a100", 10.0, 2, 2), v("chat-h100", 40.0, 2, 1)];
        let s = split(&pool, Shape::PerReplica, 0.9, 0.5, 0.0, None);
        assert_eq!((s.targets, s.demand, s.supply), (vec![4, 2], 5.4, 6.0));
        let starting = vec![v("chat-a100", 10.0, 4, 2), v("chat-h100", 40.0, 2, 1)];
        assert_eq!(targets(&starting, Shape::PerReplica, 0.9, 0.5), vec![4, 2]);
        assert_eq!(targets(&pool, Shape::PerReplica, 0.3, 0.5), vec![2, 0]);
        let mut floor = pool.clone();
        floor[1].min = 1;
        assert_eq!(targets(&floor, Shape::PerReplica, 0.3, 0.5), vec![1, 1]);
    }

    #[test]
    fn capacity_and_cost_together_choose() {
        // H100 replicas give twice the capacity at 1.5× the cost: cheaper per unit of capacity.
        let mut h100 = v("h100", 15.0, 1, 1);
        h100.capacity = 2.0;
        let a100 = v("a100", 10.0, 1, 1);
        // Ready capacity 3 × 2.0 / 1.0 = 6 units: 3 more, two H100 replicas (4 units).
        let s = split(
            &[a100.clone(), h100.clone()],
            Shape::PerReplica,
            2.0,
            1.0,
            0.0,
            None,
        );
        assert_eq!((s.targets, s.demand, s.supply), (vec![1, 3], 6.0, 7.0));
        // Demand for 1 unit: the A100 replica (dearer per unit) goes first, the H100 one stays.
        let s = split(&[a100, h100], Shape::PerReplica, 1.0, 3.0, 0.0, None);
        assert_eq!(s.targets, vec![0, 1]);
    }

    #[test]
    fn pending_replicas_count_as_supply() {
        // 2 ready, 2 pending on the cheap variant: 2 × 0.9 / 0.5 = 3.6 → 4 ≤ 4 current: nothing added.
        let pool = vec![v("dear", 40.0, 1, 1), v("cheap", 10.0, 3, 1)];
        assert_eq!(targets(&pool, Shape::PerReplica, 0.9, 0.5), vec![1, 3]);
        // Demand 6: 2 more beyond the pending ones, not 4 more.
        assert_eq!(targets(&pool, Shape::PerReplica, 1.5, 0.5), vec![1, 5]);
        // Between ready and all: the pending ones are kept.
        assert_eq!(targets(&pool, Shape::PerReplica, 0.6, 0.5), vec![1, 3]);
        // Every replica pending (cold start): no ready capacity is no reason to remove them.
        let cold = vec![v("dear", 40.0, 0, 0), v("cheap", 10.0, 2, 0)];
        assert_eq!(targets(&cold, Shape::PerReplica, 1.0, 0.5), vec![0, 2]);
        // Below the ready capacity, pending replicas go first (they are counted with the rest).
        assert_eq!(targets(&pool, Shape::PerReplica, 0.2, 0.5), vec![0, 1]);
    }

    #[test]
    fn bounds_and_the_gpu_limiter_are_respected() {
        let mut cheap = v("cheap", 10.0, 1, 1);
        cheap.max = Some(2);
        let mut dear = v("dear", 40.0, 1, 1);
        dear.min = 1;
        dear.accelerator = "H100".into();
        // 2 × 2.0 / 0.5 = 8: the cheap one to its max, the rest on the dear one.
        let pool = vec![dear.clone(), cheap.clone()];
        assert_eq!(targets(&pool, Shape::PerReplica, 2.0, 0.5), vec![6, 2]);
        // Idle: the dear one keeps its minimum.
        assert_eq!(targets(&pool, Shape::PerReplica, 0.0, 0.5), vec![1, 0]);
        // Under the limiter, 2 H100 GPUs free and 2 per replica: one more there, the rest unplaced.
        dear.gpus = 2;
        let free = BTreeMap::from([("H100".to_string(), 2), ("A100".to_string(), 0)]);
        let s = split(
            &[dear, cheap],
            Shape::PerReplica,
            2.0,
            0.5,
            0.0,
            Some(&free),
        );
        assert_eq!((s.targets, s.unplaced), (vec![2, 1], 5.0));
        // Current replicas above the maximum are clamped.
        let mut over = v("over", 10.0, 5, 5);
        over.max = Some(3);
        assert_eq!(
            targets(&[over], Shape::PerReplica, 0.5, 0.5),
            vec![3],
            "clamped to max"
        );
    }

    #[test]
    fn from_zero_one_replica_on_the_cheapest() {
        let pool = vec![v("dear", 40.0, 0, 0), v("cheap", 10.0, 0, 0)];
        let s = split(&pool, Shape::PerReplica, 0.5, 0.7, 0.0, None);
        assert_eq!(s.targets, vec![0, 1]);
        // At or below the activation threshold nothing wakes.
        let s = split(&pool, Shape::PerReplica, 0.5, 0.7, 0.5, None);
        assert_eq!(s.targets, vec![0, 0]);
        // A count from zero asks for what it needs: 3 queued / 1 per replica.
        assert_eq!(targets(&pool, Shape::Total, 3.0, 1.0), vec![0, 3]);
    }

    proptest! {
        /// The split never leaves a bound, adds only where demand exceeds every replica's capacity, and
        /// removes only where it is below the ready ones'.
        #[test]
        fn targets_stay_in_bounds_and_move_the_right_way(
            rows in proptest::collection::vec((1.0f64..50.0, 0.5f64..4.0, 0i64..6, 0i64..6, 0i64..3, 0i64..8), 1..5),
            signal in 0.0f64..3.0,
            threshold in 0.1f64..2.0,
        ) {
            let variants: Vec<SplitVariant> = rows
                .iter()
                .enumerate()
                .map(|(i, (cost, capacity, current, ready, min, extra))| SplitVariant {
                    name: format!("v{i}"),
                    cost: *cost,
                    capacity: *capacity,
                    current: *current,
                    ready: (*ready).min(*current),
                    min: *min,
                    max: Some(min + extra),
                    accelerator: "A100".into(),
                    gpus: 1,
                })
                .collect();
            let s = split(&variants, Shape::PerReplica, signal, threshold, 0.0, None);
            let clamped: Vec<i64> = variants
                .iter()
                .map(|v| v.current.max(v.min).min(v.max.unwrap_or(i64::MAX)))
                .collect();
            for (v, t) in variants.iter().zip(&s.targets) {
                prop_assert!(*t >= v.min && *t <= v.max.unwrap_or(i64::MAX));
            }
            let before: f64 = variants.iter().zip(&clamped).map(|(v, t)| *t as f64 * v.capacity).sum();
            if s.targets.iter().zip(&clamped).any(|(t, c)| t > c) {
                prop_assert!(s.demand > before);
                prop_assert!(s.supply >= s.demand - 1e-6 || s.unplaced > 0.0);
            }
            if s.targets.iter().zip(&clamped).any(|(t, c)| t < c) {
                prop_assert!(s.demand < s.ready_supply);
                prop_assert!(s.supply >= s.demand - 1e-6);
            }
        }
    }
}
