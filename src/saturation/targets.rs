//! Step 5: one target per variant, stateless and driven by the Deployments (DESIGN §3.4).
//!
//! This is WVA v0.5's rule set, not v0.4.1's: the base is what is ready now, the whole model holds while
//! any variant is in transition (that is what stops v0.4.1's runaway scale-up, spec B3'/B7), the cheapest
//! variant gets +1, and the most expensive variant with more than one replica gets −1 when safe.

use serde::Serialize;

use super::Analysis;

/// What the cluster says about one variant, plus how many of its Ready pods have fresh samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantState {
    pub name: String,
    pub cost: f64,
    /// Deployment `spec.replicas`: what the HPA last applied.
    pub spec_replicas: i64,
    /// Deployment `status.readyReplicas`.
    pub ready_replicas: i64,
    /// Ready pods with fresh samples.
    pub seen_replicas: i64,
}

impl VariantState {
    pub(crate) fn in_transition(&self) -> bool {
        self.spec_replicas != self.ready_replicas || self.seen_replicas != self.ready_replicas
    }

    /// Whether a +1 for this variant would be acted on: it has replicas whose pods report metrics.
    pub(crate) fn can_take_scale_up(&self) -> bool {
        self.seen_replicas > 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetReason {
    /// A variant of the model is still moving; everyone answers its `spec.replicas`.
    HoldTransition,
    ScaleUp,
    ScaleDown,
    NoChange,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantTarget {
    pub name: String,
    pub target: i64,
    pub reason: TargetReason,
    pub message: String,
}

/// Computes the target of every variant of one model.
pub fn compute_targets(variants: &[VariantState], analysis: &Analysis) -> Vec<VariantTarget> {
    let moving: Vec<&VariantState> = variants.iter().filter(|v| v.in_transition()).collect();
    if !moving.is_empty() {
        let why = moving
            .iter()
            .map(|v| {
                format!(
                    "{} (spec {}, ready {}, with samples {})",
                    v.name, v.spec_replicas, v.ready_replicas, v.seen_replicas
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return variants
            .iter()
            .map(|v| VariantTarget {
                name: v.name.clone(),
                target: v.spec_replicas,
                reason: TargetReason::HoldTransition,
                message: format!("holding spec.replicas while the model is in transition: {why}"),
            })
            .collect();
    }

    let mut targets: Vec<VariantTarget> = variants
        .iter()
        .map(|v| VariantTarget {
            name: v.name.clone(),
            target: v.ready_replicas,
            reason: TargetReason::NoChange,
            message: if analysis.should_scale_up || analysis.scale_down_safe {
                "another variant of the model was chosen".to_string()
            } else {
                format!(
                    "no change: {}; scale-down unsafe: {}",
                    analysis.scale_up_reason, analysis.scale_down_reason
                )
            },
        })
        .collect();

    if analysis.should_scale_up {
        // WVA chooses among variants whose pods report metrics: a variant at 0 replicas has none, and
        // its HPA would not act on a +1 ("scaling is disabled" at 0), so the model would stay saturated.
        let cheapest = variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.can_take_scale_up())
            .min_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
        if let Some((i, v)) = cheapest {
            targets[i].target = v.ready_replicas + 1;
            targets[i].reason = TargetReason::ScaleUp;
            targets[i].message = format!(
                "scale up (cheapest variant with replicas, cost {}): {}",
                v.cost, analysis.scale_up_reason
            );
        } else {
            for t in &mut targets {
                t.message = format!(
                    "scale-up needed ({}) but no variant can take it: every variant is at 0 replicas",
                    analysis.scale_up_reason
                );
            }
        }
    } else if analysis.scale_down_safe {
        let most_expensive = variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.ready_replicas > 1)
            .max_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
        if let Some((i, v)) = most_expensive {
            targets[i].target = v.ready_replicas - 1;
            targets[i].reason = TargetReason::ScaleDown;
            targets[i].message = format!(
                "scale down (most expensive variant above 1 replica, cost {}): {}",
                v.cost, analysis.scale_down_reason
            );
        } else {
            for t in &mut targets {
                t.message = "scale-down safe but no variant has more than 1 replica".to_string();
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::{analyze, SaturationConfig};

    fn state(name: &str, cost: f64, seen: i64, spec: i64, ready: i64) -> VariantState {
        VariantState {
            name: name.into(),
            cost,
            spec_replicas: spec,
            ready_replicas: ready,
            seen_replicas: seen,
        }
    }

    fn flags(up: bool, safe: bool) -> Analysis {
        let mut a = analyze(&[], &SaturationConfig::default());
        a.should_scale_up = up;
        a.scale_down_safe = safe;
        a
    }

    fn by_name(t: &[VariantTarget]) -> Vec<(&str, i64)> {
        t.iter().map(|t| (t.name.as_str(), t.target)).collect()
    }

    /// Golden vectors B1, B2, B3', B4, B5, B6, B7 of spec `wva.md` §2.12 (v0.5 semantics). In the stateless
    /// model "current" is the Deployment's ready count and a previous "desired" that has not landed shows
    /// up as `spec.replicas` (what the HPA applied) differing from ready.
    #[test]
    fn golden_vectors_b() {
        type Case = (
            &'static str,
            Vec<VariantState>,
            Analysis,
            Vec<(&'static str, i64)>,
        );
        let cases: Vec<Case> = vec![
            (
                "B1",
                vec![
                    state("v1-expensive", 20.0, 2, 2, 2),
                    state("v2-cheap", 5.0, 2, 2, 2),
                    state("v3-medium", 15.0, 2, 2, 2),
                ],
                flags(true, false),
                vec![("v1-expensive", 2), ("v2-cheap", 3), ("v3-medium", 2)],
            ),
            (
                "B2",
                vec![
                    state("v1-expensive", 20.0, 2, 2, 2),
                    state("v2-cheap", 5.0, 2, 2, 2),
                    state("v3-medium", 15.0, 2, 2, 2),
                ],
                flags(false, true),
                vec![("v1-expensive", 1), ("v2-cheap", 2), ("v3-medium", 2)],
            ),
            (
                "B3'",
                vec![
                    state("v1-expensive", 20.0, 2, 4, 2),
                    state("v2-cheap", 5.0, 2, 2, 2),
                ],
                flags(true, false),
                vec![("v1-expensive", 4), ("v2-cheap", 2)],
            ),
            (
                "B4",
                vec![state("v1", 5.0, 2, 4, 2), state("v2", 10.0, 3, 5, 3)],
                flags(true, false),
                vec![("v1", 4), ("v2", 5)],
            ),
            (
                "B5",
                vec![
                    state("v-zebra", 10.0, 2, 2, 2),
                    state("v-alpha", 10.0, 2, 2, 2),
                    state("v-middle", 10.0, 2, 2, 2),
                ],
                flags(true, false),
                vec![("v-zebra", 2), ("v-alpha", 3), ("v-middle", 2)],
            ),
            (
                "B6",
                vec![state("v1", 20.0, 1, 1, 1), state("v2", 10.0, 2, 2, 2)],
                flags(false, true),
                vec![("v1", 1), ("v2", 1)],
            ),
            (
                "B7",
                vec![
                    state("v1-expensive", 20.0, 2, 3, 3),
                    state("v2-cheap", 5.0, 2, 2, 2),
                ],
                flags(true, false),
                vec![("v1-expensive", 3), ("v2-cheap", 2)],
            ),
        ];
        for (name, variants, analysis, want) in cases {
            assert_eq!(
                by_name(&compute_targets(&variants, &analysis)),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn scale_up_wins_over_scale_down() {
        let t = compute_targets(
            &[state("a", 1.0, 2, 2, 2), state("b", 2.0, 2, 2, 2)],
            &flags(true, true),
        );
        assert_eq!(by_name(&t), vec![("a", 3), ("b", 2)]);
        assert_eq!(t[0].reason, TargetReason::ScaleUp);
    }

    #[test]
    fn scale_down_tie_picks_the_alphabetically_largest_name() {
        let t = compute_targets(
            &[state("a", 5.0, 2, 2, 2), state("z", 5.0, 2, 2, 2)],
            &flags(false, true),
        );
        assert_eq!(by_name(&t), vec![("a", 2), ("z", 1)]);
    }

    #[test]
    fn one_replica_with_no_signal_stays() {
        let t = compute_targets(&[state("a", 5.0, 1, 1, 1)], &flags(false, false));
        assert_eq!(by_name(&t), vec![("a", 1)]);
        assert_eq!(t[0].reason, TargetReason::NoChange);
    }

    /// Issue repro (WVA parity): the cheapest variant sits at 0 replicas, so the +1 goes to the next
    /// one; WVA answers cheap 0, pricey 3.
    #[test]
    fn a_variant_at_zero_never_takes_the_scale_up() {
        let t = compute_targets(
            &[state("cheap", 5.0, 0, 0, 0), state("pricey", 20.0, 2, 2, 2)],
            &flags(true, false),
        );
        assert_eq!(by_name(&t), vec![("cheap", 0), ("pricey", 3)]);
        assert_eq!(t[1].reason, TargetReason::ScaleUp);
        let t = compute_targets(&[state("only", 5.0, 0, 0, 0)], &flags(true, false));
        assert_eq!(by_name(&t), vec![("only", 0)]);
        assert!(
            t[0].message.contains("no variant can take it"),
            "{}",
            t[0].message
        );
    }

    #[test]
    fn missing_samples_hold_spec() {
        // 3 ready but only 2 with samples: nobody moves, and nobody answers a lower number.
        let t = compute_targets(
            &[state("a", 5.0, 2, 3, 3), state("b", 1.0, 1, 1, 1)],
            &flags(true, false),
        );
        assert_eq!(by_name(&t), vec![("a", 3), ("b", 1)]);
        assert!(t.iter().all(|t| t.reason == TargetReason::HoldTransition));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::saturation::{analyze, ReplicaMetrics, SaturationConfig};
    use proptest::prelude::*;

    fn variant() -> impl Strategy<Value = (f64, i64, i64, i64, Vec<(f64, i64)>)> {
        (
            0.0f64..50.0,
            0i64..6,
            0i64..6,
            0i64..6,
            prop::collection::vec((0.0f64..1.0, 0i64..10), 0..6),
        )
    }

    proptest! {
        #[test]
        fn invariants(vs in prop::collection::vec(variant(), 1..5)) {
            let mut states = Vec::new();
            let mut replicas = Vec::new();
            for (i, (cost, spec, ready, seen, samples)) in vs.iter().enumerate() {
                let name = format!("v{i}");
                states.push(VariantState { name: name.clone(), cost: *cost, spec_replicas: *spec, ready_replicas: *ready, seen_replicas: *seen });
                for (j, (kv, q)) in samples.iter().enumerate() {
                    replicas.push(ReplicaMetrics { pod: format!("{name}-{j}"), variant: name.clone(), kv_cache_usage: *kv, queue_length: *q });
                }
            }
            let analysis = analyze(&replicas, &SaturationConfig::default());
            let targets = compute_targets(&states, &analysis);
            let transition = states.iter().any(super::VariantState::in_transition);
            let mut moved = 0;
            for (s, t) in states.iter().zip(&targets) {
                if transition {
                    // Never a scale-down (or up) while any variant of the model is in transition.
                    prop_assert_eq!(t.target, s.spec_replicas);
                } else {
                    prop_assert!((t.target - s.ready_replicas).abs() <= 1);
                    if t.target < s.ready_replicas {
                        // The scale-down path never goes below 1.
                        prop_assert!(t.target >= 1);
                    }
                    if t.target != s.ready_replicas {
                        moved += 1;
                    }
                }
            }
            // At most one variant moves per decision.
            prop_assert!(moved <= 1);
        }

        /// A scale-up target never goes to a variant that cannot act on it (no replicas reporting
        /// metrics), and when one can, the +1 goes to the cheapest of those (cost, then name).
        #[test]
        fn scale_up_only_to_variants_that_can_act(
            vs in prop::collection::vec((0.0f64..50.0, 0i64..4), 1..6),
            up in any::<bool>(),
        ) {
            // Stable states (spec = ready = seen) so the model is not in transition.
            let states: Vec<VariantState> = vs
                .iter()
                .enumerate()
                .map(|(i, (cost, n))| VariantState { name: format!("v{i}"), cost: *cost, spec_replicas: *n, ready_replicas: *n, seen_replicas: *n })
                .collect();
            let mut analysis = analyze(&[], &SaturationConfig::default());
            analysis.should_scale_up = up;
            analysis.scale_down_safe = false;
            let targets = compute_targets(&states, &analysis);
            for (s, t) in states.iter().zip(&targets) {
                if t.reason == TargetReason::ScaleUp {
                    prop_assert!(s.can_take_scale_up(), "{} got the +1 at {} replicas", s.name, s.ready_replicas);
                    prop_assert_eq!(t.target, s.ready_replicas + 1);
                } else {
                    prop_assert_eq!(t.target, s.ready_replicas);
                }
            }
            let eligible = states
                .iter()
                .filter(|s| s.can_take_scale_up())
                .min_by(|a, b| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
            let chosen: Vec<&str> = targets.iter().filter(|t| t.reason == TargetReason::ScaleUp).map(|t| t.name.as_str()).collect();
            match (up, eligible) {
                (true, Some(e)) => prop_assert_eq!(chosen, vec![e.name.as_str()]),
                _ => prop_assert!(chosen.is_empty()),
            }
        }
    }
}
