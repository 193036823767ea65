//! Step 1–4 of WVA's capacity analyzer (`internal/capacity/analyzer.go` at v0.4.1), reproduced exactly, float order included,
//! because the golden vectors (A12 in particular) sit on floating-point edges.

use std::borrow::Cow;

use serde::Serialize;

use super::SaturationConfig;

/// One Ready replica's signals, as WVA's `ReplicaMetrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaMetrics<'a> {
    /// Borrowed from the decision's input on the request path; owned where rows are made up (tests).
    pub pod: Cow<'a, str>,
    pub variant: Cow<'a, str>,
    pub kv_cache_usage: f64,
    /// Waiting requests, truncated to an integer as WVA does with the float sample.
    pub queue_length: i64,
}

/// Per-variant part of the analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantAnalysis<'a> {
    /// Borrowed from the replicas' rows, like their pod names.
    pub variant: Cow<'a, str>,
    pub replicas: usize,
    pub non_saturated_replicas: usize,
    pub avg_spare_kv_capacity: f64,
    pub avg_spare_queue_length: f64,
    pub max_kv_cache_usage: f64,
    pub max_queue_length: i64,
    pub saturated_pods: Vec<Cow<'a, str>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Analysis<'a> {
    pub total_replicas: usize,
    pub non_saturated_replicas: usize,
    pub avg_spare_kv_capacity: f64,
    pub avg_spare_queue_length: f64,
    pub should_scale_up: bool,
    pub scale_down_safe: bool,
    /// Why scale-up fired (or why not), in words an operator can act on.
    pub scale_up_reason: ScaleUpWhy,
    pub scale_down_reason: ScaleDownWhy,
    pub variants: Vec<VariantAnalysis<'a>>,
}

/// WVA's `MinNonSaturatedReplicasForScaleDown`.
pub(crate) const MIN_NON_SATURATED_FOR_SCALE_DOWN: usize = 2;

pub(crate) fn is_saturated(r: &ReplicaMetrics<'_>, cfg: &SaturationConfig) -> bool {
    r.kv_cache_usage >= cfg.kv_cache_threshold
        || r.queue_length as f64 >= cfg.queue_length_threshold
}

/// Analyzes all replicas of one model (all its variants together).
///
/// Variants appear in the output in the order of their first replica, which keeps the per-variant
/// accumulation order (and so the float results) identical to WVA's.
pub fn analyze<'a>(replicas: &[ReplicaMetrics<'a>], cfg: &SaturationConfig) -> Analysis<'a> {
    // The averages' fields hold the spare sums until every replica is counted.
    let mut variants: Vec<VariantAnalysis<'a>> = Vec::new();
    for r in replicas {
        let idx = match variants.iter().position(|v| v.variant == r.variant) {
            Some(i) => i,
            None => {
                variants.push(VariantAnalysis {
                    variant: r.variant.clone(),
                    replicas: 0,
                    non_saturated_replicas: 0,
                    avg_spare_kv_capacity: 0.0,
                    avg_spare_queue_length: 0.0,
                    max_kv_cache_usage: 0.0,
                    max_queue_length: 0,
                    saturated_pods: Vec::new(),
                });
                variants.len() - 1
            }
        };
        let v = &mut variants[idx];
        v.replicas += 1;
        v.max_kv_cache_usage = v.max_kv_cache_usage.max(r.kv_cache_usage);
        v.max_queue_length = v.max_queue_length.max(r.queue_length);
        if is_saturated(r, cfg) {
            v.saturated_pods.push(r.pod.clone());
        } else {
            v.non_saturated_replicas += 1;
            v.avg_spare_kv_capacity += cfg.kv_cache_threshold - r.kv_cache_usage;
            v.avg_spare_queue_length += cfg.queue_length_threshold - r.queue_length as f64;
        }
    }
    for v in &mut variants {
        if v.non_saturated_replicas > 0 {
            v.avg_spare_kv_capacity /= v.non_saturated_replicas as f64;
            v.avg_spare_queue_length /= v.non_saturated_replicas as f64;
        }
    }

    // Model level: replica-weighted mean of the variant averages, as WVA computes it.
    let total_non_sat: usize = variants.iter().map(|v| v.non_saturated_replicas).sum();
    let (mut avg_kv, mut avg_q) = (0.0, 0.0);
    if total_non_sat > 0 {
        let (mut wkv, mut wq) = (0.0, 0.0);
        for v in &variants {
            wkv += v.avg_spare_kv_capacity * v.non_saturated_replicas as f64;
            wq += v.avg_spare_queue_length * v.non_saturated_replicas as f64;
        }
        avg_kv = wkv / total_non_sat as f64;
        avg_q = wq / total_non_sat as f64;
    }

    let kv_fires = avg_kv < cfg.kv_spare_trigger;
    let q_fires = avg_q < cfg.queue_spare_trigger;
    // An empty model is "no action" (A10): there is nothing to scale and nothing measured.
    let should_scale_up = !replicas.is_empty() && (kv_fires || q_fires);
    let scale_up_reason = if replicas.is_empty() {
        ScaleUpWhy::NoReplicas
    } else if kv_fires || q_fires {
        ScaleUpWhy::Fires {
            kv: kv_fires.then_some((avg_kv, cfg.kv_spare_trigger)),
            queue: q_fires.then_some((avg_q, cfg.queue_spare_trigger)),
            non_saturated: total_non_sat,
            replicas: replicas.len(),
        }
    } else {
        ScaleUpWhy::Sufficient {
            kv: (avg_kv, cfg.kv_spare_trigger),
            queue: (avg_q, cfg.queue_spare_trigger),
        }
    };

    let (scale_down_safe, scale_down_reason) = scale_down_safety(replicas, cfg);
    Analysis {
        total_replicas: replicas.len(),
        non_saturated_replicas: total_non_sat,
        avg_spare_kv_capacity: avg_kv,
        avg_spare_queue_length: avg_q,
        should_scale_up,
        scale_down_safe,
        scale_up_reason,
        scale_down_reason,
        variants,
    }
}

/// Worst-case simulation: spread the non-saturated load over one replica fewer.
fn scale_down_safety(
    replicas: &[ReplicaMetrics<'_>],
    cfg: &SaturationConfig,
) -> (bool, ScaleDownWhy) {
    // One pass in replica order: the float sum is WVA's, term for term.
    let (mut n, mut total_kv, mut total_q) = (0usize, 0.0f64, 0i64);
    for r in replicas.iter().filter(|r| !is_saturated(r, cfg)) {
        n += 1;
        total_kv += r.kv_cache_usage;
        total_q += r.queue_length;
    }
    if n < MIN_NON_SATURATED_FOR_SCALE_DOWN {
        return (false, ScaleDownWhy::TooFew { non_saturated: n });
    }
    let kv_after = total_kv / (n - 1) as f64;
    let q_after = total_q as f64 / (n - 1) as f64;
    let rem_kv = cfg.kv_cache_threshold - kv_after;
    let rem_q = cfg.queue_length_threshold - q_after;
    let safe = rem_kv >= cfg.kv_spare_trigger && rem_q >= cfg.queue_spare_trigger;
    let reason = ScaleDownWhy::Simulated {
        replicas: n - 1,
        kv: (rem_kv, cfg.kv_spare_trigger),
        queue: (rem_q, cfg.queue_spare_trigger),
    };
    (safe, reason)
}

/// Why scale-up fires, or why not: the figures, written out only when someone reads them (the HPA's
/// request path decides on every call and never does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleUpWhy {
    /// No replica has metrics: nothing measured, no action (A10).
    NoReplicas,
    /// A spare average is under its trigger: `(average, trigger)` for each that fired.
    Fires {
        kv: Option<(f64, f64)>,
        queue: Option<(f64, f64)>,
        non_saturated: usize,
        replicas: usize,
    },
    /// Both spare averages are at or over their triggers: `(average, trigger)`.
    Sufficient { kv: (f64, f64), queue: (f64, f64) },
}

impl std::fmt::Display for ScaleUpWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ScaleUpWhy::NoReplicas => f.write_str("no replicas with metrics"),
            ScaleUpWhy::Fires {
                kv,
                queue,
                non_saturated,
                replicas,
            } => {
                if let Some((avg, trigger)) = kv {
                    write!(f, "avg spare KV {avg:.3} < trigger {trigger}")?;
                }
                if let Some((avg, trigger)) = queue {
                    if kv.is_some() {
                        f.write_str(" and ")?;
                    }
                    write!(f, "avg spare queue {avg:.2} < trigger {trigger}")?;
                }
                write!(
                    f,
                    " across {non_saturated} non-saturated of {replicas} replicas"
                )
            }
            ScaleUpWhy::Sufficient {
                kv: (kv, kv_trigger),
                queue: (q, q_trigger),
            } => write!(
                f,
                "spare capacity sufficient (avg spare KV {kv:.3} >= {kv_trigger}, avg spare queue {q:.2} >= {q_trigger})"
            ),
        }
    }
}

/// Why scale-down is safe or not, written out only when read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleDownWhy {
    /// Fewer non-saturated replicas than WVA's minimum for a scale-down.
    TooFew { non_saturated: usize },
    /// The spare left with one replica fewer: `(remaining, trigger)` for KV and queue.
    Simulated {
        replicas: usize,
        kv: (f64, f64),
        queue: (f64, f64),
    },
}

impl std::fmt::Display for ScaleDownWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ScaleDownWhy::TooFew { non_saturated } => write!(
                f,
                "{non_saturated} non-saturated replica(s); scale-down needs at least {MIN_NON_SATURATED_FOR_SCALE_DOWN}"
            ),
            ScaleDownWhy::Simulated {
                replicas,
                kv: (kv, kv_trigger),
                queue: (q, q_trigger),
            } => write!(
                f,
                "with {replicas} replicas the remaining spare would be KV {kv:.3} (trigger {kv_trigger}) and queue {q:.2} (trigger {q_trigger})"
            ),
        }
    }
}

super::serialize_as_text!(ScaleUpWhy, ScaleDownWhy);

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::too_many_lines)] // Golden vectors, as WVA's spec writes them.
mod tests {
    use super::*;

    fn reps(variant: &str, pairs: &[(f64, i64)]) -> Vec<ReplicaMetrics<'static>> {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (kv, q))| ReplicaMetrics {
                pod: format!("{variant}-pod-{}", i + 1).into(),
                variant: variant.to_string().into(),
                kv_cache_usage: *kv,
                queue_length: *q,
            })
            .collect()
    }

    /// The reasons keep their figures and read, when written out, exactly as the strings they replace.
    #[test]
    fn reasons_read_as_before() {
        let cfg = SaturationConfig::default();
        type Case<'a> = (&'a [(f64, i64)], &'a str, &'a str);
        let cases: [Case; 5] = [
            (
                &[],
                "no replicas with metrics",
                "0 non-saturated replica(s); scale-down needs at least 2",
            ),
            (
                &[(0.75, 2), (0.76, 2)],
                "avg spare KV 0.045 < trigger 0.1 across 2 non-saturated of 2 replicas",
                "with 1 replicas the remaining spare would be KV -0.710 (trigger 0.1) and queue 1.00 (trigger 3)",
            ),
            (
                &[(0.75, 4), (0.76, 4)],
                "avg spare KV 0.045 < trigger 0.1 and avg spare queue 1.00 < trigger 3 across 2 non-saturated of 2 replicas",
                "with 1 replicas the remaining spare would be KV -0.710 (trigger 0.1) and queue -3.00 (trigger 3)",
            ),
            (
                &[(0.1, 4), (0.1, 4), (0.9, 0)],
                "avg spare queue 1.00 < trigger 3 across 2 non-saturated of 3 replicas",
                "with 1 replicas the remaining spare would be KV 0.600 (trigger 0.1) and queue -3.00 (trigger 3)",
            ),
            (
                &[(0.1, 0), (0.1, 0), (0.1, 0)],
                "spare capacity sufficient (avg spare KV 0.700 >= 0.1, avg spare queue 5.00 >= 3)",
                "with 2 replicas the remaining spare would be KV 0.650 (trigger 0.1) and queue 5.00 (trigger 3)",
            ),
        ];
        for (pairs, up, down) in cases {
            let a = analyze(&reps("v", pairs), &cfg);
            assert_eq!(a.scale_up_reason.to_string(), up, "{pairs:?}");
            assert_eq!(a.scale_down_reason.to_string(), down, "{pairs:?}");
            let json = serde_json::to_value(&a).unwrap();
            assert_eq!(json["scaleUpReason"], up);
            assert_eq!(json["scaleDownReason"], down);
        }
    }

    struct Vector {
        name: &'static str,
        replicas: Vec<ReplicaMetrics<'static>>,
        non_sat: usize,
        avg_kv: f64,
        avg_q: f64,
        up: bool,
        safe: bool,
    }

    /// Golden vectors A1–A12, default thresholds: the cases of WVA's `internal/capacity/analyzer_test.go`
    /// at v0.4.1 (renamed in `internal/saturation/analyzer_test.go` at v0.5), and cases derived from the
    /// algorithm.
    fn vectors() -> Vec<Vector> {
        let v = |name, replicas, non_sat, avg_kv, avg_q, up, safe| Vector {
            name,
            replicas,
            non_sat,
            avg_kv,
            avg_q,
            up,
            safe,
        };
        vec![
            v(
                "A1",
                reps("v", &[(0.75, 2), (0.76, 2)]),
                2,
                0.045,
                3.0,
                true,
                false,
            ),
            v(
                "A2",
                reps("v", &[(0.50, 3), (0.50, 3)]),
                2,
                0.30,
                2.0,
                true,
                false,
            ),
            v(
                "A3",
                reps("v", &[(0.50, 1), (0.50, 1)]),
                2,
                0.30,
                4.0,
                false,
                false,
            ),
            v(
                "A4",
                reps("v", &[(0.20, 1), (0.30, 1), (0.25, 1)]),
                3,
                0.55,
                4.0,
                false,
                true,
            ),
            v(
                "A5",
                reps("v", &[(0.70, 2), (0.75, 2)]),
                2,
                0.075,
                3.0,
                true,
                false,
            ),
            v("A6", reps("v", &[(0.50, 2)]), 1, 0.30, 3.0, false, false),
            v(
                "A7",
                reps("v", &[(0.85, 2), (0.50, 6), (0.90, 7)]),
                0,
                0.0,
                0.0,
                true,
                false,
            ),
            v(
                "A8",
                reps("v", &[(0.85, 2), (0.50, 6), (0.60, 2)]),
                1,
                0.20,
                3.0,
                false,
                false,
            ),
            v(
                "A9",
                [
                    reps("variant-1", &[(0.70, 2), (0.75, 3)]),
                    reps("variant-2", &[(0.60, 1), (0.65, 2)]),
                ]
                .concat(),
                4,
                0.125,
                3.0,
                false,
                false,
            ),
            v("A10", vec![], 0, 0.0, 0.0, false, false),
            v(
                "A11",
                reps("v", &[(0.0, 0), (0.0, 0), (0.0, 0), (0.0, 0)]),
                4,
                0.80,
                5.0,
                false,
                true,
            ),
            v(
                "A12",
                reps("v", &[(0.65, 0), (0.72, 0)]),
                2,
                0.115,
                5.0,
                false,
                false,
            ),
        ]
    }

    #[test]
    fn golden_vectors_a1_to_a12() {
        let cfg = SaturationConfig::default();
        for vec in vectors() {
            let a = analyze(&vec.replicas, &cfg);
            assert_eq!(a.total_replicas, vec.replicas.len(), "{}", vec.name);
            assert_eq!(a.non_saturated_replicas, vec.non_sat, "{} nonSat", vec.name);
            assert!(
                (a.avg_spare_kv_capacity - vec.avg_kv).abs() < 1e-9,
                "{} avgSpareKv {}",
                vec.name,
                a.avg_spare_kv_capacity
            );
            assert!(
                (a.avg_spare_queue_length - vec.avg_q).abs() < 1e-9,
                "{} avgSpareQ {}",
                vec.name,
                a.avg_spare_queue_length
            );
            assert_eq!(
                a.should_scale_up, vec.up,
                "{} scaleUp: {}",
                vec.name, a.scale_up_reason
            );
            assert_eq!(
                a.scale_down_safe, vec.safe,
                "{} scaleDownSafe: {}",
                vec.name, a.scale_down_reason
            );
        }
    }

    #[test]
    fn a8_reports_saturated_pods_per_variant() {
        let a = analyze(
            &reps("v", &[(0.85, 2), (0.50, 6), (0.60, 2)]),
            &SaturationConfig::default(),
        );
        assert_eq!(a.variants.len(), 1);
        assert_eq!(a.variants[0].saturated_pods, vec!["v-pod-1", "v-pod-2"]);
        assert_eq!(a.variants[0].non_saturated_replicas, 1);
    }

    #[test]
    fn a9_two_variants_two_replicas_each() {
        let replicas = [
            reps("variant-1", &[(0.70, 2), (0.75, 3)]),
            reps("variant-2", &[(0.60, 1), (0.65, 2)]),
        ]
        .concat();
        let a = analyze(&replicas, &SaturationConfig::default());
        assert_eq!(
            a.variants
                .iter()
                .map(|v| (v.variant.as_ref(), v.replicas))
                .collect::<Vec<_>>(),
            vec![("variant-1", 2), ("variant-2", 2)]
        );
    }

    #[test]
    fn a12_float_edge_of_the_documented_example() {
        // The WVA doc claims (0.65, 0.75) gives avg spare 0.10 and so scales up; with strict `<` and IEEE
        // doubles the average is 0.10000000000000003 and nothing fires.
        let a = analyze(
            &reps("v", &[(0.65, 0), (0.75, 0)]),
            &SaturationConfig::default(),
        );
        assert!(a.avg_spare_kv_capacity > 0.1);
        assert!(!a.should_scale_up, "{}", a.scale_up_reason);
    }

    #[test]
    fn thresholds_are_inclusive_and_triggers_strict() {
        let cfg = SaturationConfig::default();
        // Exactly at the KV threshold (0.80) or the queue threshold (5) is saturated.
        let a = analyze(&reps("v", &[(0.80, 0), (0.0, 5)]), &cfg);
        assert_eq!(a.non_saturated_replicas, 0);
        assert!(a.should_scale_up);
        // Spare exactly at the trigger does not fire (strict <): kv 0.5 → spare 0.3, queue 2 → spare 3.
        let a = analyze(&reps("v", &[(0.5, 2)]), &cfg);
        assert!(!a.should_scale_up, "{}", a.scale_up_reason);
        // Scale-down safety is inclusive (>=): 2 replicas at kv 0.35 → after 0.70 → remaining 0.10.
        let a = analyze(
            &reps("v", &[(0.35, 0), (0.35, 0)]),
            &SaturationConfig {
                kv_spare_trigger: 0.1,
                ..cfg
            },
        );
        let rem = 0.8 - (0.35 + 0.35) / 1.0;
        assert_eq!(a.scale_down_safe, rem >= 0.1, "{}", a.scale_down_reason);
    }

    #[test]
    fn queue_is_truncated_before_comparison_by_the_caller() {
        // Samples arrive as floats; the engine truncates (4.9 → 4), so 4.9 waiting is not saturated at threshold 5.
        let r = ReplicaMetrics {
            pod: "p".into(),
            variant: "v".into(),
            kv_cache_usage: 0.1,
            queue_length: 4.9_f64 as i64,
        };
        assert!(!is_saturated(&r, &SaturationConfig::default()));
    }
}
