//! WVA v0.9's GreedyByScore (github.com/llm-d/llm-d-workload-variant-autoscaler at commit 2976e4ee,
//! `internal/engines/pipeline/greedy_score_optimizer.go`): saturation V2's scale-ups under the GPU
//! limiter, shared across models by priority.
//!
//! Each model needing capacity has a fair-share value, `priority × score × Σ required tokens`. In
//! turns, the model with the highest value is given replicas (its cheapest variant per token that has
//! GPUs of its type left in every budget) until its value falls to the mean of the models still
//! waiting; a model that could not be given anything, or is still above the mean after its turn, is
//! done. Models that need no capacity keep their unlimited decision (scale-down included), as do the
//! models' variants at zero replicas (scale from zero). Where WVA's sorts are unstable, ties are broken
//! by the models' order and the variants' names.

use super::rescale::{rescale, Books};
use super::{
    budgets, by_model, move_from_unschedulable, unchanged, Budget, Granted, Inventory, LimitError,
    Limiter, Request, RescaleFlags,
};
use crate::saturation::v2::optimize::{add_replicas, cheaper, replica_capacity, to_int, Grow};
use crate::saturation::v2::VariantCapacity;
use crate::saturation::Role;

/// The name a cut is attributed to when the GPUs were there but went to models further from their
/// fair share.
pub const FAIR_SHARE: &str = "fair-share";

/// One model's scale-up work.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreModel {
    /// The model's `priority` (WVA reads 0 as 1).
    pub priority: f64,
    /// The saturation analyzer's score.
    pub score: f64,
    /// Tokens of capacity each role needs (the analysis' required capacity).
    pub required: Vec<(Role, f64)>,
    /// Tokens each role's load asks for (the analysis' demand; rescale weighs models by it).
    pub demand: Vec<(Role, f64)>,
    /// The analysed variants' capacities, and for each the index of its [`Request`].
    pub capacities: Vec<VariantCapacity<'static>>,
    pub requests: Vec<usize>,
}

/// A model's state while GPUs are shared out.
struct Work<'a> {
    model: &'a ScoreModel,
    namespace: &'a str,
    targets: Vec<i64>,
    /// What each role still needs.
    remaining: Vec<f64>,
    /// The fair-share value; ≤ 0 once the model is done.
    value: f64,
}

/// `priority × score × Σ need`, or the largest need when that is not positive.
fn fair_share_value(priority: f64, score: f64, need: &[f64]) -> f64 {
    let v = priority * score * need.iter().sum::<f64>();
    if v > 0.0 {
        v
    } else {
        need.iter().copied().fold(0.0, f64::max)
    }
}

/// What the GPU budgets let one model take during its turn.
struct Turn<'a, 'b> {
    work: &'b Work<'a>,
    requests: &'a [Request],
    types: &'a [String],
    budgets: &'b mut [Budget],
    /// The model's share this turn, in tokens (a variant takes at most `⌈share / capacity⌉` replicas).
    share: f64,
    /// Tokens of capacity added this turn, per role.
    added: Vec<f64>,
}

impl Turn<'_, '_> {
    /// GPUs of variant `i`'s type left in every budget (`None`: unbounded).
    fn available(&self, i: usize) -> Option<i64> {
        let r = self.work.model.requests[i];
        let t = &self.types[r];
        self.budgets
            .iter()
            .filter_map(|b| b.available(self.work.namespace, t))
            .min()
    }
}

impl Grow for Turn<'_, '_> {
    fn pick(&mut self, role: usize, targets: &[i64]) -> Option<(usize, i64)> {
        let model = self.work.model;
        let role = model.required[role].0;
        let vcs = &model.capacities;
        let mut candidates: Vec<usize> = (0..vcs.len()).filter(|i| vcs[*i].role == role).collect();
        candidates.sort_by(|a, b| cheaper(&vcs[*a], &vcs[*b]));
        candidates.into_iter().find_map(|i| {
            if vcs[i].per_replica_capacity <= 0.0 {
                return None;
            }
            let r = &self.requests[model.requests[i]];
            let gpr = r.gpus_per_replica.max(1);
            let fits = self.available(i).map_or(i64::MAX, |a| a / gpr);
            let share = to_int((self.share / replica_capacity(&vcs[i])).ceil());
            let mut cap = share.min(fits);
            if let Some(max) = r.max_replicas.filter(|m| *m > 0) {
                cap = cap.min(max - targets[i]);
            }
            (cap > 0).then_some((i, cap))
        })
    }

    fn commit(&mut self, variant: usize, replicas: i64) {
        let model = self.work.model;
        let role = model.capacities[variant].role;
        if let Some(k) = model.required.iter().position(|(r, _)| *r == role) {
            self.added[k] += replicas as f64 * replica_capacity(&model.capacities[variant]);
        }
        let r = model.requests[variant];
        let gpus = replicas * self.requests[r].gpus_per_replica.max(1);
        for b in self.budgets.iter_mut() {
            b.debit(self.work.namespace, &self.types[r], gpus);
        }
    }
}

/// Shares the GPUs among the models' scale-ups (V2 under the limiter), after rescale where `rescale`
/// enables it. `requests` are every variant of every model, with its unlimited target; `models` the
/// models whose capacity is known, each naming its analysed variants' requests. Returns the requests'
/// targets, in their order.
pub fn limit_by_score(
    requests: &[Request],
    models: &[ScoreModel],
    inventory: Option<&Inventory>,
    limiters: &[Limiter],
    flags: &RescaleFlags,
) -> Result<Vec<Granted>, LimitError> {
    let (types, mut budgets) = budgets(requests, inventory, limiters)?;
    let mut out = unchanged(requests);
    let handled = if flags.any() {
        let mut books = Books {
            requests,
            types: &types,
            budgets: &mut budgets,
        };
        rescale(models, &mut books, flags, &mut out)
    } else {
        Default::default()
    };
    let mut work: Vec<Work<'_>> = models
        .iter()
        .enumerate()
        .filter(|(i, m)| !m.requests.is_empty() && !handled.contains(i))
        .map(|(_, m)| {
            let remaining: Vec<f64> = m.required.iter().map(|(_, n)| n.max(0.0)).collect();
            Work {
                model: m,
                namespace: &requests[m.requests[0]].namespace,
                targets: m.requests.iter().map(|r| requests[*r].current).collect(),
                value: fair_share_value(m.priority, m.score, &remaining),
                remaining,
            }
        })
        .filter(|w| w.value > 0.0)
        .collect();
    loop {
        let active: Vec<usize> = (0..work.len()).filter(|w| work[*w].value > 0.0).collect();
        let Some(&first) = active.first() else {
            break;
        };
        let n = active.len() as f64;
        let mean = active.iter().map(|w| work[*w].value).sum::<f64>() / n;
        let w = active.iter().copied().fold(first, |best, w| {
            if work[w].value > work[best].value {
                w
            } else {
                best
            }
        });
        let allocation_mean = if active.len() == 1 {
            0.0
        } else if work[w].value <= mean {
            mean - work[w].value / n
        } else {
            mean
        };
        let before = work[w].value;
        take_turn(
            &mut work[w],
            before - allocation_mean,
            requests,
            &types,
            &mut budgets,
        );
        if work[w].value >= before || work[w].value > mean {
            work[w].value = -1.0;
        }
    }
    for w in &work {
        settle(w, requests, &types, limiters, &budgets, &mut out);
    }
    let models = by_model(requests);
    move_from_unschedulable(requests, &types, &models, &mut budgets, &mut out);
    Ok(out)
}

/// One model's turn: replicas for up to `share` of its fair-share value, as the budgets allow; its
/// value is then recomputed from what the model still needs.
///
/// WVA spends the share as tokens although it is in fair-share units (`priority × score × tokens`), so
/// a model of priority 0.5 gets half the tokens its turn was meant to give and is then retired above the
/// mean with GPUs free, and one of priority 2 twice; and it recomputes a disaggregated model's value
/// from the turn's capped share, so that model counts as satisfied after one turn. Here the share is
/// converted to tokens, and every model's value comes from what it still needs.
fn take_turn(
    w: &mut Work<'_>,
    share: f64,
    requests: &[Request],
    types: &[String],
    budgets: &mut [Budget],
) {
    if share <= 0.0 {
        return;
    }
    let weight = w.model.priority * w.model.score;
    let tokens = if weight > 0.0 { share / weight } else { share };
    let mut need: Vec<f64> = w.remaining.iter().map(|r| r.min(tokens)).collect();
    let mut targets = std::mem::take(&mut w.targets);
    let mut turn = Turn {
        work: w,
        requests,
        types,
        budgets,
        share: tokens,
        added: vec![0.0; need.len()],
    };
    add_replicas(&w.model.capacities, &mut targets, &mut need, &mut turn);
    let added = turn.added;
    w.targets = targets;
    for (remaining, added) in w.remaining.iter_mut().zip(added) {
        *remaining = (*remaining - added).max(0.0);
    }
    w.value = fair_share_value(w.model.priority, w.model.score, &w.remaining);
}

/// Writes a model's shared-out targets, saying for each variant what it was given and, where it got
/// less than its unlimited decision, what held it back: the first limiter without room for another
/// replica, else the fair share.
fn settle(
    w: &Work<'_>,
    requests: &[Request],
    types: &[String],
    limiters: &[Limiter],
    budgets: &[Budget],
    out: &mut [Granted],
) {
    for (i, &r) in w.model.requests.iter().enumerate() {
        let req = &requests[r];
        let gpr = req.gpus_per_replica.max(1);
        let g = &mut out[r];
        g.target = w.targets[i];
        let added = (g.target - req.current).max(0);
        g.gpus_allocated = added * gpr;
        let t = if types[r].is_empty() {
            "unresolved"
        } else {
            &types[r]
        };
        if added > 0 {
            g.steps.push(format!(
                "greedy-by-score: allocated {} {t} GPUs for +{added} replicas",
                added * gpr
            ));
        }
        if g.target < req.target {
            let binding = limiters
                .iter()
                .zip(budgets)
                .find(|(_, b)| b.available(w.namespace, &types[r]).is_some_and(|a| a < gpr));
            let (name, why) = match binding {
                Some((l, b)) => (
                    l.name().to_string(),
                    format!(
                        "{} {t} GPUs left",
                        b.available(w.namespace, &types[r]).unwrap_or(0)
                    ),
                ),
                None => (
                    FAIR_SHARE.to_string(),
                    "the GPUs went to models further from their fair share".to_string(),
                ),
            };
            g.steps.push(format!(
                "limited by {name}: +{added} of +{} replicas ({why})",
                req.target - req.current
            ));
            g.limited_by = Some(name);
        }
    }
}
