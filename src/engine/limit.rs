//! The GPU limiter across every model (WVA v0.9 runs it on all of a cycle's V1 decisions at once): a
//! planning loop decides every model without it, runs [`limiter::limit`] on all the scale-ups with the
//! cluster's GPU inventory and the configured quotas, and publishes the plan; each decision then applies
//! the plan for its model. The request path only reads the plan.
//!
//! A decision whose unlimited targets are still those the plan was made from takes the plan's targets
//! (cuts and moves alike). One that changed since (new samples) may not scale a variant beyond what the
//! plan granted it until the next plan, a second later. Without the nodes' inventory the limiter does
//! not limit (WVA's fallback) and says so; so does a plan older than [`STALE_AFTER`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cluster::nodes::Gpus;
use crate::cluster::snapshot::Snapshot;
use crate::health::Heartbeat;
use crate::saturation::limiter::{self, Granted, Request, ScoreModel};
use crate::saturation::v2::config::{AnalyzerChoice, V2Fields};
use crate::saturation::v2::Totals;
use crate::saturation::{Analysis, Role, TargetReason};

use super::{Engine, ModelExplanation};

/// How often the plan is made.
pub const PLAN_INTERVAL: Duration = Duration::from_secs(1);
/// A plan this old is not applied (its loop is stuck): decisions go unlimited and say why.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// The limiter's plan, as the last planning round left it.
#[derive(Debug, Clone, Default)]
pub struct LimitPlan {
    pub made: Option<Instant>,
    pub outcome: Outcome,
}

/// What the last round decided.
#[derive(Debug, Clone, Default)]
pub enum Outcome {
    /// The limiter is not enabled (`enableLimiter`), or the engine is refused (no decisions).
    #[default]
    Off,
    /// Enabled, but the GPUs are unknown: nothing is limited (WVA's fallback).
    Unlimited { reason: String },
    /// Per model (namespace, model): the unlimited targets the plan was made from, and the plan's.
    Planned(HashMap<(String, String), ModelPlan>),
}

/// One model's share of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPlan {
    pub unlimited: BTreeMap<String, i64>,
    pub granted: BTreeMap<String, Granted>,
}

/// What the limiter did to one model's decision, in its explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum LimiterNote {
    /// The plan was applied: per variant, what it was granted and why.
    Applied {
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        variants: BTreeMap<String, Granted>,
    },
    /// The decision changed since the plan: no variant scales beyond what the plan granted it.
    Capped {
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        variants: BTreeMap<String, Granted>,
    },
    /// Enabled but not limiting, and why.
    Unlimited { reason: String },
}

/// The planning loop's task.
pub struct LimitPlanner {
    pub engine: Arc<Engine>,
    pub every: Duration,
    pub heartbeat: Arc<Heartbeat>,
}

impl LimitPlanner {
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said: Option<String> = None;
        loop {
            tick.tick().await;
            let plan = self.engine.plan_limits(Instant::now());
            // The limiter's state, logged when it changes (not every second).
            let now = match &plan.outcome {
                Outcome::Off => None,
                Outcome::Unlimited { reason } => Some(reason.clone()),
                Outcome::Planned(_) => Some(String::new()),
            };
            if now != said {
                match &now {
                    Some(reason) if !reason.is_empty() => {
                        tracing::warn!(%reason, "the GPU limiter is enabled but not limiting: scale-ups are granted without checking GPUs")
                    }
                    Some(_) => tracing::info!(
                        "the GPU limiter is limiting scale-ups to the GPUs the nodes have free"
                    ),
                    None => {}
                }
                said = now;
            }
            self.heartbeat.beat();
        }
    }
}

/// A V2 model as GreedyByScore and rescale see it: a model that votes and whose capacity is known;
/// `requests[first..]` are its variants.
pub(super) fn score_work(
    d: &super::ModelDecision,
    entry: &V2Fields,
    requests: &[Request],
    first: usize,
) -> Option<ScoreModel> {
    let capacity = d.capacity.as_ref()?;
    if !entry.saturation_votes() || !capacity.informative() {
        return None;
    }
    let per_role = |figure: fn(&Totals) -> f64| -> Vec<(Role, f64)> {
        if capacity.roles.is_empty() {
            vec![(Role::Both, figure(&capacity.model))]
        } else {
            capacity
                .roles
                .iter()
                .map(|(r, t)| (*r, figure(t)))
                .collect()
        }
    };
    let mut capacities = Vec::new();
    let mut indices = Vec::new();
    for c in &capacity.variants {
        if let Some(i) = (first..requests.len()).find(|i| requests[*i].variant == c.name) {
            capacities.push(c.to_static());
            indices.push(i);
        }
    }
    Some(ScoreModel {
        priority: entry.priority(),
        score: entry.saturation_score(),
        required: per_role(|t| t.required_capacity),
        demand: per_role(|t| t.demand),
        capacities,
        requests: indices,
    })
}

/// The mean spare KV fraction V1 found on a variant's replicas (0 when it has none: most saturated).
pub(super) fn spare_of(analysis: Option<&Analysis>, by_role: &[&Analysis], variant: &str) -> f64 {
    analysis
        .into_iter()
        .chain(by_role.iter().copied())
        .flat_map(|a| a.variants.iter())
        .find(|v| v.variant == variant)
        .map_or(0.0, |v| v.avg_spare_kv_capacity)
}

impl Engine {
    /// One planning round over the current snapshot; returns the plan it published.
    pub fn plan_limits(&self, now: Instant) -> Arc<LimitPlan> {
        let plan = Arc::new(LimitPlan {
            made: Some(now),
            outcome: self.plan_outcome(&self.snapshot()),
        });
        self.limits.store(plan.clone());
        plan
    }

    fn plan_outcome(&self, snapshot: &Snapshot) -> Outcome {
        let scaling = self.config.load();
        let config = scaling.limiter();
        let v2 = match scaling.analyzer() {
            AnalyzerChoice::V1 => false,
            AnalyzerChoice::V2 => true,
            AnalyzerChoice::Refused { .. } => return Outcome::Off,
        };
        if !config.enabled || !snapshot.synced {
            return Outcome::Off;
        }
        let inventory = match &snapshot.gpus {
            Gpus::Known(i) => Some(i),
            Gpus::Unknown { reason } => {
                if config
                    .limiters
                    .iter()
                    .any(|l| matches!(l, limiter::Limiter::GpuInventory))
                {
                    return Outcome::Unlimited {
                        reason: reason.clone(),
                    };
                }
                None
            }
        };
        let mut models: Vec<(&str, &str)> = snapshot
            .variants
            .iter()
            .map(|v| (v.namespace.as_str(), v.model_id.as_str()))
            .collect();
        models.dedup();
        let mut requests = Vec::new();
        let mut work = Vec::new();
        let mut unlimited: HashMap<(String, String), BTreeMap<String, i64>> = HashMap::new();
        for (ns, model) in models {
            let e = self.explain_unlimited(snapshot, ns, model, false);
            let first = requests.len();
            let d = &e.decision;
            let by_role: Vec<&Analysis> = d.analysis_by_role.values().collect();
            let targets = unlimited
                .entry((ns.to_string(), model.to_string()))
                .or_default();
            for v in snapshot.model(ns, model) {
                // A model without an answer (503) still holds its GPUs: it asks for nothing more.
                let target = match (&e.unavailable, d.targets.get(v.name.as_str())) {
                    (None, Some(t)) => *t,
                    _ => v.spec_replicas,
                };
                targets.insert(v.name.clone(), target);
                requests.push(Request {
                    namespace: ns.to_string(),
                    model: model.to_string(),
                    variant: v.name.clone(),
                    accelerator: v.accelerator.clone(),
                    current: v.spec_replicas,
                    target,
                    gpus_per_replica: v.gpus_per_replica,
                    min_replicas: Some(v.bounds.min_replicas),
                    max_replicas: v.bounds.max_replicas,
                    spare_capacity: spare_of(d.analysis.as_ref(), &by_role, &v.name),
                    cost: v.cost,
                    unschedulable_pods: v.unschedulable_pods,
                });
            }
            // A model without an answer (503) asks for nothing more.
            if v2 && e.unavailable.is_none() {
                let entry = scaling.resolve_all(model, ns).v2;
                work.extend(score_work(&e.decision, &entry, &requests, first));
            }
        }
        let granted = if v2 {
            limiter::limit_by_score(
                &requests,
                &work,
                inventory,
                &config.limiters,
                &scaling.rescale(),
            )
        } else {
            limiter::limit(&requests, inventory, &config.limiters)
        };
        match granted {
            Ok(granted) => {
                let mut plans: HashMap<(String, String), ModelPlan> = HashMap::new();
                for (r, g) in requests.into_iter().zip(granted) {
                    let key = (r.namespace, r.model);
                    let plan = plans.entry(key.clone()).or_insert_with(|| ModelPlan {
                        unlimited: unlimited.remove(&key).unwrap_or_default(),
                        granted: BTreeMap::new(),
                    });
                    plan.granted.insert(r.variant, g);
                }
                Outcome::Planned(plans)
            }
            Err(e) => Outcome::Unlimited {
                reason: e.to_string(),
            },
        }
    }

    /// Applies the current plan to one model's decision.
    pub(super) fn apply_limits(&self, e: &mut ModelExplanation, snapshot: &Snapshot, now: Instant) {
        let plan = self.limits.load();
        if matches!(plan.outcome, Outcome::Off) {
            return;
        }
        let current: BTreeMap<String, i64> = snapshot
            .model(e.namespace, e.model_id)
            .iter()
            .map(|v| (v.name.clone(), v.spec_replicas))
            .collect();
        let current = &current;
        let stale = plan
            .made
            .is_none_or(|made| now.saturating_duration_since(made) > STALE_AFTER);
        let models = match &plan.outcome {
            Outcome::Off => return,
            _ if stale => {
                e.decision.limiter = Some(LimiterNote::Unlimited {
                    reason: format!(
                        "the limiter's plan is older than {}s; not limiting",
                        STALE_AFTER.as_secs()
                    ),
                });
                return;
            }
            Outcome::Unlimited { reason } => {
                e.decision.limiter = Some(LimiterNote::Unlimited {
                    reason: reason.clone(),
                });
                return;
            }
            Outcome::Planned(models) => models,
        };
        let key = (e.namespace.to_string(), e.model_id.to_string());
        let Some(plan) = models.get(&key) else {
            // A model the plan has not seen yet: no scale-up until it has.
            cap_scale_ups(e, current, &BTreeMap::new());
            e.decision.limiter = Some(LimiterNote::Capped {
                variants: BTreeMap::new(),
            });
            return;
        };
        let unchanged = plan.unlimited.iter().map(|(n, t)| (n.as_str(), *t)).eq(e
            .decision
            .targets
            .iter()
            .map(|(n, t)| (n.as_ref(), *t)));
        if unchanged {
            for (name, g) in &plan.granted {
                set_target(e, name, g);
            }
            e.decision.limiter = Some(LimiterNote::Applied {
                variants: touched(&plan.granted),
            });
        } else {
            cap_scale_ups(e, current, &plan.granted);
            e.decision.limiter = Some(LimiterNote::Capped {
                variants: touched(&plan.granted),
            });
        }
    }
}

/// The variants the limiter said something about.
pub(super) fn touched(granted: &BTreeMap<String, Granted>) -> BTreeMap<String, Granted> {
    granted
        .iter()
        .filter(|(_, g)| !g.steps.is_empty())
        .map(|(n, g)| (n.clone(), g.clone()))
        .collect()
}

/// Puts the plan's target on a variant, with the reason when the limiter changed it.
fn set_target(e: &mut ModelExplanation, name: &str, g: &Granted) {
    set_decision_target(&mut e.decision, name, g);
}

/// [`set_target`] on a decision.
pub(super) fn set_decision_target(d: &mut super::ModelDecision, name: &str, g: &Granted) {
    let Some(t) = d.targets.get_mut(name) else {
        return;
    };
    if *t == g.target {
        return;
    }
    let cut = g.target < *t;
    *t = g.target;
    if let Some(r) = d.reasons.iter_mut().find(|r| r.name == name) {
        r.target = g.target;
        if cut {
            r.reason = TargetReason::Limited;
        } else {
            r.reason = TargetReason::ScaleUp;
        }
        r.message = g.steps.join("; ").into();
    }
}

/// No variant scales up beyond what the plan granted it (or at all, when the plan has no entry).
fn cap_scale_ups(
    e: &mut ModelExplanation,
    current: &BTreeMap<String, i64>,
    granted: &BTreeMap<String, Granted>,
) {
    let names: Vec<String> = e.decision.targets.keys().map(ToString::to_string).collect();
    for name in names {
        let now = current.get(&name).copied().unwrap_or_default();
        let t = e.decision.targets[name.as_str()];
        if t <= now {
            continue;
        }
        let allowed = granted.get(&name).map_or(now, |g| g.target.max(now));
        if t > allowed {
            let g = Granted {
                target: allowed,
                gpus_allocated: 0,
                limited_by: granted.get(&name).and_then(|g| g.limited_by.clone()),
                steps: vec![format!(
                    "scale-up to {t} waits for the GPU limiter's next plan (granted {allowed})"
                )],
            };
            set_target(e, &name, &g);
        }
    }
}
