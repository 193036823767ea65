//! WVA v0.9's rescale (alpha; github.com/llm-d/llm-d-workload-variant-autoscaler at commit 2976e4ee,
//! `internal/engines/pipeline/rescale.go`): when the models sharing one accelerator type's budget
//! need more GPUs than it holds, the budget is split among them by priority × demand (in GPUs), and
//! each model is moved toward its share: replicas are taken from models above it (most expensive
//! variant first, never below a minimum, the last variant keeping one) and given to models below it
//! (cheapest per token first, as far as GPUs are free now: what is taken frees GPUs only once its pods
//! are gone). A model that rescale handles leaves GreedyByScore's turns.
//!
//! A group is the models on one type (models spanning types are left out) whose budget is the same:
//! a namespace's quota where a namespace-scoped quota applies to it (rescale on when that namespace's
//! local ConfigMap enables it), else the cluster's (the global flag). A budget without a bound (no
//! inventory limiter and no quota on the type) is not rescaled.

use std::collections::{BTreeMap, BTreeSet};

use super::{Budget, Granted, Request, RescaleFlags, ScoreModel};
use crate::saturation::v2::optimize::{cheaper, replica_capacity, shed, to_int};
use crate::saturation::Role;

/// The name rescale's moves are attributed to.
pub const RESCALE: &str = "rescale";

/// One model's claim on a group's GPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct RescaleInput {
    pub priority: f64,
    /// What it needs, in GPUs (comparable across models).
    pub demand: i64,
    /// Σ minimum replicas × GPUs per replica: reserved first.
    pub floor: i64,
    /// The most it may hold: its demand, bounded by its variants' maximums (or the budget), never
    /// below its floor.
    pub cap: i64,
}

/// Splits `budget` GPUs among models by priority × demand (WVA's `computeRescaleTargets`): floors
/// first; the rest in proportion to the weights, a model reaching its cap keeping it and the excess
/// split again among the others; fractions rounded by largest remainder (ties to the earlier model),
/// never past a cap. When the floors alone exceed the budget, every model gets its floor and the
/// second value is true (a conflict to report).
pub fn rescale_targets(inputs: &[RescaleInput], budget: i64) -> (Vec<i64>, bool) {
    let mut targets: Vec<i64> = inputs.iter().map(|m| m.floor).collect();
    let floors: i64 = targets.iter().sum();
    if floors >= budget {
        return (targets, floors > budget);
    }
    let mut active: Vec<usize> = (0..inputs.len())
        .filter(|i| {
            let m = &inputs[*i];
            m.priority * m.demand as f64 > 0.0 && m.cap > m.floor
        })
        .collect();
    let weight = |i: usize| inputs[i].priority * inputs[i].demand as f64;
    let headroom = |i: usize| (inputs[i].cap - inputs[i].floor).max(0) as f64;
    let mut extra = vec![0.0f64; inputs.len()];
    let mut remaining = (budget - floors) as f64;
    while !active.is_empty() && remaining > 1e-9 {
        let total: f64 = active.iter().map(|i| weight(*i)).sum();
        if total <= 0.0 {
            break;
        }
        let (capped, rest): (Vec<usize>, Vec<usize>) = active
            .iter()
            .partition(|i| remaining * weight(**i) / total >= headroom(**i) - 1e-9);
        if capped.is_empty() {
            for i in &active {
                extra[*i] = remaining * weight(*i) / total;
            }
            break;
        }
        for i in capped {
            extra[i] = headroom(i);
            remaining -= headroom(i);
        }
        active = rest;
    }
    let caps: Vec<i64> = inputs.iter().map(|m| m.cap).collect();
    let whole: Vec<i64> = extra.iter().map(|e| to_int(e.floor())).collect();
    let leftover = to_int(extra.iter().sum::<f64>().round()) - whole.iter().sum::<i64>();
    for (t, w) in targets.iter_mut().zip(&whole) {
        *t += w;
    }
    let fractions: Vec<f64> = extra
        .iter()
        .zip(&whole)
        .map(|(e, w)| e - *w as f64)
        .collect();
    apportion(&mut targets, &fractions, leftover, Some(&caps));
    (targets, false)
}

/// Hands `leftover` units out one at a time, largest fraction first (ties to the earlier index),
/// skipping any index at its cap.
fn apportion(out: &mut [i64], fractions: &[f64], mut leftover: i64, caps: Option<&[i64]>) {
    let mut order: Vec<usize> = (0..fractions.len()).collect();
    order.sort_by(|a, b| fractions[*b].total_cmp(&fractions[*a]).then(a.cmp(b)));
    for i in order {
        if leftover <= 0 {
            break;
        }
        if caps.is_some_and(|c| out[i] >= c[i]) {
            continue;
        }
        out[i] += 1;
        leftover -= 1;
    }
}

/// Splits a model's GPUs among its roles (WVA's `distributeGPUsByWeight`): floors first, then in
/// proportion to each role's demand (or, with none, its current GPUs), by largest remainder.
fn split_by_role(total: i64, weight: &[i64], fallback: &[i64], floor: &[i64]) -> Vec<i64> {
    if weight.len() <= 1 {
        return vec![total; weight.len()];
    }
    let mut out = floor.to_vec();
    let remaining = total - floor.iter().sum::<i64>();
    if remaining <= 0 {
        return out;
    }
    let w = if weight.iter().sum::<i64>() > 0 {
        weight
    } else {
        fallback
    };
    let sum: i64 = w.iter().sum();
    if sum == 0 {
        out[0] += remaining;
        return out;
    }
    let mut fractions = Vec::with_capacity(w.len());
    let mut assigned = 0;
    for (o, wi) in out.iter_mut().zip(w) {
        let exact = remaining as f64 * *wi as f64 / sum as f64;
        let whole = to_int(exact.floor());
        *o += whole;
        assigned += whole;
        fractions.push(exact - whole as f64);
    }
    apportion(&mut out, &fractions, remaining - assigned, None);
    out
}

/// What rescale reads and changes: the requests, their types and the limiters' budgets.
pub(super) struct Books<'a> {
    pub requests: &'a [Request],
    pub types: &'a [String],
    pub budgets: &'a mut [Budget],
}

impl Books<'_> {
    /// The GPUs of `t` left for `namespace`: its own quota's (`own`), or the cluster's budgets'.
    /// `None`: unbounded.
    fn free(&self, namespace: &str, t: &str, own: bool) -> Option<i64> {
        self.budgets
            .iter()
            .filter(|b| {
                if own {
                    b.closed(namespace)
                } else {
                    !b.per_namespace
                }
            })
            .filter_map(|b| b.available(namespace, t))
            .min()
    }

    fn gpr(&self, r: usize) -> i64 {
        self.requests[r].gpus_per_replica.max(1)
    }
}

/// A model in a rescale group, with its roles' figures in GPUs.
struct Member<'m> {
    /// Its index among the models.
    index: usize,
    model: &'m ScoreModel,
    namespace: &'m str,
    roles: Vec<Role>,
    current: Vec<i64>,
    demand: Vec<i64>,
    floor: Vec<i64>,
}

/// Runs rescale on the models' contended groups; writes the handled models' targets into `out` and
/// returns their indices.
pub(super) fn rescale(
    models: &[ScoreModel],
    books: &mut Books<'_>,
    flags: &RescaleFlags,
    out: &mut [Granted],
) -> BTreeSet<usize> {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (m, model) in models.iter().enumerate() {
        let Some(&first) = model.requests.first() else {
            continue;
        };
        let kinds: BTreeSet<&str> = model
            .requests
            .iter()
            .map(|r| books.types[*r].as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let (Some(t), 1) = (kinds.first(), kinds.len()) else {
            continue;
        };
        let ns = books.requests[first].namespace.as_str();
        let own = books.budgets.iter().any(|b| b.closed(ns));
        let on = if own {
            flags.namespaces.contains(ns)
        } else {
            flags.cluster
        };
        if on {
            let scope = if own { ns.to_string() } else { String::new() };
            groups.entry((t.to_string(), scope)).or_default().push(m);
        }
    }
    let mut handled = BTreeSet::new();
    for ((t, scope), members) in groups {
        let own = !scope.is_empty();
        let first_ns = &books.requests[models[members[0]].requests[0]].namespace;
        let Some(free) = books.free(first_ns, &t, own) else {
            continue;
        };
        let fillable = if own {
            books
                .free(first_ns, &t, false)
                .map_or(free, |c| c.min(free))
        } else {
            free
        };
        let members: Vec<Member<'_>> = members
            .into_iter()
            .map(|m| member(m, &models[m], books))
            .collect();
        let in_use: i64 = members.iter().flat_map(|m| &m.current).sum();
        let budget = free + in_use;
        let inputs: Vec<RescaleInput> = members.iter().map(|m| input(m, books, budget)).collect();
        if inputs.iter().map(|i| i.demand).sum::<i64>() <= budget {
            continue;
        }
        let (shares, conflict) = rescale_targets(&inputs, budget);
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by(|a, b| {
            let (ma, mb) = (&members[*a], &members[*b]);
            mb.model
                .priority
                .total_cmp(&ma.model.priority)
                .then_with(|| (ma.namespace, ma.index).cmp(&(mb.namespace, mb.index)))
        });
        let mut free_now = fillable;
        for k in order {
            let m = &members[k];
            let why = format!(
                "{RESCALE}: {} of the {budget} {t} GPUs{} by priority {} × {} GPUs needed{}",
                shares[k],
                if own {
                    format!(" of namespace {scope}'s quota")
                } else {
                    String::new()
                },
                m.model.priority,
                inputs[k].demand,
                if conflict {
                    "; the minimums alone exceed the GPUs"
                } else {
                    ""
                }
            );
            apply(m, shares[k], &mut free_now, books, out, &why);
            handled.insert(m.index);
        }
    }
    handled
}

fn member<'m>(index: usize, model: &'m ScoreModel, books: &Books<'m>) -> Member<'m> {
    let rs = books.requests;
    let roles: Vec<Role> = model
        .required
        .iter()
        .map(|(r, _)| *r)
        .filter(|r| model.capacities.iter().any(|c| c.role == *r))
        .collect();
    let of_role = |role: Role| {
        (0..model.capacities.len())
            .filter(move |i| model.capacities[*i].role == role)
            .map(|i| (i, model.requests[i]))
    };
    let current = roles
        .iter()
        .map(|role| {
            of_role(*role)
                .map(|(_, r)| rs[r].current.max(0) * books.gpr(r))
                .sum()
        })
        .collect();
    let floor = roles
        .iter()
        .map(|role| {
            of_role(*role)
                .map(|(_, r)| rs[r].min_replicas.unwrap_or(0).max(0) * books.gpr(r))
                .sum()
        })
        .collect();
    // A role's demand in GPUs: its token demand over its most cost-efficient variant's capacity per
    // replica, rounded up, times that variant's GPUs.
    let demand = roles
        .iter()
        .map(|role| {
            let best = of_role(*role)
                .filter(|(i, _)| model.capacities[*i].per_replica_capacity > 0.0)
                .min_by(|(a, _), (b, _)| cheaper(&model.capacities[*a], &model.capacities[*b]));
            let tokens = model
                .demand
                .iter()
                .find(|(r, _)| r == role)
                .map_or(0.0, |(_, d)| *d);
            best.map_or(0, |(i, r)| {
                to_int((tokens / replica_capacity(&model.capacities[i])).ceil()).max(0)
                    * books.gpr(r)
            })
        })
        .collect();
    Member {
        index,
        model,
        namespace: &rs[model.requests[0]].namespace,
        roles,
        current,
        demand,
        floor,
    }
}

fn input(m: &Member<'_>, books: &Books<'_>, budget: i64) -> RescaleInput {
    let rs = books.requests;
    let floor: i64 = m.floor.iter().sum();
    let demand: i64 = m.demand.iter().sum();
    let bounded = m
        .model
        .requests
        .iter()
        .all(|r| rs[*r].max_replicas.is_some_and(|x| x > 0));
    let most: i64 = if bounded {
        m.model
            .requests
            .iter()
            .map(|r| rs[*r].max_replicas.unwrap_or(0) * books.gpr(*r))
            .sum()
    } else {
        budget
    };
    RescaleInput {
        priority: m.model.priority,
        demand,
        floor,
        cap: demand.min(most).max(floor),
    }
}

/// Moves one model toward `share` GPUs, role by role: takes replicas from a role above its part, or
/// gives a role below it what `free_now` allows, and writes the targets.
fn apply(
    m: &Member<'_>,
    share: i64,
    free_now: &mut i64,
    books: &mut Books<'_>,
    out: &mut [Granted],
    why: &str,
) {
    let model = m.model;
    let vcs = &model.capacities;
    let mut targets: Vec<i64> = model
        .requests
        .iter()
        .map(|r| books.requests[*r].current)
        .collect();
    let mins: Vec<i64> = model
        .requests
        .iter()
        .map(|r| books.requests[*r].min_replicas.unwrap_or(0).max(0))
        .collect();
    let parts = split_by_role(share, &m.demand, &m.current, &m.floor);
    for (k, role) in m.roles.iter().enumerate() {
        let of_role: Vec<usize> = (0..vcs.len()).filter(|i| vcs[*i].role == *role).collect();
        let (want, have) = (parts[k], m.current[k]);
        if want < have {
            let left = std::cell::Cell::new(have - want);
            let gpr = |i: usize| books.gpr(model.requests[i]);
            shed(
                vcs,
                &of_role,
                &mut targets,
                &mins,
                |i| left.get() / gpr(i),
                |i, n| left.set(left.get() - n * gpr(i)),
            );
        } else if want > have {
            let mut wanted = (want - have).min(*free_now);
            let mut order = of_role;
            order.sort_by(|a, b| cheaper(&vcs[*a], &vcs[*b]));
            for i in order {
                let r = model.requests[i];
                let g = books.gpr(r);
                let max = books.requests[r].max_replicas.filter(|x| *x > 0);
                if vcs[i].per_replica_capacity <= 0.0 {
                    continue;
                }
                while wanted >= g && max.is_none_or(|x| targets[i] < x) {
                    targets[i] += 1;
                    wanted -= g;
                    *free_now -= g;
                    for b in books.budgets.iter_mut() {
                        b.debit(m.namespace, &books.types[r], g);
                    }
                }
            }
        }
    }
    for (i, &r) in model.requests.iter().enumerate() {
        let req = &books.requests[r];
        let g = &mut out[r];
        g.target = targets[i];
        let moved = targets[i] - req.current;
        g.gpus_allocated = moved.max(0) * books.gpr(r);
        if moved != 0 {
            g.steps.push(format!("{why}: {moved:+} replicas"));
        }
        if targets[i] < req.target {
            g.limited_by = Some(RESCALE.to_string());
            if moved == 0 {
                g.steps.push(format!("{why}: no replicas added"));
            }
        }
    }
}
