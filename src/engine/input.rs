//! The `analyze` command's input: one model's thresholds and variants as JSON, checked at this edge so
//! that [`super::decide`] can stay infallible.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::decide::{decide, ModelDecision, VariantInput};
use crate::error::Error;
use crate::saturation::config::PartialConfig;
use crate::saturation::SaturationConfig;

/// Everything one model's decision depends on (the `analyze` command's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelInput {
    #[serde(default)]
    pub config: PartialConfig,
    pub variants: Vec<VariantInput>,
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
}

impl ModelInput {
    /// The thresholds in force (defaults, then the input's), once the input passes every rule.
    pub fn validate(&self) -> Result<SaturationConfig, InputError> {
        let config = SaturationConfig::default().merged(&self.config);
        config.validate().map_err(InputError::Config)?;
        let mut names = BTreeSet::new();
        for v in &self.variants {
            if !names.insert(v.name.as_str()) {
                return Err(InputError::DuplicateVariant(v.name.clone()));
            }
            if v.spec_replicas < 0 || v.ready_replicas < 0 {
                return Err(InputError::NegativeReplicas(v.name.clone()));
            }
            let min = v.min_replicas.unwrap_or(0);
            if min < 0 || v.max_replicas.is_some_and(|max| max < 1 || max < min) {
                return Err(InputError::BadBounds(v.name.clone()));
            }
            for r in &v.replicas {
                if !usable(r.kv_cache_usage) || !usable(r.queue_length) {
                    return Err(InputError::BadSample {
                        variant: v.name.clone(),
                        pod: r.pod.clone(),
                    });
                }
            }
        }
        Ok(config)
    }

    /// Validates, then decides.
    pub fn decide(&self) -> Result<ModelDecision, InputError> {
        let config = self.validate()?;
        Ok(decide(&config, &self.variants))
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
pub(crate) fn analyze_json(text: &str) -> Result<ModelDecision, Error> {
    parse(text)?.decide().map_err(|e| Error::Input {
        path: None,
        message: e.to_string(),
    })
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
            },
            variants: vec![],
        };
        assert!(
            matches!(bad.decide(), Err(InputError::Config(m)) if m.contains("kvCacheThreshold"))
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
