//! Signal triggers: a ScaledObject's `external` / `external-push` trigger shaped like llm-d's KEDA guide's
//! `prometheus` triggers, answered from the endpoint picker's signal read here instead of from a PromQL
//! query. The metadata:
//!
//! | key | meaning |
//! |---|---|
//! | `signal` | `pool-saturation`, `running-requests` or `queue-size` |
//! | `inferencePool` | the pool whose picker is read (required for `pool-saturation`) |
//! | `modelName` | the model (for `running-requests` and `queue-size`; without it, the pool's total) |
//! | `threshold` | the target per replica, as the guide's trigger's `threshold` (`AverageValue`) |
//! | `activationThreshold` | active above this value (default 0), as KEDA's |
//! | `namespace` | where the pool is (default: the ScaledObject's) |
//! | `variantName` | a variant-level trigger: this variant's share of its pool's size |
//!
//! A pool-level trigger: `GetMetricSpec` returns the threshold as the target, `GetMetrics` the value
//! (the sum of the matching series), `IsActive` value > activationThreshold.
//!
//! A variant-level trigger (`variantName`; `inferencePool` optional, the pool that selects the
//! variant's pods by default; the model is the variant's): the pool's size the signal over the threshold
//! asks for, split across the model's variants in the pool cost-aware (`saturation::split`).
//! `GetMetricSpec` returns 1 as the target and `GetMetrics` the variant's replicas, as the variant
//! triggers do; `IsActive` is replicas > 0.
//!
//! An unknown signal, pool, model or variant is `NOT_FOUND` naming it; a picker that cannot be read is
//! `UNAVAILABLE`: never a zero.

use std::collections::HashMap;

use tonic::Status;

use super::proto::{GetMetricSpecResponse, MetricSpec, MetricValue};
use crate::error::{cap, Echo, MAX_ECHO_BYTES, MAX_STATUS_MESSAGE_BYTES};
use crate::provider::metrics::SignalKind;
use crate::provider::selector::Selector;
use crate::provider::{MetricsProvider, ProviderError, ShareQuery};

pub const SIGNAL_KEY: &str = "signal";
pub const POOL_KEY: &str = "inferencePool";
pub const MODEL_KEY: &str = "modelName";
pub const THRESHOLD_KEY: &str = "threshold";
pub const ACTIVATION_KEY: &str = "activationThreshold";
pub const VARIANT_KEY: &str = super::VARIANT_KEY;

/// Each signal: its trigger name, what it is, and the metric served for it.
const SIGNALS: [(&str, SignalKind, &str); 3] = [
    (
        "pool-saturation",
        SignalKind::PoolSaturation,
        "llm_d_router_epp_flow_control_pool_saturation",
    ),
    (
        "running-requests",
        SignalKind::RunningRequests,
        "llm_d_router_epp_running_requests",
    ),
    (
        "queue-size",
        SignalKind::QueueSize,
        "llm_d_router_epp_flow_control_queue_size",
    ),
];

/// A parsed signal trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalTrigger {
    /// The trigger's `signal` (also the metric name given to KEDA).
    pub signal: &'static str,
    kind: SignalKind,
    metric: &'static str,
    namespace: String,
    /// A variant-level trigger's variant.
    pub variant: Option<String>,
    pool: Option<String>,
    model: Option<String>,
    pub threshold: f64,
    pub activation: f64,
}

fn number(meta: &HashMap<String, String>, key: &str) -> Result<Option<f64>, Status> {
    meta.get(key)
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{key} must be a number >= 0, got {:?}",
                        cap(v, MAX_ECHO_BYTES)
                    ))
                })
        })
        .transpose()
}

/// The trigger's signal, when its metadata names one (`None`: a variant trigger).
pub fn parse(
    namespace: &str,
    meta: &HashMap<String, String>,
) -> Result<Option<SignalTrigger>, Status> {
    let Some(signal) = meta.get(SIGNAL_KEY).map(|s| s.trim()) else {
        return Ok(None);
    };
    let Some(&(name, kind, metric)) = SIGNALS.iter().find(|(n, _, _)| *n == signal) else {
        return Err(Status::not_found(format!(
            "unknown {SIGNAL_KEY} {:?}: one of {}",
            cap(signal, MAX_ECHO_BYTES),
            SIGNALS.map(|(n, _, _)| n).join(", ")
        )));
    };
    let text = |key: &str| {
        meta.get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (pool, model, variant) = (text(POOL_KEY), text(MODEL_KEY), text(VARIANT_KEY));
    match kind {
        _ if variant.is_some() && model.is_some() => {
            return Err(Status::invalid_argument(format!(
                "{SIGNAL_KEY} {name} with {VARIANT_KEY} takes no {MODEL_KEY}: the variant's model is read"
            )))
        }
        _ if variant
            .as_deref()
            .is_some_and(|v| !super::is_object_name(v)) =>
        {
            return Err(Status::invalid_argument(format!(
                "{VARIANT_KEY} {:?} is not a Kubernetes object name",
                cap(variant.as_deref().unwrap_or_default(), MAX_ECHO_BYTES)
            )))
        }
        _ if variant.is_some() => {}
        SignalKind::PoolSaturation if pool.is_none() || model.is_some() => {
            return Err(Status::invalid_argument(format!(
                "{SIGNAL_KEY} {name} needs {POOL_KEY} (and no {MODEL_KEY}: saturation is the pool's)"
            )))
        }
        _ if pool.is_none() && model.is_none() => {
            return Err(Status::invalid_argument(format!(
                "{SIGNAL_KEY} {name} needs {POOL_KEY} or {MODEL_KEY}"
            )))
        }
        _ => {}
    }
    let threshold = number(meta, THRESHOLD_KEY)?
        .filter(|t| *t > 0.0)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{SIGNAL_KEY} {name} needs {THRESHOLD_KEY}, a number > 0 (the target per replica)"
            ))
        })?;
    Ok(Some(SignalTrigger {
        signal: name,
        kind,
        metric,
        namespace: text("namespace").unwrap_or_else(|| namespace.to_string()),
        variant,
        pool,
        model,
        threshold,
        activation: number(meta, ACTIVATION_KEY)?.unwrap_or(0.0),
    }))
}

impl SignalTrigger {
    pub fn spec(&self) -> GetMetricSpecResponse {
        // A variant-level trigger's value is the variant's replicas.
        let target = if self.variant.is_some() {
            1.0
        } else {
            self.threshold
        };
        #[allow(clippy::cast_possible_truncation)]
        // A threshold is a small positive number; the integer target only matters to old KEDAs.
        let whole = target.ceil().max(1.0) as i64;
        GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: self.metric_name(),
                target_size: whole,
                target_size_float: target,
            }],
        }
    }

    /// The metric KEDA's HPA shows: the signal, or for a variant-level trigger `<signal>-replicas` (its
    /// value is replicas, not the signal: `kubectl get hpa` should not read "pool-saturation 3/1").
    fn metric_name(&self) -> String {
        match self.variant {
            Some(_) => format!("{}-replicas", self.signal),
            None => self.signal.to_string(),
        }
    }

    /// What `GetMetrics` reports: the signal's value, or a variant-level trigger's replicas.
    pub fn value(&self, provider: &dyn MetricsProvider) -> Result<f64, Status> {
        match &self.variant {
            None => self.signal_value(provider),
            Some(v) => self.share(provider, v).map(|t| t as f64),
        }
    }

    /// Whether the ScaledObject is active, given [`SignalTrigger::value`].
    pub fn active(&self, value: f64) -> bool {
        if self.variant.is_some() {
            value > 0.0
        } else {
            value > self.activation
        }
    }

    /// A variant-level trigger's replicas for its variant.
    fn share(&self, provider: &dyn MetricsProvider, variant: &str) -> Result<i64, Status> {
        let query = ShareQuery {
            namespace: &self.namespace,
            variant,
            signal: self.kind,
            metric: self.metric,
            pool: self.pool.as_deref(),
            threshold: self.threshold,
            activation: self.activation,
        };
        match provider.signal_share(&query) {
            Ok(share) => {
                tracing::debug!(
                    namespace = %Echo(&self.namespace),
                    variant = %Echo(variant),
                    pool = %share.pool,
                    signal = self.signal,
                    value = share.value,
                    demand = share.demand,
                    targets = ?share.targets,
                    "a variant's share of its pool"
                );
                Ok(share.target)
            }
            Err(ProviderError::Unavailable(why)) => {
                Err(Status::unavailable(cap(&why, MAX_STATUS_MESSAGE_BYTES)))
            }
            Err(e @ (ProviderError::NoMatch { .. } | ProviderError::NotInPool { .. })) => Err(
                Status::not_found(cap(&e.to_string(), MAX_STATUS_MESSAGE_BYTES)),
            ),
            Err(ProviderError::NoSeries { .. } | ProviderError::UnknownMetric { .. }) => {
                Err(Status::not_found(format!(
                    "no {} in namespace {} for the InferencePool of variant {}: does its endpoint picker serve the variant's model?",
                    self.signal,
                    Echo(&self.namespace),
                    Echo(variant)
                )))
            }
        }
    }

    /// The signal's value now: the sum of the series matching the pool and the model.
    fn signal_value(&self, provider: &dyn MetricsProvider) -> Result<f64, Status> {
        let mut pairs = Vec::new();
        if let Some(p) = &self.pool {
            pairs.push(("inference_pool", p.as_str()));
        }
        if let Some(m) = &self.model {
            pairs.push(("model_name", m.as_str()));
        }
        match provider.external_metric(&self.namespace, self.metric, &Selector::equal(&pairs)) {
            Ok(items) => Ok(items.iter().map(|i| i.value_milli as f64 / 1000.0).sum()),
            Err(ProviderError::Unavailable(why)) => {
                Err(Status::unavailable(cap(&why, MAX_STATUS_MESSAGE_BYTES)))
            }
            Err(_) => Err(Status::not_found(format!(
                "no {} in namespace {} for {}{}: is there an InferencePool of that name, and does its endpoint picker serve that model?",
                self.signal,
                Echo(&self.namespace),
                self.pool
                    .as_deref()
                    .map(|p| format!("{POOL_KEY} {}", Echo(p)))
                    .unwrap_or_default(),
                self.model
                    .as_deref()
                    .map(|m| format!(" {MODEL_KEY} {}", Echo(m)))
                    .unwrap_or_default(),
            ))),
        }
    }

    pub fn metric_value(&self, value: f64) -> MetricValue {
        #[allow(clippy::cast_possible_truncation)]
        // Saturates; the float is what KEDA reads.
        let whole = value.round() as i64;
        MetricValue {
            metric_name: self.metric_name(),
            metric_value: whole,
            metric_value_float: value,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::provider::{MetricItem, Share};

    /// Pool "chat" (saturation 0.6; models a/b 12 and 3 running) and pool "down", unreadable.
    struct Pickers;
    impl MetricsProvider for Pickers {
        fn external_metric(
            &self,
            namespace: &str,
            metric: &str,
            selector: &Selector,
        ) -> Result<Vec<MetricItem>, ProviderError> {
            let series: Vec<(BTreeMap<&'static str, String>, i64)> = match metric {
                "llm_d_router_epp_flow_control_pool_saturation" => {
                    vec![(BTreeMap::from([("inference_pool", "chat".into())]), 600)]
                }
                "llm_d_router_epp_running_requests" => ["Qwen/Qwen3-8B", "b"]
                    .iter()
                    .zip([12_000, 3_000])
                    .map(|(m, v)| {
                        (
                            BTreeMap::from([
                                ("inference_pool", "chat".into()),
                                ("model_name", m.to_string()),
                            ]),
                            v,
                        )
                    })
                    .collect(),
                _ => vec![],
            };
            if selector
                .required_values("inference_pool")
                .is_some_and(|p| p.contains("down"))
            {
                return Err(ProviderError::Unavailable(
                    "pod down-epp-0: connection refused".into(),
                ));
            }
            let items: Vec<MetricItem> = series
                .into_iter()
                .filter(|(l, _)| namespace == "llm" && selector.matches(l))
                .map(|(labels, value_milli)| MetricItem {
                    labels,
                    value_milli,
                })
                .collect();
            if items.is_empty() {
                return Err(ProviderError::NoSeries {
                    metric: metric.into(),
                    namespace: namespace.into(),
                    selector: selector.to_string(),
                });
            }
            Ok(items)
        }

        /// Variant "a100" of pool "chat" gets 3 replicas when the threshold is 0.2, 0 at 5; "cold"
        /// is in pool "down"; "solo" is in no pool.
        fn signal_share(&self, q: &ShareQuery<'_>) -> Result<Share, ProviderError> {
            match q.variant {
                "a100" => Ok(Share {
                    target: if q.threshold < 1.0 { 3 } else { 0 },
                    pool: "chat".into(),
                    value: 0.6,
                    demand: 3.0,
                    targets: vec![("a100".into(), 3)],
                }),
                "cold" => Err(ProviderError::Unavailable(
                    "pod down-epp-0: connection refused".into(),
                )),
                "solo" => Err(ProviderError::NotInPool {
                    namespace: q.namespace.into(),
                    variant: q.variant.into(),
                    pool: None,
                }),
                _ => Err(ProviderError::NoMatch {
                    metric: q.metric.into(),
                    namespace: q.namespace.into(),
                    selector: format!("variant_name={}", q.variant),
                }),
            }
        }
    }

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn trigger(pairs: &[(&str, &str)]) -> Result<Option<SignalTrigger>, Status> {
        parse("llm", &meta(pairs))
    }

    #[test]
    fn guide_shaped_triggers_read_the_signal() {
        assert!(trigger(&[("variantName", "x")]).unwrap().is_none());
        let sat = trigger(&[
            ("signal", "pool-saturation"),
            ("inferencePool", "chat"),
            ("threshold", "0.7"),
        ])
        .unwrap()
        .unwrap();
        let spec = sat.spec();
        assert_eq!(
            (
                spec.metric_specs[0].metric_name.as_str(),
                spec.metric_specs[0].target_size_float
            ),
            ("pool-saturation", 0.7)
        );
        assert_eq!(sat.value(&Pickers).unwrap(), 0.6);
        assert_eq!(sat.metric_value(0.6).metric_value_float, 0.6);
        // A model ID with a "/" is fine here (it never goes through a label selector).
        let model = trigger(&[
            ("signal", "running-requests"),
            ("modelName", "Qwen/Qwen3-8B"),
            ("threshold", "16"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(model.value(&Pickers).unwrap(), 12.0);
        let pool = trigger(&[
            ("signal", "running-requests"),
            ("inferencePool", "chat"),
            ("threshold", "16"),
            ("activationThreshold", "20"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (pool.value(&Pickers).unwrap(), pool.activation),
            (15.0, 20.0)
        );
    }

    #[test]
    fn bad_triggers_and_missing_data_say_why() {
        for (pairs, code, says) in [
            (
                vec![("signal", "kv-cache")],
                tonic::Code::NotFound,
                "unknown signal",
            ),
            (
                vec![("signal", "pool-saturation"), ("threshold", "1")],
                tonic::Code::InvalidArgument,
                "needs inferencePool",
            ),
            (
                vec![
                    ("signal", "pool-saturation"),
                    ("inferencePool", "chat"),
                    ("modelName", "m"),
                    ("threshold", "1"),
                ],
                tonic::Code::InvalidArgument,
                "no modelName",
            ),
            (
                vec![("signal", "queue-size"), ("threshold", "1")],
                tonic::Code::InvalidArgument,
                "inferencePool or modelName",
            ),
            (
                vec![("signal", "queue-size"), ("inferencePool", "chat")],
                tonic::Code::InvalidArgument,
                "needs threshold",
            ),
            (
                vec![
                    ("signal", "queue-size"),
                    ("inferencePool", "chat"),
                    ("threshold", "0"),
                ],
                tonic::Code::InvalidArgument,
                "needs threshold",
            ),
            (
                vec![
                    ("signal", "queue-size"),
                    ("inferencePool", "chat"),
                    ("threshold", "x"),
                ],
                tonic::Code::InvalidArgument,
                "number >= 0",
            ),
            (
                vec![
                    ("signal", "queue-size"),
                    ("inferencePool", "chat"),
                    ("threshold", "1"),
                    ("activationThreshold", "-1"),
                ],
                tonic::Code::InvalidArgument,
                "activationThreshold",
            ),
        ] {
            let e = trigger(&pairs).unwrap_err();
            assert_eq!(e.code(), code, "{pairs:?}: {}", e.message());
            assert!(e.message().contains(says), "{pairs:?}: {}", e.message());
        }
        let value = |pairs: &[(&str, &str)]| {
            trigger(pairs)
                .unwrap()
                .unwrap()
                .value(&Pickers)
                .unwrap_err()
        };
        let down = value(&[
            ("signal", "pool-saturation"),
            ("inferencePool", "down"),
            ("threshold", "1"),
        ]);
        assert_eq!(down.code(), tonic::Code::Unavailable);
        assert!(down.message().contains("connection refused"));
        let unknown = value(&[
            ("signal", "running-requests"),
            ("modelName", "nope"),
            ("threshold", "1"),
        ]);
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(unknown.message().contains("nope"), "{}", unknown.message());
    }

    #[test]
    fn variant_level_triggers_answer_the_variants_share() {
        let t = |variant: &str, threshold: &str| {
            trigger(&[
                ("signal", "pool-saturation"),
                ("variantName", variant),
                ("threshold", threshold),
            ])
            .unwrap()
            .unwrap()
        };
        let a = t("a100", "0.2");
        // The value is replicas: the target is 1, whatever the threshold.
        let spec = a.spec();
        assert_eq!(
            (
                spec.metric_specs[0].target_size,
                spec.metric_specs[0].target_size_float
            ),
            (1, 1.0)
        );
        assert_eq!(a.value(&Pickers).unwrap(), 3.0);
        assert!(a.active(3.0));
        let idle = t("a100", "5");
        assert_eq!(idle.value(&Pickers).unwrap(), 0.0);
        assert!(!idle.active(0.0));
        for (variant, code, says) in [
            ("cold", tonic::Code::Unavailable, "connection refused"),
            (
                "solo",
                tonic::Code::NotFound,
                "no pods in any InferencePool",
            ),
            ("nope", tonic::Code::NotFound, "variant_name=nope"),
        ] {
            let e = t(variant, "0.2").value(&Pickers).unwrap_err();
            assert_eq!(e.code(), code, "{variant}: {}", e.message());
            assert!(e.message().contains(says), "{variant}: {}", e.message());
        }
        for (pairs, says) in [
            (
                vec![
                    ("signal", "queue-size"),
                    ("variantName", "a100"),
                    ("modelName", "m"),
                    ("threshold", "1"),
                ],
                "takes no modelName",
            ),
            (
                vec![
                    ("signal", "queue-size"),
                    ("variantName", "A_100"),
                    ("threshold", "1"),
                ],
                "not a Kubernetes object name",
            ),
            (
                vec![("signal", "queue-size"), ("variantName", "a100")],
                "needs threshold",
            ),
        ] {
            let e = trigger(&pairs).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{pairs:?}");
            assert!(e.message().contains(says), "{pairs:?}: {}", e.message());
        }
    }
}
