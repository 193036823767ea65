//! The metrics this server serves, by name and by meaning.

/// The metrics served, by what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    DesiredReplicas,
    CurrentReplicas,
    DesiredRatio,
}

/// WVA v0.4.1 names (`inferno_*`) and v0.5 names (`wva_*`); matched case-insensitively.
pub fn metric_kind(name: &str) -> Option<MetricKind> {
    let lower = name.to_ascii_lowercase();
    let base = lower
        .strip_prefix("inferno_")
        .or_else(|| lower.strip_prefix("wva_"))?;
    match base {
        "desired_replicas" => Some(MetricKind::DesiredReplicas),
        "current_replicas" => Some(MetricKind::CurrentReplicas),
        "desired_ratio" => Some(MetricKind::DesiredRatio),
        _ => None,
    }
}

pub const METRIC_NAMES: &[&str] = &[
    "inferno_desired_replicas",
    "inferno_current_replicas",
    "inferno_desired_ratio",
    "wva_desired_replicas",
    "wva_current_replicas",
    "wva_desired_ratio",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_case_insensitive() {
        assert_eq!(
            metric_kind("INFERNO_Desired_Replicas"),
            Some(MetricKind::DesiredReplicas)
        );
        assert_eq!(
            metric_kind("wva_desired_ratio"),
            Some(MetricKind::DesiredRatio)
        );
        assert_eq!(
            metric_kind("wva_current_replicas"),
            Some(MetricKind::CurrentReplicas)
        );
        assert_eq!(metric_kind("desired_replicas"), None);
        for name in METRIC_NAMES {
            assert!(metric_kind(name).is_some(), "{name}");
        }
    }
}
