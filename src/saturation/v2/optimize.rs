//! WVA v0.9's cost-aware optimizer (`internal/engines/pipeline/cost_aware_optimizer.go`,
//! `analyzer_helpers.go`), for one model with the saturation analyzer as its only voter.
//!
//! Starting from every active variant's current replicas: when some role needs capacity, replicas are
//! added to the variant with the lowest cost per token of capacity (below its maximum), every role at
//! once, and nothing is removed; otherwise, per role, replicas are removed from the most expensive
//! variants while the spare capacity covers them, never below their minimum, and the last variant
//! standing keeps one replica. Targets are never clamped to [min, max] beyond these moves (the
//! autoscaler clamps).
//!
//! Where WVA's sorts are unstable (`cost_aware_optimizer.go:225-232`, `capacity_store.go`'s map order),
//! ties are broken by name.

use std::cell::Cell;
use std::cmp::Ordering;

use super::{CapacityAnalysis, Role, VariantCapacity, VariantIn};

/// `float64 → int` as Go converts it, saturating instead of wrapping.
pub(crate) fn to_int(x: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let v = x as i64;
    v
}

/// What one replica more or less of the variant adds or removes: its instances' capacity (a pod of
/// several data-parallel ranks is that many instances; WVA counts one instance per replica, and so adds
/// or removes that many times too many pods).
pub(crate) fn replica_capacity(v: &VariantCapacity) -> f64 {
    v.per_replica_capacity * v.instances_per_replica.max(1) as f64
}

/// Cost per token of capacity; a variant without capacity sorts last.
fn cost_efficiency(v: &VariantCapacity) -> f64 {
    if v.per_replica_capacity <= 0.0 {
        f64::MAX
    } else {
        v.cost / replica_capacity(v)
    }
}

/// The order scale-ups pick variants in: cheapest per token of capacity first (a variant without
/// capacity last), then by name (WVA's sort is unstable).
pub(crate) fn cheaper(a: &VariantCapacity, b: &VariantCapacity) -> Ordering {
    cost_efficiency(a)
        .total_cmp(&cost_efficiency(b))
        .then_with(|| a.name.cmp(&b.name))
}

/// Where a scale-up may add replicas: the cost-aware optimizer's cheapest variant below its maximum,
/// or GreedyByScore's cheapest one with GPUs left.
pub(crate) trait Grow {
    /// For role `role` (an index into the roles being grown), the variant to add to and the most
    /// replicas it may take; `None` when the role has nowhere to grow.
    fn pick(&mut self, role: usize, targets: &[i64]) -> Option<(usize, i64)>;
    /// `replicas` were added to variant `variant`.
    fn commit(&mut self, variant: usize, replicas: i64);
}

/// WVA's joint scale-up loop (`allocateForModelPaired`): while some role still needs capacity, each
/// role's pick names a variant and the most replicas it may take; every role then adds the replicas
/// that cover the same share of its need (at least one where it needs any). A role with nowhere to
/// grow stops every role. `required` is per role, in the picker's order.
pub(crate) fn add_replicas(
    vcs: &[VariantCapacity],
    targets: &mut [i64],
    required: &mut [f64],
    grow: &mut impl Grow,
) {
    while required.iter().any(|r| *r > 0.0) {
        let Some(picks) = (0..required.len())
            .map(|r| grow.pick(r, targets))
            .collect::<Option<Vec<(usize, i64)>>>()
        else {
            break;
        };
        let mut wanted = Vec::with_capacity(picks.len());
        let mut delta = f64::MAX;
        for (r, (i, cap)) in picks.iter().enumerate() {
            let prc = replica_capacity(&vcs[*i]);
            let n = to_int((required[r] / prc).ceil()).min(*cap);
            let demand = required[r];
            let util = if demand <= 0.0 {
                1.0
            } else {
                n as f64 * prc / demand
            };
            delta = delta.min(util);
            wanted.push(n);
        }
        if delta <= 0.0 {
            break;
        }
        let adds: Vec<i64> = picks
            .iter()
            .enumerate()
            .map(|(r, (i, _))| {
                let prc = replica_capacity(&vcs[*i]);
                let demand = required[r];
                if prc > 0.0 && demand > 0.0 {
                    to_int((delta * demand / prc).floor()).max(wanted[r].min(1))
                } else {
                    0
                }
            })
            .collect();
        if adds.iter().all(|k| *k <= 0) {
            break;
        }
        for (r, ((i, _), k)) in picks.iter().zip(&adds).enumerate() {
            targets[*i] += k;
            required[r] = (required[r] - *k as f64 * replica_capacity(&vcs[*i])).max(0.0);
            if *k > 0 {
                grow.commit(*i, *k);
            }
        }
    }
}

/// WVA's scale-down order and rule (`scaleDownVariantSet`): the role's variants `of_role`, most
/// expensive first (then the smaller capacity, then by name), each losing the replicas `fits` allows,
/// never below its minimum; the last variant keeps one replica unless an earlier one still serves.
/// `removed` hears of each removal.
pub(crate) fn shed(
    vcs: &[VariantCapacity],
    of_role: &[usize],
    targets: &mut [i64],
    mins: &[i64],
    fits: impl Fn(usize) -> i64,
    mut removed: impl FnMut(usize, i64),
) {
    let mut order = of_role.to_vec();
    order.sort_by(|a, b| {
        let (va, vb) = (&vcs[*a], &vcs[*b]);
        vb.cost
            .partial_cmp(&va.cost)
            .unwrap_or(Ordering::Equal)
            .then_with(|| {
                replica_capacity(va)
                    .partial_cmp(&replica_capacity(vb))
                    .unwrap_or(Ordering::Equal)
            })
            .then_with(|| va.name.cmp(&vb.name))
    });
    for (pos, &i) in order.iter().enumerate() {
        if replica_capacity(&vcs[i]) <= 0.0 {
            continue;
        }
        let current = targets[i];
        let removable = current - mins[i];
        if removable <= 0 {
            continue;
        }
        let mut n = fits(i).max(0).min(removable);
        let earlier_serve = order[..pos].iter().any(|j| targets[*j] > 0);
        if pos == order.len() - 1 && current - n < 1 && !earlier_serve {
            n = current - 1;
        }
        if n <= 0 {
            continue;
        }
        targets[i] = current - n;
        removed(i, n);
    }
}

/// The targets of the analysed (active) variants, in the order of `analysis.variants`. `states` are the
/// model's variants as given to the analysis (bounds and current replicas are read from them by name).
pub fn optimize(states: &[VariantIn], analysis: &CapacityAnalysis) -> Vec<i64> {
    let vcs = &analysis.variants;
    let state = |name: &str| states.iter().find(|s| s.name == name);
    let targets: Vec<i64> = vcs
        .iter()
        .map(|v| state(&v.name).map_or(0, |s| s.current))
        .collect();
    let bounds: Vec<(i64, Option<i64>)> = vcs
        .iter()
        .map(|v| {
            let s = state(&v.name);
            (
                s.and_then(|s| s.min_replicas).unwrap_or(0),
                s.and_then(|s| s.max_replicas).filter(|m| *m > 0),
            )
        })
        .collect();
    let roles: Vec<Role> = if analysis.roles.is_empty() {
        vec![Role::Both]
    } else {
        analysis.roles.keys().copied().collect()
    };
    let required: Vec<f64> = roles
        .iter()
        .map(|r| analysis.totals_for(*r).required_capacity)
        .collect();
    let model = Model {
        vcs,
        bounds: &bounds,
        roles: &roles,
    };
    if required.iter().any(|r| *r > 0.0) {
        model.scale_up(targets, required)
    } else {
        model.scale_down(targets, analysis)
    }
}

/// One model's variants, their bounds `(min, max)` and its roles.
struct Model<'a> {
    vcs: &'a [VariantCapacity<'a>],
    bounds: &'a [(i64, Option<i64>)],
    roles: &'a [Role],
}

/// The unlimited optimizer's picks.
struct Unbounded<'m, 'a>(&'m Model<'a>);

impl Grow for Unbounded<'_, '_> {
    fn pick(&mut self, role: usize, targets: &[i64]) -> Option<(usize, i64)> {
        self.0.pick(self.0.roles[role], targets)
    }

    fn commit(&mut self, _: usize, _: i64) {}
}

impl Model<'_> {
    fn of_role(&self, role: Role) -> Vec<usize> {
        (0..self.vcs.len())
            .filter(|i| self.vcs[*i].role == role)
            .collect()
    }

    /// The cheapest variant per token of the role with room below its maximum, and that room.
    fn pick(&self, role: Role, targets: &[i64]) -> Option<(usize, i64)> {
        let vcs = self.vcs;
        let mut candidates = self.of_role(role);
        candidates.sort_by(|a, b| cheaper(&vcs[*a], &vcs[*b]));
        candidates.into_iter().find_map(|i| {
            if vcs[i].per_replica_capacity <= 0.0 {
                return None;
            }
            match self.bounds[i].1 {
                Some(max) if max - targets[i] <= 0 => None,
                Some(max) => Some((i, max - targets[i])),
                None => Some((i, i64::MAX)),
            }
        })
    }

    /// Adds replicas, every role at once, by the smallest share of its need any role's pick can cover.
    fn scale_up(&self, mut targets: Vec<i64>, mut required: Vec<f64>) -> Vec<i64> {
        add_replicas(self.vcs, &mut targets, &mut required, &mut Unbounded(self));
        targets
    }

    /// Per role, removes replicas from the most expensive variants while the spare capacity covers them.
    fn scale_down(&self, mut targets: Vec<i64>, analysis: &CapacityAnalysis) -> Vec<i64> {
        let vcs = self.vcs;
        let mins: Vec<i64> = self.bounds.iter().map(|b| b.0).collect();
        for role in self.roles {
            let spare = Cell::new(analysis.totals_for(*role).spare_capacity);
            if spare.get() <= 0.0 {
                continue;
            }
            shed(
                vcs,
                &self.of_role(*role),
                &mut targets,
                &mins,
                |i| to_int((spare.get() / replica_capacity(&vcs[i])).floor()),
                |i, n| spare.set((spare.get() - n as f64 * replica_capacity(&vcs[i])).max(0.0)),
            );
        }
        targets
    }
}
