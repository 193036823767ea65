//! The endpoint pickers' signals on the external metrics API, under the pickers' own metric names: the
//! series an HPA (or KEDA's `metrics-api` trigger) would have read from Prometheus, read here from the
//! pickers directly. A series is labelled `inference_pool` (and `model_name` for per-model signals) and
//! selected by those labels. Nothing matching is a 404 naming the selector; a matching picker that
//! cannot be read, or a value it publishes unusably, is a 503 saying why, never a zero (a sum that left
//! out an unreadable pool would scale down).
//!
//! [`Engine::signal_share`] answers a variant-level signal trigger: the pool's size that the signal over
//! the trigger's threshold asks for, split across the model's variants in the pool with
//! [`saturation::split`](crate::saturation::split) (cost per unit of capacity, bounds, pending replicas
//! as supply, the GPU limiter's free GPUs when it is on).

use std::collections::BTreeMap;

use crate::cluster::nodes::Gpus;
use crate::cluster::snapshot::{Snapshot, Variant};
use crate::error::{Capped, Echo, MAX_NAMES_LISTED};
use crate::provider::metrics::SignalKind;
use crate::provider::quantity::milli_from_f64;
use crate::provider::selector::Selector;
use crate::provider::{MetricItem, ProviderError, Share, ShareQuery};
use crate::saturation::limiter::charged_type;
use crate::saturation::split::{split, Shape, SplitVariant};
use crate::sources::epp::Signals;

use super::Engine;

/// What one series is: its labels, and its value or why it is not known.
type Series = (BTreeMap<&'static str, String>, Result<f64, String>);

/// The series of one pool's signal.
fn series(
    pool: &str,
    models: &[String],
    signals: &Result<Signals, String>,
    kind: SignalKind,
) -> Vec<Series> {
    let labels = |model: Option<&str>| {
        let mut l = BTreeMap::from([("inference_pool", pool.to_string())]);
        if let Some(m) = model {
            l.insert("model_name", m.to_string());
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

impl Engine {
    /// The variant's share of its pool's size (see the module doc).
    pub(super) fn signal_share(&self, q: &ShareQuery<'_>) -> Result<Share, ProviderError> {
        let snapshot = self.snapshot();
        if !snapshot.synced {
            return Err(ProviderError::Unavailable(
                "the cluster's objects are not listed yet".into(),
            ));
        }
        let named: Vec<_> = snapshot.named(q.namespace, q.variant).collect();
        let variant = match named.as_slice() {
            [] => {
                let selector = Selector::equal(&[("variant_name", q.variant)]);
                return Err(super::no_variant(
                    &snapshot,
                    q.namespace,
                    q.metric,
                    &selector,
                ));
            }
            [one] => *one,
            several => {
                return Err(ProviderError::Unavailable(format!(
                    "{} variants named {} in namespace {} (declared by several objects); name one with a unique name",
                    several.len(),
                    q.variant,
                    q.namespace
                )))
            }
        };
        let picker = snapshot
            .pickers
            .iter()
            .filter(|p| p.namespace == q.namespace && q.pool.is_none_or(|n| p.pool == n))
            .find(|p| p.variants.iter().any(|v| *v == q.variant))
            .ok_or_else(|| ProviderError::NotInPool {
                namespace: q.namespace.to_string(),
                variant: q.variant.to_string(),
                pool: q.pool.map(str::to_string),
            })?;
        let mut labels = vec![("inference_pool", picker.pool.as_str())];
        let shape = if q.signal == SignalKind::PoolSaturation {
            Shape::PerReplica
        } else {
            labels.push(("model_name", variant.model_id.as_str()));
            Shape::Total
        };
        let value: f64 = self
            .signal_metric(q.namespace, q.metric, q.signal, &Selector::equal(&labels))?
            .iter()
            .map(|i| i.value_milli as f64 / 1000.0)
            .sum();
        let group: Vec<_> = snapshot
            .namespace(q.namespace)
            .iter()
            .filter(|v| v.model_id == variant.model_id && picker.variants.contains(&v.name))
            .collect();
        let (inputs, free) = self.split_inputs(&snapshot, &group);
        let s = split(
            &inputs,
            shape,
            value,
            q.threshold,
            q.activation,
            free.as_ref(),
        );
        let targets: Vec<(String, i64)> = inputs
            .iter()
            .map(|v| v.name.clone())
            .zip(s.targets)
            .collect();
        let target = targets
            .iter()
            .find(|(n, _)| *n == q.variant)
            .map_or(variant.spec_replicas, |(_, t)| *t);
        Ok(Share {
            target,
            pool: picker.pool.clone(),
            value,
            demand: s.demand,
            targets,
        })
    }

    /// The split's view of a pool's variants of one model, and the free GPUs by type when the GPU
    /// limiter is on.
    fn split_inputs(
        &self,
        snapshot: &Snapshot,
        group: &[&Variant],
    ) -> (Vec<SplitVariant>, Option<BTreeMap<String, i64>>) {
        // Capacity per replica: what saturation V2 knows of every variant, else every replica alike.
        let memory = self.memory.load();
        let known: Option<Vec<f64>> = group
            .iter()
            .map(|v| {
                memory
                    .record(&v.namespace, &v.model_id, &v.name)
                    .map(|r| r.effective_capacity as f64)
                    .filter(|c| *c > 0.0)
            })
            .collect();
        let capacities = known.unwrap_or_else(|| vec![1.0; group.len()]);
        let free = match (&snapshot.gpus, self.config.load().limiter().enabled) {
            (Gpus::Known(inventory), true) => Some(
                inventory
                    .types
                    .iter()
                    .map(|(t, g)| (t.clone(), g.free()))
                    .collect(),
            ),
            _ => None,
        };
        let single = match &snapshot.gpus {
            Gpus::Known(i) => i.single_type(),
            Gpus::Unknown { .. } => None,
        };
        let inputs: Vec<SplitVariant> = group
            .iter()
            .zip(capacities)
            .map(|(v, capacity)| SplitVariant {
                name: v.name.clone(),
                cost: v.cost,
                capacity,
                current: v.spec_replicas,
                ready: v.ready_replicas,
                min: v.bounds.min_replicas,
                max: v.bounds.max_replicas,
                accelerator: charged_type(&v.accelerator, single),
                gpus: v.gpus_per_replica,
            })
            .collect();
        (inputs, free)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use arc_swap::ArcSwap;

    use super::*;
    use crate::cluster::nodes::Gpus;
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
        engine_with(Snapshot {
            synced: true,
            ..Snapshot::default()
        })
    }

    fn engine_with(snapshot: Snapshot) -> Engine {
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

    /// Pool "chat" (saturation 0.8) selects model a's variants: "a100" ($10, 1 replica), "h100" ($40,
    /// 1 replica), and pool "batch" (unreadable) selects "b-l4".
    fn pool_engine(gpus: Gpus, limiter: bool) -> Engine {
        use crate::cluster::snapshot::Variant;
        use crate::target::EndpointPicker;
        let variant = |name: &str, model: &str, acc: &str, cost: f64| Variant {
            ..Variant::new(
                "llm",
                name,
                (model, acc),
                cost,
                vec![PodTarget::new(
                    "llm",
                    &format!("{name}-0"),
                    "127.0.0.1",
                    8000,
                )],
            )
        };
        let picker = |pool: &str, variants: &[&str]| EndpointPicker {
            namespace: "llm".into(),
            pool: pool.into(),
            service: format!("{pool}-epp"),
            models: vec![],
            variants: variants.iter().map(ToString::to_string).collect(),
            pods: Ok(vec![]),
        };
        let e = engine_with(Snapshot {
            synced: true,
            variants: vec![
                variant("a100", "a", "A100", 10.0),
                variant("h100", "a", "H100", 40.0),
                variant("b-l4", "c", "L4", 5.0),
            ],
            pickers: vec![
                picker("chat", &["a100", "h100"]),
                picker("batch", &["b-l4"]),
            ],
            gpus,
            ..Snapshot::default()
        });
        if limiter {
            let (global, _) = crate::saturation::config::ScalingConfig::from_configmap(
                &Default::default(),
                &crate::saturation::configmap_data(&[("default", "enableLimiter: true\n")]),
            );
            e.config
                .store(Arc::new(Thresholds::default().with_global(global)));
        }
        e
    }

    fn share(
        e: &Engine,
        variant: &str,
        signal: SignalKind,
        threshold: f64,
    ) -> Result<Share, ProviderError> {
        let metric = match signal {
            SignalKind::PoolSaturation => "llm_d_router_epp_flow_control_pool_saturation",
            SignalKind::RunningRequests => "llm_d_router_epp_running_requests",
            SignalKind::QueueSize => "llm_d_router_epp_flow_control_queue_size",
        };
        e.signal_share(&ShareQuery {
            namespace: "llm",
            variant,
            signal,
            metric,
            pool: None,
            threshold,
            activation: 0.0,
        })
    }

    #[test]
    fn a_pools_size_is_split_across_its_variants_cost_aware() {
        let e = pool_engine(Gpus::default(), false);
        // 2 ready × 0.8 / 0.4 = 4 replicas: both additions on the cheaper A100 variant.
        let s = share(&e, "a100", SignalKind::PoolSaturation, 0.4).unwrap();
        assert_eq!((s.pool.as_str(), s.value, s.demand), ("chat", 0.8, 4.0));
        assert_eq!(s.targets, vec![("a100".into(), 3), ("h100".into(), 1)]);
        assert_eq!(s.target, 3);
        assert_eq!(
            share(&e, "h100", SignalKind::PoolSaturation, 0.4)
                .unwrap()
                .target,
            1
        );
        // 12 running / 4 per replica = 3: one more, on A100. Model a's series only.
        let s = share(&e, "h100", SignalKind::RunningRequests, 4.0).unwrap();
        assert_eq!(s.targets, vec![("a100".into(), 2), ("h100".into(), 1)]);
        // 3 queued / 8 per replica: one replica is enough; the dearer one goes.
        let s = share(&e, "h100", SignalKind::QueueSize, 8.0).unwrap();
        assert_eq!((s.target, s.targets[0].1), (0, 1));
    }

    #[test]
    fn the_limiter_bounds_the_split_and_failures_say_why() {
        let mut inventory = crate::saturation::limiter::Inventory::default();
        inventory.add("NVIDIA-A100-SXM4-80GB", 1, 1);
        inventory.add("NVIDIA-H100-80GB-HBM3", 4, 1);
        // No A100 free: the additions land on H100, 3 free.
        let e = pool_engine(Gpus::Known(inventory.clone()), true);
        let s = share(&e, "a100", SignalKind::PoolSaturation, 0.4).unwrap();
        assert_eq!(s.targets, vec![("a100".into(), 1), ("h100".into(), 3)]);
        // The limiter off: the inventory is not read.
        let e = pool_engine(Gpus::Known(inventory), false);
        assert_eq!(
            share(&e, "a100", SignalKind::PoolSaturation, 0.4)
                .unwrap()
                .target,
            3
        );
        // An unreadable picker: 503, never a share of zero.
        assert!(matches!(
            share(&e, "b-l4", SignalKind::PoolSaturation, 0.4),
            Err(ProviderError::Unavailable(why)) if why.contains("connection refused")
        ));
        // An unknown variant, and a variant no pool selects.
        assert!(matches!(
            share(&e, "nope", SignalKind::PoolSaturation, 0.4),
            Err(ProviderError::NoMatch { .. })
        ));
        let lonely = engine_with(Snapshot {
            synced: true,
            variants: vec![crate::cluster::snapshot::Variant::new(
                "llm",
                "solo",
                ("a", "A100"),
                1.0,
                vec![],
            )],
            ..Snapshot::default()
        });
        assert!(matches!(
            share(&lonely, "solo", SignalKind::PoolSaturation, 0.4),
            Err(ProviderError::NotInPool { .. })
        ));
    }
}
