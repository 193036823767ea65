//! Saturation V2's learning cycle: once per `--capacity-learn-interval` (WVA's 15 s optimization
//! interval) every model is analysed, and what the analysis observed (k2 observations, each variant's
//! measured capacity) is added to the engine's
//! [`CapacityMemory`](crate::saturation::v2::CapacityMemory); records derived from Deployments are
//! reloaded, and entries nobody updates are evicted. Requests only read the memory, so an answer never
//! depends on how many requests came before it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::health::Heartbeat;
use crate::saturation::v2::config::AnalyzerChoice;
use crate::saturation::v2::memory::RecordKey;
use crate::saturation::v2::CapacityRecord;

use super::Engine;

/// WVA v0.9's default `GLOBAL_OPT_INTERVAL`.
pub const DEFAULT_LEARN_INTERVAL: Duration = Duration::from_secs(15);

/// The learning loop's task.
pub struct CapacityLearner {
    pub engine: Arc<Engine>,
    pub every: Duration,
    pub heartbeat: Arc<Heartbeat>,
}

impl CapacityLearner {
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.engine.learn_once(Instant::now());
            self.heartbeat.beat();
        }
    }
}

/// What one cycle did, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Learned {
    pub models: usize,
    pub observations: usize,
    pub live_records: usize,
}

impl Engine {
    /// One learning cycle over the current snapshot (nothing while V1 decides, or before the first sync).
    pub fn learn_once(&self, now: Instant) -> Learned {
        let snapshot = self.snapshot();
        if !snapshot.synced || self.config.load().analyzer() != AnalyzerChoice::V2 {
            return Learned::default();
        }
        let mut memory = (**self.memory.load()).clone();
        let mut present: BTreeSet<RecordKey> = BTreeSet::new();
        for v in &snapshot.variants {
            let key = (v.namespace.clone(), v.model_id.clone(), v.name.clone());
            if let Some(params) = &v.engine_params {
                memory.load_deployment(
                    key.clone(),
                    CapacityRecord::from_deployment(&v.accelerator, v.gpus_per_replica, params),
                );
            }
            present.insert(key);
        }
        let mut models: Vec<(&str, &str)> = snapshot
            .variants
            .iter()
            .map(|v| (v.namespace.as_str(), v.model_id.as_str()))
            .collect();
        models.dedup();
        let mut done = Learned::default();
        for (ns, model) in models {
            let e = self.explain_model(&snapshot, ns, model, false);
            if e.unavailable.is_some() {
                continue;
            }
            if let Some(c) = &e.decision.capacity {
                memory.learn(ns, model, &c.learned, now);
                done.models += 1;
                done.observations += c.learned.observations.len();
                done.live_records += c.learned.live.len();
            }
        }
        memory.evict(now, &|k| present.contains(k));
        self.memory.store(Arc::new(memory));
        done
    }
}
