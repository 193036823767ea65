//! Scale to zero and from zero (WVA v0.5.1 `enforcer.go` and `scalefromzero`), as pure functions.
//!
//! * [`ZeroConfig`]: the `wva-model-scale-to-zero-config` ConfigMap (entries `default` and per model, fields
//!   `enable_scale_to_zero` and `retention_period`), resolved per model with the env default below it.
//! * [`enforce`]: after the targets, what idleness and queued demand do to them. A model goes to zero only
//!   when it is known to be idle: every source answered and the observation covers the retention period.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{ConfigIssues, DEFAULT_ENTRY};
use super::targets::{TargetReason, VariantState, VariantTarget};
use super::Role;

/// WVA's default retention period.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);
/// The ConfigMap WVA reads (and this server follows, next to the saturation one).
pub const CONFIGMAP_NAME: &str = "wva-model-scale-to-zero-config";

#[derive(Debug, Clone, PartialEq, Default)]
struct ZeroEntry {
    /// `entry "<key>"`, made once when the entry is parsed (the request path resolves per request).
    source: Arc<str>,
    model_id: Option<String>,
    namespace: Option<String>,
    enabled: Option<bool>,
    retention: Option<Duration>,
}

/// The scale-to-zero configuration in force.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZeroConfig {
    entries: BTreeMap<String, ZeroEntry>,
    /// `WVA_SCALE_TO_ZERO`: the value below the ConfigMap's `default` entry.
    env_default: bool,
}

/// Where a model's scale-to-zero setting comes from and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ZeroPolicy {
    pub enabled: bool,
    #[serde(with = "secs")]
    pub retention: Duration,
    /// `entry <key>`, `env WVA_SCALE_TO_ZERO` or `disabled by default`.
    pub source: Arc<str>,
}

mod secs {
    pub(super) fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::duration::format(*d))
    }
}

#[derive(Deserialize)]
struct RawZeroEntry {
    model_id: Option<String>,
    namespace: Option<String>,
    enable_scale_to_zero: Option<String>,
    retention_period: Option<String>,
}

const ZERO_KEYS: &[&str] = &[
    "model_id",
    "namespace",
    "enable_scale_to_zero",
    "retention_period",
];

pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        // YAML 1.2's booleans, and YAML 1.1's that WVA's yaml.v3 also reads into a bool field.
        "true" | "True" | "TRUE" | "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            Ok(true)
        }
        "false" | "False" | "FALSE" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            Ok(false)
        }
        other => Err(format!(
            "enable_scale_to_zero must be true or false, got {other:?}"
        )),
    }
}

fn parse_zero_entry(key: &str, text: &str, issues: &mut ConfigIssues) -> Result<ZeroEntry, String> {
    let keys: BTreeMap<String, serde::de::IgnoredAny> =
        serde_saphyr::from_str(text).map_err(|e| format!("not a YAML mapping: {e}"))?;
    for other in keys.keys().filter(|k| !ZERO_KEYS.contains(&k.as_str())) {
        issues.ignored_keys.push((
            key.to_string(),
            format!("{other}: unknown key; ignored (check the spelling)"),
        ));
    }
    let raw: RawZeroEntry =
        serde_saphyr::from_str(text).map_err(|e| format!("fields must be scalars: {e}"))?;
    let enabled = raw
        .enable_scale_to_zero
        .as_deref()
        .map(parse_bool)
        .transpose()?;
    let retention = raw
        .retention_period
        .as_deref()
        .map(|t| crate::duration::parse(t).map_err(|e| format!("retention_period: {e}")))
        .transpose()?;
    if retention.is_some_and(|r| r.is_zero()) {
        return Err("retention_period must be greater than 0".into());
    }
    if key != DEFAULT_ENTRY && raw.model_id.is_none() {
        return Err("an override entry needs model_id".into());
    }
    Ok(ZeroEntry {
        source: format!("entry {key:?}").into(),
        model_id: raw.model_id,
        namespace: raw.namespace,
        enabled,
        retention,
    })
}

impl ZeroConfig {
    /// Nothing configured: `WVA_SCALE_TO_ZERO` decides for every model.
    pub fn with_env_default(env_default: bool) -> Self {
        ZeroConfig {
            entries: BTreeMap::new(),
            env_default,
        }
    }

    /// Builds the configuration from the ConfigMap's `data`, keeping the previous good version of any
    /// entry that fails to parse.
    pub fn from_configmap(
        previous: &ZeroConfig,
        data: &BTreeMap<String, String>,
    ) -> (ZeroConfig, ConfigIssues) {
        let mut issues = ConfigIssues::default();
        let mut entries = BTreeMap::new();
        for (key, text) in data {
            match parse_zero_entry(key, text, &mut issues) {
                Ok(e) => {
                    entries.insert(key.clone(), e);
                }
                Err(message) => {
                    issues.rejected.push((key.clone(), message));
                    if let Some(prev) = previous.entries.get(key) {
                        entries.insert(key.clone(), prev.clone());
                    }
                }
            }
        }
        (
            ZeroConfig {
                entries,
                env_default: previous.env_default,
            },
            issues,
        )
    }

    /// The same configuration without any ConfigMap entries (the ConfigMap was deleted).
    pub fn without_entries(&self) -> ZeroConfig {
        Self::with_env_default(self.env_default)
    }

    /// One model's setting. Priority: the model's entry for this namespace, the model's entry without a
    /// namespace, `default`, `WVA_SCALE_TO_ZERO`. A field an entry leaves out comes from the next level.
    pub fn resolve(&self, model_id: &str, namespace: &str) -> ZeroPolicy {
        let for_model = |with_ns: bool| {
            self.entries.iter().find(|(k, e)| {
                k.as_str() != DEFAULT_ENTRY
                    && e.model_id.as_deref() == Some(model_id)
                    && if with_ns {
                        e.namespace.as_deref() == Some(namespace)
                    } else {
                        e.namespace.is_none()
                    }
            })
        };
        // Resolved on every request: no allocation (the sources are made when the entries are parsed).
        let chain = [
            for_model(true),
            for_model(false),
            self.entries.get_key_value(DEFAULT_ENTRY),
        ];
        let chain = chain.iter().flatten().map(|(_, e)| *e);
        let enabled = chain
            .clone()
            .find_map(|e| e.enabled.map(|v| (v, e.source.clone())));
        let retention = chain
            .clone()
            .find_map(|e| e.retention)
            .unwrap_or(DEFAULT_RETENTION);
        let (enabled, source) = enabled.unwrap_or_else(|| {
            if self.env_default {
                (true, ENV_SOURCE.clone())
            } else {
                (false, DISABLED_SOURCE.clone())
            }
        });
        ZeroPolicy {
            enabled,
            retention,
            source,
        }
    }
}

static ENV_SOURCE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("env WVA_SCALE_TO_ZERO"));
static DISABLED_SOURCE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("disabled by default"));

/// Whether the model served requests during the retention period, as far as the sources know.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Activity {
    /// A successful request, a running or waiting request, or queued demand this long ago.
    Active {
        #[serde(rename = "lastSeconds")]
        last_secs: u64,
    },
    /// No request during the retention period, with complete data.
    Idle,
    /// Not known; targets stay as they are. Fixed reasons are static: a model with scale to zero
    /// disabled says so on every request without allocating.
    Unknown { reason: Cow<'static, str> },
}

/// Requests waiting at the model's endpoint picker (its InferencePool's EPP).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Demand {
    /// No InferencePool selects the model's pods.
    NoPool,
    /// The flow-control queue for the model, summed over the EPP's pods. `held`: the last read failed
    /// and this is the last good reading, still within its grace period (why, and how old).
    Queued {
        requests: f64,
        /// The queued requests' bytes, where the picker publishes them (saturation V2's input tokens).
        #[serde(skip_serializing_if = "is_zero")]
        bytes: f64,
        pool: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        held: Option<String>,
    },
    /// The EPP could not be read.
    Unknown { pool: String, reason: String },
}

/// For `skip_serializing_if`: a figure that is 0 says nothing.
pub(crate) fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// What idleness and demand do to a model's targets (after [`super::compute_targets`]):
///
/// 1. Queued demand while every target is 0: the cheapest variant (cost, then name) below its max gets 1;
///    in a disaggregated model, the cheapest of each role (prefill and decode come back together).
/// 2. Scale to zero enabled, the model settled (no variant in transition), known idle and no known
///    demand: every target goes to its minimum (0 unless the autoscaler says otherwise).
/// 3. Scale to zero disabled and every target 0: the cheapest variant gets 1 (WVA's rule), of each role
///    in a disaggregated model (WVA picks one regardless of role, which leaves a pool that cannot serve).
///
/// Unknown activity or an unreadable EPP never takes a model to zero.
pub fn enforce(
    variants: &[VariantState],
    targets: &mut [VariantTarget],
    policy: &ZeroPolicy,
    activity: &Activity,
    demand: &Demand,
) {
    if variants.is_empty() {
        return;
    }
    let settled = !variants.iter().any(VariantState::in_transition);
    let queued = match demand {
        Demand::Queued { requests, pool, .. } if *requests > 0.0 => Some((requests, pool)),
        _ => None,
    };
    if policy.enabled && settled && queued.is_none() {
        let demand_known = !matches!(demand, Demand::Unknown { .. });
        if *activity == Activity::Idle && demand_known {
            for (t, v) in targets.iter_mut().zip(variants) {
                t.target = v.clamp(0);
                t.reason = TargetReason::ScaleToZero;
                t.message = format!(
                    "scale to zero: no request during the retention period ({}, {})",
                    crate::duration::format(policy.retention),
                    policy.source
                )
                .into();
            }
            return;
        }
    }
    if targets.iter().any(|t| t.target > 0) {
        return;
    }
    let why = match (queued, policy.enabled) {
        (Some((requests, pool)), _) => format!(
            "scale from zero: {requests} request(s) queued at the endpoint picker of InferencePool {pool}"
        ),
        // A parked model (every variant at `spec.replicas` 0) has no active variant; WVA never decides
        // for it, so nothing wakes it but queued demand.
        (None, false) if variants.iter().all(|v| v.spec_replicas == 0) => return,
        (None, false) => {
            "every target was 0 and scale to zero is disabled: the cheapest variant (of each prefill/decode role) keeps 1".into()
        }
        (None, true) => return,
    };
    // One replica per role: a prefill pool without its decode pool (or the reverse) serves nothing,
    // so a disaggregated model wakes, and keeps, the cheapest variant of every role.
    for role in Role::ALL {
        let cheapest = variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.role == role && v.max_replicas.is_none_or(|m| m >= 1))
            .min_by(|(_, a), (_, b)| a.cost.total_cmp(&b.cost).then_with(|| a.name.cmp(&b.name)));
        if let Some((i, _)) = cheapest {
            targets[i].target = 1;
            targets[i].reason = if queued.is_some() {
                TargetReason::ScaleFromZero
            } else {
                TargetReason::KeepOne
            };
            targets[i].message = why.clone().into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saturation::configmap_data as data;

    #[test]
    fn resolution_order_and_go_durations() {
        let (c, issues) = ZeroConfig::from_configmap(
            &ZeroConfig::with_env_default(false),
            &data(&[
                (
                    "default",
                    "enable_scale_to_zero: true\nretention_period: 5m",
                ),
                (
                    "m1",
                    "model_id: m1\nenable_scale_to_zero: false\nretention_period: 1m30s",
                ),
                (
                    "m1-b",
                    "model_id: m1\nnamespace: b\nenable_scale_to_zero: true",
                ),
                ("m2", "model_id: m2\nretention_period: 20s"),
            ]),
        );
        assert!(issues.rejected.is_empty(), "{issues:?}");
        let p = c.resolve("m1", "a");
        assert_eq!((p.enabled, p.retention.as_secs()), (false, 90));
        assert_eq!(&*p.source, "entry \"m1\"");
        let p = c.resolve("m1", "b");
        assert_eq!((p.enabled, p.retention.as_secs()), (true, 90));
        let p = c.resolve("m2", "a");
        assert_eq!((p.enabled, p.retention.as_secs()), (true, 20));
        assert_eq!(&*p.source, "entry \"default\"");
        let p = c.resolve("other", "a");
        assert_eq!((p.enabled, p.retention.as_secs()), (true, 300));
        let env = ZeroConfig::with_env_default(true).resolve("x", "y");
        assert_eq!(
            (env.enabled, env.retention, &*env.source),
            (true, DEFAULT_RETENTION, "env WVA_SCALE_TO_ZERO")
        );
        assert!(!ZeroConfig::default().resolve("x", "y").enabled);
    }

    /// WVA's yaml.v3 reads YAML 1.1's `yes`/`on`/`no`/`off` into its bool field; so do we.
    #[test]
    fn yaml_1_1_booleans_read_as_wva_reads_them() {
        for (text, want) in [
            ("yes", true),
            ("On", true),
            ("y", true),
            ("NO", false),
            ("off", false),
        ] {
            let (c, issues) = ZeroConfig::from_configmap(
                &ZeroConfig::default(),
                &data(&[("default", &format!("enable_scale_to_zero: {text}"))]),
            );
            assert!(issues.rejected.is_empty(), "{text}: {issues:?}");
            assert_eq!(c.resolve("m", "n").enabled, want, "{text}");
        }
    }

    #[test]
    fn bad_entries_keep_the_last_good_one() {
        let (good, _) = ZeroConfig::from_configmap(
            &ZeroConfig::default(),
            &data(&[(
                "default",
                "enable_scale_to_zero: true\nretention_period: 2m",
            )]),
        );
        for bad in [
            "enable_scale_to_zero: maybe",
            "retention_period: 10 minutes",
            "retention_period: 0s",
            "retention_period: -5m",
            "[not, a, mapping]",
        ] {
            let (c, issues) = ZeroConfig::from_configmap(&good, &data(&[("default", bad)]));
            assert_eq!(issues.rejected.len(), 1, "{bad}");
            assert_eq!(c.resolve("m", "n").retention.as_secs(), 120, "{bad}");
        }
        let (_, issues) =
            ZeroConfig::from_configmap(&good, &data(&[("x", "enable_scale_to_zero: true")]));
        assert!(issues.rejected[0].1.contains("model_id"));
        let (_, issues) = ZeroConfig::from_configmap(
            &good,
            &data(&[("default", "enable_scale_to_zero: true\nretention: 5m")]),
        );
        assert!(issues.ignored_keys[0].1.contains("retention"));
    }

    fn v(name: &str, cost: f64, ready: i64) -> VariantState<'_> {
        VariantState {
            name: name.into(),
            cost,
            spec_replicas: ready,
            ready_replicas: ready,
            seen_replicas: ready,
            min_replicas: 0,
            max_replicas: None,
            role: Role::Both,
        }
    }

    fn t<'a>(vs: &[VariantState<'a>]) -> Vec<VariantTarget<'a>> {
        vs.iter()
            .map(|v| VariantTarget {
                name: v.name.clone(),
                target: v.ready_replicas,
                reason: TargetReason::NoChange,
                message: crate::saturation::Message::default(),
            })
            .collect()
    }

    fn policy(enabled: bool) -> ZeroPolicy {
        ZeroPolicy {
            enabled,
            retention: Duration::from_secs(60),
            source: "test".into(),
        }
    }

    fn run(vs: &[VariantState], p: &ZeroPolicy, a: &Activity, d: &Demand) -> Vec<i64> {
        let mut ts = t(vs);
        enforce(vs, &mut ts, p, a, d);
        ts.iter().map(|t| t.target).collect()
    }

    #[test]
    fn the_rules_table() {
        let unknown = Activity::Unknown { reason: "x".into() };
        let active = Activity::Active { last_secs: 3 };
        let queued = Demand::Queued {
            requests: 2.0,
            bytes: 0.0,
            pool: "ns/pool".into(),
            held: None,
        };
        let epp_down = Demand::Unknown {
            pool: "ns/pool".into(),
            reason: "refused".into(),
        };
        let up = [v("cheap", 1.0, 2), v("pricey", 5.0, 1)];
        let zero = [v("cheap", 1.0, 0), v("pricey", 5.0, 0)];
        let on = policy(true);
        let off = policy(false);
        // Idle with complete data → 0; anything unknown keeps the targets.
        assert_eq!(run(&up, &on, &Activity::Idle, &Demand::NoPool), [0, 0]);
        assert_eq!(run(&up, &on, &unknown, &Demand::NoPool), [2, 1]);
        assert_eq!(run(&up, &on, &active, &Demand::NoPool), [2, 1]);
        assert_eq!(run(&up, &on, &Activity::Idle, &epp_down), [2, 1]);
        assert_eq!(run(&up, &off, &Activity::Idle, &Demand::NoPool), [2, 1]);
        // Queued demand beats idleness.
        assert_eq!(run(&up, &on, &Activity::Idle, &queued), [2, 1]);
        // At zero: stays unless demand is queued; disabled keeps one.
        assert_eq!(run(&zero, &on, &Activity::Idle, &Demand::NoPool), [0, 0]);
        assert_eq!(run(&zero, &on, &unknown, &Demand::NoPool), [0, 0]);
        assert_eq!(run(&zero, &on, &Activity::Idle, &queued), [1, 0]);
        // Disabled: a model that had replicas and whose targets all went to 0 keeps one; a parked model
        // (every variant at spec.replicas 0) is not woken, as WVA leaves it (no active variant).
        let mut emptied = zero.clone();
        emptied[1].spec_replicas = 1;
        emptied[1].ready_replicas = 0;
        let targets_zero = |vs: &[VariantState], p: &ZeroPolicy| {
            let mut ts = t(vs);
            ts.iter_mut().for_each(|t| t.target = 0);
            enforce(vs, &mut ts, p, &unknown, &Demand::NoPool);
            ts.iter().map(|t| t.target).collect::<Vec<_>>()
        };
        assert_eq!(targets_zero(&emptied, &off), [1, 0]);
        assert_eq!(run(&zero, &off, &unknown, &Demand::NoPool), [0, 0]);
        assert_eq!(run(&zero, &off, &unknown, &queued), [1, 0]);
        // Disaggregated: the cheapest of each role wakes, and is kept, together.
        let role = |mut s: VariantState<'static>, r: Role| {
            s.role = r;
            s
        };
        let pd = [
            role(v("p-dear", 9.0, 0), Role::Prefill),
            role(v("p-cheap", 1.0, 0), Role::Prefill),
            role(v("d", 5.0, 0), Role::Decode),
        ];
        assert_eq!(run(&pd, &on, &Activity::Idle, &queued), [0, 1, 1]);
        let mut pd_emptied = pd.clone();
        pd_emptied[0].spec_replicas = 1;
        assert_eq!(targets_zero(&pd_emptied, &off), [0, 1, 1]);
        // The cheapest that can hold a replica; ties by name.
        let tie = [v("b", 1.0, 0), v("a", 1.0, 0)];
        assert_eq!(run(&tie, &on, &unknown, &queued), [0, 1]);
        // A minimum above 0 is kept.
        let mut floor = up.clone();
        floor[1].min_replicas = 1;
        assert_eq!(run(&floor, &on, &Activity::Idle, &Demand::NoPool), [0, 1]);
        // A model in transition is never sent to zero (a scale from zero is under way).
        let mut moving = up.clone();
        moving[0].spec_replicas = 3;
        assert_eq!(run(&moving, &on, &Activity::Idle, &Demand::NoPool), [2, 1]);
    }
}
