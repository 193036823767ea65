//! WVA's per-variant gauges, kept by every replica; series of variants that are gone are removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::nodes::Gpus;
use crate::engine::Engine;
use crate::saturation::TargetReason;
use crate::telemetry::{
    CapacityLabels, DecisionLabels, GpuTypeLabels, LimitedLabels, Metrics, ModelVariantLabels,
    SaturationLabels, VariantLabels,
};

use super::view::{views, CapacityFigures, VariantView};

/// The per-variant series last set, so those of variants that are gone (or reasons that changed) are removed.
#[derive(Debug, Default)]
pub(crate) struct GaugeSeries {
    variants: BTreeSet<VariantLabels>,
    decisions: BTreeSet<DecisionLabels>,
    saturation: BTreeSet<SaturationLabels>,
    gpu_types: BTreeSet<GpuTypeLabels>,
}

/// Updates the per-variant gauges from the views, removing series of variants that are gone.
pub(crate) fn update_gauges(metrics: &Metrics, views: &[VariantView], previous: &mut GaugeSeries) {
    let mut now = GaugeSeries::default();
    for v in views {
        let (Some(desired), Some(acc)) = (v.desired, &v.accelerator) else {
            continue;
        };
        let labels = VariantLabels {
            variant_name: v.name.clone(),
            namespace: v.namespace.clone(),
            accelerator_type: acc.clone(),
        };
        let ratio = if v.ready_replicas == 0 {
            desired as f64
        } else {
            desired as f64 / v.ready_replicas as f64
        };
        metrics.set_variant(&labels, desired as f64, v.ready_replicas as f64, ratio);
        for (family, value) in [
            (&metrics.variant_kv_cache, v.kv_cache_usage),
            (&metrics.variant_queue, v.queue_length),
        ] {
            match value {
                Some(x) => {
                    family.get_or_create(&labels).set(x);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
        if let Some(reason) = &v.desired_reason {
            let d = DecisionLabels {
                variant_name: v.name.clone(),
                namespace: v.namespace.clone(),
                role: v.role.as_str(),
                reason: reason.as_str().to_string(),
            };
            metrics.variant_decision.get_or_create(&d).set(1);
            // A cut counted once, when it starts (WVA counts a newly limited decision).
            if *reason == TargetReason::Limited && !previous.decisions.contains(&d) {
                metrics
                    .limiter
                    .limited
                    .get_or_create(&LimitedLabels {
                        variant_name: v.name.clone(),
                        namespace: v.namespace.clone(),
                        limiter_name: v.limited_by.clone().unwrap_or_default(),
                    })
                    .inc();
            }
            now.decisions.insert(d);
        }
        // WVA withholds the saturation gauges of a variant whose accelerator is unresolved.
        if let (Some(c), None) = (&v.capacity, &v.accelerator_unresolved) {
            let s = SaturationLabels {
                variant_name: v.name.clone(),
                namespace: v.namespace.clone(),
                model_name: c.model_id.clone(),
                accelerator_type: acc.clone(),
            };
            set_saturation(metrics, &s, c);
            now.saturation.insert(s);
        }
        now.variants.insert(labels);
    }
    for gone in previous.variants.difference(&now.variants) {
        metrics.remove_variant(gone);
        metrics.variant_kv_cache.remove(gone);
        metrics.variant_queue.remove(gone);
    }
    now.gpu_types = std::mem::take(&mut previous.gpu_types);
    for gone in previous.decisions.difference(&now.decisions) {
        metrics.variant_decision.remove(gone);
    }
    for gone in previous.saturation.difference(&now.saturation) {
        remove_saturation(metrics, gone);
    }
    *previous = now;
}

fn unit_labels(s: &SaturationLabels) -> (CapacityLabels, ModelVariantLabels) {
    (
        CapacityLabels {
            variant_name: s.variant_name.clone(),
            namespace: s.namespace.clone(),
            model_name: s.model_name.clone(),
            unit: "continuous",
        },
        ModelVariantLabels {
            variant_name: s.variant_name.clone(),
            namespace: s.namespace.clone(),
            model_name: s.model_name.clone(),
        },
    )
}

fn set_saturation(metrics: &Metrics, s: &SaturationLabels, c: &CapacityFigures) {
    let g = &metrics.saturation;
    let (unit, plain) = unit_labels(s);
    g.utilization.get_or_create(s).set(c.utilization);
    g.required.get_or_create(&unit).set(c.required);
    g.spare.get_or_create(&unit).set(c.spare);
    g.kv_tokens_used
        .get_or_create(&plain)
        .set(c.kv_tokens_used as f64);
    g.kv_tokens_capacity
        .get_or_create(&plain)
        .set(c.kv_tokens_capacity as f64);
}

fn remove_saturation(metrics: &Metrics, s: &SaturationLabels) {
    let g = &metrics.saturation;
    let (unit, plain) = unit_labels(s);
    g.utilization.remove(s);
    g.required.remove(&unit);
    g.spare.remove(&unit);
    g.kv_tokens_used.remove(&plain);
    g.kv_tokens_capacity.remove(&plain);
}

/// The GPU limiter's inventory gauges: whether the nodes' GPUs are known, and per type the allocatable
/// and free GPUs; types that are gone are removed.
pub(crate) fn update_gpu_gauges(metrics: &Metrics, gpus: &Gpus, previous: &mut GaugeSeries) {
    let g = &metrics.limiter;
    let mut now = BTreeSet::new();
    match gpus {
        Gpus::Known(inventory) => {
            g.discovery_up.set(1);
            for (t, n) in &inventory.types {
                let labels = GpuTypeLabels {
                    accelerator_type: t.clone(),
                };
                g.available.get_or_create(&labels).set(n.allocatable);
                g.free.get_or_create(&labels).set(n.free());
                now.insert(labels);
            }
        }
        Gpus::Unknown { .. } => {
            g.discovery_up.set(0);
        }
    }
    for gone in previous.gpu_types.difference(&now) {
        g.available.remove(gone);
        g.free.remove(gone);
    }
    previous.gpu_types = now;
}

/// Without a status writer (standalone, or `--write-status=false`): keeps the gauges current.
pub struct GaugeLoop {
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
    pub every: Duration,
}

impl GaugeLoop {
    pub async fn run(self: Arc<Self>) {
        let mut gauges = GaugeSeries::default();
        let mut tick = tokio::time::interval(self.every);
        loop {
            tick.tick().await;
            let snapshot = self.engine.snapshot();
            update_gauges(
                &self.metrics,
                &views(&self.engine.explain_at(&snapshot, None), &snapshot),
                &mut gauges,
            );
            update_gpu_gauges(&self.metrics, &snapshot.gpus, &mut gauges);
        }
    }
}
