//! The keys WVA v0.9 added to a `wva-saturation-scaling-config` entry (its
//! `internal/config/saturation_scaling.go`): which analyzer runs, the scale-up threshold and scale-down
//! boundary, per-analyzer settings, and an inline scale-to-zero switch; and the global choice between
//! V1 and V2 that the `default` entry makes (`internal/engines/saturation/engine.go`).

use serde::{Deserialize, Serialize};

use super::V2Thresholds;
use crate::saturation::SaturationConfig;

/// WVA v0.9's defaults for U and D.
pub const DEFAULT_SCALE_UP: f64 = 0.85;
pub const DEFAULT_SCALE_DOWN: f64 = 0.70;

/// One `analyzers[]` item.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalyzerEntry {
    pub name: String,
    /// The plugin type; the name when empty.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_boundary: Option<f64>,
}

impl AnalyzerEntry {
    pub fn kind(&self) -> &str {
        self.kind
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(&self.name)
    }
}

/// `scaleToZero:` in an entry.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineScaleToZero {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// An entry's v0.9 fields, as written (unset fields are `None`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct V2Fields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyzers: Vec<AnalyzerEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_boundary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<InlineScaleToZero>,
    /// The model's weight when GPUs are shared across models (GreedyByScore; 0 or unset reads as 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<f64>,
}

/// Which engine decides, for the whole cluster (WVA chooses it once, from the global `default` entry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase", tag = "analyzer")]
pub enum AnalyzerChoice {
    /// The KV/queue threshold analysis (v0.4.1–v0.8; v0.9 without `analyzers:`).
    #[default]
    V1,
    /// Saturation V2, token capacity.
    V2,
    /// The queueing-model path, which v0.9 refuses: every variant is held and a Warning says why.
    Refused { reason: String },
}

impl V2Fields {
    /// A V2 entry: it lists analyzers, or names `saturation`.
    pub fn is_v2(&self) -> bool {
        !self.analyzers.is_empty() || self.analyzer_name.as_deref() == Some("saturation")
    }

    /// The choice the global `default` entry makes (`None`: no default entry, V1).
    pub fn choice(default: Option<&V2Fields>) -> AnalyzerChoice {
        let Some(d) = default else {
            return AnalyzerChoice::V1;
        };
        if !d.analyzers.is_empty() {
            return AnalyzerChoice::V2;
        }
        match d.analyzer_name.as_deref() {
            Some("saturation") => AnalyzerChoice::V2,
            Some("queueing-model") => AnalyzerChoice::Refused {
                reason: "the saturation ConfigMap's default entry selects analyzerName: queueing-model, which WVA v0.9 refuses (no decisions): every variant is held at spec.replicas".into(),
            },
            _ => AnalyzerChoice::V1,
        }
    }

    /// `over`'s fields replace ours where set; its `analyzers` replace ours when it lists any.
    pub fn merged(&self, over: &V2Fields) -> V2Fields {
        V2Fields {
            analyzer_name: over
                .analyzer_name
                .clone()
                .or_else(|| self.analyzer_name.clone()),
            analyzers: if over.analyzers.is_empty() {
                self.analyzers.clone()
            } else {
                over.analyzers.clone()
            },
            scale_up_threshold: over.scale_up_threshold.or(self.scale_up_threshold),
            scale_down_boundary: over.scale_down_boundary.or(self.scale_down_boundary),
            scale_to_zero: over.scale_to_zero.or(self.scale_to_zero),
            priority: over.priority.or(self.priority),
        }
    }

    /// WVA's validation of the v0.9 keys; the message names the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        fn pair(at: &str, up: Option<f64>, down: Option<f64>) -> Result<(), String> {
            for (name, v) in [("scaleUpThreshold", up), ("scaleDownBoundary", down)] {
                if let Some(v) = v {
                    if !(v > 0.0 && v <= 1.0) {
                        return Err(format!("{at}{name} must be in (0, 1], got {v}"));
                    }
                }
            }
            if let (Some(u), Some(d)) = (up, down) {
                if u <= d {
                    return Err(format!(
                        "{at}scaleUpThreshold ({u}) must be greater than scaleDownBoundary ({d})"
                    ));
                }
            }
            Ok(())
        }
        pair("", self.scale_up_threshold, self.scale_down_boundary)?;
        for (i, a) in self.analyzers.iter().enumerate() {
            if a.kind().is_empty() {
                return Err(format!("analyzers[{i}] needs a name or a type"));
            }
            if a.score.is_some_and(|s| !s.is_finite() || s < 0.0) {
                return Err(format!("analyzers[{i}].score must be a number >= 0"));
            }
            pair(
                &format!("analyzers[{i}]."),
                a.scale_up_threshold,
                a.scale_down_boundary,
            )?;
        }
        Ok(())
    }

    /// The saturation analyzer's entry, if listed.
    fn saturation(&self) -> Option<&AnalyzerEntry> {
        self.analyzers.iter().find(|a| a.kind() == "saturation")
    }

    /// Whether the saturation analyzer votes for this model: it does unless an `analyzers` list leaves
    /// it out or disables it. A model whose only analyzer does not vote is held (no anchor).
    pub fn saturation_votes(&self) -> bool {
        self.analyzers.is_empty() || self.saturation().is_some_and(|a| a.enabled != Some(false))
    }

    /// The thresholds V2 decides with: the entry's U and D (0.85 and 0.70 when unset, and both reset
    /// to those when U ≤ D), then the saturation analyzer's own, when it sets them.
    pub fn thresholds(&self, v1: &SaturationConfig) -> V2Thresholds {
        let mut up = self.scale_up_threshold.unwrap_or(DEFAULT_SCALE_UP);
        let mut down = self.scale_down_boundary.unwrap_or(DEFAULT_SCALE_DOWN);
        if up <= down {
            (up, down) = (DEFAULT_SCALE_UP, DEFAULT_SCALE_DOWN);
        }
        if let Some(a) = self.saturation() {
            up = a.scale_up_threshold.unwrap_or(up);
            down = a.scale_down_boundary.unwrap_or(down);
        }
        V2Thresholds {
            kv_cache_threshold: v1.kv_cache_threshold,
            queue_length_threshold: v1.queue_length_threshold,
            scale_up_threshold: up,
            scale_down_boundary: down,
        }
    }

    /// The model's priority under the GPU limiter: WVA reads 0 (or unset) as 1.
    pub fn priority(&self) -> f64 {
        self.priority.filter(|p| *p > 0.0).unwrap_or(1.0)
    }

    /// The saturation analyzer's score (its weight in the fair-share value; WVA's default 1, and 0 reads
    /// as unset).
    pub fn saturation_score(&self) -> f64 {
        self.saturation().and_then(|a| a.score).unwrap_or(1.0)
    }

    /// Analyzers listed that this server does not run (WVA's opt-in `throughput`, or unknown ones).
    pub fn unsupported_analyzers(&self) -> Vec<String> {
        self.analyzers
            .iter()
            .filter(|a| a.kind() != "saturation" && a.enabled != Some(false))
            .map(|a| a.kind().to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer(name: &str) -> AnalyzerEntry {
        AnalyzerEntry {
            name: name.into(),
            ..AnalyzerEntry::default()
        }
    }

    /// WVA's selection (`internal/engines/saturation/engine.go:508-570` at 2976e4ee).
    #[test]
    fn the_default_entry_selects_the_engine() {
        let with = |name: Option<&str>, analyzers: Vec<AnalyzerEntry>| V2Fields {
            analyzer_name: name.map(str::to_string),
            analyzers,
            ..V2Fields::default()
        };
        assert_eq!(V2Fields::choice(None), AnalyzerChoice::V1);
        assert_eq!(
            V2Fields::choice(Some(&V2Fields::default())),
            AnalyzerChoice::V1
        );
        assert_eq!(
            V2Fields::choice(Some(&with(None, vec![analyzer("saturation")]))),
            AnalyzerChoice::V2
        );
        assert_eq!(
            V2Fields::choice(Some(&with(Some("saturation"), vec![]))),
            AnalyzerChoice::V2
        );
        assert_eq!(
            V2Fields::choice(Some(&with(Some("foo"), vec![]))),
            AnalyzerChoice::V1
        );
        assert!(matches!(
            V2Fields::choice(Some(&with(Some("queueing-model"), vec![]))),
            AnalyzerChoice::Refused { .. }
        ));
        // analyzers: wins over analyzerName (WVA checks the list first).
        assert_eq!(
            V2Fields::choice(Some(&with(
                Some("queueing-model"),
                vec![analyzer("saturation")]
            ))),
            AnalyzerChoice::V2
        );
    }

    #[test]
    fn thresholds_default_reset_and_per_analyzer() {
        let v1 = SaturationConfig::default();
        let t = V2Fields::default().thresholds(&v1);
        assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.85, 0.70));
        // U ≤ D after the merge: both reset.
        let bad = V2Fields {
            scale_up_threshold: Some(0.6),
            scale_down_boundary: Some(0.7),
            ..V2Fields::default()
        };
        let t = bad.thresholds(&v1);
        assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.85, 0.70));
        let per = V2Fields {
            scale_up_threshold: Some(0.9),
            analyzers: vec![AnalyzerEntry {
                scale_down_boundary: Some(0.5),
                ..analyzer("saturation")
            }],
            ..V2Fields::default()
        };
        let t = per.thresholds(&v1);
        assert_eq!((t.scale_up_threshold, t.scale_down_boundary), (0.9, 0.5));
        assert!(per.saturation_votes());
        let off = V2Fields {
            analyzers: vec![AnalyzerEntry {
                enabled: Some(false),
                ..analyzer("saturation")
            }],
            ..V2Fields::default()
        };
        assert!(!off.saturation_votes());
        let other = V2Fields {
            analyzers: vec![analyzer("throughput")],
            ..V2Fields::default()
        };
        assert!(!other.saturation_votes());
        assert_eq!(other.unsupported_analyzers(), ["throughput"]);
    }

    #[test]
    fn validation_names_the_rule() {
        let cases = [
            (Some(1.5), None, "scaleUpThreshold must be in (0, 1]"),
            (None, Some(0.0), "scaleDownBoundary must be in (0, 1]"),
            (
                Some(0.5),
                Some(0.6),
                "must be greater than scaleDownBoundary",
            ),
        ];
        for (up, down, want) in cases {
            let f = V2Fields {
                scale_up_threshold: up,
                scale_down_boundary: down,
                ..V2Fields::default()
            };
            let err = f.validate().unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        let f = V2Fields {
            analyzers: vec![AnalyzerEntry {
                scale_up_threshold: Some(0.5),
                scale_down_boundary: Some(0.5),
                ..analyzer("saturation")
            }],
            ..V2Fields::default()
        };
        assert!(f.validate().unwrap_err().starts_with("analyzers[0]."));
    }
}
