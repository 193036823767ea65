//! The engine: joins the cluster snapshot, replica samples and thresholds, and answers metric requests.
//!
//! It is stateless: every answer is computed from the current snapshot and samples, so any replica of
//! the server answers the same for the same cluster state.
//!
//! * [`decide`](mod@decide): one model's pure, infallible decision (analysis, then targets).
//! * [`input`]: the `analyze` command's JSON input, validated at its own edge.
//! * this module: the [`Engine`], which joins the stores into decisions and implements the provider
//!   contract for the API surfaces. The metric names it serves, and what they mean, are
//!   [`crate::provider::metrics`]'s.

pub mod decide;
pub mod input;
pub mod learn;
pub mod limit;
mod signals;

use crate::provider::metrics::{metric_kind, signal_kind, MetricKind};
pub use decide::{
    decide, decide_refused, decide_v2, decide_with_zero, ModelDecision, ReplicaInput, V2Context,
    VariantInput, ZeroInputs,
};
pub use input::ModelInput;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::cluster::snapshot::ExcludedVariant;
use crate::cluster::snapshot::{SharedSnapshot, Snapshot, Variant};
use crate::cluster::workload::TargetKind;
use crate::error::{Capped, Echo, MAX_NAMES_LISTED};
use crate::provider::quantity::milli_from_f64;
use crate::provider::selector::{Labels, Selector};
use crate::provider::{MetricItem, MetricsProvider, ProviderError, Share, ShareQuery};
use crate::saturation::config::{ConfigSource, Resolved, Thresholds};
use crate::saturation::v2::config::{AnalyzerChoice, V2Fields};
use crate::saturation::v2::{CapacityMemory, SchedulerQueue};
use crate::saturation::{Activity, Demand, Role, SaturationConfig, ZeroConfig};
use crate::sources::epp::{DemandSource, NoDemand};
use crate::sources::MissingSample;
use crate::sources::{LoadFigures, Lookup, PodSample, SampleSource};
use crate::target::PodTarget;

/// A pod's input as the explain output shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInput {
    pub variant: String,
    pub pod: String,
    /// Where the pod is scraped, and which rule chose the port.
    pub url: String,
    pub endpoint_from: crate::target::EndpointRule,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<PodSample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<MissingSample>,
}

/// A decision in context, for the request path and for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelExplanation<'a> {
    pub namespace: &'a str,
    pub model_id: &'a str,
    /// The ConfigMap and entry the thresholds come from (empty: the built-in defaults).
    pub config: ConfigSource,
    /// The model's variants as the decision saw them (explanations only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantSummary>,
    pub pods: Vec<PodInput>,
    /// Model-level load from Prometheus, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadFigures>,
    pub decision: ModelDecision<'a>,
    /// Set when ready pods have been without samples for too long to hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// One variant of a model, as an explanation lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VariantSummary {
    pub name: String,
    /// The declaring object's kind.
    pub kind: String,
    /// Its prefill/decode role (`both` when it does both).
    pub role: Role,
    pub accelerator: String,
    pub cost: f64,
    /// The scale target: a Deployment, or a LeaderWorkerSet (whose groups are the replicas).
    pub target_kind: TargetKind,
    /// The scale target's name.
    pub deployment: String,
    pub spec_replicas: i64,
    pub ready_replicas: i64,
    pub min_replicas: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i64>,
    /// Pods the scheduler could not place (the GPU limiter moves this variant's scale-ups).
    #[serde(skip_serializing_if = "crate::cluster::snapshot::is_zero")]
    pub unschedulable_pods: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation<'a> {
    pub synced: bool,
    pub models: Vec<ModelExplanation<'a>>,
    pub excluded: Vec<ExcludedVariant>,
}

pub struct Engine {
    snapshot: SharedSnapshot,
    samples: Arc<dyn SampleSource>,
    config: Arc<ArcSwap<Thresholds>>,
    max_metric_age: Duration,
    zero: Arc<ArcSwap<ZeroConfig>>,
    demand: Arc<dyn DemandSource>,
    /// What saturation V2 has learned (k2 history, capacity records); see [`learn`].
    memory: Arc<ArcSwap<CapacityMemory>>,
    /// The GPU limiter's last plan; see [`limit`].
    limits: ArcSwap<limit::LimitPlan>,
}

impl Engine {
    pub fn new(
        snapshot: SharedSnapshot,
        samples: Arc<dyn SampleSource>,
        config: Arc<ArcSwap<Thresholds>>,
        max_metric_age: Duration,
    ) -> Self {
        Self {
            snapshot,
            samples,
            config,
            max_metric_age,
            zero: Arc::new(ArcSwap::from_pointee(ZeroConfig::default())),
            demand: Arc::new(NoDemand),
            memory: Arc::new(ArcSwap::from_pointee(CapacityMemory::default())),
            limits: ArcSwap::from_pointee(limit::LimitPlan::default()),
        }
    }

    /// Scale to zero (the configuration in force) and from zero (queued demand at endpoint pickers).
    /// Without this, scale to zero is disabled and no model has an endpoint picker.
    #[must_use]
    pub fn with_zero(
        mut self,
        zero: Arc<ArcSwap<ZeroConfig>>,
        demand: Arc<dyn DemandSource>,
    ) -> Self {
        self.zero = zero;
        self.demand = demand;
        self
    }

    /// What scale to zero and from zero decide on for one model. A saturation ConfigMap entry's
    /// `scaleToZero.enabled` (WVA v0.9) decides before the scale-to-zero ConfigMap.
    fn zero_inputs(
        &self,
        snapshot: &Snapshot,
        namespace: &str,
        model_id: &str,
        entry: &V2Fields,
        source: &ConfigSource,
    ) -> ZeroInputs {
        let mut policy = self.zero.load().resolve(model_id, namespace);
        if let Some(enabled) = entry.scale_to_zero.and_then(|z| z.enabled) {
            policy.enabled = enabled;
            policy.source = format!(
                "scaleToZero.enabled of entry {:?} in {}",
                source.entry.as_deref().unwrap_or_default(),
                source.config_map.as_deref().unwrap_or_default()
            )
            .into();
        }
        let activity = if policy.enabled {
            let pods: Vec<&PodTarget> = snapshot
                .model(namespace, model_id)
                .iter()
                .flat_map(|v| v.pods.iter())
                .collect();
            self.samples
                .activity(namespace, model_id, &pods, policy.retention)
        } else {
            Activity::Unknown {
                reason: "scale to zero is disabled for the model".into(),
            }
        };
        ZeroInputs {
            policy,
            activity,
            demand: self.demand.demand(namespace, model_id),
        }
    }

    /// The engine the configuration selects, on one model's inputs.
    fn decide<'a>(
        &self,
        analyzer: &AnalyzerChoice,
        (namespace, model): (&str, &str),
        (config, entry): (&SaturationConfig, &V2Fields),
        variants: &[VariantInput<'a>],
        zero: ZeroInputs,
    ) -> ModelDecision<'a> {
        match analyzer {
            AnalyzerChoice::V1 => decide_with_zero(config, variants, Some(zero)),
            AnalyzerChoice::V2 => {
                let memory = self.memory.load();
                let ctx = V2Context {
                    namespace,
                    model,
                    config: *config,
                    thresholds: entry.thresholds(config),
                    votes: entry.saturation_votes(),
                    scheduler: match &zero.demand {
                        #[allow(clippy::cast_possible_truncation)] // WVA truncates the sum too.
                        Demand::Queued {
                            requests, bytes, ..
                        } => Some(SchedulerQueue {
                            requests: *requests as i64,
                            bytes: *bytes as i64,
                        }),
                        _ => None,
                    },
                    memory: &memory,
                };
                decide_v2(&ctx, variants, Some(zero))
            }
            AnalyzerChoice::Refused { reason } => decide_refused(config, variants, reason),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Decides one model from the current state. `with_pods`: also list every pod's input (for
    /// explanations); the request path leaves it out, which halves its allocations at 1,000 pods.
    pub fn explain_model<'a>(
        &self,
        snapshot: &'a Snapshot,
        namespace: &'a str,
        model_id: &'a str,
        with_pods: bool,
    ) -> ModelExplanation<'a> {
        let mut e = self.explain_unlimited(snapshot, namespace, model_id, with_pods);
        self.apply_limits(&mut e, snapshot, std::time::Instant::now());
        e
    }

    /// [`Engine::explain_model`] without the GPU limiter (what the limiter's plan is made from).
    fn explain_unlimited<'a>(
        &self,
        snapshot: &'a Snapshot,
        namespace: &'a str,
        model_id: &'a str,
        with_pods: bool,
    ) -> ModelExplanation<'a> {
        let scaling = self.config.load();
        let Resolved {
            v1: config,
            v2: entry,
            source: config_source,
        } = scaling.resolve_all(model_id, namespace);
        let model = snapshot.model(namespace, model_id);
        let mut pods = Vec::new();
        let mut summaries = Vec::new();
        let mut variants = Vec::with_capacity(model.len());
        let mut overdue = Vec::new();
        for v in model {
            let mut replicas = Vec::with_capacity(v.pods.len());
            // A pod read at several ports (data-parallel ranks) is one replica: its rows count only
            // when every rank has a fresh sample, else the pod is a Ready pod without samples.
            let mut partial: BTreeSet<&str> = BTreeSet::new();
            for pod in v.pods.iter() {
                let instance = pod.instance();
                let (sample, missing) = match usable_sample(self.samples.lookup(pod, model_id)) {
                    Ok(sample) => {
                        let mut row = replica_input(instance.clone(), &sample);
                        row.rank_of = pod.per_port.then_some(Cow::Borrowed(pod.name.as_str()));
                        replicas.push(row);
                        (Some(sample), None)
                    }
                    Err((since, reason)) => {
                        if pod.per_port {
                            partial.insert(&pod.name);
                        }
                        if since > self.max_metric_age {
                            overdue
                                .push(format!("{instance} ({reason}, for {}s)", since.as_secs()));
                        }
                        (None, Some(reason))
                    }
                };
                if with_pods {
                    pods.push(PodInput {
                        variant: v.name.clone(),
                        pod: instance.into_owned(),
                        url: crate::sources::scraper::pod_url(pod),
                        endpoint_from: pod.endpoint,
                        sample,
                        missing,
                    });
                }
            }
            replicas.retain(|r| r.rank_of.as_deref().is_none_or(|p| !partial.contains(p)));
            if with_pods {
                summaries.push(VariantSummary::of(v));
            }
            variants.push(variant_input(v, replicas));
        }
        // The configuration was validated when it was loaded, and the snapshot's variants are unique,
        // counted from the API and sampled through `usable_sample`: decide's preconditions hold.
        let zero = self.zero_inputs(snapshot, namespace, model_id, &entry, &config_source);
        let decision = self.decide(
            &scaling.analyzer(),
            (namespace, model_id),
            (&config, &entry),
            &variants,
            zero,
        );
        let unavailable = (!overdue.is_empty()).then(|| {
            format!(
                "no fresh vLLM metrics for model {model_id:?} in namespace {namespace} for longer than {}s from pod(s): {}",
                self.max_metric_age.as_secs(),
                Capped(&overdue, MAX_NAMES_LISTED)
            )
        });
        // Load figures are for explanations only; the request path does not read them.
        let load = with_pods
            .then(|| self.samples.model_load(namespace, model_id))
            .flatten();
        ModelExplanation {
            namespace,
            model_id,
            config: config_source,
            variants: summaries,
            pods,
            load,
            decision,
            unavailable,
        }
    }

    /// Every model (optionally of one namespace) of `snapshot` with its inputs, analysis and targets,
    /// and every VariantAutoscaling that cannot be decided with the reason: the `/debug/variants`
    /// document. The explanation borrows the snapshot's names, so the caller holds the snapshot (and
    /// joins the explanation with the snapshot it was made from).
    pub fn explain_at<'a>(
        &self,
        snapshot: &'a Snapshot,
        namespace: Option<&str>,
    ) -> Explanation<'a> {
        let mut models: Vec<(&str, &str)> = snapshot
            .variants
            .iter()
            .filter(|v| namespace.is_none_or(|ns| v.namespace == ns))
            .map(|v| (v.namespace.as_str(), v.model_id.as_str()))
            .collect();
        models.dedup();
        Explanation {
            synced: snapshot.synced,
            models: models
                .iter()
                .map(|(ns, m)| self.explain_model(snapshot, ns, m, true))
                .collect(),
            excluded: snapshot
                .excluded
                .iter()
                .filter(|e| namespace.is_none_or(|ns| e.namespace == ns))
                .cloned()
                .collect(),
        }
    }
}

impl VariantSummary {
    fn of(v: &Variant) -> Self {
        Self {
            name: v.name.clone(),
            kind: v.kind.as_str().to_string(),
            role: v.role,
            accelerator: v.accelerator.clone(),
            cost: v.cost,
            target_kind: v.target_kind,
            unschedulable_pods: v.unschedulable_pods,
            deployment: v.deployment.clone(),
            spec_replicas: v.spec_replicas,
            ready_replicas: v.ready_replicas,
            min_replicas: v.bounds.min_replicas,
            max_replicas: v.bounds.max_replicas,
        }
    }
}

/// A snapshot variant and its sampled replicas as a decision's input.
fn variant_input<'a>(v: &'a Variant, replicas: Vec<ReplicaInput<'a>>) -> VariantInput<'a> {
    VariantInput {
        name: Cow::Borrowed(&v.name),
        cost: v.cost,
        accelerator: Cow::Borrowed(&v.accelerator),
        spec_replicas: v.spec_replicas,
        ready_replicas: v.ready_replicas,
        replicas,
        min_replicas: Some(v.bounds.min_replicas),
        max_replicas: v.bounds.max_replicas,
        role: v.role,
        gpus_per_replica: v.gpus_per_replica,
        engine_params: v.engine_params.as_ref().map(Cow::Borrowed),
    }
}

/// A pod's fresh sample as a decision's input.
fn replica_input<'a>(pod: Cow<'a, str>, sample: &PodSample) -> ReplicaInput<'a> {
    let t = sample.tokens.unwrap_or_default();
    ReplicaInput {
        total_kv_tokens: t.total_kv_tokens,
        avg_input_tokens: t.avg_input_tokens,
        avg_output_tokens: t.avg_output_tokens,
        prefix_cache_hit_rate: t.prefix_cache_hit_rate,
        ..ReplicaInput::new(pod, sample.kv_cache_usage, sample.queue_length)
    }
}

/// A fresh sample the analysis can use, or why there is none. A sample that cannot be a KV-cache
/// fraction or a queue length (NaN, ±Inf, negative) counts as missing for that pod alone: one broken
/// exporter must not make its whole model unanswerable, and nothing scales down because of it.
fn usable_sample(lookup: Lookup) -> Result<PodSample, (Duration, MissingSample)> {
    match lookup {
        Lookup::Fresh(s) if !input::usable(s.kv_cache_usage) => Err((
            Duration::ZERO,
            MissingSample::Unusable {
                signal: "vllm:kv_cache_usage_perc",
                value: s.kv_cache_usage,
            },
        )),
        Lookup::Fresh(s) if !input::usable(s.queue_length) => Err((
            Duration::ZERO,
            MissingSample::Unusable {
                signal: "vllm:num_requests_waiting",
                value: s.queue_length,
            },
        )),
        Lookup::Fresh(s) => Ok(s),
        Lookup::Missing { since, reason } => Err((since, reason)),
    }
}

/// An item's labels: the one definition of what a variant's series carries. The selector reads them
/// borrowed (the request path evaluates it against every variant of the namespace); items own a copy.
pub(crate) struct ItemLabels<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    /// `None` for a variant whose accelerator is unknown (an excluded one): a selector on it is ignored.
    pub accelerator: Option<&'a str>,
    /// WVA v0.5.1's `controller_instance`, when the VA is labelled for one (its chart's HPA selects on it).
    pub controller_instance: Option<&'a str>,
}

impl<'a> ItemLabels<'a> {
    pub(crate) const KEYS: [&'static str; 5] = [
        "variant_name",
        "namespace",
        "exported_namespace",
        "accelerator_type",
        "controller_instance",
    ];

    pub fn of(v: &'a Variant) -> Self {
        Self {
            name: &v.name,
            namespace: &v.namespace,
            accelerator: Some(&v.accelerator),
            controller_instance: v.controller_instance.as_deref(),
        }
    }

    pub(crate) fn to_map(&self) -> BTreeMap<&'static str, String> {
        // Inserted one by one: a map collected from an iterator is first gathered in a vector.
        let mut map = BTreeMap::new();
        for k in Self::KEYS {
            if let Some(v) = self.get(k) {
                map.insert(k, v.to_string());
            }
        }
        map
    }
}

impl Labels for ItemLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "variant_name" => Some(self.name),
            "namespace" | "exported_namespace" => Some(self.namespace),
            "accelerator_type" => self.accelerator,
            "controller_instance" => self.controller_instance,
            _ => None,
        }
    }
}

/// Why no variant matches: the variants the selector names that are excluded (503, saying why), else
/// a 404.
fn no_variant(
    snapshot: &Snapshot,
    namespace: &str,
    metric: &str,
    selector: &Selector,
) -> ProviderError {
    let excluded: Vec<String> = snapshot
        .excluded
        .iter()
        .filter(|e| e.namespace == namespace)
        .filter(|e| {
            let labels = ItemLabels {
                name: &e.name,
                namespace: &e.namespace,
                accelerator: None,
                controller_instance: None,
            };
            // The accelerator may be what is missing, so ignore requirements on it.
            selector
                .requirements()
                .iter()
                .filter(|r| r.key != "accelerator_type" && r.key != "controller_instance")
                .all(|r| r.matches(&labels))
        })
        .map(|e| format!("{}: {}", e.name, e.reason))
        .collect();
    if !excluded.is_empty() {
        return ProviderError::Unavailable(format!(
            "variant(s) matching \"{}\" in namespace {namespace} cannot be decided: {}",
            Echo(&selector.to_string()),
            Capped(&excluded, MAX_NAMES_LISTED)
        ));
    }
    ProviderError::NoMatch {
        metric: metric.to_string(),
        namespace: namespace.to_string(),
        selector: Echo(&selector.to_string()).to_string(),
    }
}

impl MetricsProvider for Engine {
    fn explain(&self, namespace: Option<&str>) -> Option<serde_json::Value> {
        let snapshot = self.snapshot();
        serde_json::to_value(self.explain_at(&snapshot, namespace)).ok()
    }

    fn signal_share(&self, query: &ShareQuery<'_>) -> Result<Share, ProviderError> {
        Engine::signal_share(self, query)
    }

    fn external_metric(
        &self,
        namespace: &str,
        metric: &str,
        selector: &Selector,
    ) -> Result<Vec<MetricItem>, ProviderError> {
        if let Some(signal) = signal_kind(metric) {
            return self.signal_metric(namespace, metric, signal, selector);
        }
        let Some(kind) = metric_kind(metric) else {
            return Err(ProviderError::UnknownMetric {
                metric: metric.to_string(),
                namespace: namespace.to_string(),
            });
        };
        // A guard, not a clone of the Arc: requests on different workers would otherwise all write the
        // snapshot's one reference count.
        let snapshot = self.snapshot.load();
        if !snapshot.synced {
            return Err(ProviderError::Unavailable(
                "the cluster state has not been loaded yet; retry in a few seconds".into(),
            ));
        }
        // A selector that names its variants (the HPA's `variant_name=…`) is answered from the name index;
        // any other scans the namespace.
        let matching: Vec<&Variant> = match selector.required_values("variant_name") {
            Some(names) => {
                let mut found: Vec<&Variant> = names
                    .iter()
                    .flat_map(|n| snapshot.named(namespace, n))
                    .filter(|v| selector.matches(&ItemLabels::of(v)))
                    .collect();
                // Snapshot order: (namespace, model, name).
                found.sort_by(|a, b| (&a.model_id, &a.name).cmp(&(&b.model_id, &b.name)));
                found
            }
            None => snapshot
                .namespace(namespace)
                .iter()
                .filter(|v| selector.matches(&ItemLabels::of(v)))
                .collect(),
        };
        if matching.is_empty() {
            return Err(no_variant(&snapshot, namespace, metric, selector));
        }

        let mut decided: BTreeMap<&str, ModelExplanation> = BTreeMap::new();
        if kind != MetricKind::CurrentReplicas {
            for v in &matching {
                if !decided.contains_key(v.model_id.as_str()) {
                    let report = self.explain_model(&snapshot, namespace, &v.model_id, false);
                    if let Some(why) = &report.unavailable {
                        return Err(ProviderError::Unavailable(why.clone()));
                    }
                    decided.insert(v.model_id.as_str(), report);
                }
            }
        }
        let mut items = Vec::with_capacity(matching.len());
        for v in matching {
            let current = v.ready_replicas;
            let desired = decided
                .get(v.model_id.as_str())
                .and_then(|r| r.decision.targets.get(v.name.as_str()).copied());
            let value = match (kind, desired) {
                (MetricKind::CurrentReplicas, _) => current as f64,
                (MetricKind::DesiredReplicas, Some(d)) => d as f64,
                (MetricKind::DesiredRatio, Some(d)) if current == 0 => d as f64,
                (MetricKind::DesiredRatio, Some(d)) => d as f64 / current as f64,
                (_, None) => {
                    return Err(ProviderError::Unavailable(format!(
                        "no decision for variant {} of model {:?}",
                        v.name, v.model_id
                    )));
                }
            };
            let value_milli =
                milli_from_f64(value).map_err(|e| ProviderError::Unavailable(e.to_string()))?;
            items.push(MetricItem {
                labels: ItemLabels::of(v).to_map(),
                value_milli,
            });
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::snapshot::shared;
    use crate::sources::SourceKind;
    use crate::target::PodTarget;
    use std::sync::Mutex;

    /// A sample store filled directly by the test.
    #[derive(Default)]
    struct Samples(Mutex<BTreeMap<String, Lookup>>);

    impl SampleSource for Samples {
        fn lookup(&self, pod: &PodTarget, _model: &str) -> Lookup {
            self.0
                .lock()
                .unwrap()
                .get(pod.instance().as_ref())
                .cloned()
                .unwrap_or(Lookup::Missing {
                    since: Duration::ZERO,
                    reason: MissingSample::NotScrapedYet,
                })
        }
    }

    fn fresh(kv: f64, q: f64) -> Lookup {
        Lookup::Fresh(PodSample {
            kv_cache_usage: kv,
            queue_length: q,
            running_requests: None,
            age: Duration::from_secs(1),
            source: SourceKind::Pods,
            tokens: None,
        })
    }

    fn variant(name: &str, model: &str, cost: f64, spec: i64, ready: i64, pods: usize) -> Variant {
        let pods = (0..pods)
            .map(|i| PodTarget::new("ns", &format!("{name}-{i}"), "127.0.0.1", 8000))
            .collect();
        Variant {
            spec_replicas: spec,
            ready_replicas: ready,
            ..Variant::new("ns", name, (model, &format!("acc-{name}")), cost, pods)
        }
    }

    fn engine(variants: Vec<Variant>, samples: &[(&str, Lookup)]) -> Engine {
        let store = Samples::default();
        for (pod, l) in samples {
            store.0.lock().unwrap().insert(pod.to_string(), l.clone());
        }
        let snapshot = Snapshot {
            by_name: Default::default(),
            pickers: Vec::new(),
            variants,
            excluded: vec![],
            synced: true,
            gpus: Default::default(),
        };
        Engine::new(
            shared(snapshot),
            Arc::new(store),
            Arc::new(ArcSwap::from_pointee(Thresholds::default())),
            Duration::from_secs(120),
        )
    }

    fn values(items: &[MetricItem]) -> Vec<(String, i64)> {
        items
            .iter()
            .map(|i| (i.labels["variant_name"].clone(), i.value_milli))
            .collect()
    }

    /// The GPU limiter: no free GPU of the cheap variant's type, so its +1 is cut and moved to the
    /// pricier variant whose type has room; every surface answers the plan. Without the nodes the
    /// limiter does not limit and says why; a stuck plan is not applied; off, nothing changes.
    #[test]
    fn the_limiter_moves_a_scale_up_to_where_gpus_are_free() {
        use crate::cluster::nodes::Gpus;
        use crate::saturation::config::{ScalingConfig, Thresholds};
        use crate::saturation::limiter::Inventory;
        use crate::saturation::TargetReason;
        use std::time::Instant;
        let mut e = engine(
            vec![
                variant("cheap", "m", 5.0, 1, 1, 1),
                variant("pricey", "m", 20.0, 1, 1, 1),
            ],
            &[("cheap-0", fresh(0.9, 6.0)), ("pricey-0", fresh(0.85, 1.0))],
        );
        let with_gpus = |e: &Engine, gpus: Gpus| {
            let mut snap = (*e.snapshot()).clone();
            snap.gpus = gpus;
            shared(snap)
        };
        let mut inventory = Inventory::default();
        inventory.add("acc-cheap", 4, 4);
        inventory.add("acc-pricey", 4, 1);
        e.snapshot = with_gpus(&e, Gpus::Known(inventory));
        let all = Selector::everything();
        let desired = |e: &Engine| {
            values(
                &e.external_metric("ns", "wva_desired_replicas", &all)
                    .unwrap(),
            )
        };
        // Off: the unlimited decision.
        e.plan_limits(Instant::now());
        assert_eq!(
            desired(&e),
            vec![("cheap".into(), 2000), ("pricey".into(), 1000)]
        );
        let (global, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &crate::saturation::configmap_data(&[("default", "enableLimiter: true\n")]),
        );
        e.config = Arc::new(ArcSwap::from_pointee(
            Thresholds::default().with_global(global),
        ));
        // Before the first plan: no scale-up.
        e.limits.store(Arc::new(limit::LimitPlan {
            made: Some(Instant::now()),
            outcome: limit::Outcome::Planned(Default::default()),
        }));
        assert_eq!(
            desired(&e),
            vec![("cheap".into(), 1000), ("pricey".into(), 1000)]
        );
        e.plan_limits(Instant::now());
        assert_eq!(
            desired(&e),
            vec![("cheap".into(), 1000), ("pricey".into(), 2000)]
        );
        let snapshot = e.snapshot();
        let explained = e.explain_at(&snapshot, Some("ns"));
        let d = &explained.models[0].decision;
        let cheap = d.reasons.iter().find(|r| r.name == "cheap").unwrap();
        assert_eq!(cheap.reason, TargetReason::Limited);
        assert!(
            cheap.message.text().contains("limited by gpu-limiter"),
            "{}",
            cheap.message
        );
        assert!(
            matches!(&d.limiter, Some(limit::LimiterNote::Applied { variants }) if variants["cheap"].limited_by.as_deref() == Some("gpu-limiter"))
        );
        // A plan older than STALE_AFTER is not applied.
        e.limits.store(Arc::new(limit::LimitPlan {
            made: Instant::now().checked_sub(limit::STALE_AFTER * 2),
            ..(**e.limits.load()).clone()
        }));
        assert_eq!(
            desired(&e),
            vec![("cheap".into(), 2000), ("pricey".into(), 1000)]
        );
        // Nodes unknown: unlimited, and the explanation says why.
        e.snapshot = with_gpus(
            &e,
            Gpus::Unknown {
                reason: "nodes forbidden".into(),
            },
        );
        e.plan_limits(Instant::now());
        assert_eq!(
            desired(&e),
            vec![("cheap".into(), 2000), ("pricey".into(), 1000)]
        );
        let snapshot = e.snapshot();
        let explained = e.explain_at(&snapshot, Some("ns"));
        assert_eq!(
            explained.models[0].decision.limiter,
            Some(limit::LimiterNote::Unlimited {
                reason: "nodes forbidden".into()
            })
        );
    }

    #[test]
    fn saturated_model_scales_the_cheapest_variant() {
        let e = engine(
            vec![
                variant("cheap", "m", 5.0, 1, 1, 1),
                variant("pricey", "m", 20.0, 1, 1, 1),
            ],
            &[("cheap-0", fresh(0.9, 6.0)), ("pricey-0", fresh(0.85, 1.0))],
        );
        let all = Selector::everything();
        assert_eq!(
            values(
                &e.external_metric("ns", "inferno_desired_replicas", &all)
                    .unwrap()
            ),
            vec![("cheap".into(), 2000), ("pricey".into(), 1000)]
        );
        assert_eq!(
            values(&e.external_metric("ns", "wva_desired_ratio", &all).unwrap()),
            vec![("cheap".into(), 2000), ("pricey".into(), 1000)]
        );
        assert_eq!(
            values(
                &e.external_metric("ns", "inferno_current_replicas", &all)
                    .unwrap()
            ),
            vec![("cheap".into(), 1000), ("pricey".into(), 1000)]
        );
    }

    /// A pod read at two ports (two data-parallel ranks) is one replica with two rows: idle, the
    /// variant scales down (its pods are not mistaken for a transition); with one rank unread, the
    /// pod counts as a Ready pod without samples and nothing scales down.
    #[test]
    fn data_parallel_ranks_are_rows_of_one_replica() {
        let ranked = |ports: &[u16]| {
            let pods = (0..2)
                .flat_map(|i| {
                    ports.iter().map(move |port| PodTarget {
                        per_port: true,
                        ..PodTarget::new("ns", &format!("dp-{i}"), "127.0.0.1", *port)
                    })
                })
                .collect();
            Variant {
                spec_replicas: 2,
                ready_replicas: 2,
                ..Variant::new("ns", "dp", ("m", "H100"), 10.0, pods)
            }
        };
        let idle = fresh(0.05, 0.0);
        let all_ranks = [
            ("dp-0:8000", idle.clone()),
            ("dp-0:8001", idle.clone()),
            ("dp-1:8000", idle.clone()),
            ("dp-1:8001", idle.clone()),
        ];
        let e = engine(vec![ranked(&[8000, 8001])], &all_ranks);
        let all = Selector::everything();
        let snapshot = e.snapshot();
        let explained = e.explain_model(&snapshot, "ns", "m", true);
        let analysis = explained.decision.analysis.as_ref().unwrap();
        assert_eq!(analysis.total_replicas, 4);
        assert!(!explained.decision.in_transition);
        assert_eq!(explained.pods[1].pod, "dp-0:8001");
        assert_eq!(
            values(
                &e.external_metric("ns", "wva_desired_replicas", &all)
                    .unwrap()
            ),
            vec![("dp".into(), 1000)]
        );
        // One rank of dp-1 unread: dp-1's other rank is no replica on its own.
        let e = engine(vec![ranked(&[8000, 8001])], &all_ranks[..3]);
        let snapshot = e.snapshot();
        let explained = e.explain_model(&snapshot, "ns", "m", true);
        assert_eq!(
            explained.decision.analysis.as_ref().unwrap().total_replicas,
            2
        );
        assert!(explained.decision.in_transition);
        assert_eq!(explained.pods.len(), 4);
        assert_eq!(
            values(
                &e.external_metric("ns", "wva_desired_replicas", &all)
                    .unwrap()
            ),
            vec![("dp".into(), 2000)]
        );
    }

    #[test]
    fn selectors_match_every_item_label() {
        let e = engine(
            vec![
                variant("a", "m", 5.0, 1, 1, 1),
                variant("b", "m", 6.0, 1, 1, 1),
            ],
            &[("a-0", fresh(0.1, 0.0)), ("b-0", fresh(0.1, 0.0))],
        );
        for (sel, want) in [
            ("variant_name=a", vec!["a"]),
            ("variant_name=b,exported_namespace=ns", vec!["b"]),
            ("namespace=ns", vec!["a", "b"]),
            ("accelerator_type=acc-b", vec!["b"]),
            ("variant_name in (a,b),accelerator_type!=acc-a", vec!["b"]),
        ] {
            let items = e
                .external_metric(
                    "ns",
                    "inferno_desired_replicas",
                    &Selector::parse(sel).unwrap(),
                )
                .unwrap();
            assert_eq!(
                items
                    .iter()
                    .map(|i| i.labels["variant_name"].as_str())
                    .collect::<Vec<_>>(),
                want,
                "{sel}"
            );
        }
        let err = e
            .external_metric(
                "ns",
                "inferno_desired_replicas",
                &Selector::parse("variant_name=zzz").unwrap(),
            )
            .unwrap_err();
        assert!(matches!(err, ProviderError::NoMatch { .. }), "{err}");
        assert!(err.to_string().contains("variant_name=zzz"));
        assert!(matches!(
            e.external_metric("other", "inferno_desired_replicas", &Selector::everything()),
            Err(ProviderError::NoMatch { .. })
        ));
        assert!(matches!(
            e.external_metric("ns", "cpu", &Selector::everything()),
            Err(ProviderError::UnknownMetric { .. })
        ));
    }

    /// WVA v0.5.1's chart HPA selects on `controller_instance`: items carry it when the VA has one.
    #[test]
    fn items_carry_the_controller_instance_for_wva_chart_selectors() {
        let mut a = variant("a", "m", 5.0, 1, 1, 1);
        a.controller_instance = Some("team-a".into());
        let e = engine(
            vec![a, variant("b", "m", 6.0, 1, 1, 1)],
            &[("a-0", fresh(0.1, 0.0)), ("b-0", fresh(0.1, 0.0))],
        );
        let sel =
            Selector::parse("variant_name=a,exported_namespace=ns,controller_instance=team-a")
                .unwrap();
        let items = e
            .external_metric("ns", "wva_desired_replicas", &sel)
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].labels["controller_instance"], "team-a");
        let items = e
            .external_metric(
                "ns",
                "wva_desired_replicas",
                &Selector::parse("variant_name=b").unwrap(),
            )
            .unwrap();
        assert!(!items[0].labels.contains_key("controller_instance"));
        assert!(matches!(
            e.external_metric(
                "ns",
                "wva_desired_replicas",
                &Selector::parse("variant_name=b,controller_instance=team-a").unwrap()
            ),
            Err(ProviderError::NoMatch { .. })
        ));
    }

    #[test]
    fn ratio_with_zero_current_is_the_desired_value() {
        let e = engine(vec![variant("a", "m", 5.0, 1, 0, 0)], &[]);
        // Nothing ready: transition (spec 1 != ready 0) → hold spec 1; ratio = desired when current is 0.
        assert_eq!(
            values(
                &e.external_metric("ns", "inferno_desired_ratio", &Selector::everything())
                    .unwrap()
            ),
            vec![("a".into(), 1000)]
        );
    }

    #[test]
    fn missing_samples_hold_spec_then_fail_with_503() {
        let young = Lookup::Missing {
            since: Duration::from_secs(30),
            reason: MissingSample::ScrapeFailing("connection refused".into()),
        };
        let e = engine(
            vec![variant("a", "m", 5.0, 3, 3, 3)],
            &[
                ("a-0", fresh(0.1, 0.0)),
                ("a-1", young.clone()),
                ("a-2", young),
            ],
        );
        assert_eq!(
            values(
                &e.external_metric("ns", "inferno_desired_replicas", &Selector::everything())
                    .unwrap()
            ),
            vec![("a".into(), 3000)]
        );

        let old = Lookup::Missing {
            since: Duration::from_secs(300),
            reason: MissingSample::ScrapeFailing("connection refused".into()),
        };
        let e = engine(
            vec![variant("a", "m", 5.0, 3, 3, 2)],
            &[("a-0", old.clone()), ("a-1", old)],
        );
        let err = e
            .external_metric("ns", "inferno_desired_replicas", &Selector::everything())
            .unwrap_err();
        let ProviderError::Unavailable(msg) = err else {
            panic!("{err:?}")
        };
        assert!(
            msg.contains("no fresh vLLM metrics for model \"m\""),
            "{msg}"
        );
        assert!(
            msg.contains("a-0 (scrape failing: connection refused, for 300s)"),
            "{msg}"
        );
        // Current replicas do not depend on samples.
        assert!(e
            .external_metric("ns", "inferno_current_replicas", &Selector::everything())
            .is_ok());
    }

    #[test]
    fn excluded_variants_are_reported_not_silently_missing() {
        let mut e = engine(vec![], &[]);
        e.snapshot = shared(Snapshot {
            gpus: Default::default(),
            by_name: Default::default(),
            pickers: Vec::new(),
            variants: vec![],
            excluded: vec![crate::cluster::snapshot::ExcludedVariant {
                kind: Default::default(),
                uid: None,
                namespace: "ns".into(),
                name: "x".into(),
                model_id: "m".into(),
                reason: crate::cluster::Exclusion::BadCost {
                    value: "cheap".into(),
                    why: "not a number".into(),
                },
            }],
            synced: true,
        });
        let err = e
            .external_metric(
                "ns",
                "inferno_desired_replicas",
                &Selector::parse("variant_name=x").unwrap(),
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("x: spec.variantCost \"cheap\": not a number"),
            "{err}"
        );
    }

    #[test]
    fn not_synced_is_unavailable() {
        let mut e = engine(vec![], &[]);
        e.snapshot = shared(Snapshot::default());
        assert!(matches!(
            e.external_metric("ns", "inferno_desired_replicas", &Selector::everything()),
            Err(ProviderError::Unavailable(_))
        ));
    }

    /// Scale to zero from the window cache's success counters, through the engine.
    mod zero {
        use std::collections::BTreeMap;
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use arc_swap::ArcSwap;

        use super::variant;
        use crate::cluster::snapshot::{self, Snapshot};
        use crate::engine::Engine;
        use crate::saturation::config::Thresholds;
        use crate::saturation::{Activity, ZeroConfig};
        use crate::sources::exposition::ModelSignals;
        use crate::sources::window::WindowCache;

        /// A page of model `m` whose success counter stands at `total`.
        fn counter_page(total: f64) -> BTreeMap<String, ModelSignals> {
            let signals = ModelSignals {
                kv_cache_usage: Some(0.1),
                queue_length: Some(0.0),
                running_requests: Some(0.0),
                success_total: Some(total),
                tokens: crate::sources::exposition::TokenCounters::default(),
            };
            BTreeMap::from([("m".to_string(), signals)])
        }

        /// The targets of model `m` in `ns` under the scale-to-zero ConfigMap entry `default: <yaml>`.
        fn targets(
            shared: &snapshot::SharedSnapshot,
            cache: &Arc<WindowCache>,
            yaml: &str,
        ) -> (BTreeMap<String, i64>, Option<crate::engine::ZeroInputs>) {
            let entries = BTreeMap::from([("default".to_string(), yaml.to_string())]);
            let (zero, issues) = ZeroConfig::from_configmap(&ZeroConfig::default(), &entries);
            assert!(issues.rejected.is_empty(), "{issues:?}");
            let engine = Engine::new(
                shared.clone(),
                cache.clone(),
                Arc::new(ArcSwap::from_pointee(Thresholds::default())),
                Duration::from_secs(120),
            )
            .with_zero(
                Arc::new(ArcSwap::from_pointee(zero)),
                Arc::new(crate::sources::epp::NoDemand),
            );
            let snapshot = engine.snapshot();
            let d = engine.explain_at(&snapshot, None).models.remove(0).decision;
            let targets = d.targets.iter().map(|(n, t)| (n.to_string(), *t));
            (targets.collect(), d.zero)
        }

        /// A model idle for its retention period goes to zero; a request brings it back to its saturation
        /// target; with scale to zero disabled, a model at zero keeps one replica on its cheapest variant.
        #[test]
        fn idle_models_go_to_zero_only_on_complete_data() {
            let (on, long, off) = (
                "enable_scale_to_zero: true\nretention_period: 1m",
                "enable_scale_to_zero: true\nretention_period: 5m",
                "enable_scale_to_zero: false",
            );
            let a = variant("a", "m", 1.0, 1, 1, 1);
            let pod = a.pods[0].clone();
            let cache = Arc::new(WindowCache::new(Duration::from_secs(60)));
            let now = Instant::now();
            let long_ago = now - Duration::from_secs(100);
            cache.retain(std::slice::from_ref(&pod), long_ago);
            cache.record(&pod, long_ago, &counter_page(5.0));
            cache.record(&pod, now, &counter_page(5.0));
            let shared = snapshot::shared(Snapshot {
                variants: vec![a],
                synced: true,
                ..Snapshot::default()
            });
            // Retention 60 s: the last request was 100 s ago.
            let (idle, zero) = targets(&shared, &cache, on);
            let zero = zero.as_ref().map(|z| (&z.activity, &*z.policy.source));
            assert_eq!(zero, Some((&Activity::Idle, "entry \"default\"")));
            assert_eq!(idle["a"], 0);
            // Retention 5 min: observed for only 100 s, so unknown, so the target stays.
            assert_eq!(targets(&shared, &cache, long).0["a"], 1);
            // Disabled: the saturation target.
            assert_eq!(targets(&shared, &cache, off).0["a"], 1);
            // A request: active again.
            cache.record(&pod, Instant::now(), &counter_page(6.0));
            assert_eq!(targets(&shared, &cache, on).0["a"], 1);

            // A parked model (every variant at spec.replicas 0) is not woken, enabled or not.
            let pick = |(d, _): (BTreeMap<String, i64>, _)| (d["a"], d["b"]);
            shared.store(Arc::new(Snapshot {
                variants: vec![
                    variant("a", "m", 1.0, 0, 0, 0),
                    variant("b", "m", 3.0, 0, 0, 0),
                ],
                synced: true,
                ..Snapshot::default()
            }));
            assert_eq!(pick(targets(&shared, &cache, off)), (0, 0));
            assert_eq!(pick(targets(&shared, &cache, on)), (0, 0));
        }
    }

    /// Saturation V2 through the engine: the global default entry selects it, samples with token
    /// figures feed it, the learning cycle remembers what it observed, missing samples never scale
    /// down, and the queueing model is refused (held).
    mod v2 {
        use super::*;
        use crate::saturation::config::ScalingConfig;
        use crate::sources::TokenFigures;

        fn thresholds(default: &str) -> Thresholds {
            let data = BTreeMap::from([("default".to_string(), default.to_string())]);
            let (global, issues) = ScalingConfig::from_configmap(&ScalingConfig::default(), &data);
            assert!(issues.rejected.is_empty(), "{issues:?}");
            Thresholds::default().with_global(global)
        }

        fn tokens(kv: f64, queue: f64) -> Lookup {
            let Lookup::Fresh(mut s) = fresh(kv, queue) else {
                unreachable!()
            };
            s.tokens = Some(TokenFigures {
                total_kv_tokens: Some(16_000),
                avg_input_tokens: 100.0,
                avg_output_tokens: 50.0,
                prefix_cache_hit_rate: 0.0,
            });
            Lookup::Fresh(s)
        }

        fn with(e: Engine, t: Thresholds) -> Engine {
            e.config.store(Arc::new(t));
            e
        }

        fn desired(e: &Engine) -> Vec<(String, i64)> {
            values(
                &e.external_metric("ns", "wva_desired_replicas", &Selector::everything())
                    .unwrap(),
            )
        }

        /// Saturation V2 under the GPU limiter: two saturated models on one accelerator type, each
        /// needing a replica more, and one GPU free: the model of higher priority takes it, the other
        /// is limited and says by what.
        #[test]
        fn v2_shares_scarce_gpus_by_priority() {
            use crate::cluster::nodes::Gpus;
            use crate::saturation::limiter::Inventory;
            use std::time::Instant;
            let data = BTreeMap::from([
                (
                    "default".to_string(),
                    "analyzers:\n  - name: saturation\nenableLimiter: true\n".to_string(),
                ),
                (
                    "lo".to_string(),
                    "model_id: lo\nnamespace: ns\npriority: 4\n".to_string(),
                ),
            ]);
            let (global, issues) = ScalingConfig::from_configmap(&ScalingConfig::default(), &data);
            assert!(
                issues.rejected.is_empty() && issues.ignored_keys.is_empty(),
                "{issues:?}"
            );
            let on_h100 = |name: &str, model: &str| Variant {
                accelerator: "NVIDIA-H100-80GB-HBM3".into(),
                ..variant(name, model, 5.0, 1, 1, 1)
            };
            let mut e = with(
                engine(
                    vec![on_h100("hi-v", "hi"), on_h100("lo-v", "lo")],
                    &[("lo-v-0", tokens(0.95, 9.0)), ("hi-v-0", tokens(0.95, 9.0))],
                ),
                Thresholds::default().with_global(global),
            );
            let unlimited = desired(&e);
            assert_eq!(unlimited, [("hi-v".into(), 2000), ("lo-v".into(), 2000)]);
            let mut snap = (*e.snapshot()).clone();
            let mut inventory = Inventory::default();
            inventory.add("H100", 8, 7);
            snap.gpus = Gpus::Known(inventory);
            e.snapshot = shared(snap);
            e.plan_limits(Instant::now());
            // Same need, priority 4 against 1: "lo" gets the GPU (with equal priorities, the first).
            assert_eq!(desired(&e), [("hi-v".into(), 1000), ("lo-v".into(), 2000)]);
            let snapshot = e.snapshot();
            let x = e.explain_at(&snapshot, None);
            let hi = x.models.iter().find(|m| m.model_id == "hi").unwrap();
            let r = &hi.decision.reasons[0];
            assert_eq!(r.reason, crate::saturation::TargetReason::Limited);
            assert!(
                r.message.text().contains("limited by gpu-limiter"),
                "{}",
                r.message
            );
        }

        #[test]
        fn v2_decides_learns_and_holds() {
            let v2 = thresholds("analyzers:\n  - name: saturation\n");
            // V14: (11000, 16000, queue 3, I 100, O 50) needs 670.6 tokens more: +1 on the cheapest.
            let e = with(
                engine(
                    vec![
                        variant("cheap", "m", 5.0, 1, 1, 1),
                        variant("dear", "m", 20.0, 1, 1, 1),
                    ],
                    &[
                        ("cheap-0", tokens(0.6875, 3.0)),
                        ("dear-0", tokens(0.6875, 3.0)),
                    ],
                ),
                v2.clone(),
            );
            assert_eq!(desired(&e), [("cheap".into(), 2000), ("dear".into(), 1000)]);
            let snapshot = e.snapshot();
            let x = e.explain_at(&snapshot, None);
            let d = &x.models[0].decision;
            assert_eq!(d.analyzer, "saturation-v2");
            assert!(d.analysis.is_none() && d.capacity.is_some());
            // Queue 6 ≥ 5: an observation of k2, remembered by the learning cycle.
            let e = with(
                engine(
                    vec![variant("a", "m", 5.0, 1, 1, 1)],
                    &[("a-0", tokens(0.5, 6.0))],
                ),
                v2.clone(),
            );
            assert_eq!(e.learn_once(std::time::Instant::now()).observations, 1);
            let next = with(
                engine(
                    vec![variant("a", "m", 5.0, 1, 1, 1)],
                    &[("a-0", tokens(0.375, 2.0))],
                ),
                v2.clone(),
            );
            next.memory.store(e.memory.load_full());
            let snapshot = next.snapshot();
            let x = next.explain_at(&snapshot, None);
            let c = x.models[0].decision.capacity.as_ref().unwrap();
            assert_eq!(c.variants[0].per_replica_capacity, 8000.0);
            assert_eq!(
                c.variants[0].source,
                crate::saturation::v2::CapacitySource::History
            );
            // Idle: spare capacity, but a Ready pod without a sample holds the scale-down.
            let idle = [("b-0", tokens(0.0, 0.0)), ("b-1", tokens(0.0, 0.0))];
            let e = with(
                engine(vec![variant("b", "m", 5.0, 3, 3, 3)], &idle),
                v2.clone(),
            );
            assert_eq!(desired(&e), [("b".into(), 3000)]);
            let snapshot = e.snapshot();
            let x = e.explain_at(&snapshot, None);
            let held = x.models[0].decision.reasons[0].message.text();
            assert!(held.starts_with("scale-down held"), "{held}");
            let e = with(engine(vec![variant("b", "m", 5.0, 2, 2, 2)], &idle), v2);
            assert_eq!(desired(&e), [("b".into(), 1000)]);
            // The endpoint picker's queue (requests and bytes) is demand: 10 requests, 20,000 bytes =
            // max(5,000, 10 × 100) prompt tokens + 10 × 50 output tokens.
            struct Queue;
            impl DemandSource for Queue {
                fn demand(&self, _: &str, _: &str) -> Demand {
                    Demand::Queued {
                        requests: 10.0,
                        bytes: 20_000.0,
                        pool: "ns/pool".into(),
                        held: None,
                    }
                }
            }
            let e = with(
                engine(
                    vec![variant("a", "m", 5.0, 1, 1, 1)],
                    &[("a-0", tokens(0.25, 0.0))],
                ),
                thresholds("analyzers:\n  - name: saturation\n"),
            )
            .with_zero(
                Arc::new(ArcSwap::from_pointee(ZeroConfig::default())),
                Arc::new(Queue),
            );
            let snapshot = e.snapshot();
            let x = e.explain_at(&snapshot, None);
            let c = x.models[0].decision.capacity.as_ref().unwrap();
            assert_eq!(c.scheduler_demand, 5500.0);
            // The queueing model: refused, every variant held at spec.replicas.
            let e = with(
                engine(
                    vec![variant("q", "m", 5.0, 2, 2, 2)],
                    &[("q-0", tokens(0.9, 9.0)), ("q-1", tokens(0.9, 9.0))],
                ),
                thresholds("analyzerName: queueing-model\n"),
            );
            assert_eq!(desired(&e), [("q".into(), 2000)]);
            let snapshot = e.snapshot();
            let x = e.explain_at(&snapshot, None);
            assert_eq!(
                x.models[0].decision.reasons[0].reason,
                crate::saturation::TargetReason::Refused
            );
        }
    }
}
