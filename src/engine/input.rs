//! The `analyze` command's input: one model's thresholds and variants as JSON, checked at this edge so
//! that [`super::decide`](fn@super::decide) can stay infallible.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::decide::{
    decide, decide_refused, decide_v2, ModelDecision, ReplicaInput, V2Context, VariantInput,
};
use crate::error::Error;
use crate::saturation::config::PartialConfig;
use crate::saturation::limiter::{
    limit, limit_by_score, Granted, Inventory, Limiter, Quota, QuotaScope, Request, TypeGpus,
};
use crate::saturation::v2::args::{ContainerArgs, EngineParams};
use crate::saturation::v2::config::{AnalyzerChoice, AnalyzerEntry, V2Fields};
use crate::saturation::v2::{CapacityMemory, SchedulerQueue};
use crate::saturation::{Analysis, SaturationConfig};

/// Everything one model's decision depends on (the `analyze` command's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelInput {
    /// One saturation ConfigMap entry's keys: V1's thresholds, and WVA v0.9's (`analyzers:` or
    /// `analyzerName: saturation` selects saturation V2).
    #[serde(default)]
    pub config: AnalyzeConfig,
    /// Saturation V2: the model (its history key) and requests queued at its endpoint picker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_queue: Option<SchedulerQueue>,
    pub variants: Vec<VariantInput<'static>>,
    /// The GPU limiter, for this model's decision: GPUs per accelerator type
    /// (`{"H100": {"allocatable": 8, "requested": 6}}`), as the nodes report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<BTreeMap<String, TypeGpus>>,
    /// The GPU limiter's cluster quota: GPUs per accelerator type (-1 unlimited; a type not listed
    /// gets none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<BTreeMap<String, i64>>,
}

/// A saturation ConfigMap entry's keys as `analyze` takes them (JSON, exact numbers).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalyzeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_length_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_spare_trigger: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_spare_trigger: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyzers: Vec<AnalyzerEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_boundary: Option<f64>,
}

impl AnalyzeConfig {
    pub fn v1(&self) -> PartialConfig {
        PartialConfig {
            kv_cache_threshold: self.kv_cache_threshold,
            queue_length_threshold: self.queue_length_threshold,
            kv_spare_trigger: self.kv_spare_trigger,
            queue_spare_trigger: self.queue_spare_trigger,
        }
    }

    pub fn v2(&self) -> V2Fields {
        V2Fields {
            analyzer_name: self.analyzer_name.clone(),
            analyzers: self.analyzers.clone(),
            scale_up_threshold: self.scale_up_threshold,
            scale_down_boundary: self.scale_down_boundary,
            scale_to_zero: None,
            priority: None,
        }
    }
}

impl From<PartialConfig> for AnalyzeConfig {
    fn from(p: PartialConfig) -> Self {
        Self {
            kv_cache_threshold: p.kv_cache_threshold,
            queue_length_threshold: p.queue_length_threshold,
            kv_spare_trigger: p.kv_spare_trigger,
            queue_spare_trigger: p.queue_spare_trigger,
            ..Self::default()
        }
    }
}

/// Why an `analyze` input cannot be decided.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InputError {
    #[error("{0}")]
    Config(String),
    #[error("variant {0:?} appears twice")]
    DuplicateVariant(String),
    #[error("variant {0:?}: specReplicas and readyReplicas must be >= 0")]
    NegativeReplicas(String),
    #[error(
        "variant {variant:?} pod {pod:?}: kvCacheUsage and queueLength must be finite and >= 0"
    )]
    BadSample { variant: String, pod: String },
    #[error(
        "variant {0:?}: minReplicas must be >= 0, maxReplicas >= 1, and minReplicas <= maxReplicas"
    )]
    BadBounds(String),
    #[error("variant {variant:?} pod {pod:?}: {why}")]
    BadTokens {
        variant: String,
        pod: String,
        why: &'static str,
    },
    #[error("variant {0:?}: gpusPerReplica must be >= 1")]
    BadGpus(String),
    #[error("schedulerQueue: requests and bytes must be >= 0")]
    BadSchedulerQueue,
}

impl ModelInput {
    /// The thresholds in force (defaults, then the input's), once the input passes every rule.
    pub fn validate(&self) -> Result<SaturationConfig, InputError> {
        let config = SaturationConfig::default().merged(&self.config.v1());
        config.validate().map_err(InputError::Config)?;
        self.config.v2().validate().map_err(InputError::Config)?;
        if self
            .scheduler_queue
            .is_some_and(|q| q.requests < 0 || q.bytes < 0)
        {
            return Err(InputError::BadSchedulerQueue);
        }
        let mut names = BTreeSet::new();
        for v in &self.variants {
            if !names.insert(v.name.as_ref()) {
                return Err(InputError::DuplicateVariant(v.name.to_string()));
            }
            if v.spec_replicas < 0 || v.ready_replicas < 0 {
                return Err(InputError::NegativeReplicas(v.name.to_string()));
            }
            let min = v.min_replicas.unwrap_or(0);
            if min < 0 || v.max_replicas.is_some_and(|max| max < 1 || max < min) {
                return Err(InputError::BadBounds(v.name.to_string()));
            }
            if v.gpus_per_replica < 1 {
                return Err(InputError::BadGpus(v.name.to_string()));
            }
            for r in &v.replicas {
                if !usable(r.kv_cache_usage) || !usable(r.queue_length) {
                    return Err(InputError::BadSample {
                        variant: v.name.to_string(),
                        pod: r.pod.to_string(),
                    });
                }
                let bad = |why| InputError::BadTokens {
                    variant: v.name.to_string(),
                    pod: r.pod.to_string(),
                    why,
                };
                if r.total_kv_tokens.is_some_and(|t| t < 0) {
                    return Err(bad("totalKvTokens must be >= 0"));
                }
                if !usable(r.avg_input_tokens) || !usable(r.avg_output_tokens) {
                    return Err(bad(
                        "avgInputTokens and avgOutputTokens must be finite and >= 0",
                    ));
                }
                if !(0.0..=1.0).contains(&r.prefix_cache_hit_rate) {
                    return Err(bad("prefixCacheHitRate must be between 0 and 1"));
                }
            }
        }
        Ok(config)
    }

    /// Validates, then decides with the engine the config selects (no scale to zero: `analyze` has
    /// no activity to go on). Saturation V2 starts from an empty memory, so k2 is observed, estimated
    /// from the engine parameters, or k1.
    pub fn decide(&self) -> Result<ModelDecision<'static>, InputError> {
        let config = self.validate()?;
        let entry = self.config.v2();
        Ok(match V2Fields::choice(Some(&entry)) {
            AnalyzerChoice::V1 => self.limited(decide(&config, &self.variants), None),
            AnalyzerChoice::V2 => {
                let memory = CapacityMemory::default();
                let ctx = V2Context {
                    namespace: "",
                    model: self.model_id.as_deref().unwrap_or_default(),
                    config,
                    thresholds: entry.thresholds(&config),
                    votes: entry.saturation_votes(),
                    scheduler: self.scheduler_queue,
                    memory: &memory,
                };
                self.limited(decide_v2(&ctx, &self.variants, None), Some(&entry))
            }
            AnalyzerChoice::Refused { reason } => decide_refused(&config, &self.variants, &reason),
        })
    }
}

impl ModelInput {
    /// The decision under the GPU limiter, when the input gives GPUs or quotas: V1's, or saturation
    /// V2's (`v2`, its entry) with the model's scale-up given the GPUs its cheapest variants can have.
    fn limited(
        &self,
        mut d: ModelDecision<'static>,
        v2: Option<&V2Fields>,
    ) -> ModelDecision<'static> {
        let mut limiters = Vec::new();
        let inventory = self.gpus.as_ref().map(|types| {
            let mut inv = Inventory::default();
            for (t, g) in types {
                inv.add(t, g.allocatable, g.requested);
            }
            limiters.push(Limiter::GpuInventory);
            inv
        });
        if let Some(quotas) = &self.quotas {
            limiters.push(Limiter::Quota(Quota {
                name: "quota".into(),
                scope: QuotaScope::Cluster,
                quotas: quotas.clone(),
                namespace_quotas: BTreeMap::new(),
                exclude: BTreeSet::new(),
            }));
        }
        if limiters.is_empty() {
            return d;
        }
        let by_role: Vec<&Analysis> = d.analysis_by_role.values().collect();
        let model = self.model_id.clone().unwrap_or_default();
        let requests: Vec<Request> = self
            .variants
            .iter()
            .map(|v| Request {
                namespace: String::new(),
                model: model.clone(),
                variant: v.name.to_string(),
                accelerator: v.accelerator.to_string(),
                current: v.spec_replicas,
                target: d.targets.get(&v.name).copied().unwrap_or(v.spec_replicas),
                gpus_per_replica: v.gpus_per_replica,
                min_replicas: v.min_replicas,
                max_replicas: v.max_replicas,
                spare_capacity: super::limit::spare_of(d.analysis.as_ref(), &by_role, &v.name),
                cost: v.cost,
                unschedulable_pods: 0,
            })
            .collect();
        let granted = match v2 {
            None => limit(&requests, inventory.as_ref(), &limiters),
            Some(entry) => {
                let work: Vec<_> = super::limit::score_work(&d, entry, &requests, 0)
                    .into_iter()
                    .collect();
                limit_by_score(
                    &requests,
                    &work,
                    inventory.as_ref(),
                    &limiters,
                    &Default::default(),
                )
            }
        };
        // Only the inventory can fail (it is given here whenever its limiter is listed).
        if let Ok(granted) = granted {
            let granted: BTreeMap<String, Granted> = requests
                .into_iter()
                .map(|r| r.variant)
                .zip(granted)
                .collect();
            for (name, g) in &granted {
                super::limit::set_decision_target(&mut d, name, g);
            }
            d.limiter = Some(super::limit::LimiterNote::Applied {
                variants: super::limit::touched(&granted),
            });
        }
        d
    }
}

/// A value a KV-cache fraction or a queue length can take: finite and not negative.
pub(crate) fn usable(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// Parses `analyze`'s JSON, naming the path of the first bad field. Numbers are read exactly (the
/// nearest double to the decimal written), so a value one ULP below a threshold stays below it.
pub fn parse(text: &str) -> Result<ModelInput, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Error::Input {
            path: (path != ".").then_some(path),
            message: e.inner().to_string(),
        }
    })
}

/// `analyze` end to end: JSON in, the decision out.
pub(crate) fn analyze_json(text: &str) -> Result<ModelDecision<'static>, Error> {
    parse(text)?.decide().map_err(|e| Error::Input {
        path: None,
        message: e.to_string(),
    })
}

/// A replica as `analyze` takes it: KV usage as a fraction or as tokens in use, KV tokens as a number
/// or as `numGpuBlocks` × `blockSize` (the labels of `vllm:cache_config_info`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawReplica {
    pod: String,
    #[serde(default)]
    rank_of: Option<String>,
    kv_cache_usage: Option<f64>,
    tokens_in_use: Option<i64>,
    queue_length: f64,
    total_kv_tokens: Option<i64>,
    num_gpu_blocks: Option<i64>,
    block_size: Option<i64>,
    #[serde(default)]
    avg_input_tokens: f64,
    #[serde(default)]
    avg_output_tokens: f64,
    #[serde(default)]
    prefix_cache_hit_rate: f64,
}

impl TryFrom<RawReplica> for ReplicaInput<'_> {
    type Error = String;

    fn try_from(r: RawReplica) -> Result<Self, String> {
        let total = match (r.total_kv_tokens, r.num_gpu_blocks, r.block_size) {
            (Some(t), None, None) => Some(t),
            (None, Some(n), Some(b)) if n > 0 && b > 0 => Some(n.saturating_mul(b)),
            (None, Some(_), Some(_)) => return Err("numGpuBlocks and blockSize must be > 0".into()),
            (None, None, None) => None,
            _ => {
                return Err(
                    "give totalKvTokens, or numGpuBlocks and blockSize together, not both".into(),
                )
            }
        };
        let kv = match (r.kv_cache_usage, r.tokens_in_use, total) {
            (Some(kv), None, _) => kv,
            (None, Some(t), Some(total)) if total > 0 && (0..=total).contains(&t) => {
                t as f64 / total as f64
            }
            (None, Some(_), _) => {
                return Err(
                    "tokensInUse needs the KV tokens (totalKvTokens, or numGpuBlocks and blockSize) and must be within them"
                        .into(),
                )
            }
            (None, None, _) => return Err("kvCacheUsage (or tokensInUse) is required".into()),
            (Some(_), Some(_), _) => {
                return Err("give kvCacheUsage or tokensInUse, not both".into())
            }
        };
        Ok(ReplicaInput {
            total_kv_tokens: total,
            avg_input_tokens: r.avg_input_tokens,
            avg_output_tokens: r.avg_output_tokens,
            prefix_cache_hit_rate: r.prefix_cache_hit_rate,
            rank_of: r.rank_of.map(Cow::Owned),
            ..ReplicaInput::new(r.pod, kv, r.queue_length)
        })
    }
}

/// Engine parameters as an object, or a container's command line (`["vllm", "serve", "m", "--max-num-seqs", "64"]`).
pub(super) fn params_or_args<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'static, EngineParams>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Args(Vec<String>),
        Params(EngineParams),
    }
    Ok(Some(Cow::Owned(match Form::deserialize(d)? {
        Form::Params(p) => p,
        Form::Args(args) => EngineParams::from_containers(&[ContainerArgs {
            args: &args,
            ..ContainerArgs::default()
        }]),
    })))
}

pub(super) fn cost_number_or_string<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Cost {
        Number(f64),
        Text(String),
    }
    match Cost::deserialize(d)? {
        Cost::Number(n) if n.is_finite() && n >= 0.0 => Ok(n),
        Cost::Number(n) => Err(serde::de::Error::custom(format!(
            "cost must be a non-negative number, got {n}"
        ))),
        Cost::Text(s) => crate::cluster::crd::parse_cost(&s)
            .map_err(|e| serde::de::Error::custom(format!("cost {s:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn string_costs_are_accepted_and_bad_fields_rejected() {
        let input = parse(r#"{"variants":[{"name":"a","cost":"12.5","specReplicas":1,"readyReplicas":1,"replicas":[{"pod":"p","kvCacheUsage":0.9,"queueLength":6}]}]}"#).unwrap();
        assert_eq!(input.variants[0].cost, 12.5);
        let d = input.decide().unwrap();
        assert_eq!(d.targets["a"], 2);
        assert!(parse(
            r#"{"variants":[{"name":"a","cost":"x","specReplicas":1,"readyReplicas":1}]}"#
        )
        .is_err());
        assert!(parse(r#"{"varients":[]}"#).is_err());
        let bad = ModelInput {
            config: PartialConfig {
                kv_cache_threshold: Some(2.0),
                ..Default::default()
            }
            .into(),
            model_id: None,
            scheduler_queue: None,
            variants: vec![],
            gpus: None,
            quotas: None,
        };
        assert!(
            matches!(bad.decide(), Err(InputError::Config(m)) if m.contains("kvCacheThreshold"))
        );
    }

    /// Rank rows name their pod: two pods of two ranks are two sampled replicas, not a transition;
    /// without `rankOf` the same four rows are four pods, more than the two ready.
    #[test]
    fn rank_rows_are_one_replica_per_pod() {
        let rows = |rank_of: bool| {
            let rows: Vec<String> = ["p0:8000", "p0:8001", "p1:8000", "p1:8001"]
                .iter()
                .map(|r| {
                    let of = if rank_of {
                        format!(r#","rankOf":"{}""#, &r[..2])
                    } else {
                        String::new()
                    };
                    format!(r#"{{"pod":"{r}"{of},"kvCacheUsage":0.05,"queueLength":0}}"#)
                })
                .collect();
            format!(
                r#"{{"variants":[{{"name":"a","specReplicas":2,"readyReplicas":2,"minReplicas":1,"replicas":[{}]}}]}}"#,
                rows.join(",")
            )
        };
        let ranked = parse(&rows(true)).unwrap();
        assert_eq!(ranked.variants[0].sampled_pods(), 2);
        let d = ranked.decide().unwrap();
        assert!(!d.in_transition);
        assert_eq!(d.targets["a"], 1);
        let d = parse(&rows(false)).unwrap().decide().unwrap();
        assert!(d.in_transition);
        assert_eq!(d.targets["a"], 2);
    }

    /// `analyze` explains a limited decision: no free H100, so the +1 goes to the L40S variant; a
    /// quota of 0 L40S leaves both where they are.
    #[test]
    fn analyze_takes_the_gpus_and_quotas() {
        let gpus = r#","gpus":{"H100":{"allocatable":2,"requested":2},"NVIDIA-L40S-48GB":{"allocatable":4}}"#;
        let text = |extra: &str| {
            format!(
                r#"{{"variants":[
            {{"name":"cheap","cost":5,"accelerator":"NVIDIA-H100-80GB-HBM3","specReplicas":1,"readyReplicas":1,"maxReplicas":4,"replicas":[{{"pod":"a","kvCacheUsage":0.9,"queueLength":9}}]}},
            {{"name":"pricey","cost":20,"accelerator":"L40S","specReplicas":1,"readyReplicas":1,"maxReplicas":4,"replicas":[{{"pod":"b","kvCacheUsage":0.9,"queueLength":9}}]}}]{extra}}}"#
            )
        };
        let d = parse(&text(gpus)).unwrap().decide().unwrap();
        assert_eq!((d.targets["cheap"], d.targets["pricey"]), (1, 2));
        let cheap = d.reasons.iter().find(|r| r.name == "cheap").unwrap();
        assert_eq!(cheap.reason, crate::saturation::TargetReason::Limited);
        let d = parse(&text(&format!(r#"{gpus},"quotas":{{"H100":8,"L40S":0}}"#)))
            .unwrap()
            .decide()
            .unwrap();
        assert_eq!((d.targets["cheap"], d.targets["pricey"]), (1, 1));
        // Without either, the unlimited decision: the cheapest variant takes the +1.
        let d = parse(&text("")).unwrap().decide().unwrap();
        assert_eq!((d.targets["cheap"], d.targets["pricey"]), (2, 1));
    }

    /// `analyze` with saturation V2 and GPUs: the cheap H100 variant has none free, so the scale-up
    /// goes to the L40S variant, the next cheapest per token of capacity.
    #[test]
    fn analyze_limits_v2_decisions() {
        let replica = r#"{"pod": "p", "kvCacheUsage": 0.6875, "totalKvTokens": 16000, "queueLength": 3, "avgInputTokens": 100, "avgOutputTokens": 50}"#;
        let text = |extra: &str| {
            format!(
                r#"{{"config": {{"analyzers": [{{"name": "saturation"}}]}}, "modelId": "m", "variants": [
            {{"name": "cheap", "cost": 5, "accelerator": "H100", "specReplicas": 1, "readyReplicas": 1, "replicas": [{replica}]}},
            {{"name": "pricey", "cost": 20, "accelerator": "L40S", "specReplicas": 1, "readyReplicas": 1, "replicas": [{replica}]}}]{extra}}}"#
            )
        };
        let d = parse(&text("")).unwrap().decide().unwrap();
        assert_eq!((d.targets["cheap"], d.targets["pricey"]), (2, 1));
        let gpus = r#","gpus":{"H100":{"allocatable":2,"requested":2},"L40S":{"allocatable":4}}"#;
        let d = parse(&text(gpus)).unwrap().decide().unwrap();
        assert_eq!((d.targets["cheap"], d.targets["pricey"]), (1, 2));
        let cheap = d.reasons.iter().find(|r| r.name == "cheap").unwrap();
        assert_eq!(cheap.reason, crate::saturation::TargetReason::Limited);
        assert!(
            cheap.message.text().contains("limited by gpu-limiter"),
            "{}",
            cheap.message
        );
    }

    #[test]
    fn inconsistent_inputs_are_typed_errors() {
        let dup = parse(r#"{"variants":[{"name":"a","specReplicas":1,"readyReplicas":1},{"name":"a","specReplicas":1,"readyReplicas":1}]}"#).unwrap();
        assert_eq!(dup.decide(), Err(InputError::DuplicateVariant("a".into())));
        let neg =
            parse(r#"{"variants":[{"name":"a","specReplicas":-1,"readyReplicas":1}]}"#).unwrap();
        assert_eq!(neg.decide(), Err(InputError::NegativeReplicas("a".into())));
        let sample = parse(r#"{"variants":[{"name":"a","specReplicas":1,"readyReplicas":1,"replicas":[{"pod":"p","kvCacheUsage":-0.5,"queueLength":0}]}]}"#).unwrap();
        assert!(matches!(sample.decide(), Err(InputError::BadSample { .. })));
    }

    /// `analyze` takes the autoscaler's bounds per variant and checks them.
    #[test]
    fn bounds_are_read_and_checked() {
        let at_max = parse(r#"{"variants":[
            {"name":"cheap","cost":5,"specReplicas":2,"readyReplicas":2,"maxReplicas":2,"replicas":[{"pod":"a","kvCacheUsage":0.9,"queueLength":9},{"pod":"b","kvCacheUsage":0.9,"queueLength":9}]},
            {"name":"pricey","cost":20,"specReplicas":1,"readyReplicas":1,"minReplicas":1,"maxReplicas":4,"replicas":[{"pod":"c","kvCacheUsage":0.9,"queueLength":9}]}]}"#).unwrap();
        let d = at_max.decide().unwrap();
        assert_eq!(d.targets["cheap"], 2);
        assert_eq!(d.targets["pricey"], 2);
        for bad in [
            r#""minReplicas":-1"#,
            r#""maxReplicas":0"#,
            r#""minReplicas":3,"maxReplicas":2"#,
        ] {
            let text = format!(
                r#"{{"variants":[{{"name":"a","specReplicas":1,"readyReplicas":1,{bad}}}]}}"#
            );
            assert_eq!(
                parse(&text).unwrap().decide(),
                Err(InputError::BadBounds("a".into())),
                "{bad}"
            );
        }
    }

    /// Saturation V2 through `analyze`: the config selects it; tokens or a fraction, blocks × block size
    /// or KV tokens, a command line or parameters; bad token inputs are typed errors.
    #[test]
    fn v2_inputs() {
        // V14: (11000 tokens of 16000, queue 3, I 100, O 50) needs 670.6 more tokens: +1.
        let text = r#"{"config": {"analyzers": [{"name": "saturation"}]}, "modelId": "m", "variants": [
            {"name": "a", "cost": 5, "specReplicas": 1, "readyReplicas": 1, "args": ["vllm", "serve", "m", "--max-num-seqs", "64"],
             "replicas": [{"pod": "p", "tokensInUse": 11000, "numGpuBlocks": 1000, "blockSize": 16, "queueLength": 3, "avgInputTokens": 100, "avgOutputTokens": 50}]}]}"#;
        let input = parse(text).unwrap();
        assert_eq!(
            input.variants[0]
                .engine_params
                .as_ref()
                .unwrap()
                .max_num_seqs,
            64
        );
        let d = input.decide().unwrap();
        assert_eq!(d.analyzer, "saturation-v2");
        let c = d.capacity.as_ref().unwrap();
        assert_eq!(c.model.demand, 11450.0);
        assert_eq!(d.targets["a"], 2);
        // The same through kvCacheUsage and totalKvTokens.
        let same = text.replace(
            r#""tokensInUse": 11000, "numGpuBlocks": 1000, "blockSize": 16"#,
            r#""kvCacheUsage": 0.6875, "totalKvTokens": 16000"#,
        );
        assert_eq!(parse(&same).unwrap().decide().unwrap().targets["a"], 2);
        // Refused: held.
        let qm = text.replace(
            r#""analyzers": [{"name": "saturation"}]"#,
            r#""analyzerName": "queueing-model""#,
        );
        let d = parse(&qm).unwrap().decide().unwrap();
        assert_eq!((d.analyzer, d.targets["a"]), ("queueing-model", 1));
        for (bad, want) in [
            (
                r#""tokensInUse": 11000, "numGpuBlocks": 1000, "blockSize": 16"#,
                "",
            ),
            (
                r#""tokensInUse": 17000, "totalKvTokens": 16000"#,
                "tokensInUse needs the KV tokens",
            ),
            (
                r#""kvCacheUsage": 0.5, "tokensInUse": 1, "totalKvTokens": 16000"#,
                "not both",
            ),
            (
                r#""totalKvTokens": 16000"#,
                "kvCacheUsage (or tokensInUse) is required",
            ),
            (
                r#""kvCacheUsage": 0.5, "totalKvTokens": 16000, "numGpuBlocks": 1, "blockSize": 1"#,
                "not both",
            ),
        ] {
            let t = text.replace(
                r#""tokensInUse": 11000, "numGpuBlocks": 1000, "blockSize": 16"#,
                bad,
            );
            match parse(&t) {
                Ok(_) => assert!(want.is_empty(), "{bad} parsed"),
                Err(e) => assert!(e.to_string().contains(want), "{bad}: {e}"),
            }
        }
        let hit = text.replace(
            r#""avgOutputTokens": 50"#,
            r#""avgOutputTokens": 50, "prefixCacheHitRate": 1.5"#,
        );
        assert!(matches!(
            parse(&hit).unwrap().decide(),
            Err(InputError::BadTokens { .. })
        ));
        let up = text.replace(r#""analyzers": [{"name": "saturation"}]"#, r#""analyzers": [{"name": "saturation"}], "scaleUpThreshold": 0.5, "scaleDownBoundary": 0.6"#);
        assert!(
            matches!(parse(&up).unwrap().decide(), Err(InputError::Config(m)) if m.contains("scaleUpThreshold"))
        );
    }

    /// Issue repro: 0.9999999999999999 is below a threshold of 1.0 and must stay below it.
    #[test]
    fn seventeen_digit_decimals_are_read_exactly() {
        let text = r#"{"config":{"kvCacheThreshold":1.0,"kvSpareTrigger":0.0},"variants":[{"name":"a","specReplicas":2,"readyReplicas":2,"replicas":[
            {"pod":"p0","kvCacheUsage":0.9999999999999999,"queueLength":0},
            {"pod":"p1","kvCacheUsage":0.9999999999999999,"queueLength":0}]}]}"#;
        let input = parse(text).unwrap();
        assert_eq!(
            input.variants[0].replicas[0].kv_cache_usage,
            0.9999999999999999_f64
        );
        assert!(input.variants[0].replicas[0].kv_cache_usage < 1.0);
        let d = input.decide().unwrap();
        // Not saturated: both replicas count as non-saturated.
        assert_eq!(d.analysis.unwrap().non_saturated_replicas, 2);
    }

    proptest! {
        /// Every decimal with up to 17 significant digits is read as the nearest double, as Rust's
        /// own (correctly rounded) parser reads it.
        #[test]
        fn json_numbers_parse_exactly(mantissa in 1u64..100_000_000_000_000_000, exp in -20i32..3) {
            let text = format!("{mantissa}e{exp}");
            let exact: f64 = text.parse().unwrap();
            let json = format!(r#"{{"variants":[{{"name":"a","specReplicas":1,"readyReplicas":1,"replicas":[{{"pod":"p","kvCacheUsage":{text},"queueLength":0}}]}}]}}"#);
            let input = parse(&json).unwrap();
            prop_assert_eq!(input.variants[0].replicas[0].kv_cache_usage.to_bits(), exact.to_bits());
        }
    }
}
