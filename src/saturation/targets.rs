//! Step 5: one target per variant, stateless and driven by the Deployments, as WVA v0.5 decides them
//! (`internal/saturation/analyzer.go`, `internal/engines/pipeline/enforcer.go` at v0.5.1; the README's
//! "How the target is computed").
//!
//! This is WVA v0.5's rule set, not v0.4.1's: the base is what is ready now, the whole model holds while
//! any variant is in transition (that is what stops v0.4.1's runaway scale-up, spec B3'/B7), the cheapest
//! variant gets +1, and the most expensive variant with more than one replica gets −1 when safe.

use std::borrow::Cow;

use serde::Serialize;

use super::analyze::{ScaleDownWhy, ScaleUpWhy};
use super::{Analysis, Role};

/// What the cluster says about one variant, plus how many of its Ready pods have fresh samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantState<'a> {
    /// Borrowed from the decision's input (and so from the cluster snapshot) on the request path.
    pub name: Cow<'a, str>,
    pub cost: f64,
    /// Deployment `spec.replicas`: what the HPA last applied.
    pub spec_replicas: i64,
    /// Deployment `status.readyReplicas`.
    pub ready_replicas: i64,
    /// Ready pods with fresh samples.
    pub seen_replicas: i64,
    /// The autoscaler's `minReplicas` (0 when the variant has no bounds).
    pub min_replicas: i64,
    /// The autoscaler's `maxReplicas` (`None`: unbounded).
    pub max_replicas: Option<i64>,
    /// The variant's prefill/decode role: V1 decides each role of a model apart.
    #[serde(skip_serializing_if = "Role::is_both")]
    pub role: Role,
}

impl VariantState<'_> {
    pub(crate) fn in_transition(&self) -> bool {
        self.spec_replicas != self.ready_replicas || self.seen_replicas != self.ready_replicas
    }

    /// Whether a +1 for this variant would be acted on: it has replicas whose pods report metrics.
    pub(crate) fn can_take_scale_up(&self) -> bool {
        self.seen_replicas > 0
    }

    /// Whether its autoscaler would apply a +1 (below `maxReplicas`).
    pub(crate) fn below_max(&self) -> bool {
        self.max_replicas
            .is_none_or(|max| self.ready_replicas < max)
    }

    /// The lowest replica count the scale-down path goes to: the autoscaler's minimum, and never below 1
    /// (scale to zero is not this path's decision).
    pub(crate) fn scale_down_floor(&self) -> i64 {
        self.min_replicas.max(1)
    }

    /// `target` within [min, max]: the autoscaler would clamp it anyway, and a target it cannot reach would
    /// be a decision that is never carried out.
    pub(crate) fn clamp(&self, target: i64) -> i64 {
        let t = target.max(self.min_replicas);
        self.max_replicas.map_or(t, |max| t.min(max))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetReason {
    /// A variant of the model is still moving; everyone answers its `spec.replicas`.
    HoldTransition,
    ScaleUp,
    ScaleDown,
    /// Scale-up is needed but every variant that could take it is at its `maxReplicas`.
    ScaleUpBlocked,
    NoChange,
    /// Scale to zero is enabled and the model served no request during the retention period.
    ScaleToZero,
    /// Every target was 0 and requests wait at the model's endpoint picker: the cheapest variant gets 1.
    ScaleFromZero,
    /// Every target was 0 and scale to zero is disabled: the cheapest variant keeps 1 (WVA's rule).
    KeepOne,
    /// The configuration asks for an engine WVA v0.9 refuses (the queueing model): held.
    Refused,
    /// The GPU limiter cut the scale-up: its type has no free GPUs (or its quota is spent).
    Limited,
}

impl TargetReason {
    /// The name as it is serialized (`scaleUp`, `holdTransition`, …), for labels and tables.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetReason::HoldTransition => "holdTransition",
            TargetReason::ScaleUp => "scaleUp",
            TargetReason::ScaleDown => "scaleDown",
            TargetReason::ScaleUpBlocked => "scaleUpBlocked",
            TargetReason::NoChange => "noChange",
            TargetReason::ScaleToZero => "scaleToZero",
            TargetReason::ScaleFromZero => "scaleFromZero",
            TargetReason::KeepOne => "keepOne",
            TargetReason::Refused => "refused",
            TargetReason::Limited => "limited",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantTarget<'a> {
    pub name: Cow<'a, str>,
    pub target: i64,
    pub reason: TargetReason,
    pub message: Message,
}

/// A target's message. The common decisions keep their figures and are written out only when read
/// (`/debug/variants`, status conditions, Events, `analyze`): the HPA's request path decides on every
/// call and drops the message, and formatting floats was a third of a decision's cost.
#[derive(Debug, Clone)]
pub enum Message {
    Text(std::borrow::Cow<'static, str>),
    /// WVA v0.5's rules moved nothing: why not up, why not down.
    NoChange {
        up: ScaleUpWhy,
        down: ScaleDownWhy,
    },
    /// The +1, on the cheapest variant of this cost.
    ScaleUp {
        cost: f64,
        why: ScaleUpWhy,
    },
    /// The −1, on the most expensive variant of this cost.
    ScaleDown {
        cost: f64,
        why: ScaleDownWhy,
    },
    /// Saturation V2's decision: `verb` ("scale up", "no change", …) and the figures it rests on.
    Capacity {
        verb: CapacityVerb,
        required: f64,
        spare: f64,
        per_replica: f64,
        source: &'static str,
    },
}

/// What saturation V2 did with a variant, for [`Message::Capacity`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityVerb {
    ScaleUp,
    ScaleDown,
    NoChange,
    /// A scale-down held because `unsampled` of `ready` Ready pods have no fresh samples.
    DownHeld {
        unsampled: i64,
        ready: i64,
    },
}

impl Message {
    /// The message as text (what status, Events and tables show).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Message::Text(t) => std::borrow::Cow::Borrowed(t),
            other => std::borrow::Cow::Owned(other.to_string()),
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Text(t) => f.write_str(t),
            Message::NoChange { up, down } => {
                write!(f, "no change: {up}; scale-down unsafe: {down}")
            }
            Message::ScaleUp { cost, why } => write!(
                f,
                "scale up (cheapest variant with replicas below its maximum, cost {cost}): {why}"
            ),
            Message::ScaleDown { cost, why } => write!(
                f,
                "scale down (most expensive variant above its minimum, cost {cost}): {why}"
            ),
            Message::Capacity {
                verb,
                required,
                spare,
                per_replica,
                source,
            } => {
                match verb {
                    CapacityVerb::ScaleUp => f.write_str("scale up: ")?,
                    CapacityVerb::ScaleDown => f.write_str("scale down: ")?,
                    CapacityVerb::NoChange => f.write_str("no change: ")?,
                    CapacityVerb::DownHeld { unsampled, ready } => write!(
                        f,
                        "scale-down held: {unsampled} of {ready} ready pods have no fresh samples; "
                    )?,
                }
                write!(
                    f,
                    "required {required:.0} and spare {spare:.0} tokens of capacity; {per_replica:.0} per replica ({source})"
                )
            }
        }
    }
}

/// Two messages are equal when they read the same.
impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl PartialEq<&str> for Message {
    fn eq(&self, other: &&str) -> bool {
        self.text() == *other
    }
}

impl Default for Message {
    fn default() -> Self {
        Message::Text(std::borrow::Cow::Borrowed(""))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s.into())
    }
}

impl From<&'static str> for Message {
    fn from(s: &'static str) -> Self {
        Message::Text(s.into())
    }
}

super::serialize_as_text!(Message);

/// Computes the target of every variant of one model.
pub fn compute_targets<'a>(
    variants: &[VariantState<'a>],
    analysis: &Analysis<'_>,
) -> Vec<VariantTarget<'a>> {
    let moving: Vec<&VariantState<'_>> = variants.iter().filter(|v| v.in_transition()).collect();
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
                target: v.clamp(v.spec_replicas),
                reason: TargetReason::HoldTransition,
                message: format!("holding spec.replicas while the model is in transition: {why}")
                    .into(),
            })
            .collect();
    }

    let mut targets: Vec<VariantTarget<'a>> = variants
        .iter()
        .map(|v| VariantTarget {
            name: v.name.clone(),
            target: v.ready_replicas,
            reason: TargetReason::NoChange,
            message: if analysis.should_scale_up || analysis.scale_down_safe {
                "another variant of the model was chosen".into()
            } else {
                Message::NoChange {
                    up: analysis.scale_up_reason,
                    down: analysis.scale_down_reason,
                }
            },
        })
        .collect();

    if analysis.should_scale_up {
        scale_up(variants, analysis, &mut targets);
    } else if analysis.scale_down_safe {
        scale_down(variants, analysis, &mut targets);
    }
    for (t, v) in targets.iter_mut().zip(variants) {
        t.target = v.clamp(t.target);
    }
    targets
}

/// The +1: the cheapest variant that can act on it.
fn scale_up(
    variants: &[VariantState<'_>],
    analysis: &Analysis<'_>,
    targets: &mut [VariantTarget<'_>],
) {
    // WVA chooses among variants whose pods report metrics: a variant at 0 replicas has none, and
    // its HPA would not act on a +1 ("scaling is disabled" at 0), so the model would stay saturated.
    // A variant at its maxReplicas cannot act on a +1 either: its HPA would clamp it.
    let cheapest = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.can_take_scale_up() && v.below_max())
        .min_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
    if let Some((i, v)) = cheapest {
        targets[i].target = v.ready_replicas + 1;
        targets[i].reason = TargetReason::ScaleUp;
        targets[i].message = Message::ScaleUp {
            cost: v.cost,
            why: analysis.scale_up_reason,
        };
    } else {
        let at_max: Vec<String> = variants
            .iter()
            .filter(|v| v.can_take_scale_up() && !v.below_max())
            .map(|v| {
                format!(
                    "{} ({}/{})",
                    v.name,
                    v.ready_replicas,
                    v.max_replicas.unwrap_or(0)
                )
            })
            .collect();
        let (reason, why) = if at_max.is_empty() {
            (
                TargetReason::NoChange,
                "every variant is at 0 replicas".to_string(),
            )
        } else {
            (
                TargetReason::ScaleUpBlocked,
                format!(
                    "every variant with replicas is at its maxReplicas: {}",
                    at_max.join(", ")
                ),
            )
        };
        for t in targets.iter_mut() {
            t.reason = reason.clone();
            t.message = format!(
                "scale-up needed ({}) but no variant can take it: {why}",
                analysis.scale_up_reason
            )
            .into();
        }
    }
}

/// The −1: the most expensive variant above its floor.
fn scale_down(
    variants: &[VariantState<'_>],
    analysis: &Analysis<'_>,
    targets: &mut [VariantTarget<'_>],
) {
    let most_expensive = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| v.ready_replicas > v.scale_down_floor())
        .max_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
    if let Some((i, v)) = most_expensive {
        targets[i].target = v.ready_replicas - 1;
        targets[i].reason = TargetReason::ScaleDown;
        targets[i].message = Message::ScaleDown {
            cost: v.cost,
            why: analysis.scale_down_reason,
        };
    } else {
        for t in targets.iter_mut() {
            t.message = "scale-down safe but no variant is above its minimum (at least 1)".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::{analyze, SaturationConfig};

    /// Every message reads, when written out, as the text it stands for, and serializes as that text.
    #[test]
    fn messages_read_as_text() {
        use crate::saturation::analyze::{ScaleDownWhy, ScaleUpWhy};
        let up = ScaleUpWhy::Fires {
            kv: Some((0.045, 0.1)),
            queue: None,
            non_saturated: 2,
            replicas: 2,
        };
        let down = ScaleDownWhy::TooFew { non_saturated: 1 };
        let capacity = |verb| Message::Capacity {
            verb,
            required: 30_937.4,
            spare: 0.0,
            per_replica: 26_214.0,
            source: "P1-obs",
        };
        let figures = "required 30937 and spare 0 tokens of capacity; 26214 per replica (P1-obs)";
        let cases = [
            (Message::from("held"), "held".to_string()),
            (
                Message::NoChange { up, down },
                "no change: avg spare KV 0.045 < trigger 0.1 across 2 non-saturated of 2 replicas; scale-down unsafe: 1 non-saturated replica(s); scale-down needs at least 2".to_string(),
            ),
            (
                Message::ScaleUp { cost: 5.0, why: up },
                "scale up (cheapest variant with replicas below its maximum, cost 5): avg spare KV 0.045 < trigger 0.1 across 2 non-saturated of 2 replicas".to_string(),
            ),
            (
                Message::ScaleDown { cost: 2.5, why: down },
                "scale down (most expensive variant above its minimum, cost 2.5): 1 non-saturated replica(s); scale-down needs at least 2".to_string(),
            ),
            (capacity(CapacityVerb::ScaleUp), format!("scale up: {figures}")),
            (capacity(CapacityVerb::ScaleDown), format!("scale down: {figures}")),
            (capacity(CapacityVerb::NoChange), format!("no change: {figures}")),
            (
                capacity(CapacityVerb::DownHeld { unsampled: 1, ready: 3 }),
                format!("scale-down held: 1 of 3 ready pods have no fresh samples; {figures}"),
            ),
        ];
        for (message, text) in cases {
            assert_eq!(message.text(), text);
            assert_eq!(message, Message::from(text.clone()));
            assert_eq!(serde_json::to_value(&message).unwrap(), text.as_str());
        }
    }

    fn state(name: &str, cost: f64, seen: i64, spec: i64, ready: i64) -> VariantState<'static> {
        VariantState {
            name: name.to_string().into(),
            cost,
            spec_replicas: spec,
            ready_replicas: ready,
            seen_replicas: seen,
            min_replicas: 0,
            max_replicas: None,
            role: Role::Both,
        }
    }

    fn flags(up: bool, safe: bool) -> Analysis<'static> {
        let mut a = analyze(&[], &SaturationConfig::default());
        a.should_scale_up = up;
        a.scale_down_safe = safe;
        a
    }

    fn by_name<'t>(t: &'t [VariantTarget<'_>]) -> Vec<(&'t str, i64)> {
        t.iter().map(|t| (t.name.as_ref(), t.target)).collect()
    }

    /// Golden vectors B1, B2, B3', B4, B5, B6, B7 (v0.5 semantics, from WVA's
    /// `internal/saturation/analyzer_test.go` at v0.5.1 and derived cases). In the stateless
    /// model "current" is the Deployment's ready count and a previous "desired" that has not landed shows
    /// up as `spec.replicas` (what the HPA applied) differing from ready.
    #[test]
    fn reason_names_match_their_serialization() {
        for r in [
            TargetReason::HoldTransition,
            TargetReason::ScaleUp,
            TargetReason::ScaleDown,
            TargetReason::ScaleUpBlocked,
            TargetReason::NoChange,
            TargetReason::ScaleToZero,
            TargetReason::ScaleFromZero,
            TargetReason::KeepOne,
            TargetReason::Refused,
        ] {
            assert_eq!(serde_json::to_value(&r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn golden_vectors_b() {
        type Case = (
            &'static str,
            Vec<VariantState<'static>>,
            Analysis<'static>,
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
            t[0].message.text().contains("no variant can take it"),
            "{}",
            t[0].message
        );
    }

    fn bounded(mut s: VariantState<'static>, min: i64, max: Option<i64>) -> VariantState<'static> {
        s.min_replicas = min;
        s.max_replicas = max;
        s
    }

    /// Golden rules for bounds (issue #14): the +1 skips a variant at its maximum; when every variant
    /// with replicas is at its maximum, nobody moves and the reason says so; scale-down stops at the
    /// minimum; every target is clamped to [min, max].
    #[test]
    fn bounds_rules() {
        type Case = (
            &'static str,
            Vec<VariantState<'static>>,
            (bool, bool),
            Vec<(&'static str, i64)>,
            TargetReason,
        );
        let cases: Vec<Case> = vec![
            (
                "cheap at max: the +1 goes to the next cheapest",
                vec![
                    bounded(state("cheap", 5.0, 3, 3, 3), 1, Some(3)),
                    bounded(state("pricey", 20.0, 1, 1, 1), 1, Some(4)),
                ],
                (true, false),
                vec![("cheap", 3), ("pricey", 2)],
                TargetReason::ScaleUp,
            ),
            (
                "every variant at max: blocked",
                vec![
                    bounded(state("cheap", 5.0, 3, 3, 3), 1, Some(3)),
                    bounded(state("pricey", 20.0, 2, 2, 2), 1, Some(2)),
                ],
                (true, false),
                vec![("cheap", 3), ("pricey", 2)],
                TargetReason::ScaleUpBlocked,
            ),
            (
                "most expensive at its minimum: the next one gives a replica back",
                vec![
                    bounded(state("cheap", 5.0, 3, 3, 3), 1, None),
                    bounded(state("pricey", 20.0, 2, 2, 2), 2, None),
                ],
                (false, true),
                vec![("cheap", 2), ("pricey", 2)],
                TargetReason::ScaleDown,
            ),
            (
                "holding spec above a lowered maximum: clamped",
                vec![bounded(state("a", 5.0, 4, 5, 4), 1, Some(3))],
                (false, false),
                vec![("a", 3)],
                TargetReason::HoldTransition,
            ),
            (
                "below the minimum: raised to it",
                vec![bounded(state("a", 5.0, 1, 1, 1), 2, Some(5))],
                (false, false),
                vec![("a", 2)],
                TargetReason::NoChange,
            ),
        ];
        for (what, states, (up, safe), want, reason) in cases {
            let t = compute_targets(&states, &flags(up, safe));
            assert_eq!(by_name(&t), want, "{what}");
            assert!(t.iter().any(|t| t.reason == reason), "{what}: {t:?}");
            if reason == TargetReason::ScaleUpBlocked {
                assert!(
                    t[0].message
                        .text()
                        .contains("at its maxReplicas: cheap (3/3), pricey (2/2)"),
                    "{}",
                    t[0].message
                );
            }
        }
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
                states.push(VariantState { name: name.clone().into(), cost: *cost, spec_replicas: *spec, ready_replicas: *ready, seen_replicas: *seen, min_replicas: 0, max_replicas: None, role: Role::Both });
                for (j, (kv, q)) in samples.iter().enumerate() {
                    replicas.push(ReplicaMetrics { pod: format!("{name}-{j}").into(), variant: name.clone().into(), kv_cache_usage: *kv, queue_length: *q });
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

        /// With bounds: no target leaves [min, max], and the +1 never goes to a variant at its maximum
        /// while a cheaper-or-equal one with replicas has room.
        #[test]
        fn bounds_hold(
            vs in prop::collection::vec((0.0f64..50.0, 0i64..6, 0i64..4, 1i64..6), 1..6),
            up in any::<bool>(),
            safe in any::<bool>(),
        ) {
            let states: Vec<VariantState<'_>> = vs
                .iter()
                .enumerate()
                .map(|(i, (cost, n, min, span))| VariantState {
                    name: format!("v{i}").into(), cost: *cost, spec_replicas: *n, ready_replicas: *n, seen_replicas: *n,
                    min_replicas: *min, max_replicas: Some((*min).max(1) + span - 1), role: Role::Both,
                })
                .collect();
            let mut analysis = analyze(&[], &SaturationConfig::default());
            analysis.should_scale_up = up;
            analysis.scale_down_safe = safe;
            let targets = compute_targets(&states, &analysis);
            for (s, t) in states.iter().zip(&targets) {
                let max = s.max_replicas.unwrap();
                prop_assert!(t.target >= s.min_replicas && t.target <= max, "{} target {} outside [{}, {}]", s.name, t.target, s.min_replicas, max);
            }
            if let Some((i, _)) = targets.iter().enumerate().find(|(_, t)| t.reason == TargetReason::ScaleUp) {
                let chosen = &states[i];
                prop_assert!(chosen.below_max());
                for other in &states {
                    let cheaper = other.cost.total_cmp(&chosen.cost).then_with(|| other.name.cmp(&chosen.name)).is_lt();
                    prop_assert!(!(cheaper && other.can_take_scale_up() && other.below_max()), "{} had room and was cheaper than {}", other.name, chosen.name);
                }
            }
        }

        /// A scale-up target never goes to a variant that cannot act on it (no replicas reporting
        /// metrics), and when one can, the +1 goes to the cheapest of those (cost, then name).
        #[test]
        fn scale_up_only_to_variants_that_can_act(
            vs in prop::collection::vec((0.0f64..50.0, 0i64..4), 1..6),
            up in any::<bool>(),
        ) {
            // Stable states (spec = ready = seen) so the model is not in transition.
            let states: Vec<VariantState<'_>> = vs
                .iter()
                .enumerate()
                .map(|(i, (cost, n))| VariantState { name: format!("v{i}").into(), cost: *cost, spec_replicas: *n, ready_replicas: *n, seen_replicas: *n, min_replicas: 0, max_replicas: None, role: Role::Both })
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
            let chosen: Vec<&str> = targets.iter().filter(|t| t.reason == TargetReason::ScaleUp).map(|t| t.name.as_ref()).collect();
            match (up, eligible) {
                (true, Some(e)) => prop_assert_eq!(chosen, vec![e.name.as_ref()]),
                _ => prop_assert!(chosen.is_empty()),
            }
        }
    }
}
