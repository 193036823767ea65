//! Saturation thresholds: defaults, the WVA ConfigMap format, validation and per-model overrides.
//!
//! The ConfigMap (`capacity-scaling-config` in WVA v0.4.1, `wva-saturation-scaling-config` in v0.5) has a
//! `default` entry and any number of override entries, each a YAML document:
//!
//! ```yaml
//! default: |
//!   kvCacheThreshold: 0.80
//!   queueLengthThreshold: 5
//!   kvSpareTrigger: 0.10
//!   queueSpareTrigger: 3
//! llama-prod: |
//!   model_id: meta/llama-3.1-8b
//!   namespace: production
//!   kvCacheThreshold: 0.90
//! ```
//!
//! Differences from WVA, on purpose: an override may set a field to 0 when that is valid (WVA treats 0 as
//! "unset"), an invalid entry keeps its previous good version instead of silently falling back to defaults,
//! and when several overrides match one model the first by entry key wins (WVA: Go map order, random).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::limiter::{Limiter, Quota, QuotaScope};
use super::v2::config::{AnalyzerChoice, AnalyzerEntry, InlineScaleToZero, V2Fields};

/// The four thresholds of the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SaturationConfig {
    pub kv_cache_threshold: f64,
    pub queue_length_threshold: f64,
    pub kv_spare_trigger: f64,
    pub queue_spare_trigger: f64,
}

impl Default for SaturationConfig {
    fn default() -> Self {
        Self {
            kv_cache_threshold: 0.80,
            queue_length_threshold: 5.0,
            kv_spare_trigger: 0.10,
            queue_spare_trigger: 3.0,
        }
    }
}

/// A subset of the thresholds, as written in one ConfigMap entry or in the `analyze` input.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartialConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_spare_trigger: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_spare_trigger: Option<f64>,
}

impl SaturationConfig {
    /// Fields set in `partial` replace ours, zero included.
    pub(crate) fn merged(self, partial: &PartialConfig) -> Self {
        Self {
            kv_cache_threshold: partial
                .kv_cache_threshold
                .unwrap_or(self.kv_cache_threshold),
            queue_length_threshold: partial
                .queue_length_threshold
                .unwrap_or(self.queue_length_threshold),
            kv_spare_trigger: partial.kv_spare_trigger.unwrap_or(self.kv_spare_trigger),
            queue_spare_trigger: partial
                .queue_spare_trigger
                .unwrap_or(self.queue_spare_trigger),
        }
    }

    /// WVA's validation rules; the message names the field and the rule it broke.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("kvCacheThreshold", self.kv_cache_threshold),
            ("queueLengthThreshold", self.queue_length_threshold),
            ("kvSpareTrigger", self.kv_spare_trigger),
            ("queueSpareTrigger", self.queue_spare_trigger),
        ];
        for (name, v) in fields {
            if !v.is_finite() {
                return Err(format!("{name} must be a finite number, got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.kv_cache_threshold) {
            return Err(format!(
                "kvCacheThreshold must be between 0 and 1, got {}",
                self.kv_cache_threshold
            ));
        }
        if self.queue_length_threshold < 0.0 {
            return Err(format!(
                "queueLengthThreshold must be >= 0, got {}",
                self.queue_length_threshold
            ));
        }
        if !(0.0..=1.0).contains(&self.kv_spare_trigger) {
            return Err(format!(
                "kvSpareTrigger must be between 0 and 1, got {}",
                self.kv_spare_trigger
            ));
        }
        if self.queue_spare_trigger < 0.0 {
            return Err(format!(
                "queueSpareTrigger must be >= 0, got {}",
                self.queue_spare_trigger
            ));
        }
        if self.kv_cache_threshold < self.kv_spare_trigger {
            return Err(format!(
                "kvCacheThreshold ({}) must be >= kvSpareTrigger ({})",
                self.kv_cache_threshold, self.kv_spare_trigger
            ));
        }
        Ok(())
    }
}

/// One parsed, valid ConfigMap entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The entry's key, shared by every decision it configures (as their source).
    pub key: Arc<str>,
    pub model_id: Option<String>,
    pub namespace: Option<String>,
    pub fields: PartialConfig,
    /// WVA v0.9's keys (analyzer selection, U and D, inline scale to zero).
    pub v2: V2Fields,
    /// `enableLimiter` and `limiters`, when the entry sets either (used from the global `default`).
    pub limiter: Option<LimiterConfig>,
    /// `enableRescale` (used from a `default` entry: the global one's for the cluster budget, a
    /// namespace-local one's for that namespace's quota budget).
    pub rescale: Option<bool>,
}

/// The GPU limiter as the global ConfigMap's `default` entry configures it (WVA v0.9's keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimiterConfig {
    /// `enableLimiter` (default false).
    pub enabled: bool,
    /// `limiters`, in order (none listed: the GPU inventory).
    pub limiters: Vec<Limiter>,
}

pub use super::limiter::RescaleFlags;

/// The saturation configuration in force: the `default` entry and the overrides, by entry key.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingConfig {
    entries: BTreeMap<String, Entry>,
}

/// What a ConfigMap update did, for logging.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigIssues {
    /// `(entry key, message)` for every rejected entry; the previous good version (if any) was kept.
    pub rejected: Vec<(String, String)>,
    /// Keys present in the entry that this server does not use (typos, or v0.5-only keys).
    pub ignored_keys: Vec<(String, String)>,
}

pub(crate) const DEFAULT_ENTRY: &str = "default";

impl ScalingConfig {
    /// Builds the configuration from a ConfigMap's `data`, keeping the previous good version of any
    /// entry that fails to parse or validate.
    pub fn from_configmap(
        previous: &ScalingConfig,
        data: &BTreeMap<String, String>,
    ) -> (ScalingConfig, ConfigIssues) {
        Self::parse(previous, data, None)
    }

    /// [`ScalingConfig::from_configmap`] for a namespace-local ConfigMap: an override entry may leave
    /// `namespace` out (it is the ConfigMap's) and may not name another.
    pub fn from_local_configmap(
        previous: &ScalingConfig,
        data: &BTreeMap<String, String>,
        namespace: &str,
    ) -> (ScalingConfig, ConfigIssues) {
        Self::parse(previous, data, Some(namespace))
    }

    fn parse(
        previous: &ScalingConfig,
        data: &BTreeMap<String, String>,
        local_to: Option<&str>,
    ) -> (ScalingConfig, ConfigIssues) {
        let mut issues = ConfigIssues::default();
        let mut entries = BTreeMap::new();
        // The default entry first: overrides are validated on top of it.
        let mut keys: Vec<&String> = data.keys().collect();
        keys.sort_by_key(|k| (k.as_str() != DEFAULT_ENTRY, k.as_str()));
        for key in keys {
            let base = entries
                .get(DEFAULT_ENTRY)
                .map(|e: &Entry| (SaturationConfig::default().merged(&e.fields), e.v2.clone()))
                .unwrap_or_default();
            match parse_entry(key, &data[key], &base, local_to, &mut issues) {
                Ok(entry) => {
                    entries.insert(key.clone(), entry);
                }
                Err(message) => {
                    issues.rejected.push((key.clone(), message));
                    if let Some(prev) = previous.entries.get(key) {
                        entries.insert(key.clone(), prev.clone());
                    }
                }
            }
        }
        (ScalingConfig { entries }, issues)
    }

    pub(crate) fn default_config(&self) -> SaturationConfig {
        self.entries
            .get(DEFAULT_ENTRY)
            .map(|e| SaturationConfig::default().merged(&e.fields))
            .unwrap_or_default()
    }

    /// The thresholds for one model: defaults, then the `default` entry, then the first matching override.
    pub fn resolve(&self, model_id: &str, namespace: &str) -> (SaturationConfig, Option<&str>) {
        let (v1, _, hit) = self.resolve_all(model_id, namespace);
        (v1, hit.map(|e| &*e.key))
    }

    /// The entry a model's configuration is named after: its override, else the `default` entry.
    fn source_entry<'a>(&'a self, hit: Option<&'a Entry>) -> Option<&'a Arc<str>> {
        hit.or_else(|| self.entries.get(DEFAULT_ENTRY))
            .map(|e| &e.key)
    }

    /// [`ScalingConfig::resolve`] with the v0.9 fields, merged the same way, and the entry itself.
    /// Resolved on every HPA request: a model without an override entry borrows the `default`
    /// entry's fields.
    pub(crate) fn resolve_all(
        &self,
        model_id: &str,
        namespace: &str,
    ) -> (SaturationConfig, Cow<'_, V2Fields>, Option<&Entry>) {
        let base = self.default_config();
        let hit = self.entries.iter().find(|(key, e)| {
            key.as_str() != DEFAULT_ENTRY
                && e.model_id.as_deref() == Some(model_id)
                && e.namespace.as_deref() == Some(namespace)
        });
        let default = self.entries.get(DEFAULT_ENTRY);
        match hit {
            Some((_, e)) => (
                base.merged(&e.fields),
                Cow::Owned(default.map_or_else(|| e.v2.clone(), |d| d.v2.merged(&e.v2))),
                Some(e),
            ),
            None => (
                base,
                default.map_or_else(Cow::default, |d| Cow::Borrowed(&d.v2)),
                None,
            ),
        }
    }

    /// V1 or V2, as the `default` entry selects (WVA reads the global ConfigMap's only).
    pub fn analyzer(&self) -> AnalyzerChoice {
        V2Fields::choice(self.entries.get(DEFAULT_ENTRY).map(|e| &e.v2))
    }

    /// The limiter the `default` entry configures (off when it says nothing).
    pub fn limiter(&self) -> LimiterConfig {
        self.entries
            .get(DEFAULT_ENTRY)
            .and_then(|e| e.limiter.clone())
            .unwrap_or_default()
    }

    /// `enableRescale` of the `default` entry.
    pub fn rescale(&self) -> bool {
        self.entries
            .get(DEFAULT_ENTRY)
            .and_then(|e| e.rescale)
            .unwrap_or(false)
    }
}

/// One model's configuration: V1's thresholds, the v0.9 fields, and where they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub v1: SaturationConfig,
    /// Borrowed from the configuration in force unless an override entry is merged in.
    pub v2: Cow<'a, V2Fields>,
    pub source: ConfigSource,
}

/// Where a model's thresholds come from: a ConfigMap (`namespace/name`) and its entry, or neither
/// (the built-in defaults). The names are made when the configuration is loaded and shared by every
/// decision (each request's costs a reference count, not a string).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Arc<str>>,
}

/// The thresholds in force: the global ConfigMap's, and namespace-local ConfigMaps' (same name, in
/// namespaces that opted in) that override it for their namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    global: ScalingConfig,
    /// `namespace/name` of the global ConfigMap (for reports).
    global_name: Arc<str>,
    /// The ConfigMap name, shared by the global and the local ones.
    name: String,
    local: BTreeMap<String, Local>,
}

/// A namespace-local ConfigMap's configuration and its `namespace/name`.
#[derive(Debug, Clone, PartialEq)]
struct Local {
    config: ScalingConfig,
    name: Arc<str>,
}

impl Thresholds {
    pub fn new(global_namespace: &str, name: &str) -> Self {
        Thresholds {
            global_name: format!("{global_namespace}/{name}").into(),
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn global(&self) -> &ScalingConfig {
        &self.global
    }

    pub fn local(&self, namespace: &str) -> Option<&ScalingConfig> {
        self.local.get(namespace).map(|l| &l.config)
    }

    pub fn with_global(&self, global: ScalingConfig) -> Self {
        Thresholds {
            global,
            ..self.clone()
        }
    }

    /// Replaces the namespace-local configurations (by namespace).
    pub fn with_local(&self, local: BTreeMap<String, ScalingConfig>) -> Self {
        let local = local
            .into_iter()
            .map(|(ns, config)| {
                let name = format!("{ns}/{}", self.name).into();
                (ns, Local { config, name })
            })
            .collect();
        Thresholds {
            local,
            ..self.clone()
        }
    }

    /// The thresholds for one model in one namespace. A namespace-local ConfigMap decides for the models
    /// it covers (an override entry for the model, or its `default` entry), on its own: built-in
    /// defaults, then its `default`, then its override, exactly as it was validated. Other models use
    /// the global ConfigMap.
    pub fn resolve(&self, model_id: &str, namespace: &str) -> (SaturationConfig, ConfigSource) {
        let resolved = self.resolve_all(model_id, namespace);
        (resolved.v1, resolved.source)
    }

    /// [`Thresholds::resolve`] with the v0.9 fields of the same entries.
    pub fn resolve_all(&self, model_id: &str, namespace: &str) -> Resolved<'_> {
        if let Some(local) = self.local.get(namespace) {
            let (v1, v2, hit) = local.config.resolve_all(model_id, namespace);
            if let Some(entry) = local.config.source_entry(hit) {
                return Resolved {
                    v1,
                    v2,
                    source: ConfigSource {
                        config_map: Some(local.name.clone()),
                        entry: Some(entry.clone()),
                    },
                };
            }
        }
        let (v1, v2, hit) = self.global.resolve_all(model_id, namespace);
        let entry = self.global.source_entry(hit);
        Resolved {
            v1,
            v2,
            source: ConfigSource {
                config_map: entry.map(|_| self.global_name.clone()),
                entry: entry.cloned(),
            },
        }
    }

    /// The engine in force: the global ConfigMap's `default` entry chooses, for every namespace.
    pub fn analyzer(&self) -> AnalyzerChoice {
        self.global.analyzer()
    }

    /// The GPU limiter, from the global ConfigMap's `default` entry only.
    pub fn limiter(&self) -> LimiterConfig {
        self.global.limiter()
    }

    /// Where rescale is on: the cluster's GPUs (the global `default` entry's `enableRescale`), and
    /// each namespace whose local `default` entry enables it, for that namespace's quota (no fallback
    /// to the global flag, as in WVA).
    pub fn rescale(&self) -> RescaleFlags {
        RescaleFlags {
            cluster: self.global.rescale(),
            namespaces: self
                .local
                .iter()
                .filter(|(_, l)| l.config.rescale())
                .map(|(ns, _)| ns.clone())
                .collect(),
        }
    }
}

/// One entry's fields as their YAML text: numbers are parsed from the text exactly, `~`/`null` reads as
/// unset (as WVA's Go unmarshalling leaves the field zero), and an unquoted `model_id: 123` is the
/// string "123", as WVA reads it. Keys other than these are skipped here and reported separately.
#[derive(Deserialize)]
struct RawEntry {
    model_id: Option<String>,
    namespace: Option<String>,
    #[serde(rename = "kvCacheThreshold")]
    kv_cache_threshold: Option<String>,
    #[serde(rename = "queueLengthThreshold")]
    queue_length_threshold: Option<String>,
    #[serde(rename = "kvSpareTrigger")]
    kv_spare_trigger: Option<String>,
    #[serde(rename = "queueSpareTrigger")]
    queue_spare_trigger: Option<String>,
}

const KNOWN_KEYS: &[&str] = &[
    "model_id",
    "namespace",
    "kvCacheThreshold",
    "queueLengthThreshold",
    "kvSpareTrigger",
    "queueSpareTrigger",
    "analyzerName",
    "analyzers",
    "scaleUpThreshold",
    "scaleDownBoundary",
    "scaleToZero",
    "enableLimiter",
    "enableRescale",
    "priority",
    "limiters",
];

/// A `limiters[]` item as YAML text.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLimiter {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    scope: Option<String>,
    quotas: Option<BTreeMap<String, String>>,
    namespace_quotas: Option<BTreeMap<String, BTreeMap<String, String>>>,
    exclude: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLimiterKeys {
    enable_limiter: Option<String>,
    limiters: Option<Vec<RawLimiter>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRescale {
    enable_rescale: Option<String>,
}

fn parse_rescale(text: &str) -> Result<Option<bool>, String> {
    let raw: RawRescale = serde_saphyr::from_str(text)
        .map_err(|e| format!("enableRescale must be a boolean: {e}"))?;
    boolean("enableRescale", raw.enable_rescale)
}

/// WVA's largest quota value.
const MAX_QUOTA: i64 = 1_048_576;

/// `enableLimiter` and `limiters`, validated as WVA v0.9 validates them
/// (`internal/config/saturation_scaling.go`, `quota_limiter.go`): every problem is reported at once.
fn parse_limiter(text: &str) -> Result<Option<LimiterConfig>, String> {
    let raw: RawLimiterKeys = serde_saphyr::from_str(text).map_err(|e| {
        format!("enableLimiter must be a boolean, limiters a list of mappings (quotas: type -> integer): {e}")
    })?;
    if raw.enable_limiter.is_none() && raw.limiters.is_none() {
        return Ok(None);
    }
    let enabled = boolean("enableLimiter", raw.enable_limiter)?.unwrap_or(false);
    let mut errors = Vec::new();
    let mut limiters = Vec::new();
    let mut names = BTreeSet::new();
    for (i, l) in raw.limiters.into_iter().flatten().enumerate() {
        match l.kind.as_deref().map(str::trim) {
            Some("gpu-inventory" | "inventory") => {
                if l.scope.is_some()
                    || l.quotas.is_some()
                    || l.namespace_quotas.is_some()
                    || l.exclude.is_some()
                {
                    errors.push(format!(
                        "limiters[{i}].type: a gpu-inventory limiter takes no scope, quotas, namespaceQuotas or exclude"
                    ));
                }
                limiters.push(Limiter::GpuInventory);
            }
            Some("quota") => {
                if let Some(q) = parse_quota(i, l, &mut names, &mut errors) {
                    limiters.push(Limiter::Quota(q));
                }
            }
            other => errors.push(format!(
                "limiters[{i}].type must be gpu-inventory, inventory or quota, got {other:?}"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    if limiters.is_empty() {
        limiters.push(Limiter::GpuInventory);
    }
    Ok(Some(LimiterConfig { enabled, limiters }))
}

/// A `type: quota` entry of `limiters:`; its problems go to `errors`.
fn parse_quota(
    i: usize,
    l: RawLimiter,
    names: &mut BTreeSet<String>,
    errors: &mut Vec<String>,
) -> Option<Quota> {
    let at = |k: &str| format!("limiters[{i}].{k}");
    let name = l.name.unwrap_or_default();
    if name.trim().is_empty() {
        errors.push(format!("{} is required for a quota", at("name")));
    } else if !names.insert(name.clone()) {
        errors.push(format!("{}: {name:?} is used by another quota", at("name")));
    }
    let scope = match l.scope.as_deref().map(str::trim) {
        Some("cluster") => QuotaScope::Cluster,
        Some("namespace") => QuotaScope::Namespace,
        other => {
            errors.push(format!(
                "{} must be cluster or namespace, got {other:?}",
                at("scope")
            ));
            return None;
        }
    };
    if scope == QuotaScope::Cluster && (l.namespace_quotas.is_some() || l.exclude.is_some()) {
        errors.push(format!(
            "{}: namespaceQuotas and exclude apply to a quota of scope namespace only",
            at("scope")
        ));
    }
    if scope == QuotaScope::Namespace && l.quotas.is_some() {
        errors.push(format!(
            "{}: quotas applies to a quota of scope cluster only",
            at("scope")
        ));
    }
    let quotas = caps(&at("quotas"), l.quotas.unwrap_or_default(), errors);
    let mut namespace_quotas = BTreeMap::new();
    for (ns, m) in l.namespace_quotas.unwrap_or_default() {
        let key = format!("{}.{ns}", at("namespaceQuotas"));
        namespace_quotas.insert(ns, caps(&key, m, errors));
    }
    let mut exclude = BTreeSet::new();
    for ns in l.exclude.unwrap_or_default() {
        if ns.trim().is_empty() {
            errors.push(format!("{}: a namespace name is empty", at("exclude")));
        } else {
            exclude.insert(ns);
        }
    }
    Some(Quota {
        name,
        scope,
        quotas,
        namespace_quotas,
        exclude,
    })
}

/// A quota's `type -> GPUs` map: integers from -1 (unlimited) to [`MAX_QUOTA`].
fn caps(key: &str, m: BTreeMap<String, String>, errors: &mut Vec<String>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (t, v) in m {
        if t.trim().is_empty() {
            errors.push(format!("{key}: an accelerator type name is empty"));
            continue;
        }
        match v.trim().parse::<i64>() {
            Ok(n) if (-1..=MAX_QUOTA).contains(&n) => {
                out.insert(t, n);
            }
            _ => errors.push(format!(
                "{key}.{t} must be an integer from -1 (unlimited) to {MAX_QUOTA}, got {v:?}"
            )),
        }
    }
    out
}

/// An entry's v0.9 fields as YAML text, read like the thresholds (numbers exactly, `~` unset).
#[derive(Deserialize)]
struct RawV2 {
    #[serde(rename = "analyzerName")]
    analyzer_name: Option<String>,
    analyzers: Option<Vec<RawAnalyzer>>,
    #[serde(rename = "scaleUpThreshold")]
    scale_up_threshold: Option<String>,
    #[serde(rename = "scaleDownBoundary")]
    scale_down_boundary: Option<String>,
    #[serde(rename = "scaleToZero")]
    scale_to_zero: Option<RawScaleToZero>,
    /// The model's weight under the GPU limiter (V2's GreedyByScore).
    priority: Option<String>,
}

#[derive(Deserialize)]
struct RawScaleToZero {
    enabled: Option<String>,
}

/// One `analyzers[]` item; other keys are ignored, as WVA ignores them.
#[derive(Deserialize)]
struct RawAnalyzer {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    enabled: Option<String>,
    score: Option<String>,
    #[serde(rename = "scaleUpThreshold")]
    scale_up_threshold: Option<String>,
    #[serde(rename = "scaleDownBoundary")]
    scale_down_boundary: Option<String>,
    /// `scaleUpThreshold`, `scaleDownBoundary`, `score` and `enabled` here fill the typed fields left
    /// unset (WVA's `Normalize`); other keys are ignored.
    parameters: Option<BTreeMap<String, String>>,
}

fn boolean(key: &str, text: Option<String>) -> Result<Option<bool>, String> {
    text.map(|t| {
        super::zero::parse_bool(&t).map_err(|_| format!("{key} must be true or false, got {t:?}"))
    })
    .transpose()
}

fn parse_v2(text: &str) -> Result<V2Fields, String> {
    let raw: RawV2 = serde_saphyr::from_str(text).map_err(|e| {
        format!("analyzerName, scaleUpThreshold and scaleDownBoundary must be scalars, analyzers a list of mappings, scaleToZero a mapping: {e}")
    })?;
    let mut analyzers = Vec::new();
    for (i, a) in raw.analyzers.into_iter().flatten().enumerate() {
        let mut params = a.parameters.unwrap_or_default();
        let at = |k: &str| format!("analyzers[{i}].{k}");
        let mut field = |typed: Option<String>, key: &str| typed.or_else(|| params.remove(key));
        let scale_up = field(a.scale_up_threshold, "scaleUpThreshold");
        let scale_down = field(a.scale_down_boundary, "scaleDownBoundary");
        let score = field(a.score, "score");
        let enabled = field(a.enabled, "enabled");
        analyzers.push(AnalyzerEntry {
            name: a.name.unwrap_or_default(),
            kind: a.kind,
            enabled: boolean(&at("enabled"), enabled)?,
            // 0 reads as unset, as in WVA (its default score is 1).
            score: number(&at("score"), score)?.filter(|s| *s != 0.0),
            scale_up_threshold: number(&at("scaleUpThreshold"), scale_up)?,
            scale_down_boundary: number(&at("scaleDownBoundary"), scale_down)?,
        });
    }
    let priority = number("priority", raw.priority)?;
    if priority.is_some_and(|p| !p.is_finite() || p < 0.0) {
        return Err("priority must be a number >= 0".into());
    }
    Ok(V2Fields {
        analyzer_name: raw.analyzer_name.filter(|n| !n.is_empty()),
        analyzers,
        scale_up_threshold: number("scaleUpThreshold", raw.scale_up_threshold)?,
        scale_down_boundary: number("scaleDownBoundary", raw.scale_down_boundary)?,
        scale_to_zero: raw
            .scale_to_zero
            .map(|z| {
                Ok::<_, String>(InlineScaleToZero {
                    enabled: boolean("scaleToZero.enabled", z.enabled)?,
                })
            })
            .transpose()?,
        priority,
    })
}

fn number(key: &str, text: Option<String>) -> Result<Option<f64>, String> {
    text.map(|t| {
        t.trim()
            .parse::<f64>()
            .map_err(|_| format!("{key} must be a number, got {t:?}"))
    })
    .transpose()
}

fn parse_entry(
    key: &str,
    text: &str,
    (base, base_v2): &(SaturationConfig, V2Fields),
    local_to: Option<&str>,
    issues: &mut ConfigIssues,
) -> Result<Entry, String> {
    let keys: BTreeMap<String, serde::de::IgnoredAny> =
        serde_saphyr::from_str(text).map_err(|e| format!("not a YAML mapping: {e}"))?;
    for other in keys.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        issues.ignored_keys.push((
            key.to_string(),
            format!("{other}: unknown key; ignored (check the spelling)"),
        ));
    }
    let raw: RawEntry = serde_saphyr::from_str(text)
        .map_err(|e| format!("thresholds, model_id and namespace must be scalars: {e}"))?;
    let namespace = match (local_to, raw.namespace) {
        (Some(here), None) => Some(here.to_string()),
        (Some(here), Some(other)) if other != here => {
            return Err(format!(
                "namespace {other:?} in the namespace-local ConfigMap of {here}: it applies to its own namespace only"
            ))
        }
        (_, namespace) => namespace,
    };
    let entry = Entry {
        key: key.into(),
        model_id: raw.model_id,
        namespace,
        fields: PartialConfig {
            kv_cache_threshold: number("kvCacheThreshold", raw.kv_cache_threshold)?,
            queue_length_threshold: number("queueLengthThreshold", raw.queue_length_threshold)?,
            kv_spare_trigger: number("kvSpareTrigger", raw.kv_spare_trigger)?,
            queue_spare_trigger: number("queueSpareTrigger", raw.queue_spare_trigger)?,
        },
        v2: parse_v2(text)?,
        limiter: parse_limiter(text)?,
        rescale: parse_rescale(text)?,
    };
    if entry.rescale.is_some() && key != DEFAULT_ENTRY {
        issues.ignored_keys.push((
            key.to_string(),
            "enableRescale: read only from a default entry (the global ConfigMap's for the cluster's GPUs, a namespace-local one's for that namespace's quota); ignored".into(),
        ));
    }
    if entry.limiter.is_some() && (key != DEFAULT_ENTRY || local_to.is_some()) {
        issues.ignored_keys.push((
            key.to_string(),
            "enableLimiter, limiters: read only from the global ConfigMap's default entry (the limiter spans every namespace); ignored".into(),
        ));
    }
    if key != DEFAULT_ENTRY && (entry.model_id.is_none() || entry.namespace.is_none()) {
        return Err("an override entry needs both model_id and namespace".to_string());
    }
    base.merged(&entry.fields).validate()?;
    base_v2.merged(&entry.v2).validate()?;
    for kind in entry.v2.unsupported_analyzers() {
        issues.ignored_keys.push((
            key.to_string(),
            format!("analyzers: {kind:?} is not run here (WVA's opt-in analyzers other than saturation); saturation decides alone"),
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::configmap_data as data;

    /// A namespace-local ConfigMap decides, on its own, for the models it covers in its namespace; other
    /// namespaces and uncovered models keep the global one; reports name the ConfigMap and entry.
    #[test]
    fn local_configmaps_override_their_namespace_only() {
        let (global, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[("default", "kvCacheThreshold: 0.7\n")]),
        );
        let (local, issues) = ScalingConfig::from_local_configmap(
            &ScalingConfig::default(),
            &data(&[
                ("llama", "model_id: meta/llama\nqueueSpareTrigger: 4\n"),
                ("elsewhere", "model_id: m\nnamespace: other\n"),
            ]),
            "team-a",
        );
        assert_eq!(issues.rejected.len(), 1, "{issues:?}");
        assert!(issues.rejected[0]
            .1
            .contains("applies to its own namespace only"));
        let t = Thresholds::new("wva", "cm")
            .with_global(global)
            .with_local([("team-a".to_string(), local)].into());
        let source = |cm: &str, entry: &str| ConfigSource {
            config_map: Some(cm.into()),
            entry: Some(entry.into()),
        };
        // Covered: the local entry alone (built-ins + queueSpareTrigger 4, not the global 0.7).
        let (c, s) = t.resolve("meta/llama", "team-a");
        assert_eq!((c.kv_cache_threshold, c.queue_spare_trigger), (0.8, 4.0));
        assert_eq!(s, source("team-a/cm", "llama"));
        // Not covered (no entry, no local default): the global ConfigMap.
        let (c, s) = t.resolve("other-model", "team-a");
        assert_eq!(c.kv_cache_threshold, 0.7);
        assert_eq!(s, source("wva/cm", "default"));
        // Another namespace: the global ConfigMap.
        let (c, s) = t.resolve("meta/llama", "team-b");
        assert_eq!((c.kv_cache_threshold, c.queue_spare_trigger), (0.7, 3.0));
        assert_eq!(s, source("wva/cm", "default"));
        // What explanations (and the CLI's tables) read: the shared names serialize as plain strings.
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            serde_json::json!({"configMap": "wva/cm", "entry": "default"})
        );
        // A model without an override borrows the default entry's v0.9 fields; one with an override
        // gets them merged.
        assert!(matches!(
            t.resolve_all("meta/llama", "team-b").v2,
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(
            t.resolve_all("meta/llama", "team-a").v2,
            std::borrow::Cow::Owned(_)
        ));
        // Nothing configured anywhere: the built-in defaults, no source.
        assert_eq!(
            Thresholds::default().resolve("m", "ns"),
            (SaturationConfig::default(), ConfigSource::default())
        );
        assert_eq!(
            serde_json::to_value(ConfigSource::default()).unwrap(),
            serde_json::json!({})
        );
    }

    /// `enableLimiter` and `limiters` in the global default entry: gpu-inventory when none is listed,
    /// quotas as written (types normalised later); every mistake reported at once and the previous good
    /// entry kept; elsewhere the keys are ignored with a note.
    #[test]
    fn the_limiter_is_read_from_the_global_default_entry() {
        let (c, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[(
                "default",
                "enableLimiter: true
",
            )]),
        );
        assert!(
            issues.rejected.is_empty() && issues.ignored_keys.is_empty(),
            "{issues:?}"
        );
        assert_eq!(
            c.limiter(),
            LimiterConfig {
                enabled: true,
                limiters: vec![Limiter::GpuInventory]
            }
        );
        let text = "enableLimiter: \"true\"\nlimiters:\n- type: quota\n  name: cluster-quota\n  scope: cluster\n  quotas: {H100: 16, NVIDIA-L40S-48GB: -1}\n- type: quota\n  name: per-team\n  scope: namespace\n  namespaceQuotas: {team-a: {H100: 4}, default: {H100: 2}}\n  exclude: [ops]\n- type: gpu-inventory\n";
        let (good, issues) =
            ScalingConfig::from_configmap(&ScalingConfig::default(), &data(&[("default", text)]));
        assert!(issues.rejected.is_empty(), "{issues:?}");
        let l = good.limiter();
        assert!(l.enabled);
        assert_eq!(l.limiters.len(), 3);
        let Limiter::Quota(q) = &l.limiters[1] else {
            panic!("{l:?}")
        };
        assert_eq!(
            (
                q.scope,
                q.namespace_quotas["team-a"]["H100"],
                q.exclude.len()
            ),
            (QuotaScope::Namespace, 4, 1)
        );
        let bad = "enableLimiter: true\nlimiters:\n- type: quota\n  scope: cluster\n  quotas: {H100: 2000000}\n- type: quota\n  name: q\n  scope: region\n- type: gpu-inventory\n  scope: cluster\n- type: magic\n";
        let (kept, issues) = ScalingConfig::from_configmap(&good, &data(&[("default", bad)]));
        let message = &issues.rejected[0].1;
        for part in [
            "limiters[0].name is required",
            "limiters[0].quotas.H100 must be an integer from -1 (unlimited) to 1048576",
            "limiters[1].scope must be cluster or namespace",
            "limiters[2].type: a gpu-inventory limiter takes no scope",
            "limiters[3].type must be gpu-inventory, inventory or quota",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert_eq!(kept.limiter(), l);
        // An override, or a namespace-local ConfigMap, cannot set it.
        let (c, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[("m", "model_id: m\nnamespace: ns\nenableLimiter: true\n")]),
        );
        assert_eq!(c.limiter(), LimiterConfig::default());
        assert!(issues.ignored_keys[0]
            .1
            .contains("global ConfigMap's default entry"));
        let (_, issues) = ScalingConfig::from_local_configmap(
            &ScalingConfig::default(),
            &data(&[("default", "enableLimiter: true\n")]),
            "team-a",
        );
        assert!(issues.ignored_keys[0]
            .1
            .contains("global ConfigMap's default entry"));
    }

    #[test]
    fn defaults_match_wva() {
        let c = SaturationConfig::default();
        assert_eq!(
            (
                c.kv_cache_threshold,
                c.queue_length_threshold,
                c.kv_spare_trigger,
                c.queue_spare_trigger
            ),
            (0.80, 5.0, 0.10, 3.0)
        );
        assert_eq!(ScalingConfig::default().resolve("m", "ns").0, c);
    }

    #[test]
    fn default_entry_and_override_resolution() {
        let (cfg, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[
                ("default", "kvCacheThreshold: 0.75\nqueueLengthThreshold: 10\nkvSpareTrigger: 0.15\nqueueSpareTrigger: 5\n"),
                ("llama", "model_id: meta/llama\nnamespace: prod\nkvCacheThreshold: 0.9\nqueueSpareTrigger: 0\n"),
            ]),
        );
        assert_eq!(issues, ConfigIssues::default());
        let (c, key) = cfg.resolve("meta/llama", "prod");
        assert_eq!(key, Some("llama"));
        // Unlike WVA, a valid 0 in an override is applied.
        assert_eq!(
            c,
            SaturationConfig {
                kv_cache_threshold: 0.9,
                queue_length_threshold: 10.0,
                kv_spare_trigger: 0.15,
                queue_spare_trigger: 0.0
            }
        );
        // Another namespace or model gets the default entry only.
        assert_eq!(cfg.resolve("meta/llama", "dev").0.kv_cache_threshold, 0.75);
        assert_eq!(cfg.resolve("other", "prod").1, None);
    }

    #[test]
    fn invalid_entries_are_rejected_naming_the_rule_and_keep_the_previous_version() {
        let (good, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[
                ("default", "kvCacheThreshold: 0.7"),
                ("o", "model_id: m\nnamespace: ns1\nkvSpareTrigger: 0.2"),
            ]),
        );
        let cases: &[(&str, &str, &str)] = &[
            (
                "default",
                "kvCacheThreshold: 1.5",
                "kvCacheThreshold must be between 0 and 1",
            ),
            (
                "default",
                "queueLengthThreshold: -1",
                "queueLengthThreshold must be >= 0",
            ),
            (
                "default",
                "kvSpareTrigger: 2",
                "kvSpareTrigger must be between 0 and 1",
            ),
            (
                "default",
                "queueSpareTrigger: -3",
                "queueSpareTrigger must be >= 0",
            ),
            (
                "default",
                "kvCacheThreshold: 0.05",
                "kvCacheThreshold (0.05) must be >= kvSpareTrigger (0.1)",
            ),
            (
                "default",
                "kvCacheThreshold: high",
                "kvCacheThreshold must be a number",
            ),
            ("default", "[1, 2", "not a YAML mapping"),
            (
                "o",
                "model_id: m\nnamespace: ns1\nkvSpareTrigger: 0.9",
                "kvCacheThreshold (0.7) must be >= kvSpareTrigger (0.9)",
            ),
            (
                "o",
                "kvSpareTrigger: 0.2",
                "needs both model_id and namespace",
            ),
        ];
        for (key, text, want) in cases {
            let mut d = data(&[
                ("default", "kvCacheThreshold: 0.7"),
                ("o", "model_id: m\nnamespace: ns1\nkvSpareTrigger: 0.2"),
            ]);
            d.insert(key.to_string(), text.to_string());
            let (cfg, issues) = ScalingConfig::from_configmap(&good, &d);
            assert_eq!(issues.rejected.len(), 1, "{key}: {text}");
            assert_eq!(issues.rejected[0].0, *key);
            assert!(
                issues.rejected[0].1.contains(want),
                "{key}: {text}: {}",
                issues.rejected[0].1
            );
            assert_eq!(cfg, good, "previous good entry kept for {key}: {text}");
        }
    }

    /// WVA parity: a YAML null leaves the field unset (the entry stays valid), and an unquoted numeric
    /// model_id is the string WVA matches ("123"), digits kept as written.
    #[test]
    fn nulls_are_unset_and_numeric_model_ids_are_strings() {
        let (cfg, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[
                (
                    "default",
                    "kvCacheThreshold: 0.7\nqueueLengthThreshold: ~\nkvSpareTrigger: null",
                ),
                (
                    "numeric",
                    "model_id: 123\nnamespace: ns1\nkvCacheThreshold: 0.9",
                ),
                (
                    "decimal",
                    "model_id: 1.10\nnamespace: ns1\nkvCacheThreshold: 0.6",
                ),
            ]),
        );
        assert!(issues.rejected.is_empty(), "{:?}", issues.rejected);
        let d = cfg.default_config();
        assert_eq!(d.kv_cache_threshold, 0.7);
        assert_eq!(d.queue_length_threshold, 5.0);
        assert_eq!(d.kv_spare_trigger, 0.1);
        assert_eq!(
            cfg.resolve("123", "ns1"),
            (
                SaturationConfig {
                    kv_cache_threshold: 0.9,
                    ..d
                },
                Some("numeric")
            )
        );
        assert_eq!(cfg.resolve("1.10", "ns1").1, Some("decimal"));
        assert_eq!(cfg.resolve("1.1", "ns1").1, None);
    }

    /// Thresholds are read as the nearest double to the decimal written.
    #[test]
    fn yaml_numbers_are_read_exactly() {
        let (cfg, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[(
                "default",
                "kvCacheThreshold: 0.9999999999999999\nkvSpareTrigger: 0.30000000000000004",
            )]),
        );
        assert!(issues.rejected.is_empty(), "{:?}", issues.rejected);
        let d = cfg.default_config();
        assert_eq!(
            d.kv_cache_threshold.to_bits(),
            0.9999999999999999_f64.to_bits()
        );
        assert_eq!(
            d.kv_spare_trigger.to_bits(),
            0.30000000000000004_f64.to_bits()
        );
    }

    #[test]
    fn unknown_and_v05_keys_are_reported_not_fatal() {
        let (cfg, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[(
                "default",
                "kvCacheTreshold: 0.5\nenableRescale: true\nkvCacheThreshold: \"0.6\"",
            )]),
        );
        assert_eq!(cfg.default_config().kv_cache_threshold, 0.6);
        assert_eq!(issues.ignored_keys.len(), 1);
        assert!(issues
            .ignored_keys
            .iter()
            .any(|(_, m)| m.contains("kvCacheTreshold: unknown key")));
        assert!(cfg.rescale());
    }

    /// WVA v0.9's entry schema: analyzers (with `parameters` folded into unset fields), U and D, inline
    /// scale to zero; the default entry selects V2; an override merges over it.
    #[test]
    fn v09_entries_select_and_configure_v2() {
        let (cfg, issues) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[
                (
                    "default",
                    "kvCacheThreshold: 0.8\nscaleUpThreshold: 0.9\nscaleDownBoundary: \"0.6\"\nenableLimiter: false\nenableRescale: false\nanalyzers:\n  - name: saturation\n    score: 2\n    parameters: {scaleDownBoundary: 0.5, score: 7, other: x}\n  - name: throughput\n    enabled: false\n",
                ),
                (
                    "llama",
                    "model_id: meta/llama\nnamespace: llm\nscaleToZero: {enabled: yes}\nanalyzers: [{type: saturation, parameters: {scaleUpThreshold: 0.95}}]\n",
                ),
            ]),
        );
        assert!(issues.rejected.is_empty(), "{issues:?}");
        assert_eq!(cfg.analyzer(), AnalyzerChoice::V2);
        let (_, v2, _) = cfg.resolve_all("other", "llm");
        let sat = &v2.analyzers[0];
        assert_eq!(
            (sat.score, sat.scale_down_boundary),
            (Some(2.0), Some(0.5)),
            "typed fields win; parameters fill the rest"
        );
        let t = v2.thresholds(&SaturationConfig::default());
        assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.9, 0.5));
        assert!(
            v2.unsupported_analyzers().is_empty(),
            "a disabled throughput analyzer is not asked for"
        );
        let (_, noted) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[(
                "default",
                "analyzers: [{name: saturation}, {name: throughput}]",
            )]),
        );
        assert!(
            noted
                .ignored_keys
                .iter()
                .any(|(_, m)| m.contains("\"throughput\" is not run here")),
            "{noted:?}"
        );
        let (_, v2, key) = cfg.resolve_all("meta/llama", "llm");
        assert_eq!(key.map(|e| &*e.key), Some("llama"));
        assert_eq!(v2.scale_to_zero.and_then(|z| z.enabled), Some(true));
        let t = v2.thresholds(&SaturationConfig::default());
        assert_eq!(
            (t.scale_up_threshold, t.scale_down_boundary),
            (0.95, 0.6),
            "the override's analyzers replace the default's"
        );
        assert!(!issues
            .ignored_keys
            .iter()
            .any(|(k, m)| k == "default" && m.contains("enableRescale")));
        assert!(!cfg.rescale());
        // Bad v0.9 fields reject the entry, naming the rule, and keep its previous version.
        for (bad, want) in [
            (
                "scaleUpThreshold: 0.5\nscaleDownBoundary: 0.6",
                "must be greater than scaleDownBoundary",
            ),
            (
                "analyzers: [{name: saturation, parameters: {score: high}}]",
                "analyzers[0].score must be a number",
            ),
            ("analyzers: saturation", "analyzers a list of mappings"),
            (
                "scaleToZero: {enabled: maybe}",
                "scaleToZero.enabled must be true or false",
            ),
            ("priority: -1", "priority must be a number >= 0"),
            ("priority: high", "priority must be a number"),
        ] {
            let (kept, issues) = ScalingConfig::from_configmap(&cfg, &data(&[("default", bad)]));
            assert!(issues.rejected[0].1.contains(want), "{bad}: {issues:?}");
            assert_eq!(kept.analyzer(), AnalyzerChoice::V2, "{bad}");
        }
        let (qm, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[("default", "analyzerName: queueing-model")]),
        );
        assert!(matches!(qm.analyzer(), AnalyzerChoice::Refused { .. }));
        // A v0.4.1 / v0.5.1 entry stays on V1.
        let (old, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[("default", "kvCacheThreshold: 0.75\nqueueSpareTrigger: 2")]),
        );
        assert_eq!(old.analyzer(), AnalyzerChoice::V1);
    }

    #[test]
    fn several_matching_overrides_resolve_deterministically() {
        let (cfg, _) = ScalingConfig::from_configmap(
            &ScalingConfig::default(),
            &data(&[
                ("b", "model_id: m\nnamespace: ns1\nkvCacheThreshold: 0.6"),
                ("a", "model_id: m\nnamespace: ns1\nkvCacheThreshold: 0.7"),
            ]),
        );
        assert_eq!(
            cfg.resolve("m", "ns1"),
            (
                SaturationConfig {
                    kv_cache_threshold: 0.7,
                    ..Default::default()
                },
                Some("a")
            )
        );
    }
}
