//! The endpoint pickers' signals on the external metrics API, under the pickers' own metric names: the
//! series an HPA (or KEDA's `metrics-api` trigger) would have read from Prometheus, read here from the
//! pickers directly. A series is labelled `inference_pool` (and `model_name` for per-model signals) and
//! selected by those labels. Nothing matching is a 404 naming the selector; a matching picker that
//! cannot be read, or a value it publishes unusably, is a 503 saying why, never a zero (a sum that left
//! out an unreadable pool would scale down).

use std::collections::BTreeMap;

use crate::error::{Capped, Echo, MAX_NAMES_LISTED};
use crate::provider::metrics::SignalKind;
use crate::provider::quantity::milli_from_f64;
use crate::provider::selector::Selector;
use crate::provider::{MetricItem, ProviderError};
use crate::sources::epp::Signals;

use super::Engine;

/// What one series is: its labels, and its value or why it is not known.
type Series = (BTreeMap<String, String>, Result<f64, String>);

/// The series of one pool's signal.
fn series(
    pool: &str,
    models: &[String],
    signals: &Result<Signals, String>,
    kind: SignalKind,
) -> Vec<Series> {
    let labels = |model: Option<&str>| {
        let mut l = BTreeMap::from([("inference_pool".to_string(), pool.to_string())]);
        if let Some(m) = model {
            l.insert("model_name".to_string(), m.to_string());
        }
        l
    };
    match kind {
        SignalKind::PoolSaturation => {
            let value = match signals {
                Err(e) => Err(e.clone()),
                Ok(s) => match &s.saturation {
                    Some(v) => v.clone(),
                    None => Err(
                        "its endpoint picker publishes no pool saturation (is flow control enabled?)"
                            .into(),
                    ),
                },
            };
            vec![(labels(None), value)]
        }
        SignalKind::RunningRequests | SignalKind::QueueSize => models
            .iter()
            .map(|m| {
                let value = match signals {
                    Err(e) => Err(e.clone()),
                    Ok(s) => {
                        let per_model = if kind == SignalKind::RunningRequests {
                            &s.running
                        } else {
                            &s.queued
                        };
                        // The picker omits a model's series until it has had a request: none is 0.
                        per_model.get(m).cloned().unwrap_or(Ok(0.0))
                    }
                };
                (labels(Some(m)), value)
            })
            .collect(),
    }
}

impl Engine {
    /// The series of `metric` (a picker signal) in `namespace` that `selector` matches.
    pub(super) fn signal_metric(
        &self,
        namespace: &str,
        metric: &str,
        kind: SignalKind,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError> {
        let mut items = Vec::new();
        let mut unknown = Vec::new();
        for p in self.demand.signals(namespace) {
            for (labels, value) in series(&p.pool, &p.models, &p.signals, kind) {
                if !selector.matches(&labels) {
                    continue;
                }
                match value.and_then(|v| milli_from_f64(v).map_err(|e| e.to_string())) {
                    Ok(value_milli) => items.push(MetricItem {
                        labels,
                        value_milli,
                    }),
                    Err(why) => {
                        let what = labels.values().cloned().collect::<Vec<_>>().join("/");
                        unknown.push(format!("{what}: {why}"));
                    }
                }
            }
        }
        if !unknown.is_empty() {
            return Err(ProviderError::Unavailable(format!(
                "{metric} in namespace {namespace} is not known for {}",
                Capped(&unknown, MAX_NAMES_LISTED)
            )));
        }
        if items.is_empty() {
            return Err(ProviderError::NoSeries {
                metric: metric.to_string(),
                namespace: namespace.to_string(),
                selector: Echo(&selector.to_string()).to_string(),
            });
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::cluster::snapshot::{shared, Snapshot};
    use crate::provider::MetricsProvider;
    use crate::saturation::config::Thresholds;
    use crate::saturation::{Demand, ZeroConfig};
    use crate::sources::epp::{DemandSource, PoolSignals};
    use crate::sources::{Lookup, SampleSource};
    use crate::target::PodTarget;

    struct NoSamples;
    impl SampleSource for NoSamples {
        fn lookup(&self, _: &PodTarget, _: &str) -> Lookup {
            Lookup::Missing {
                since: Duration::ZERO,
                reason: crate::sources::MissingSample::NotScrapedYet,
            }
        }
    }

    /// Two pools: "chat" read (saturation 0.8; model a running 12, queued 3; model b served, idle), and
    /// "batch" whose picker cannot be read.
    struct Pickers;
    impl DemandSource for Pickers {
        fn demand(&self, _: &str, _: &str) -> Demand {
            Demand::NoPool
        }
        fn signals(&self, namespace: &str) -> Vec<PoolSignals> {
            if namespace != "llm" {
                return Vec::new();
            }
            vec![
                PoolSignals {
                    pool: "chat".into(),
                    models: vec!["a".into(), "b".into()],
                    signals: Ok(Signals {
                        saturation: Some(Ok(0.8)),
                        running: BTreeMap::from([("a".into(), Ok(12.0))]),
                        queued: BTreeMap::from([("a".into(), Ok(3.0))]),
                        held: None,
                    }),
                },
                PoolSignals {
                    pool: "batch".into(),
                    models: vec!["c".into()],
                    signals: Err("pod batch-epp-0: connection refused".into()),
                },
            ]
        }
    }

    fn engine() -> Engine {
        let snapshot = Snapshot {
            synced: true,
            ..Snapshot::default()
        };
        Engine::new(
            shared(snapshot),
            Arc::new(NoSamples),
            Arc::new(ArcSwap::from_pointee(Thresholds::default())),
            Duration::from_secs(120),
        )
        .with_zero(
            Arc::new(ArcSwap::from_pointee(ZeroConfig::default())),
            Arc::new(Pickers),
        )
    }

    fn get(e: &Engine, metric: &str, selector: &str) -> Result<Vec<(String, i64)>, ProviderError> {
        let selector = Selector::parse(selector).unwrap();
        e.external_metric("llm", metric, &selector).map(|items| {
            items
                .into_iter()
                .map(|i| {
                    let name = i
                        .labels
                        .get("model_name")
                        .or(i.labels.get("inference_pool"))
                        .cloned();
                    (name.unwrap_or_default(), i.value_milli)
                })
                .collect()
        })
    }

    #[test]
    fn signals_are_served_by_pool_and_model() {
        let e = engine();
        assert_eq!(
            get(
                &e,
                "llm_d_router_epp_flow_control_pool_saturation",
                "inference_pool=chat"
            ),
            Ok(vec![("chat".into(), 800)])
        );
        // The deprecated name is the same series.
        assert_eq!(
            get(
                &e,
                "inference_extension_flow_control_pool_saturation",
                "inference_pool=chat"
            ),
            Ok(vec![("chat".into(), 800)])
        );
        assert_eq!(
            get(&e, "llm_d_router_epp_running_requests", "model_name=a"),
            Ok(vec![("a".into(), 12_000)])
        );
        // A model the pool serves with no series yet: 0; its queue likewise.
        assert_eq!(
            get(&e, "llm_d_router_epp_running_requests", "model_name=b"),
            Ok(vec![("b".into(), 0)])
        );
        assert_eq!(
            get(
                &e,
                "llm_d_router_epp_flow_control_queue_size",
                "inference_pool=chat,model_name=a"
            ),
            Ok(vec![("a".into(), 3000)])
        );
        // An unreadable picker is a 503 naming it, never a zero; so is a selector that spans it.
        for (metric, selector) in [
            (
                "llm_d_router_epp_flow_control_pool_saturation",
                "inference_pool=batch",
            ),
            ("llm_d_router_epp_running_requests", ""),
        ] {
            match get(&e, metric, selector) {
                Err(ProviderError::Unavailable(why)) => {
                    assert!(
                        why.contains("batch") && why.contains("connection refused"),
                        "{why}"
                    )
                }
                other => panic!("{metric} {selector}: {other:?}"),
            }
        }
        // Nothing matching: a 404 naming the selector; another namespace has no pickers.
        assert!(matches!(
            get(&e, "llm_d_router_epp_running_requests", "model_name=nope"),
            Err(ProviderError::NoSeries { .. })
        ));
        let selector = Selector::parse("").unwrap();
        assert!(matches!(
            e.external_metric("other", "llm_d_router_epp_running_requests", &selector),
            Err(ProviderError::NoSeries { .. })
        ));
    }
}
