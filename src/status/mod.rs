//! VariantAutoscaling status write-back, events, and the per-variant gauges.
//!
//! Every replica refreshes its own gauges from its engine; only the Lease holder writes status (server-side
//! apply on the status subresource, never the spec) and records events. Writes happen every
//! `--status-interval` and as soon as a decision changes; a failed write is retried with backoff on a later
//! tick and never touches request serving.

mod events;
mod gauges;
mod patch;
mod view;
mod writer;

use std::time::Duration;

pub use gauges::GaugeLoop;
pub use writer::StatusWriter;

pub(crate) const FIELD_MANAGER: &str = "wva-metrics-server";
/// The Lease (in the server's namespace) whose holder writes status.
pub(crate) const LEASE_NAME: &str = "wva-metrics-server-status";
/// How often views and gauges are refreshed; a changed decision is written within one tick.
pub(crate) const STATUS_TICK: Duration = Duration::from_secs(2);
/// Longest message kept in a condition or an event note (the API server rejects much longer ones).
pub(crate) const MAX_MESSAGE_BYTES: usize = 1000;

/// The status writer's settings (`--status-interval`, `--lease-duration`, `--identity`).
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Full rewrite period.
    pub interval: Duration,
    /// Refresh period (at most `interval`).
    pub tick: Duration,
    pub lease_duration: Duration,
    pub identity: String,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::Value;

    use super::events::*;
    use super::gauges::*;
    use super::patch::*;
    use super::view::*;
    use super::*;
    use crate::cluster::snapshot::SourceKind;
    use crate::saturation::TargetReason;
    use crate::telemetry::Metrics;
    use kube::runtime::events::EventType;
    use serde_json::json;

    fn at(rfc3339: &str) -> Time {
        Time(rfc3339.parse().unwrap())
    }

    /// The patch as the API server receives it.
    fn patch(v: &VariantView, existing: &[Value], now: &str) -> Value {
        serde_json::to_value(status_patch(v, existing, at(now))).unwrap()
    }

    fn view(desired: Option<i64>) -> VariantView {
        VariantView {
            limited_by: None,
            kind: SourceKind::VariantAutoscaling,
            uid: None,
            namespace: "ns".into(),
            name: "v".into(),
            accelerator: Some("H100".into()),
            accelerator_unresolved: None,
            role: crate::saturation::Role::Both,
            spec_replicas: 2,
            ready_replicas: 2,
            cost: 10.0,
            desired,
            desired_reason: Some(TargetReason::ScaleUp),
            message: "scale up (cheapest variant, cost 10): avg spare KV 0.040 < trigger 0.1"
                .into(),
            metrics: cond(true, "MetricsFound", "fresh samples from 2/2 ready pods"),
            optimization: cond(true, "OptimizationSucceeded", "scale up"),
            target_resolved: cond(true, "TargetFound", "Deployment v"),
            load: None,
            kv_cache_usage: Some(0.9),
            queue_length: Some(6.0),
            capacity: None,
        }
    }

    /// An unresolved accelerator: a Warning once per reason, none once it resolves.
    #[test]
    fn unresolved_accelerator_warns_once_per_reason() {
        use super::events::accelerator_event;
        assert!(accelerator_event(&view(Some(2)), None).is_none());
        let mut v = view(Some(2));
        v.accelerator = Some("unresolved".into());
        v.accelerator_unresolved = Some("label x is missing".into());
        let e = accelerator_event(&v, None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("AcceleratorNotResolved", EventType::Warning)
        );
        assert!(e.note.unwrap().contains("label x is missing"));
        assert!(accelerator_event(&v, Some("label x is missing")).is_none());
        assert!(accelerator_event(&v, Some("label x is empty")).is_some());
    }

    #[test]
    fn patch_shape_is_status_only_and_keeps_transition_times() {
        let existing = vec![
            json!({"type": "MetricsAvailable", "status": "True", "reason": "MetricsFound", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
        ];
        let p = patch(&view(Some(3)), &existing, "2026-11-29T00:00:00Z");
        assert_eq!(p["apiVersion"], "llmd.ai/v1alpha1");
        assert_eq!(p["metadata"], json!({"name": "v", "namespace": "ns"}));
        assert!(p.get("spec").is_none(), "never writes the spec");
        assert_eq!(
            p["status"]["desiredOptimizedAlloc"],
            json!({"numReplicas": 3, "accelerator": "H100", "lastRunTime": "2026-11-29T00:00:00Z"})
        );
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(
            conds[0]["lastTransitionTime"], "2026-01-01T00:00:00Z",
            "unchanged status keeps its transition time"
        );
        assert_eq!(conds[1]["type"], "OptimizationReady");
        assert_eq!(conds[1]["lastTransitionTime"], "2026-11-29T00:00:00Z");
        assert!(
            p["status"].get("currentAlloc").is_none(),
            "no load figures, no invented currentAlloc"
        );

        let mut with_load = view(Some(3));
        with_load.load = Some(crate::sources::LoadFigures {
            arrival_rate: 120.0,
            avg_input_tokens: 100.0,
            avg_output_tokens: 50.0,
            ttft_average: 20.0,
            itl_average: 7.5,
            age: Duration::ZERO,
        });
        let p = patch(&with_load, &[], "2026-11-29T00:00:00Z");
        assert_eq!(p["status"]["currentAlloc"]["variantCost"], "20.00");
        assert_eq!(p["status"]["currentAlloc"]["load"]["arrivalRate"], "120.00");

        // No decision: conditions only, the last desiredOptimizedAlloc stays as it was.
        let p = patch(&view(None), &[], "2026-11-29T00:00:00Z");
        assert!(p["status"].get("desiredOptimizedAlloc").is_none());
        // A one-letter accelerator would fail WVA's CRD validation: skipped, like WVA.
        let mut short = view(Some(3));
        short.accelerator = Some("X".into());
        assert!(patch(&short, &[], "2026-11-29T00:00:00Z")["status"]
            .get("desiredOptimizedAlloc")
            .is_none());
    }

    #[test]
    fn every_variant_at_max_is_a_warning_once() {
        let mut v = view(Some(3));
        v.desired_reason = Some(TargetReason::ScaleUpBlocked);
        v.message = "scale-up needed (…) but no variant can take it: every variant with replicas is at its maxReplicas: v (3/3)".into();
        v.optimization = cond(true, "OptimizationSucceeded", v.message.clone());
        let e = event_for(&v, Some(3), None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("MaxReplicasReached", EventType::Warning)
        );
        assert!(
            event_for(&v, Some(3), Some(v.message.as_str())).is_none(),
            "once per change"
        );
    }

    #[test]
    fn gauges_follow_views_and_disappear_with_the_variant() {
        let metrics = Metrics::new();
        let mut known = GaugeSeries::default();
        let mut other = view(Some(1));
        other.name = "w".into();
        update_gauges(&metrics, &[view(Some(3)), other], &mut known);
        let text = metrics.encode();
        assert!(text.contains(r#"inferno_desired_replicas{variant_name="v",namespace="ns",accelerator_type="H100"} 3.0"#), "{text}");
        assert!(
            text.contains(
                r#"wva_desired_ratio{variant_name="v",namespace="ns",accelerator_type="H100"} 1.5"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"variant_name="w""#));
        update_gauges(&metrics, &[view(Some(2))], &mut known);
        let text = metrics.encode();
        assert!(
            !text.contains(r#"variant_name="w""#),
            "a variant that is gone leaves no series: {text}"
        );
        assert!(text.contains(r#"inferno_desired_replicas{variant_name="v",namespace="ns",accelerator_type="H100"} 2.0"#));
        // The decision's inputs and reason, for alerts and the dashboard; a changed reason replaces the old.
        assert!(text.contains(r#"wva_metrics_server_variant_kv_cache_usage{variant_name="v",namespace="ns",accelerator_type="H100"} 0.9"#), "{text}");
        assert!(text.contains(r#"wva_metrics_server_variant_queue_length{variant_name="v",namespace="ns",accelerator_type="H100"} 6.0"#));
        assert!(text.contains(r#"wva_metrics_server_variant_decision{variant_name="v",namespace="ns",role="both",reason="scaleUp"} 1"#), "{text}");
        let mut blocked = view(Some(2));
        blocked.desired_reason = Some(TargetReason::ScaleUpBlocked);
        update_gauges(&metrics, &[blocked], &mut known);
        let text = metrics.encode();
        assert!(text.contains(r#"reason="scaleUpBlocked"} 1"#));
        assert!(!text.contains(r#"reason="scaleUp"}"#), "{text}");
        // Saturation V2: WVA v0.9's gauges; withheld for an unresolved accelerator; gone with V2.
        let mut v2 = view(Some(2));
        v2.capacity = Some(super::view::CapacityFigures {
            model_id: "m".into(),
            utilization: 0.5,
            required: 670.5,
            spare: 0.0,
            kv_tokens_used: 11_000,
            kv_tokens_capacity: 16_000,
        });
        update_gauges(&metrics, &[v2.clone()], &mut known);
        let text = metrics.encode();
        for line in [
            r#"wva_saturation_utilization{variant_name="v",namespace="ns",model_name="m",accelerator_type="H100"} 0.5"#,
            r#"wva_required_capacity{variant_name="v",namespace="ns",model_name="m",unit="continuous"} 670.5"#,
            r#"wva_spare_capacity{variant_name="v",namespace="ns",model_name="m",unit="continuous"} 0.0"#,
            r#"wva_kv_cache_tokens_used{variant_name="v",namespace="ns",model_name="m"} 11000.0"#,
            r#"wva_kv_cache_tokens_capacity{variant_name="v",namespace="ns",model_name="m"} 16000.0"#,
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        v2.accelerator_unresolved = Some("label missing".into());
        update_gauges(&metrics, &[v2], &mut known);
        assert!(!metrics.encode().contains("wva_required_capacity{"));
    }

    #[test]
    fn refused_configuration_warns_once() {
        let mut v = view(Some(2));
        v.desired_reason = Some(TargetReason::Refused);
        v.message = "analyzerName: queueing-model is refused".into();
        v.optimization = cond(true, "OptimizationSucceeded", v.message.clone());
        let e = event_for(&v, Some(2), None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("OptimizationRefused", EventType::Warning)
        );
        assert!(event_for(&v, Some(2), Some(v.message.as_str())).is_none());
    }

    #[test]
    fn events_on_change_only() {
        let e = event_for(&view(Some(3)), Some(2), None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("ScaleUpRecommended", EventType::Normal)
        );
        assert!(e
            .note
            .unwrap()
            .starts_with("desired replicas 2 → 3: scale up"));
        assert_eq!(
            event_for(&view(Some(1)), Some(2), None).unwrap().reason,
            "ScaleDownRecommended"
        );
        let mut zero = view(Some(0));
        zero.desired_reason = Some(TargetReason::ScaleToZero);
        assert_eq!(
            event_for(&zero, Some(1), None).unwrap().reason,
            "ScaleToZeroRecommended"
        );
        let mut back = view(Some(1));
        back.desired_reason = Some(TargetReason::ScaleFromZero);
        assert_eq!(
            event_for(&back, Some(0), None).unwrap().reason,
            "ScaleFromZeroRecommended"
        );
        assert!(event_for(&view(Some(2)), Some(2), None).is_none());
        assert!(
            event_for(&view(Some(2)), None, None).is_none(),
            "first write: no change to report"
        );
        let mut bad = view(None);
        bad.optimization = cond(
            false,
            "InvalidConfiguration",
            "label inference.optimization/acceleratorName is missing",
        );
        bad.target_resolved = cond(true, "TargetFound", "");
        let e = event_for(&bad, None, None).unwrap();
        assert_eq!(
            (e.reason.as_str(), e.type_),
            ("InvalidConfiguration", EventType::Warning)
        );
        assert!(
            event_for(
                &bad,
                None,
                Some("label inference.optimization/acceleratorName is missing")
            )
            .is_none(),
            "once per change"
        );
        bad.target_resolved = cond(false, "TargetNotFound", "target Deployment ns/x not found");
        assert_eq!(
            event_for(&bad, None, None).unwrap().reason,
            "TargetNotFound"
        );
    }
}
