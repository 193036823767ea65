//! What saturation V2 learns over time: the k2 history (observed compute-bound capacity, a rolling mean
//! of the last ten observations per model, accelerator, GPU count and output-length bucket) and the
//! capacity records per variant (learned live, or derived from the Deployment's arguments), as WVA v0.9
//! keeps them (`saturation_v2/history.go`, `capacity_store.go`).
//!
//! Plain data: the analysis reads it, returns what it learned ([`super::Learned`]), and the engine's
//! learning loop applies that once per cycle. Unlike WVA's store, records are keyed deterministically
//! (a compatible record is the first live one by key, not the first in Go's map order), the live record
//! of a variant is the median of its replicas (not the last one processed), and entries nobody has
//! updated for a long time are evicted (WVA's eviction helpers are never called).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::args::EngineParams;

/// Observations a history entry keeps (WVA's `RollingAverageWindowSize`).
pub const HISTORY_WINDOW: usize = 10;
/// A history entry not updated for this long is dropped (WVA's `HistoryEvictionTimeout`).
pub const HISTORY_EVICTION: Duration = Duration::from_secs(24 * 3600);
/// A live record not updated for this long is dropped (WVA's `CapacityEvictionTimeout`).
pub const RECORD_EVICTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The output-length bucket of a k2 history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Bucket {
    /// Fewer than 100 output tokens on average.
    Short,
    /// Fewer than 500.
    Medium,
    Long,
}

impl Bucket {
    pub fn of(avg_output_tokens: f64) -> Self {
        if avg_output_tokens < 100.0 {
            Bucket::Short
        } else if avg_output_tokens < 500.0 {
            Bucket::Medium
        } else {
            Bucket::Long
        }
    }
}

/// A k2 history entry's key (WVA: `model|accelerator|gpuCount|bucket`, no namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryKey {
    pub model: String,
    pub accelerator: String,
    pub gpus: i64,
    pub bucket: Bucket,
}

#[derive(Debug, Clone)]
struct Rolling {
    values: VecDeque<f64>,
    updated: Instant,
}

impl Rolling {
    fn mean(&self) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }
}

/// Where a capacity record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LearnedFrom {
    /// Derived from the Deployment's arguments.
    Deployment,
    /// Measured on the variant's replicas.
    Live,
}

/// One variant's capacity record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityRecord {
    pub accelerator: String,
    pub gpus: i64,
    pub params: Option<EngineParams>,
    /// KV tokens per replica when known (0: unknown).
    pub total_kv_tokens: i64,
    /// Tokens per replica: measured (live), or the per-step budget B (deployment).
    pub effective_capacity: i64,
    pub learned_from: LearnedFrom,
    #[serde(skip)]
    pub updated: Option<Instant>,
}

impl CapacityRecord {
    /// The record WVA derives from a Deployment: KV tokens when the flags fix them, and the per-step
    /// token budget B as the effective capacity (`LoadFromScaleTarget`).
    pub fn from_deployment(accelerator: &str, gpus: i64, params: &EngineParams) -> Self {
        Self {
            accelerator: accelerator.to_string(),
            gpus,
            params: Some(params.clone()),
            total_kv_tokens: params.total_kv_tokens(),
            effective_capacity: params.effective_max_batched_tokens(),
            learned_from: LearnedFrom::Deployment,
            updated: None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.learned_from == LearnedFrom::Live
    }
}

/// `(namespace, model, variant)`.
pub type RecordKey = (String, String, String);

/// Records by model, then namespace, then variant: every lookup borrows its names.
type Records = BTreeMap<String, BTreeMap<String, BTreeMap<String, CapacityRecord>>>;

/// The k2 history and the capacity records.
#[derive(Debug, Clone, Default)]
pub struct CapacityMemory {
    history: BTreeMap<HistoryKey, Rolling>,
    records: Records,
}

impl CapacityMemory {
    /// The mean of the entry's observations, 0 without any.
    pub fn history_mean(&self, key: &HistoryKey) -> f64 {
        self.history.get(key).map_or(0.0, Rolling::mean)
    }

    /// The entry's observations, oldest first.
    pub fn history_values(&self, key: &HistoryKey) -> Vec<f64> {
        self.history
            .get(key)
            .map(|h| h.values.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn record(&self, namespace: &str, model: &str, variant: &str) -> Option<&CapacityRecord> {
        self.records.get(model)?.get(namespace)?.get(variant)
    }

    fn slot(&mut self, (namespace, model, variant): RecordKey) -> Option<&mut CapacityRecord> {
        self.records
            .get_mut(&model)?
            .get_mut(&namespace)?
            .get_mut(&variant)
    }

    fn insert(&mut self, (namespace, model, variant): RecordKey, record: CapacityRecord) {
        self.records
            .entry(model)
            .or_default()
            .entry(namespace)
            .or_default()
            .insert(variant, record);
    }

    /// A record of the same model on the same hardware with compatible parameters, in any namespace:
    /// the first live one by key, else the first by key (WVA: Go's map order).
    pub fn find_compatible(
        &self,
        model: &str,
        accelerator: &str,
        gpus: i64,
        params: &EngineParams,
    ) -> Option<&CapacityRecord> {
        let mut candidates = self
            .records
            .get(model)?
            .values()
            .flat_map(BTreeMap::values)
            .filter(|r| {
                r.accelerator == accelerator
                    && r.gpus == gpus
                    && r.params
                        .as_ref()
                        .is_some_and(|p| p.capacity_compatible(params))
                    && (r.effective_capacity > 0 || r.total_kv_tokens > 0)
            });
        let first = candidates.clone().next();
        candidates.find(|r| r.is_live()).or(first)
    }

    /// Records a Deployment-derived record unless the variant has a live one (WVA reloads it every cycle).
    pub fn load_deployment(&mut self, key: RecordKey, record: CapacityRecord) {
        match self.slot(key.clone()) {
            Some(r) if r.is_live() => {}
            Some(r) => *r = record,
            None => self.insert(key, record),
        }
    }

    /// Applies what one analysis learned.
    pub fn learn(&mut self, namespace: &str, model: &str, learned: &super::Learned, now: Instant) {
        for (key, value) in &learned.observations {
            let entry = self.history.entry(key.clone()).or_insert_with(|| Rolling {
                values: VecDeque::with_capacity(HISTORY_WINDOW),
                updated: now,
            });
            if entry.values.len() >= HISTORY_WINDOW {
                entry.values.pop_front();
            }
            entry.values.push_back(*value as f64);
            entry.updated = now;
        }
        for live in &learned.live {
            let key = (
                namespace.to_string(),
                model.to_string(),
                live.variant.clone(),
            );
            let params = self.slot(key.clone()).and_then(|r| r.params.clone());
            self.insert(
                key,
                CapacityRecord {
                    accelerator: live.accelerator.clone(),
                    gpus: live.gpus,
                    params,
                    total_kv_tokens: live.total_kv_tokens,
                    effective_capacity: live.effective_capacity,
                    learned_from: LearnedFrom::Live,
                    updated: Some(now),
                },
            );
        }
    }

    /// Drops history not updated within [`HISTORY_EVICTION`], live records not updated within
    /// [`RECORD_EVICTION`], and Deployment-derived records of variants no longer in `present`.
    pub fn evict(&mut self, now: Instant, present: &dyn Fn(&RecordKey) -> bool) {
        self.history
            .retain(|_, h| now.saturating_duration_since(h.updated) < HISTORY_EVICTION);
        for (model, by_ns) in &mut self.records {
            for (ns, by_variant) in by_ns.iter_mut() {
                by_variant.retain(|variant, r| match r.updated {
                    Some(at) => now.saturating_duration_since(at) < RECORD_EVICTION,
                    None => present(&(ns.clone(), model.clone(), variant.clone())),
                });
            }
            by_ns.retain(|_, v| !v.is_empty());
        }
        self.records.retain(|_, v| !v.is_empty());
    }
}
