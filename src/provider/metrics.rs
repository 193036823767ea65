//! The metrics this server serves, by name and by meaning: the one list the HPA path (the engine), KEDA's
//! external scaler and the OpenAPI documents read.

/// The metrics served, by what they mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    DesiredReplicas,
    CurrentReplicas,
    DesiredRatio,
}

/// Every metric name served: WVA v0.4.1's (`inferno_*`) and v0.5's (`wva_*`).
pub const SERVED: &[(&str, MetricKind)] = &[
    ("inferno_desired_replicas", MetricKind::DesiredReplicas),
    ("inferno_current_replicas", MetricKind::CurrentReplicas),
    ("inferno_desired_ratio", MetricKind::DesiredRatio),
    ("wva_desired_replicas", MetricKind::DesiredReplicas),
    ("wva_current_replicas", MetricKind::CurrentReplicas),
    ("wva_desired_ratio", MetricKind::DesiredRatio),
];

/// An endpoint picker's signal, served as read (llm-d's KEDA guide scales on these through Prometheus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// The pool's flow-control saturation, per `inference_pool`.
    PoolSaturation,
    /// Requests in flight per `model_name`.
    RunningRequests,
    /// Requests waiting in the flow-control queue per `model_name`.
    QueueSize,
}

/// The signals served, under the picker's own names (the current and the deprecated ones), so an HPA
/// written against Prometheus Adapter's pass-through rules keeps its metric name.
pub const SIGNALS: &[(&str, SignalKind)] = &[
    (
        "llm_d_router_epp_flow_control_pool_saturation",
        SignalKind::PoolSaturation,
    ),
    (
        "inference_extension_flow_control_pool_saturation",
        SignalKind::PoolSaturation,
    ),
    // llm-d-router v0.10's names, which llm-d's KEDA guide queries.
    (
        "llm_d_epp_flow_control_pool_saturation",
        SignalKind::PoolSaturation,
    ),
    ("llm_d_epp_request_running", SignalKind::RunningRequests),
    ("llm_d_epp_flow_control_queue_size", SignalKind::QueueSize),
    (
        "llm_d_router_epp_running_requests",
        SignalKind::RunningRequests,
    ),
    (
        "inference_objective_running_requests",
        SignalKind::RunningRequests,
    ),
    (
        "llm_d_router_epp_flow_control_queue_size",
        SignalKind::QueueSize,
    ),
    (
        "inference_extension_flow_control_queue_size",
        SignalKind::QueueSize,
    ),
];

/// Which signal a requested metric name is, case-insensitively.
pub fn signal_kind(name: &str) -> Option<SignalKind> {
    SIGNALS
        .iter()
        .find(|(served, _)| served.eq_ignore_ascii_case(name))
        .map(|(_, kind)| *kind)
}

/// The name KEDA's external scaler reports its metric under (WVA v0.5's).
pub const SCALER_METRIC: &str = SERVED[3].0;

/// What a requested metric name means; matched case-insensitively, without allocating (the request
/// path asks on every call).
pub fn metric_kind(name: &str) -> Option<MetricKind> {
    SERVED
        .iter()
        .find(|(served, _)| served.eq_ignore_ascii_case(name))
        .map(|(_, kind)| *kind)
}

/// The served names (the variants' metrics, then the pickers' signals), for documents and messages.
pub fn metric_names() -> impl Iterator<Item = &'static str> {
    SERVED
        .iter()
        .map(|(name, _)| *name)
        .chain(SIGNALS.iter().map(|(name, _)| *name))
}

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
        for name in metric_names() {
            assert!(
                metric_kind(name).is_some() != signal_kind(name).is_some(),
                "{name}"
            );
        }
        assert_eq!(
            signal_kind("LLM_D_ROUTER_EPP_RUNNING_REQUESTS"),
            Some(SignalKind::RunningRequests)
        );
        assert_eq!(
            metric_kind(SCALER_METRIC),
            Some(MetricKind::DesiredReplicas)
        );
        assert_eq!(SCALER_METRIC, "wva_desired_replicas");
    }
}
