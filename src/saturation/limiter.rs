//! WVA v0.9's GPU limiter for V1 decisions (github.com/llm-d/llm-d-workload-variant-autoscaler at commit 2976e4ee,
//! `internal/engines/pipeline/greedy_saturation_algorithm.go`,
//! `default_limiter.go`, `type_inventory.go`, `quota_inventory.go`, `internal/accelerator/accelerator.go`):
//! after the targets are computed, every scale-up of every model is granted only the GPUs its type has
//! left, most saturated variant first. Pure: the free GPUs per type come in as an [`Inventory`], the
//! configuration as [`Limiter`]s.
//!
//! - `gpu-inventory`: a type's budget is its free GPUs. WVA takes the nodes' allocatable GPUs less the
//!   GPUs of the variants it manages; here the inventory is the nodes' allocatable GPUs less what every
//!   scheduled pod requests (the scheduler's view), so another tenant's pods count.
//! - `quota`: a cap per type, for the cluster or per namespace; its usage is the decisions' current
//!   replicas times their GPUs per replica, as in WVA.
//!
//! Several limiters run in order on the same decisions, each on the targets the previous one left (the
//! most restrictive wins); a decision is attributed to the first limiter that cut it. Ties in WVA's order
//! (unstable sort) are broken by namespace and name; a grant is debited in whole replicas (WVA debits the
//! GPUs of a partial replica it never creates).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The name WVA gives its inventory limiter (in `limited_by` and `wva_decisions_limited_total`).
pub const GPU_LIMITER: &str = "gpu-limiter";

/// The short type a GPU product name stands for (WVA's normalisation): a name without `-` is kept; an
/// `NVIDIA-` or `AMD-` name is its second part, an `Intel-` name its second and third, any other its second.
/// `NVIDIA-H100-80GB-HBM3` is `H100`, `Intel-Gaudi-2-96GB` is `Gaudi-2`.
pub fn normalize_accelerator(name: &str) -> String {
    let name = name.trim();
    let parts: Vec<&str> = name.split('-').collect();
    if parts.len() < 2 {
        return name.to_string();
    }
    if parts[0].eq_ignore_ascii_case("intel") && parts.len() >= 3 {
        return format!("{}-{}", parts[1], parts[2]);
    }
    parts[1].to_string()
}

/// A variant whose accelerator is not known (WVA's `""`, `unknown`, `unresolved`).
pub fn is_unresolved(accelerator: &str) -> bool {
    matches!(accelerator.trim(), "" | "unknown" | "unresolved")
}

/// GPUs of one type across the nodes that report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypeGpus {
    /// Σ `status.allocatable` of the type's resource over its nodes.
    pub allocatable: i64,
    /// Σ GPUs requested by the scheduled, not yet finished pods on those nodes.
    #[serde(default)]
    pub requested: i64,
}

impl TypeGpus {
    pub fn free(&self) -> i64 {
        (self.allocatable - self.requested).max(0)
    }
}

/// The cluster's GPUs by normalised type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Inventory {
    pub types: BTreeMap<String, TypeGpus>,
}

impl Inventory {
    /// Adds a node's GPUs of one product (any spelling WVA normalises).
    pub fn add(&mut self, product: &str, allocatable: i64, requested: i64) {
        let t = self
            .types
            .entry(normalize_accelerator(product))
            .or_default();
        t.allocatable = t.allocatable.saturating_add(allocatable.max(0));
        t.requested = t.requested.saturating_add(requested.max(0));
    }

    /// The only type, when the cluster has exactly one (an unresolved variant is taken to run on it).
    pub fn single_type(&self) -> Option<&str> {
        let mut types = self.types.keys();
        match (types.next(), types.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }
}

/// Where a quota applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum QuotaScope {
    Cluster,
    Namespace,
}

/// The key of `namespaceQuotas` that every namespace not listed gets a copy of.
pub const DEFAULT_NAMESPACE_QUOTA: &str = "default";

/// A `quota` limiter: GPUs per type, for the cluster or for each namespace. `-1` is unlimited; a type
/// not listed gets nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub name: String,
    pub scope: QuotaScope,
    /// Cluster scope: GPUs per type.
    pub quotas: BTreeMap<String, i64>,
    /// Namespace scope: GPUs per type for each listed namespace (a closed list), and under `default`
    /// for every namespace not listed (each its own budget).
    pub namespace_quotas: BTreeMap<String, BTreeMap<String, i64>>,
    /// Namespaces this quota does not apply to.
    pub exclude: BTreeSet<String>,
}

/// One entry of `limiters:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Limiter {
    /// The nodes' free GPUs per type.
    GpuInventory,
    Quota(Quota),
}

impl Limiter {
    pub fn name(&self) -> &str {
        match self {
            Limiter::GpuInventory => GPU_LIMITER,
            Limiter::Quota(q) => &q.name,
        }
    }
}

/// One variant's decision as the limiter sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub namespace: String,
    /// The model the variant serves: a scale-up cut on one variant may go to another of its model.
    pub model: String,
    pub variant: String,
    /// As the variant declares it (a product name or a short type; normalised here).
    pub accelerator: String,
    pub current: i64,
    /// The target before the limiter.
    pub target: i64,
    pub gpus_per_replica: i64,
    pub min_replicas: Option<i64>,
    pub max_replicas: Option<i64>,
    /// V1: the mean spare KV-cache fraction of the variant's replicas (most saturated first).
    pub spare_capacity: f64,
    pub cost: f64,
    /// Its pods the scheduler could not place: its scale-up goes to another variant of the model
    /// that can take it, and only what none can take stays.
    #[serde(default)]
    pub unschedulable_pods: i64,
}

/// The name a cut for unschedulable pods is attributed to.
pub const UNSCHEDULABLE: &str = "unschedulable";

/// A decision after the limiter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Granted {
    pub target: i64,
    /// GPUs granted for the replicas added.
    pub gpus_allocated: i64,
    /// The first limiter that cut the scale-up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<String>,
    /// What each limiter did, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// Why the limiter could not run; WVA then leaves the decisions unlimited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the GPU inventory is unknown (nodes not read): {0}")]
    NoInventory(String),
}

/// Budgets by type, and by namespace and type, with `None` for unlimited.
#[derive(Debug, Default)]
struct Budget {
    /// The budget applies per namespace (quota of namespace scope).
    per_namespace: bool,
    by_type: BTreeMap<String, Option<i64>>,
    by_namespace: BTreeMap<(String, String), Option<i64>>,
    /// Namespaces the limiter does not apply to.
    open: BTreeSet<String>,
}

impl Budget {
    /// Whether the budget is a namespace's own (a namespace-scoped quota that applies to it).
    fn closed(&self, namespace: &str) -> bool {
        self.per_namespace && !self.open.contains(namespace)
    }

    fn available(&self, namespace: &str, accelerator: &str) -> Option<i64> {
        if self.open.contains(namespace) {
            return None;
        }
        let found = if self.per_namespace {
            self.by_namespace
                .get(&(namespace.to_string(), accelerator.to_string()))
        } else {
            self.by_type.get(accelerator)
        };
        match found {
            Some(b) => *b,
            None => Some(0),
        }
    }

    fn debit(&mut self, namespace: &str, accelerator: &str, gpus: i64) {
        let slot = if self.per_namespace {
            self.by_namespace
                .get_mut(&(namespace.to_string(), accelerator.to_string()))
        } else {
            self.by_type.get_mut(accelerator)
        };
        if let Some(Some(b)) = slot {
            *b = (*b - gpus).max(0);
        }
    }
}

/// Σ current × GPUs per replica of the decisions, by type and by (namespace, type).
type Usage = (BTreeMap<String, i64>, BTreeMap<(String, String), i64>);

fn usage(requests: &[Request], types: &[String]) -> Usage {
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_ns: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (r, t) in requests.iter().zip(types) {
        if is_unresolved(t) {
            continue;
        }
        let gpus = r.current.max(0).saturating_mul(r.gpus_per_replica.max(1));
        *by_type.entry(t.clone()).or_default() += gpus;
        *by_ns.entry((r.namespace.clone(), t.clone())).or_default() += gpus;
    }
    (by_type, by_ns)
}

fn quota_budget(q: &Quota, requests: &[Request], types: &[String]) -> Budget {
    let (used, used_ns) = usage(requests, types);
    let left = |cap: i64, used: i64| (cap >= 0).then(|| (cap - used).max(0));
    let normalised = |m: &BTreeMap<String, i64>| -> BTreeMap<String, i64> {
        m.iter()
            .map(|(t, cap)| (normalize_accelerator(t), *cap))
            .collect()
    };
    let mut b = Budget::default();
    match q.scope {
        QuotaScope::Cluster => {
            for (t, cap) in normalised(&q.quotas) {
                let u = used.get(&t).copied().unwrap_or(0);
                b.by_type.insert(t, left(cap, u));
            }
        }
        QuotaScope::Namespace => {
            b.per_namespace = true;
            let namespaces: BTreeSet<&str> =
                requests.iter().map(|r| r.namespace.as_str()).collect();
            for ns in namespaces {
                if q.exclude.contains(ns) {
                    b.open.insert(ns.to_string());
                    continue;
                }
                let caps = q
                    .namespace_quotas
                    .get(ns)
                    .filter(|_| ns != DEFAULT_NAMESPACE_QUOTA)
                    .or_else(|| q.namespace_quotas.get(DEFAULT_NAMESPACE_QUOTA));
                for (t, cap) in caps.map(normalised).unwrap_or_default() {
                    let key = (ns.to_string(), t);
                    let u = used_ns.get(&key).copied().unwrap_or(0);
                    b.by_namespace.insert(key, left(cap, u));
                }
            }
        }
    }
    b
}

fn inventory_budget(inventory: &Inventory) -> Budget {
    Budget {
        by_type: inventory
            .types
            .iter()
            .map(|(t, g)| (t.clone(), Some(g.free())))
            .collect(),
        ..Budget::default()
    }
}

/// The type a variant's GPUs are charged to: its accelerator normalised, or for an unresolved one the
/// cluster's only type (`single`), else none (`""`, which no budget lists).
pub fn charged_type(accelerator: &str, single: Option<&str>) -> String {
    if is_unresolved(accelerator) {
        single.map_or_else(String::new, str::to_string)
    } else {
        normalize_accelerator(accelerator)
    }
}

/// The requests' normalised types (an unresolved variant runs on the only type, when the cluster has
/// one) and each limiter's budget. `inventory` is needed by a `gpu-inventory` limiter: without it
/// nothing can be limited (WVA's fallback), and the error says why.
fn budgets(
    requests: &[Request],
    inventory: Option<&Inventory>,
    limiters: &[Limiter],
) -> Result<(Vec<String>, Vec<Budget>), LimitError> {
    let uses_inventory = limiters.iter().any(|l| matches!(l, Limiter::GpuInventory));
    let inventory = match inventory {
        Some(i) => Some(i),
        None if uses_inventory => {
            return Err(LimitError::NoInventory(
                "the gpu-inventory limiter needs the nodes' GPUs".into(),
            ))
        }
        None => None,
    };
    let single = inventory
        .filter(|_| uses_inventory)
        .and_then(Inventory::single_type);
    let types: Vec<String> = requests
        .iter()
        .map(|r| charged_type(&r.accelerator, single))
        .collect();
    let budgets = limiters
        .iter()
        .map(|l| match l {
            Limiter::GpuInventory => inventory.map(inventory_budget).unwrap_or_default(),
            Limiter::Quota(q) => quota_budget(q, requests, &types),
        })
        .collect();
    Ok((types, budgets))
}

/// Every request as it came: its target unchanged, nothing allocated.
fn unchanged(requests: &[Request]) -> Vec<Granted> {
    requests
        .iter()
        .map(|r| Granted {
            target: r.target,
            gpus_allocated: 0,
            limited_by: None,
            steps: Vec::new(),
        })
        .collect()
}

/// Runs the limiters, in order, on every decision of every model (V1); decisions that do not scale up
/// pass unchanged. Without the inventory a `gpu-inventory` limiter needs, nothing is limited.
pub fn limit(
    requests: &[Request],
    inventory: Option<&Inventory>,
    limiters: &[Limiter],
) -> Result<Vec<Granted>, LimitError> {
    let (types, mut budgets) = budgets(requests, inventory, limiters)?;
    let mut out = unchanged(requests);
    for (limiter, budget) in limiters.iter().zip(budgets.iter_mut()) {
        grant(limiter, budget, requests, &types, &mut out);
    }
    let models = by_model(requests);
    move_cut_scale_ups(requests, &types, &models, &mut budgets, &mut out);
    move_from_unschedulable(requests, &types, &models, &mut budgets, &mut out);
    Ok(out)
}

/// One limiter's pass: the decisions still scaling up, most saturated first (then cheapest), each
/// granted the whole replicas its budget allows.
fn grant(
    limiter: &Limiter,
    budget: &mut Budget,
    requests: &[Request],
    types: &[String],
    out: &mut [Granted],
) {
    let mut candidates: Vec<usize> = (0..requests.len())
        .filter(|i| out[*i].target > requests[*i].current)
        .collect();
    candidates.sort_by(|a, b| {
        let (ra, rb) = (&requests[*a], &requests[*b]);
        ra.spare_capacity
            .total_cmp(&rb.spare_capacity)
            .then(ra.cost.total_cmp(&rb.cost))
            .then_with(|| (&ra.namespace, &ra.variant).cmp(&(&rb.namespace, &rb.variant)))
    });
    for i in candidates {
        let r = &requests[i];
        let g = &mut out[i];
        // Capped at the maximum, never below where the variant is: the limiter only cuts scale-ups.
        let target = r
            .max_replicas
            .filter(|m| *m > 0)
            .map_or(g.target, |max| g.target.min(max))
            .max(r.current);
        let need = target - r.current;
        if need <= 0 {
            g.target = target;
            continue;
        }
        let gpr = r.gpus_per_replica.max(1);
        let t = &types[i];
        let available = if is_unresolved(t) {
            Some(0)
        } else {
            budget.available(&r.namespace, t)
        };
        let got = available.map_or(need, |a| (a / gpr).min(need));
        budget.debit(&r.namespace, t, got * gpr);
        g.target = r.current + got;
        g.gpus_allocated = got * gpr;
        if let Some(min) = r.min_replicas {
            g.target = g.target.max(min);
        }
        let shown = if t.is_empty() { "unresolved" } else { t };
        if got < need {
            if g.limited_by.is_none() {
                g.limited_by = Some(limiter.name().to_string());
            }
            g.steps.push(format!(
                "limited by {}: {} of {} {shown} GPUs free, allocated {} for +{got} of +{need} replicas",
                limiter.name(),
                available.unwrap_or(0),
                need * gpr,
                got * gpr
            ));
        } else {
            g.steps.push(format!(
                "{}: allocated {} {shown} GPUs for +{need} replicas",
                limiter.name(),
                got * gpr
            ));
        }
    }
}

/// Requests by (namespace, model).
type ByModel<'a> = BTreeMap<(&'a str, &'a str), Vec<usize>>;

fn by_model(requests: &[Request]) -> ByModel<'_> {
    let mut m: ByModel<'_> = BTreeMap::new();
    for (i, r) in requests.iter().enumerate() {
        m.entry((r.namespace.as_str(), r.model.as_str()))
            .or_default()
            .push(i);
    }
    m
}

/// The model's other variants that may take replicas moved from `from`, cheapest first (then by name).
fn receivers(
    requests: &[Request],
    types: &[String],
    models: &ByModel<'_>,
    from: usize,
    eligible: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let origin = &requests[from];
    let mut others: Vec<usize> = models
        .get(&(origin.namespace.as_str(), origin.model.as_str()))
        .into_iter()
        .flatten()
        .copied()
        .filter(|j| *j != from && !is_unresolved(&types[*j]) && eligible(*j))
        .collect();
    others.sort_by(|a, b| {
        requests[*a]
            .cost
            .total_cmp(&requests[*b].cost)
            .then_with(|| requests[*a].variant.cmp(&requests[*b].variant))
    });
    others
}

/// Gives variant `j` up to `want` replicas more, as far as its maximum and every budget allow; debits
/// the budgets and returns how many it took.
fn place(
    requests: &[Request],
    types: &[String],
    budgets: &mut [Budget],
    out: &mut [Granted],
    j: usize,
    want: i64,
) -> i64 {
    let r = &requests[j];
    let room = r
        .max_replicas
        .filter(|m| *m > 0)
        .map_or(i64::MAX, |m| m - out[j].target);
    let gpr = r.gpus_per_replica.max(1);
    let fits = budgets
        .iter()
        .map(|b| {
            b.available(&r.namespace, &types[j])
                .map_or(i64::MAX, |a| a / gpr)
        })
        .min()
        .unwrap_or(i64::MAX);
    let got = want.min(room).min(fits).max(0);
    if got > 0 {
        for b in budgets.iter_mut() {
            b.debit(&r.namespace, &types[j], got * gpr);
        }
        out[j].target += got;
        out[j].gpus_allocated += got * gpr;
    }
    got
}

/// Offers what was cut from a variant's scale-up to the other variants of its model, cheapest first,
/// below their maximum, while every limiter has GPUs of their type left: the model needs the capacity
/// and another accelerator can give it (WVA leaves the model short).
fn move_cut_scale_ups(
    requests: &[Request],
    types: &[String],
    models: &ByModel<'_>,
    budgets: &mut [Budget],
    out: &mut [Granted],
) {
    let cut: Vec<(usize, i64)> = (0..requests.len())
        .filter_map(|i| {
            let r = &requests[i];
            let wanted = r
                .max_replicas
                .filter(|m| *m > 0)
                .map_or(r.target, |m| r.target.min(m));
            let short = wanted - out[i].target;
            (out[i].limited_by.is_some() && short > 0).then_some((i, short))
        })
        .collect();
    for (from, mut short) in cut {
        let open = receivers(requests, types, models, from, |j| {
            out[j].limited_by.is_none()
        });
        for j in open {
            if short <= 0 {
                break;
            }
            let got = place(requests, types, budgets, out, j, short);
            if got <= 0 {
                continue;
            }
            let gpr = requests[j].gpus_per_replica.max(1);
            out[j].steps.push(format!(
                "+{got} moved here from {}, whose scale-up was limited by {}: {} {} GPUs",
                requests[from].variant,
                out[from].limited_by.as_deref().unwrap_or_default(),
                got * gpr,
                types[j]
            ));
            out[from]
                .steps
                .push(format!("+{got} moved to {}", requests[j].variant));
            short -= got;
        }
    }
}

/// A variant whose pods the scheduler cannot place gives its granted scale-up to the other variants of
/// its model that can take it (room below their maximum, GPUs in every budget), cheapest first; what
/// none can take stays, since a node may yet be added for it.
fn move_from_unschedulable(
    requests: &[Request],
    types: &[String],
    models: &ByModel<'_>,
    budgets: &mut [Budget],
    out: &mut [Granted],
) {
    for from in 0..requests.len() {
        let origin = &requests[from];
        let mut extra = out[from].target - origin.current.max(origin.min_replicas.unwrap_or(0));
        if origin.unschedulable_pods <= 0 || extra <= 0 {
            continue;
        }
        for j in receivers(requests, types, models, from, |j| {
            requests[j].unschedulable_pods == 0
        }) {
            if extra <= 0 {
                break;
            }
            let got = place(requests, types, budgets, out, j, extra);
            if got <= 0 {
                continue;
            }
            out[j].steps.push(format!(
                "+{got} moved here from {}, whose {} pod(s) the scheduler cannot place",
                origin.variant, origin.unschedulable_pods
            ));
            let o = &mut out[from];
            o.target -= got;
            o.gpus_allocated = (o.gpus_allocated - got * origin.gpus_per_replica.max(1)).max(0);
            o.limited_by
                .get_or_insert_with(|| UNSCHEDULABLE.to_string());
            o.steps.push(format!(
                "+{got} moved to {}: {} pod(s) of this variant are Pending as Unschedulable",
                requests[j].variant, origin.unschedulable_pods
            ));
            extra -= got;
        }
    }
}

mod rescale;
mod score;
pub use rescale::{rescale_targets, RescaleInput, RESCALE};
pub use score::{limit_by_score, ScoreModel, FAIR_SHARE};

/// Where WVA v0.9's rescale (alpha) may move GPUs between models by priority: the cluster's GPUs
/// (the global `enableRescale`), and the quota of each namespace listed (its local `enableRescale`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RescaleFlags {
    pub cluster: bool,
    pub namespaces: BTreeSet<String>,
}

impl RescaleFlags {
    pub fn any(&self) -> bool {
        self.cluster || !self.namespaces.is_empty()
    }
}

#[cfg(test)]
mod tests;
