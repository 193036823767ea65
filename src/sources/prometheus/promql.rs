//! WVA's PromQL: the per-pod peak queries, the load queries and the scale-to-zero query, with label
//! values escaped. Pure functions.

use std::time::Duration;

/// Escapes a PromQL label value (backslash and double quote), as WVA's saturation queries do.
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per-pod peak of the KV-cache usage over the window, falling back per pod to the pre-0.9.2 name and
/// to SGLang's `sglang:token_usage` (each query of this file reads SGLang's series beside vLLM's, per
/// pod, so a model served by both engines is read whole).
pub(crate) fn kv_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    let w = window.as_secs().max(1);
    format!(
        "max by (pod, instance) (max_over_time(vllm:kv_cache_usage_perc{{{sel}}}[{w}s])) or max by (pod, instance) (max_over_time(vllm:gpu_cache_usage_perc{{{sel}}}[{w}s])) or max by (pod, instance) (max_over_time(sglang:token_usage{{{sel}}}[{w}s]))"
    )
}

/// Per-pod peak of the waiting queue over the window.
pub(crate) fn queue_query(namespace: &str, model: &str, window: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    let w = window.as_secs().max(1);
    format!(
        "max by (pod, instance) (max_over_time(vllm:num_requests_waiting{{{sel}}}[{w}s])) or max by (pod, instance) (max_over_time(sglang:num_queue_reqs{{{sel}}}[{w}s]))"
    )
}

/// WVA v0.4.1's load queries (its `internal/collector` at v0.4.1), label values escaped. ITL prefers
/// `vllm:inter_token_latency_seconds` (vLLM >= 0.10.2) and falls back to `time_per_output_token_seconds`.
pub(crate) fn load_queries(namespace: &str, model: &str) -> [(&'static str, String); 5] {
    let sel = format!(
        "model_name=\"{}\",namespace=\"{}\"",
        escape_label(model),
        escape_label(namespace)
    );
    let avg =
        |m: &str| format!("sum(rate({m}_sum{{{sel}}}[1m]))/sum(rate({m}_count{{{sel}}}[1m]))");
    let either = |a: String, b: String| format!("({a}) or ({b})");
    [
        (
            "arrivalRate",
            either(
                format!("sum(rate(vllm:request_success_total{{{sel}}}[1m]))"),
                format!("sum(rate(sglang:num_requests_total{{{sel}}}[1m]))"),
            ),
        ),
        (
            "avgInputTokens",
            either(
                avg("vllm:request_prompt_tokens"),
                avg("sglang:prompt_tokens_histogram"),
            ),
        ),
        (
            "avgOutputTokens",
            either(
                avg("vllm:request_generation_tokens"),
                avg("sglang:generation_tokens_histogram"),
            ),
        ),
        (
            "ttftAverage",
            either(
                avg("vllm:time_to_first_token_seconds"),
                avg("sglang:time_to_first_token_seconds"),
            ),
        ),
        (
            "itlAverage",
            format!(
                "({}) or ({}) or ({})",
                avg("vllm:inter_token_latency_seconds"),
                avg("vllm:time_per_output_token_seconds"),
                avg("sglang:inter_token_latency_seconds")
            ),
        ),
    ]
}

/// Saturation V2's per-pod figures (WVA v0.9's `cache_config_info`, `avg_input_tokens`,
/// `avg_output_tokens` and `prefix_cache_hit_rate` queries, keyed by pod): the KV cache's blocks and block
/// size (the metric has no `model_name`, so the namespace alone selects it), and the request shape over
/// five minutes. The hit rate reads the counters under the names Prometheus stores (`_total`). SGLang's
/// (WVA v0.9's SGLang queries): `sglang:max_total_num_tokens` is the capacity in tokens (a series
/// without `num_gpu_blocks`), its token histograms the request shape, cached over prompt tokens the
/// hit rate.
pub(crate) fn token_queries(namespace: &str, model: &str) -> [(&'static str, String); 4] {
    let ns = escape_label(namespace);
    let sel = format!("namespace=\"{ns}\",model_name=\"{}\"", escape_label(model));
    let ratio = |num: &str, den: &str| {
        format!("max by (pod, instance) (rate({num}{{{sel}}}[5m]) / rate({den}{{{sel}}}[5m]))")
    };
    let avg = |vllm: &str, sglang: &str| {
        format!(
            "{} or {}",
            ratio(&format!("{vllm}_sum"), &format!("{vllm}_count")),
            ratio(&format!("{sglang}_sum"), &format!("{sglang}_count"))
        )
    };
    [
        (
            "cacheConfig",
            format!("max by (pod, instance, num_gpu_blocks, block_size) (vllm:cache_config_info{{namespace=\"{ns}\"}}) or max by (pod, instance) (sglang:max_total_num_tokens{{{sel}}})"),
        ),
        (
            "avgInputTokens",
            avg("vllm:request_prompt_tokens", "sglang:prompt_tokens_histogram"),
        ),
        (
            "avgOutputTokens",
            avg(
                "vllm:request_generation_tokens",
                "sglang:generation_tokens_histogram",
            ),
        ),
        (
            "prefixCacheHitRate",
            format!(
                "{} or {}",
                ratio(
                    "vllm:prefix_cache_hits_total",
                    "vllm:prefix_cache_queries_total"
                ),
                ratio("sglang:cached_tokens_total", "sglang:prompt_tokens_total")
            ),
        ),
    ]
}

/// WVA's scale-to-zero query: requests served by the model during the retention period, counting
/// SGLang's `sglang:num_requests_total` too (WVA skips scale to zero for SGLang models).
pub(crate) fn idle_query(namespace: &str, model: &str, retention: Duration) -> String {
    let sel = format!(
        "namespace=\"{}\",model_name=\"{}\"",
        escape_label(namespace),
        escape_label(model)
    );
    let r = retention.as_secs().max(1);
    format!(
        "sum(increase(vllm:request_success_total{{{sel}}}[{r}s]) or increase(sglang:num_requests_total{{{sel}}}[{r}s]))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_queries_match_wva_keyed_by_pod() {
        let q = token_queries("ns", "m\"x");
        assert!(q[0].1.starts_with(
            "max by (pod, instance, num_gpu_blocks, block_size) (vllm:cache_config_info{namespace=\"ns\"}) or max by (pod, instance) (sglang:max_total_num_tokens{"
        ), "{}", q[0].1);
        assert!(q[1].1.starts_with(
            "max by (pod, instance) (rate(vllm:request_prompt_tokens_sum{namespace=\"ns\",model_name=\"m\\\"x\"}[5m]) / rate(vllm:request_prompt_tokens_count{namespace=\"ns\",model_name=\"m\\\"x\"}[5m])) or "
        ), "{}", q[1].1);
        assert!(q[1].1.contains("sglang:prompt_tokens_histogram_count"));
        assert!(
            q[3].1.contains("sglang:cached_tokens_total")
                && q[3].1.contains("sglang:prompt_tokens_total")
        );
        assert!(q[3].1.contains("vllm:prefix_cache_hits_total") && q[3].1.contains("[5m]"));
    }

    #[test]
    fn queries_escape_label_values() {
        assert_eq!(
            queue_query("ns", "a\"b\\c", Duration::from_secs(60)),
            r#"max by (pod, instance) (max_over_time(vllm:num_requests_waiting{namespace="ns",model_name="a\"b\\c"}[60s])) or max by (pod, instance) (max_over_time(sglang:num_queue_reqs{namespace="ns",model_name="a\"b\\c"}[60s]))"#
        );
        assert!(kv_query("ns", "m", Duration::from_secs(60))
            .contains(" or max by (pod, instance) (max_over_time(vllm:gpu_cache_usage_perc{"));
    }

    #[test]
    fn load_queries_match_wva_and_fall_back_for_itl() {
        let q = load_queries("ns", "m");
        assert_eq!(
            q[0].1,
            r#"(sum(rate(vllm:request_success_total{model_name="m",namespace="ns"}[1m]))) or (sum(rate(sglang:num_requests_total{model_name="m",namespace="ns"}[1m])))"#
        );
        assert!(q[1].1.starts_with(
            r#"(sum(rate(vllm:request_prompt_tokens_sum{model_name="m",namespace="ns"}[1m]))/sum(rate(vllm:request_prompt_tokens_count{model_name="m",namespace="ns"}[1m]))) or ("#
        ));
        assert!(
            q[4].1.contains("vllm:inter_token_latency_seconds_sum")
                && q[4].1.contains(") or (")
                && q[4].1.contains("vllm:time_per_output_token_seconds_count")
        );
    }
}
