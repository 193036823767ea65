//! Saturation V2, WVA v0.9's default engine (github.com/llm-d/llm-d-workload-variant-autoscaler at commit
//! 2976e4ee, `internal/engines/analyzers/saturation_v2/` and `internal/engines/pipeline/`): capacity per
//! replica in KV tokens (memory-bound k1, compute-bound k2), demand in tokens (tokens in use plus the
//! waiting queue's and the endpoint picker's), per-variant and per-role totals, required and spare
//! capacity against the scale-up threshold and scale-down boundary, then [`optimize`](fn@optimize):
//! replicas are added where capacity is cheapest and removed where it is dearest.
//!
//! * [`args`]: engine parameters from the Deployment's command line (for the capacity estimate).
//! * [`memory`]: what is learned over time (k2 history, capacity records).
//! * this module: the analysis of one model, pure.
//! * [`optimize`](mod@optimize): the cost-aware optimizer.
//!
//! Floating-point expressions keep WVA's order of operations, so that results on an edge match.

pub mod args;
pub mod config;
pub mod memory;
pub mod optimize;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use args::EngineParams;
pub use memory::{Bucket, CapacityMemory, CapacityRecord, HistoryKey};
pub use optimize::optimize;

/// Bytes per token when the endpoint picker's queue is measured in bytes (WVA's `BytesPerToken`).
pub const BYTES_PER_TOKEN: f64 = 4.0;

pub use super::role::Role;

/// The thresholds V2 reads: k1's share of the KV cache, the queue length that makes tokens in use an
/// observation of k2, and the scale-up threshold U and scale-down boundary D.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct V2Thresholds {
    pub kv_cache_threshold: f64,
    pub queue_length_threshold: f64,
    pub scale_up_threshold: f64,
    pub scale_down_boundary: f64,
}

impl Default for V2Thresholds {
    fn default() -> Self {
        Self {
            kv_cache_threshold: 0.80,
            queue_length_threshold: 5.0,
            scale_up_threshold: 0.85,
            scale_down_boundary: 0.70,
        }
    }
}

/// One serving instance's signals (a pod, or one data-parallel rank of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRow<'a> {
    /// Borrowed from the decision's input (and so from the cluster snapshot) on the request path.
    pub pod: Cow<'a, str>,
    /// KV-cache usage, 0–1 (`vllm:kv_cache_usage_perc`, peak over a minute).
    pub kv_cache_usage: f64,
    /// Waiting requests (`vllm:num_requests_waiting`, peak over a minute), truncated.
    pub queue_length: i64,
    /// KV tokens the replica holds (`num_gpu_blocks × block_size` of `vllm:cache_config_info`); 0 when
    /// unknown, and the capacity then comes from the variant's record (the fallback path).
    #[serde(default)]
    pub total_kv_tokens: i64,
    /// Average prompt and generated tokens per request over five minutes (0: no completions).
    #[serde(default)]
    pub avg_input_tokens: f64,
    #[serde(default)]
    pub avg_output_tokens: f64,
    /// Prefix-cache hits per query over five minutes (0–1).
    #[serde(default)]
    pub prefix_cache_hit_rate: f64,
}

impl ReplicaRow<'_> {
    /// `clamp(round(kv × total), 0, total)`.
    pub fn tokens_in_use(&self) -> i64 {
        if self.total_kv_tokens <= 0 {
            return 0;
        }
        let t = (self.kv_cache_usage * self.total_kv_tokens as f64).round();
        // In range by the clamp; NaN (never passed) would become 0.
        #[allow(clippy::cast_possible_truncation)]
        let t = t as i64;
        t.clamp(0, self.total_kv_tokens)
    }

    /// Hit rates outside 0–1 are no measurement (WVA drops them).
    fn hit_rate(&self) -> f64 {
        if (0.0..=1.0).contains(&self.prefix_cache_hit_rate) {
            self.prefix_cache_hit_rate
        } else {
            0.0
        }
    }
}

/// One variant as V2 sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantIn<'a> {
    pub name: Cow<'a, str>,
    pub cost: f64,
    pub accelerator: Cow<'a, str>,
    pub role: Role,
    /// Replicas asked for (`spec.replicas`); ready ones are `ready`, the rest are pending.
    pub current: i64,
    pub ready: i64,
    pub gpus_per_replica: i64,
    pub min_replicas: Option<i64>,
    pub max_replicas: Option<i64>,
    /// From the pod template's command line; `None` when it has no containers.
    pub params: Option<Cow<'a, EngineParams>>,
    pub rows: Vec<ReplicaRow<'a>>,
}

impl VariantIn<'_> {
    pub fn pending(&self) -> i64 {
        (self.current - self.ready).max(0)
    }

    /// WVA analyses active variants only (`spec.replicas` > 0); one at 0 is for scale from zero.
    pub fn is_active(&self) -> bool {
        self.current > 0
    }
}

/// Requests queued at the model's endpoint picker (flow control), summed over its pools.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerQueue {
    pub requests: i64,
    #[serde(default)]
    pub bytes: i64,
}

/// Where a capacity figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CapacitySource {
    /// The replica's queue was at the threshold: its tokens in use are what it can hold (P1-obs).
    Observed,
    /// The rolling mean of earlier observations (P2-hist).
    History,
    /// Estimated from the Deployment's arguments and the request shape (P3-k2).
    Deployment,
    /// The memory bound k1 alone, or (no `vllm:cache_config_info`) the variant's record (P4-k1).
    Fallback,
    /// No replica reports: the variant's record, or a compatible variant's (P0-store).
    Store,
    /// Nothing to estimate from: the variant is never chosen to grow.
    NoData,
}

impl CapacitySource {
    /// WVA's label for it (`saturation_v2/types.go`).
    pub fn wva_label(self) -> &'static str {
        match self {
            CapacitySource::Observed => "P1-obs",
            CapacitySource::History => "P2-hist",
            CapacitySource::Deployment => "P3-k2",
            CapacitySource::Fallback => "P4-k1",
            CapacitySource::Store => "P0-store",
            CapacitySource::NoData => "no-data",
        }
    }
}

/// One replica's capacity and demand, in tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCapacity<'a> {
    pub pod: Cow<'a, str>,
    pub tokens_in_use: i64,
    pub total_kv_tokens: i64,
    /// Memory-bound capacity: `total × kvCacheThreshold`.
    pub k1: i64,
    /// Compute-bound capacity.
    pub k2: i64,
    pub source: CapacitySource,
    /// `min(k1, k2)`.
    pub effective_capacity: i64,
    /// Tokens in use plus the waiting queue's tokens.
    pub demand: i64,
    pub saturated: bool,
}

/// One variant's capacity: per replica (the median of its replicas), total, and its demand.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantCapacity<'a> {
    pub name: Cow<'a, str>,
    pub role: Role,
    pub accelerator: Cow<'a, str>,
    pub cost: f64,
    /// Serving instances counted (replicas with samples; data-parallel ranks count one each).
    pub replicas: i64,
    /// Pending replicas, in the same unit.
    pub pending: i64,
    /// Capacity of one serving instance (a replica, or one data-parallel rank of one; WVA's PRC).
    pub per_replica_capacity: f64,
    /// Serving instances per replica (data-parallel ranks read at their own ports; else 1): what one
    /// replica more or less adds or removes is this many instances' capacity.
    pub instances_per_replica: i64,
    pub total_capacity: f64,
    pub demand: f64,
    pub utilization: f64,
    pub source: CapacitySource,
    /// Σ tokens in use and Σ KV tokens of its replicas (WVA's `wva_kv_cache_tokens_*`).
    pub kv_tokens_used: i64,
    pub kv_tokens_capacity: i64,
    pub replica_capacities: Vec<ReplicaCapacity<'a>>,
}

impl VariantCapacity<'_> {
    /// A copy that owns its names (the GPU limiter's plan outlives the snapshot it was made from).
    pub fn to_static(&self) -> VariantCapacity<'static> {
        VariantCapacity {
            name: Cow::Owned(self.name.to_string()),
            accelerator: Cow::Owned(self.accelerator.to_string()),
            replica_capacities: self
                .replica_capacities
                .iter()
                .map(|r| ReplicaCapacity {
                    pod: Cow::Owned(r.pod.to_string()),
                    ..r.clone()
                })
                .collect(),
            ..*self
        }
    }
}

/// Supply, anticipated supply (pending replicas counted), demand, and what they call for.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub supply: f64,
    pub anticipated_supply: f64,
    pub demand: f64,
    pub utilization: f64,
    /// `max(0, demand / U − anticipated)`: tokens of capacity to add.
    pub required_capacity: f64,
    /// `max(0, supply − demand / D)`: tokens of capacity that can go.
    pub spare_capacity: f64,
}

impl Totals {
    /// WVA's threshold post-step (`applyUniversalThreshold`); a non-positive threshold leaves its figure.
    fn apply_thresholds(&mut self, up: f64, down: f64) {
        if up > 0.0 {
            self.required_capacity = (self.demand / up - self.anticipated_supply).max(0.0);
        }
        if down > 0.0 {
            self.spare_capacity = (self.supply - self.demand / down).max(0.0);
        }
    }
}

/// What an analysis learned, for the engine to remember (see [`memory`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Learned {
    /// k2 observations (P1), in the order they were made.
    pub observations: Vec<(HistoryKey, i64)>,
    /// The measured capacity of each variant with replicas on the main path.
    pub live: Vec<LiveCapacity>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveCapacity {
    pub variant: String,
    pub accelerator: String,
    pub gpus: i64,
    pub total_kv_tokens: i64,
    pub effective_capacity: i64,
}

/// One model's V2 analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CapacityAnalysis<'a> {
    pub thresholds: V2Thresholds,
    /// Active variants (`spec.replicas` > 0), in input order.
    pub variants: Vec<VariantCapacity<'a>>,
    pub model: Totals,
    /// Per role, when the model is disaggregated (some variant is `prefill` or `decode`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<Role, Totals>,
    /// Tokens of the requests queued at the endpoint picker.
    pub scheduler_demand: f64,
    #[serde(skip)]
    pub learned: Learned,
}

impl CapacityAnalysis<'_> {
    /// Required and spare capacity for a role (the model's when the model is not disaggregated).
    pub fn totals_for(&self, role: Role) -> &Totals {
        self.roles.get(&role).unwrap_or(&self.model)
    }

    /// Whether some variant's capacity is known (WVA's "informative" result): without it the model is held.
    pub fn informative(&self) -> bool {
        self.variants
            .iter()
            .any(|v| v.source != CapacitySource::NoData)
    }
}

/// The waiting queue's tokens: each request costs its prompt (prefill) or prompt and output (decode,
/// both); 0 when the product is not a finite positive int64 (WVA's `waitingQueueDemand`).
fn waiting_queue_demand(row: &ReplicaRow<'_>, role: Role) -> i64 {
    if row.queue_length <= 0 {
        return 0;
    }
    let mut per_request = row.avg_input_tokens;
    if role != Role::Prefill {
        per_request += row.avg_output_tokens;
    }
    let demand = row.queue_length as f64 * per_request;
    // 2^63 is one past i64::MAX.
    if demand.is_nan() || demand <= 0.0 || demand >= 9_223_372_036_854_775_808.0 {
        return 0;
    }
    #[allow(clippy::cast_possible_truncation)] // In range by the test above.
    let d = demand as i64;
    d
}

/// `N = min(B·O/(I+O), S)`, capacity `N × (I + O/2)` (WVA's `estimateCapacityFromParams`); 0 when it
/// cannot be estimated.
pub fn estimate_capacity(params: Option<&EngineParams>, input: f64, output: f64) -> i64 {
    let Some(p) = params else { return 0 };
    let b = p.effective_max_batched_tokens();
    if b <= 0 || output <= 0.0 {
        return 0;
    }
    let n = (b as f64 * output / (input + output)).min(p.max_num_seqs as f64);
    #[allow(clippy::cast_possible_truncation)] // Go's int64() of a float; saturating here.
    let k2 = (n * (input + output / 2.0)) as i64;
    k2.max(0)
}

/// `int64(x × threshold)`, as Go truncates.
fn scaled(x: i64, threshold: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let v = (x as f64 * threshold) as i64;
    v
}

/// The median of effective capacities; even counts average the middle two in integers (WVA's `median`).
fn median(values: &mut [i64]) -> i64 {
    values.sort_unstable();
    let n = values.len();
    match n {
        0 => 0,
        _ if n.is_multiple_of(2) => (values[n / 2 - 1] + values[n / 2]) / 2,
        _ => values[n / 2],
    }
}

/// Mean prompt tokens, output tokens and hit rate over replicas that completed requests.
fn workload_averages<'r, 'a: 'r>(
    rows: impl Iterator<Item = &'r ReplicaRow<'a>>,
) -> (f64, f64, f64) {
    let (mut i, mut o, mut h, mut n) = (0.0, 0.0, 0.0, 0u32);
    for r in rows.filter(|r| r.avg_input_tokens > 0.0 || r.avg_output_tokens > 0.0) {
        i += r.avg_input_tokens;
        o += r.avg_output_tokens;
        h += r.hit_rate();
        n += 1;
    }
    if n > 0 {
        let n = f64::from(n);
        (i / n, o / n, h / n)
    } else {
        (0.0, 0.0, 0.0)
    }
}

/// The k2 history as this analysis sees it: the memory, plus the observations it made so far (a later
/// replica reads an earlier one's, as in WVA's cycle).
struct History<'a> {
    memory: &'a CapacityMemory,
    made: Vec<(HistoryKey, i64)>,
    /// The windows this analysis added to, as they now stand.
    touched: std::collections::HashMap<HistoryKey, Vec<f64>>,
}

impl History<'_> {
    fn mean(&self, key: &HistoryKey) -> f64 {
        match self.touched.get(key) {
            Some(window) => window.iter().sum::<f64>() / window.len() as f64,
            None => self.memory.history_mean(key),
        }
    }

    fn observe(&mut self, key: &HistoryKey, tokens: i64) {
        let memory = self.memory;
        let window = self
            .touched
            .entry(key.clone())
            .or_insert_with(|| memory.history_values(key));
        window.push(tokens as f64);
        if window.len() > memory::HISTORY_WINDOW {
            window.remove(0);
        }
        self.made.push((key.clone(), tokens));
    }
}

/// Analyses one model: `namespace` and `model` key the memory; variants at 0 replicas are left out
/// (WVA analyses active variants only).
pub fn analyze<'a>(
    namespace: &str,
    model: &str,
    variants: &[VariantIn<'a>],
    scheduler: Option<SchedulerQueue>,
    thresholds: &V2Thresholds,
    memory: &CapacityMemory,
) -> CapacityAnalysis<'a> {
    let active: Vec<&VariantIn<'a>> = variants.iter().filter(|v| v.is_active()).collect();
    let mut ctx = Context {
        namespace,
        model,
        thresholds,
        history: History {
            memory,
            made: Vec::new(),
            touched: std::collections::HashMap::new(),
        },
        workload: workload_averages(active.iter().flat_map(|v| v.rows.iter())),
    };
    let mut live = Vec::new();
    let out: Vec<VariantCapacity<'a>> = active
        .iter()
        .map(|v| {
            let (capacity, learned) = ctx.variant_capacity(v);
            live.extend(learned);
            capacity
        })
        .collect();

    // Model totals, then the endpoint picker's queue.
    let mut model_totals = sum(out.iter());
    let (avg_i, avg_o, hit) = ctx.workload;
    let (sched_in, sched_out) = scheduler
        .filter(|q| q.requests != 0 || q.bytes != 0)
        .map_or((0.0, 0.0), |q| {
            let from_bytes = q.bytes as f64 / BYTES_PER_TOKEN;
            let from_count = q.requests as f64 * avg_i;
            let input = from_bytes.max(from_count) * (1.0 - hit);
            (input, q.requests as f64 * avg_o)
        });
    let scheduler_demand = sched_in + sched_out;
    model_totals.demand += scheduler_demand;

    let mut roles: BTreeMap<Role, Totals> = BTreeMap::new();
    if out.iter().any(|v| v.role != Role::Both) {
        for role in [Role::Both, Role::Decode, Role::Prefill] {
            if out.iter().any(|v| v.role == role) {
                let mut t = sum(out.iter().filter(|v| v.role == role));
                if scheduler_demand != 0.0 {
                    t.demand += match role {
                        Role::Prefill => sched_in,
                        Role::Decode | Role::Both => sched_in + sched_out,
                    };
                }
                roles.insert(role, t);
            }
        }
    }
    let (up, down) = (
        thresholds.scale_up_threshold,
        thresholds.scale_down_boundary,
    );
    for t in std::iter::once(&mut model_totals).chain(roles.values_mut()) {
        if t.supply > 0.0 {
            t.utilization = t.demand / t.supply;
        }
        t.apply_thresholds(up, down);
    }
    CapacityAnalysis {
        thresholds: *thresholds,
        variants: out,
        model: model_totals,
        roles,
        scheduler_demand,
        learned: Learned {
            observations: ctx.history.made,
            live,
        },
    }
}

/// Supply, anticipated supply and demand over variants.
fn sum<'r, 'a: 'r>(variants: impl Iterator<Item = &'r VariantCapacity<'a>>) -> Totals {
    let mut t = Totals::default();
    for v in variants {
        t.supply += v.replicas as f64 * v.per_replica_capacity;
        t.anticipated_supply += (v.replicas + v.pending) as f64 * v.per_replica_capacity;
        t.demand += v.demand;
    }
    t
}

/// What one model's analysis carries from variant to variant.
struct Context<'a> {
    namespace: &'a str,
    model: &'a str,
    thresholds: &'a V2Thresholds,
    history: History<'a>,
    /// The model's mean prompt tokens, output tokens and prefix hit rate.
    workload: (f64, f64, f64),
}

impl Context<'_> {
    /// One variant's capacity (WVA's `aggregateByVariant`), and what it measured of itself.
    fn variant_capacity<'v>(
        &mut self,
        v: &VariantIn<'v>,
    ) -> (VariantCapacity<'v>, Option<LiveCapacity>) {
        let memory = self.history.memory;
        // The variant's record: live if learned, else derived from its Deployment (WVA reloads it each
        // cycle unless live).
        let derived = v
            .params
            .as_ref()
            .map(|p| CapacityRecord::from_deployment(&v.accelerator, v.gpus_per_replica, p));
        let own = match memory.record(self.namespace, self.model, &v.name) {
            Some(r) if r.is_live() => Some(r.clone()),
            other => derived.or_else(|| other.cloned()),
        };
        // The variant's three k2 history keys (by output-length bucket), made once.
        let keys = [Bucket::Short, Bucket::Medium, Bucket::Long].map(|bucket| HistoryKey {
            model: self.model.to_string(),
            accelerator: v.accelerator.to_string(),
            gpus: v.gpus_per_replica,
            bucket,
        });
        let replicas: Vec<ReplicaCapacity<'v>> = v
            .rows
            .iter()
            .filter_map(|row| {
                replica_capacity(
                    row,
                    v,
                    &keys,
                    self.thresholds,
                    own.as_ref(),
                    &mut self.history,
                )
            })
            .collect();
        let ready = (v.current - v.pending()).max(0);
        let mut live = None;
        let mut instances_per_replica = 1;
        let (prc, count, pending, demand, source) = if replicas.is_empty() {
            let (prc, source) = stored_capacity(
                v,
                self.model,
                own.as_ref(),
                memory,
                self.thresholds.kv_cache_threshold,
                (self.workload.0, self.workload.1),
            );
            (prc, ready, v.pending(), 0.0, source)
        } else {
            let mut effective: Vec<i64> = replicas.iter().map(|r| r.effective_capacity).collect();
            let prc = median(&mut effective) as f64;
            let count = i64::try_from(replicas.len()).unwrap_or(i64::MAX);
            // Pending replicas in serving instances (data-parallel ranks per pod).
            let mut pending = v.pending();
            if ready > 0 && count / ready > 1 {
                pending *= count / ready;
                instances_per_replica = count / ready;
            }
            let demand: f64 = replicas.iter().map(|r| r.demand as f64).sum();
            // The lower-median replica's source (a stable sort: ties keep input order).
            let mut by_capacity: Vec<&ReplicaCapacity<'_>> = replicas.iter().collect();
            by_capacity.sort_by_key(|r| r.effective_capacity);
            let source = by_capacity[(by_capacity.len() - 1) / 2].source;
            // Rows with `vllm:cache_config_info` measure the variant; fallback rows only borrow its
            // record. The live record is their median (WVA: the last replica processed).
            let mut measured: Vec<i64> = replicas
                .iter()
                .filter(|r| r.total_kv_tokens > 0)
                .map(|r| r.effective_capacity)
                .collect();
            if let Some(first) = replicas.iter().find(|r| r.total_kv_tokens > 0) {
                live = Some(LiveCapacity {
                    variant: v.name.to_string(),
                    accelerator: v.accelerator.to_string(),
                    gpus: v.gpus_per_replica,
                    total_kv_tokens: first.total_kv_tokens,
                    effective_capacity: median(&mut measured),
                });
            }
            (prc, count, pending, demand, source)
        };
        let total_capacity = count as f64 * prc;
        let capacity = VariantCapacity {
            name: v.name.clone(),
            role: v.role,
            accelerator: v.accelerator.clone(),
            cost: v.cost,
            replicas: count,
            pending,
            per_replica_capacity: prc,
            instances_per_replica,
            total_capacity,
            demand,
            utilization: if total_capacity > 0.0 {
                demand / total_capacity
            } else {
                0.0
            },
            source,
            kv_tokens_used: v.rows.iter().map(ReplicaRow::tokens_in_use).sum(),
            kv_tokens_capacity: v.rows.iter().map(|r| r.total_kv_tokens.max(0)).sum(),
            replica_capacities: replicas,
        };
        (capacity, live)
    }
}

/// One row's capacity (WVA's `computeReplicaCapacity`), or `None` when neither the row nor the
/// variant's record says what it holds.
fn replica_capacity<'a>(
    row: &ReplicaRow<'a>,
    v: &VariantIn<'_>,
    keys: &[HistoryKey; 3],
    thresholds: &V2Thresholds,
    own: Option<&CapacityRecord>,
    history: &mut History<'_>,
) -> Option<ReplicaCapacity<'a>> {
    let wait = waiting_queue_demand(row, v.role);
    if row.total_kv_tokens <= 0 {
        // The fallback path: no `vllm:cache_config_info`. A live record already has the threshold
        // applied (WVA applies it twice: `saturation_v2/analyzer.go:235-243`); a Deployment-derived one does not.
        let rec = own.filter(|r| r.effective_capacity > 0)?;
        let eff = if rec.is_live() {
            rec.effective_capacity
        } else {
            scaled(rec.effective_capacity, thresholds.kv_cache_threshold)
        };
        if eff <= 0 {
            return None;
        }
        #[allow(clippy::cast_possible_truncation)] // Go's int64(); usage is 0–1.
        let in_use = (row.kv_cache_usage * eff as f64) as i64;
        let demand = in_use.saturating_add(wait);
        return Some(ReplicaCapacity {
            pod: row.pod.clone(),
            tokens_in_use: in_use,
            total_kv_tokens: 0,
            k1: eff,
            k2: eff,
            source: CapacitySource::Fallback,
            effective_capacity: eff,
            demand,
            saturated: demand >= eff,
        });
    }
    let tokens = row.tokens_in_use();
    let demand = tokens.saturating_add(wait);
    let k1 = scaled(row.total_kv_tokens, thresholds.kv_cache_threshold);
    let key = &keys[Bucket::of(row.avg_output_tokens) as usize];
    // Go's int() of the threshold truncates toward zero.
    #[allow(clippy::cast_possible_truncation)]
    let queue_threshold = thresholds.queue_length_threshold as i64;
    let (k2, source) = if row.queue_length >= queue_threshold && tokens > 0 {
        history.observe(key, tokens);
        (tokens, CapacitySource::Observed)
    } else {
        let mean = history.mean(key);
        let estimate = estimate_capacity(
            v.params.as_deref(),
            row.avg_input_tokens,
            row.avg_output_tokens,
        );
        if mean > 0.0 {
            #[allow(clippy::cast_possible_truncation)]
            let m = mean as i64;
            (m, CapacitySource::History)
        } else if estimate > 0 {
            (estimate, CapacitySource::Deployment)
        } else {
            (k1, CapacitySource::Fallback)
        }
    };
    let effective = k1.min(k2);
    Some(ReplicaCapacity {
        pod: row.pod.clone(),
        tokens_in_use: tokens,
        total_kv_tokens: row.total_kv_tokens,
        k1,
        k2,
        source,
        effective_capacity: effective,
        demand,
        saturated: demand >= effective,
    })
}

/// A variant without replica rows (all pending, or none attributed): its own record, else a compatible
/// variant's (WVA's P0-store), else nothing.
fn stored_capacity(
    v: &VariantIn,
    model: &str,
    own: Option<&CapacityRecord>,
    memory: &CapacityMemory,
    kv_threshold: f64,
    (avg_i, avg_o): (f64, f64),
) -> (f64, CapacitySource) {
    if let Some(rec) = own.filter(|r| r.effective_capacity > 0) {
        if rec.is_live() {
            return (rec.effective_capacity as f64, CapacitySource::Store);
        }
        if let Some(params) = rec.params.as_ref().filter(|_| avg_o > 0.0) {
            let derived = estimate_capacity(Some(params), avg_i, avg_o);
            if derived > 0 {
                let mut bounded = derived;
                if rec.total_kv_tokens > 0 && kv_threshold > 0.0 {
                    let k1 = scaled(rec.total_kv_tokens, kv_threshold);
                    if k1 > 0 && k1 < bounded {
                        bounded = k1;
                    }
                }
                if let Some(c) = memory
                    .find_compatible(model, &rec.accelerator, rec.gpus, params)
                    .filter(|c| c.is_live() && c.effective_capacity > 0)
                {
                    bounded = bounded.min(c.effective_capacity);
                }
                return (bounded as f64, CapacitySource::Store);
            }
        }
        return (rec.effective_capacity as f64, CapacitySource::Store);
    }
    if let Some(params) = own.and_then(|r| r.params.as_ref()) {
        if let Some(c) = memory.find_compatible(model, &v.accelerator, v.gpus_per_replica, params) {
            return (c.effective_capacity as f64, CapacitySource::Store);
        }
    }
    (0.0, CapacitySource::NoData)
}

#[cfg(test)]
mod tests;
