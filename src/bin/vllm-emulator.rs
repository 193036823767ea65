//! vllm-emulator: a tool for demos and tests, not a model server. Each `--listen` address is one
//! emulated vLLM pod serving a V1-style `/metrics` page (HELP/TYPE, `engine` and `model_name` labels,
//! counters with `_total` and `_created`, histograms) and an OpenAI-style `POST /v1/completions` that
//! occupies a sequence slot for `--service-time`: requests beyond `--max-num-seqs` wait (that is the
//! queue) and KV-cache usage grows with running sequences.
//!
//! Synthetic requests complete at the rate their slots allow, so `vllm:request_success_total` grows under
//! load and stays flat when idle (what scale to zero reads), and so do the series saturation V2 reads:
//! the per-request token histograms (`--prompt-tokens`, `--output-tokens`), the prefix-cache counters
//! (`--prefix-hit-rate`) and `vllm:cache_config_info` (`--num-gpu-blocks` of 16 tokens). Names, types
//! and labels are checked against vLLM's own definitions (`tests/it/vllm_defs.rs`).
//!
//! With `--engine sglang`, each pod serves SGLang's page instead (its `sglang:` names and labels, as
//! SGLang's `python/sglang/srt/metrics/collector.py` registers them): `token_usage`, `num_queue_reqs`,
//! `num_running_reqs`, `max_total_num_tokens`, the token counters and histograms, `num_requests_total`.
//!
//! With `--epp-token`, each address plays an InferencePool's endpoint picker instead: `/metrics` answers
//! only with `Authorization: Bearer <token>` and serves the flow-control queue gauge
//! `inference_extension_flow_control_queue_size{target_model_name}` (what scale from zero reads).
//!
//! Control endpoints (per pod), for scripted load and faults:
//!   POST /emulator/load   {"inFlight": 40}     hold 40 synthetic requests in flight (running + waiting)
//!   POST /emulator/fault  {"metrics": "ok" | "hang" | "error" | "garbage"}
//!   POST /emulator/queue  {"size": 3}          EPP mode: requests waiting in the flow-control queue
//!   POST /emulator/signals {"saturation": 0.8, "running": 12}  EPP mode: the pool's saturation (under
//!                         the current and the deprecated name) and the model's requests in flight
//!   GET  /emulator/state  the current numbers as JSON

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Debug, Parser, Clone)]
#[command(
    name = "vllm-emulator",
    about = "Emulates vLLM pods' /metrics and a completions endpoint, for demos and tests (not a model server)",
    after_help = "Per pod: GET /metrics, POST /v1/completions, and for scripted load and faults:\n  POST /emulator/load   {\"inFlight\": 40}   hold 40 synthetic requests in flight\n  POST /emulator/fault  {\"metrics\": \"ok\" | \"hang\" | \"error\" | \"garbage\"}\n  POST /emulator/queue  {\"size\": 3}        (--epp-token) requests waiting at the endpoint picker\n  POST /emulator/signals {\"saturation\": 0.8, \"running\": 12}  (--epp-token) pool saturation, requests in flight\n  GET  /emulator/state"
)]
struct Args {
    /// Address of one emulated pod (repeatable): --listen 127.0.0.2:8000 --listen 127.0.0.3:8000
    #[arg(long, required = true)]
    listen: Vec<SocketAddr>,
    /// model_name label value (vLLM's served model name).
    #[arg(long, default_value = "Qwen/Qwen3-0.6B")]
    model: String,
    /// Sequences processed at once; more requests wait.
    #[arg(long, default_value_t = 16)]
    max_num_seqs: usize,
    /// How long one request occupies its slot, in seconds.
    #[arg(long, default_value_t = 2.0)]
    service_time: f64,
    /// Fraction of the KV cache one running sequence uses.
    #[arg(long, default_value_t = 0.05)]
    kv_per_seq: f64,
    /// Data-parallel engines per pod (series with engine="0".."N-1"; load is split across them).
    #[arg(long, default_value_t = 1)]
    engines: usize,
    /// Synthetic requests in flight at start.
    #[arg(long, default_value_t = 0)]
    in_flight: usize,
    /// Play an InferencePool endpoint picker (EPP) instead of a vLLM pod: /metrics requires this bearer
    /// token and serves the flow-control queue for --model.
    #[arg(long)]
    epp_token: Option<String>,
    /// The InferencePool named in the EPP's series.
    #[arg(long, default_value = "pool")]
    epp_pool: String,
    /// Prompt tokens of each synthetic request (`vllm:request_prompt_tokens`).
    #[arg(long, default_value_t = 256)]
    prompt_tokens: u64,
    /// Generated tokens of each synthetic request (`vllm:request_generation_tokens`).
    #[arg(long, default_value_t = 128)]
    output_tokens: u64,
    /// Share of prompt tokens found in the prefix cache (`vllm:prefix_cache_hits` / `_queries`).
    #[arg(long, default_value_t = 0.0)]
    prefix_hit_rate: f64,
    /// KV-cache blocks of 16 tokens (`num_gpu_blocks` of `vllm:cache_config_info`; SGLang mode serves
    /// blocks × 16 as `sglang:max_total_num_tokens`).
    #[arg(long, default_value_t = 2048)]
    num_gpu_blocks: u64,
    /// The server whose page each pod serves.
    #[arg(long, value_enum, default_value_t = Engine::Vllm)]
    engine: Engine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Engine {
    Vllm,
    Sglang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum MetricsFault {
    #[default]
    Ok,
    Hang,
    Error,
    Garbage,
}

#[derive(Debug, Default)]
struct Counters {
    real_in_flight: usize,
    synthetic: usize,
    succeeded: u64,
    prompt_tokens: u64,
    generation_tokens: u64,
    latency_buckets: Vec<u64>,
    latency_count: u64,
    latency_sum: f64,
    /// Per-request token histograms (`vllm:request_prompt_tokens`, `vllm:request_generation_tokens`).
    prompt_hist: TokenHistogram,
    output_hist: TokenHistogram,
    prefix_queries: f64,
    prefix_hits: f64,
    fault: MetricsFault,
    /// Synthetic completions owed but not yet counted (fractions of a request).
    synthetic_done: f64,
    /// EPP mode: requests waiting in the flow-control queue.
    epp_queue: usize,
    /// EPP mode: the pool's flow-control saturation (none published until set) and the requests in flight.
    epp_saturation: Option<f64>,
    epp_running: usize,
}

struct Pod {
    args: Args,
    slots: Semaphore,
    counters: Mutex<Counters>,
    created: f64,
}

const BUCKETS: [f64; 10] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 20.0];

/// vLLM's token buckets (`build_1_2_5_buckets(max_model_len)` for a 10,000-token model).
const TOKEN_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// A token-count histogram: cumulative bucket counts, count and sum.
#[derive(Debug, Default)]
struct TokenHistogram {
    buckets: [u64; TOKEN_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl TokenHistogram {
    fn observe(&mut self, tokens: u64, times: u64) {
        for (i, b) in TOKEN_BUCKETS.iter().enumerate() {
            if tokens as f64 <= *b {
                self.buckets[i] += times;
            }
        }
        self.count += times;
        self.sum += (tokens * times) as f64;
    }
}

impl Pod {
    fn gauges(&self) -> (usize, usize, f64) {
        let c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let demand = c.real_in_flight + c.synthetic;
        let running = demand.min(self.args.max_num_seqs);
        let waiting = demand - running;
        let kv = (running as f64 * self.args.kv_per_seq).min(1.0);
        (running, waiting, kv)
    }

    fn page(&self) -> String {
        match self.args.engine {
            Engine::Vllm => self.vllm_page(),
            Engine::Sglang => self.sglang_page(),
        }
    }

    /// SGLang's page: scheduler gauges labelled with the model, engine type and ranks; tokenizer
    /// counters and histograms with the model alone (prometheus_client's `_total` and `_created`).
    #[allow(clippy::too_many_lines)] // The page, line by line, as SGLang renders it.
    fn sglang_page(&self) -> String {
        let (running, waiting, kv) = self.gauges();
        let c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &self.args.model;
        let ranks =
            format!("model_name=\"{m}\",engine_type=\"unified\",tp_rank=\"0\",pp_rank=\"0\"");
        let model = format!("model_name=\"{m}\"");
        let total_tokens = self.args.num_gpu_blocks * 16;
        let mut out = String::with_capacity(4096);
        #[allow(clippy::cast_precision_loss)] // Token counts far below 2^52.
        for (name, help, value) in [
            (
                "num_running_reqs",
                "The number of running requests.",
                running as f64,
            ),
            (
                "num_used_tokens",
                "The number of used tokens.",
                (kv * total_tokens as f64).round(),
            ),
            ("token_usage", "The token usage.", kv),
            (
                "num_queue_reqs",
                "The number of requests in the waiting queue.",
                waiting as f64,
            ),
            (
                "max_total_num_tokens",
                "Maximum total number of tokens",
                total_tokens as f64,
            ),
            (
                "cache_hit_rate",
                "The prefix cache hit rate.",
                self.args.prefix_hit_rate.clamp(0.0, 1.0),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP sglang:{name} {help}\n# TYPE sglang:{name} gauge\nsglang:{name}{{{ranks}}} {value:?}"
            );
        }
        #[allow(clippy::cast_precision_loss)]
        for (name, help, value) in [
            (
                "prompt_tokens",
                "Number of prefill tokens processed.",
                c.prompt_tokens as f64,
            ),
            (
                "generation_tokens",
                "Number of generation tokens processed.",
                c.generation_tokens as f64,
            ),
            (
                "cached_tokens",
                "Number of cached prompt tokens.",
                c.prefix_hits,
            ),
            (
                "num_requests",
                "Number of requests processed.",
                c.succeeded as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP sglang:{name}_total {help}\n# TYPE sglang:{name}_total counter\nsglang:{name}_total{{{model}}} {value:?}\n\
                 # HELP sglang:{name}_created {help}\n# TYPE sglang:{name}_created gauge\nsglang:{name}_created{{{model}}} {:e}",
                self.created
            );
        }
        for (name, help, h) in [
            (
                "sglang:prompt_tokens_histogram",
                "Histogram of prompt token length.",
                &c.prompt_hist,
            ),
            (
                "sglang:generation_tokens_histogram",
                "Histogram of generation token length.",
                &c.output_hist,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (i, b) in TOKEN_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{b:?}\",{model}}} {:?}",
                    h.buckets[i] as f64
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"+Inf\",{model}}} {:?}",
                h.count as f64
            );
            let _ = writeln!(out, "{name}_count{{{model}}} {:?}", h.count as f64);
            let _ = writeln!(out, "{name}_sum{{{model}}} {:?}", h.sum);
        }
        out
    }

    #[allow(clippy::too_many_lines)] // The page, line by line, as vLLM renders it.
    fn vllm_page(&self) -> String {
        let (running, waiting, kv) = self.gauges();
        let c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &self.args.model;
        let engines = self.args.engines.max(1);
        let mut out = String::with_capacity(8192);
        let split = |total: usize, e: usize| total / engines + usize::from(e < total % engines);
        let mut family =
            |name: &str, kind: &str, help: &str, series: &mut dyn FnMut(&mut String, &str)| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for e in 0..engines {
                    let labels = format!("engine=\"{e}\",model_name=\"{m}\"");
                    series(&mut out, &labels);
                }
            };
        let mut e = 0;
        family(
            "vllm:num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            &mut |o, l| {
                let _ = writeln!(
                    o,
                    "vllm:num_requests_running{{{l}}} {:.1}",
                    split(running, e) as f64
                );
                e += 1;
            },
        );
        let mut e = 0;
        family(
            "vllm:num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            &mut |o, l| {
                let _ = writeln!(
                    o,
                    "vllm:num_requests_waiting{{{l}}} {:.1}",
                    split(waiting, e) as f64
                );
                e += 1;
            },
        );
        family(
            "vllm:kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            &mut |o, l| {
                let _ = writeln!(o, "vllm:kv_cache_usage_perc{{{l}}} {kv}");
            },
        );
        let per = |v: u64| v as f64 / engines as f64;
        for (name, help, value) in [
            (
                "vllm:prompt_tokens",
                "Number of prefill tokens processed.",
                c.prompt_tokens,
            ),
            (
                "vllm:generation_tokens",
                "Number of generation tokens processed.",
                c.generation_tokens,
            ),
        ] {
            family(&format!("{name}_total"), "counter", help, &mut |o, l| {
                let _ = writeln!(o, "{name}_total{{{l}}} {:.1}", per(value));
            });
            family(&format!("{name}_created"), "gauge", help, &mut |o, l| {
                let _ = writeln!(o, "{name}_created{{{l}}} {:e}", self.created);
            });
        }
        family(
            "vllm:request_success_total",
            "counter",
            "Count of successfully processed requests.",
            &mut |o, l| {
                for reason in ["stop", "length", "abort"] {
                    let v = if reason == "stop" {
                        per(c.succeeded)
                    } else {
                        0.0
                    };
                    let _ = writeln!(
                        o,
                        "vllm:request_success_total{{{l},finished_reason=\"{reason}\"}} {v:.1}"
                    );
                }
            },
        );
        family(
            "vllm:e2e_request_latency_seconds",
            "histogram",
            "Histogram of e2e request latency in seconds.",
            &mut |o, l| {
                let engine = l.split('"').nth(1).unwrap_or("0");
                let labels_with =
                    |le: &str| format!("engine=\"{engine}\",le=\"{le}\",model_name=\"{m}\"");
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "vllm:e2e_request_latency_seconds_bucket{{{}}} {:.1}",
                        labels_with(&format!("{b:?}")),
                        per(c.latency_buckets.get(i).copied().unwrap_or(0))
                    );
                }
                let _ = writeln!(
                    o,
                    "vllm:e2e_request_latency_seconds_bucket{{{}}} {:.1}",
                    labels_with("+Inf"),
                    per(c.latency_count)
                );
                let _ = writeln!(
                    o,
                    "vllm:e2e_request_latency_seconds_count{{{l}}} {:.1}",
                    per(c.latency_count)
                );
                let _ = writeln!(
                    o,
                    "vllm:e2e_request_latency_seconds_sum{{{l}}} {}",
                    c.latency_sum / engines as f64
                );
            },
        );
        for (name, help, h) in [
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                &c.prompt_hist,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                &c.output_hist,
            ),
        ] {
            family(name, "histogram", help, &mut |o, l| {
                let engine = l.split('"').nth(1).unwrap_or("0");
                let with_le =
                    |le: &str| format!("engine=\"{engine}\",le=\"{le}\",model_name=\"{m}\"");
                for (i, b) in TOKEN_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "{name}_bucket{{{}}} {:.1}",
                        with_le(&format!("{b:?}")),
                        per(h.buckets[i])
                    );
                }
                let _ = writeln!(
                    o,
                    "{name}_bucket{{{}}} {:.1}",
                    with_le("+Inf"),
                    per(h.count)
                );
                let _ = writeln!(o, "{name}_count{{{l}}} {:.1}", per(h.count));
                let _ = writeln!(o, "{name}_sum{{{l}}} {}", h.sum / engines as f64);
            });
        }
        for (name, help, value) in [
            (
                "vllm:prefix_cache_queries",
                "Prefix cache queries, in terms of number of queried tokens.",
                c.prefix_queries,
            ),
            (
                "vllm:prefix_cache_hits",
                "Prefix cache hits, in terms of number of cached tokens.",
                c.prefix_hits,
            ),
        ] {
            family(&format!("{name}_total"), "counter", help, &mut |o, l| {
                let _ = writeln!(o, "{name}_total{{{l}}} {:.1}", value / engines as f64);
            });
            family(&format!("{name}_created"), "gauge", help, &mut |o, l| {
                let _ = writeln!(o, "{name}_created{{{l}}} {:e}", self.created);
            });
        }
        // Not per model: vLLM labels it with the cache configuration and the engine only.
        let _ = writeln!(
            out,
            "# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n# TYPE vllm:cache_config_info gauge"
        );
        for e in 0..engines {
            let _ = writeln!(
                out,
                "vllm:cache_config_info{{block_size=\"16\",cache_dtype=\"auto\",enable_prefix_caching=\"True\",engine=\"{e}\",gpu_memory_utilization=\"0.9\",num_gpu_blocks=\"{}\"}} 1.0",
                self.args.num_gpu_blocks
            );
        }
        out
    }

    /// Synthetic requests finish at `running / service_time` per second and are replaced (the in-flight
    /// count is held), so the counters move under load only.
    fn complete_synthetic(&self, dt: f64) {
        let mut c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let running = c.synthetic.min(self.args.max_num_seqs);
        if running == 0 {
            return;
        }
        c.synthetic_done += running as f64 * dt / self.args.service_time.max(0.05);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        // A small positive count.
        let whole = c.synthetic_done.floor() as u64;
        c.synthetic_done -= whole as f64;
        c.succeeded += whole;
        let (prompt, output) = (self.args.prompt_tokens, self.args.output_tokens);
        self.count_tokens(&mut c, prompt, output, whole);
    }

    /// `times` finished requests of `prompt` and `output` tokens, in every token counter.
    fn count_tokens(&self, c: &mut Counters, prompt: u64, output: u64, times: u64) {
        c.prompt_tokens += prompt * times;
        c.generation_tokens += output * times;
        c.prompt_hist.observe(prompt, times);
        c.output_hist.observe(output, times);
        let queried = (prompt * times) as f64;
        c.prefix_queries += queried;
        c.prefix_hits += (queried * self.args.prefix_hit_rate.clamp(0.0, 1.0)).floor();
    }

    fn epp_page(&self) -> String {
        let c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let m = &self.args.model;
        let pool = &self.args.epp_pool;
        let mut page = format!(
            "# HELP inference_extension_flow_control_queue_size Current number of requests in the flow control queue.\n\
             # TYPE inference_extension_flow_control_queue_size gauge\n\
             inference_extension_flow_control_queue_size{{fairness_id=\"default\",inference_pool=\"{pool}\",model_name=\"{m}\",priority=\"0\",target_model_name=\"{m}\"}} {}\n\
             # HELP inference_pool_ready_pods The number of ready pods in the inference server pool.\n\
             # TYPE inference_pool_ready_pods gauge\n\
             inference_pool_ready_pods{{name=\"{pool}\"}} 0\n",
            c.epp_queue
        );
        // As llm-d-router publishes them: the current name and the deprecated one, side by side.
        if let Some(sat) = c.epp_saturation {
            for name in [
                "llm_d_router_epp_flow_control_pool_saturation",
                "inference_extension_flow_control_pool_saturation",
            ] {
                let _ = write!(
                    page,
                    "# TYPE {name} gauge\n{name}{{inference_pool=\"{pool}\"}} {sat}\n"
                );
            }
        }
        if c.epp_running > 0 {
            for name in [
                "llm_d_router_epp_running_requests",
                "inference_objective_running_requests",
            ] {
                let _ = write!(
                    page,
                    "# TYPE {name} gauge\n{name}{{model_name=\"{m}\"}} {}\n",
                    c.epp_running
                );
            }
        }
        page
    }

    fn record(&self, latency: f64, prompt: u64, generated: u64) {
        let mut c = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        c.succeeded += 1;
        self.count_tokens(&mut c, prompt, generated, 1);
        if c.latency_buckets.len() != BUCKETS.len() {
            c.latency_buckets = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if latency <= *b {
                c.latency_buckets[i] += 1;
            }
        }
        c.latency_count += 1;
        c.latency_sum += latency;
    }
}

type Response = http::Response<Full<Bytes>>;

/// A response with a status, an optional content type and a body.
fn reply(code: StatusCode, content_type: Option<&'static str>, body: impl Into<Bytes>) -> Response {
    let mut resp = http::Response::new(Full::new(body.into()));
    *resp.status_mut() = code;
    if let Some(t) = content_type {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(t));
    }
    resp
}

fn json(value: &serde_json::Value) -> Response {
    reply(StatusCode::OK, Some("application/json"), value.to_string())
}

const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The largest control or completion request body read.
const MAX_BODY: usize = 64 * 1024;

/// A request's JSON body, or the 400 that says why it is not one.
async fn body_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response> {
    let bad = |why: String| reply(StatusCode::BAD_REQUEST, Some("text/plain"), why + "\n");
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| bad(format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("not the expected JSON: {e}")))
}

/// A control request: its JSON body applied to the pod's counters, answered with the new state.
async fn control<T: serde::de::DeserializeOwned>(
    pod: &Pod,
    req: Request<Incoming>,
    apply: impl FnOnce(&mut Counters, T),
) -> Response {
    match body_json::<T>(req).await {
        Ok(body) => {
            apply(
                &mut pod
                    .counters
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                body,
            );
            state(pod)
        }
        Err(resp) => resp,
    }
}

/// Routes one request of one emulated pod.
async fn route(pod: Arc<Pod>, req: Request<Incoming>) -> Response {
    let path = req.uri().path().to_string();
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/metrics") => metrics(&pod, req.headers()).await,
        (Method::POST, "/v1/completions") => match body_json(req).await {
            Ok(c) => completions(&pod, c).await,
            Err(resp) => resp,
        },
        (Method::POST, "/emulator/load") => {
            control(&pod, req, |c, l: Load| c.synthetic = l.in_flight).await
        }
        (Method::POST, "/emulator/fault") => {
            control(&pod, req, |c, f: Fault| c.fault = f.metrics).await
        }
        (Method::POST, "/emulator/queue") => {
            control(&pod, req, |c, q: Queue| c.epp_queue = q.size).await
        }
        (Method::POST, "/emulator/signals") => {
            control(&pod, req, |c, s: Signals| {
                c.epp_saturation = s.saturation;
                c.epp_running = s.running;
            })
            .await
        }
        (Method::GET, "/emulator/state") => state(&pod),
        (Method::GET, "/health") => reply(StatusCode::OK, Some("text/plain"), "ok"),
        (
            _,
            "/metrics" | "/v1/completions" | "/emulator/load" | "/emulator/fault"
            | "/emulator/queue" | "/emulator/signals" | "/emulator/state" | "/health",
        ) => reply(StatusCode::METHOD_NOT_ALLOWED, None, ""),
        _ => reply(StatusCode::NOT_FOUND, None, ""),
    }
}

async fn metrics(pod: &Pod, headers: &http::HeaderMap) -> Response {
    if let Some(token) = &pod.args.epp_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return reply(
                StatusCode::UNAUTHORIZED,
                Some("text/plain; charset=utf-8"),
                "bearer token required\n",
            );
        }
        return reply(StatusCode::OK, Some(EXPOSITION), pod.epp_page());
    }
    let fault = pod
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .fault;
    match fault {
        MetricsFault::Hang => std::future::pending().await,
        MetricsFault::Error => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("text/plain; charset=utf-8"),
            "emulated failure\n",
        ),
        MetricsFault::Garbage => reply(
            StatusCode::OK,
            Some(EXPOSITION),
            "<html>not metrics</html>\n",
        ),
        MetricsFault::Ok => reply(StatusCode::OK, Some(EXPOSITION), pod.page()),
    }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    prompt: String,
    #[serde(default = "default_max_tokens")]
    max_tokens: u64,
}

fn default_max_tokens() -> u64 {
    16
}

async fn completions(pod: &Pod, req: Completion) -> Response {
    let start = std::time::Instant::now();
    pod.counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .real_in_flight += 1;
    let permit = pod.slots.acquire().await;
    tokio::time::sleep(Duration::from_secs_f64(pod.args.service_time)).await;
    drop(permit);
    pod.counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .real_in_flight -= 1;
    let prompt_tokens = (req.prompt.split_whitespace().count() as u64).max(1);
    pod.record(start.elapsed().as_secs_f64(), prompt_tokens, req.max_tokens);
    let body = serde_json::json!({
        "id": "cmpl-emulated", "object": "text_completion", "model": pod.args.model,
        "choices": [{"index": 0, "text": " emulated", "finish_reason": "length"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": req.max_tokens, "total_tokens": prompt_tokens + req.max_tokens}
    });
    json(&body)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Load {
    in_flight: usize,
}

#[derive(Deserialize)]
struct Fault {
    metrics: MetricsFault,
}

#[derive(Deserialize)]
struct Queue {
    size: usize,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Signals {
    saturation: Option<f64>,
    #[serde(default)]
    running: usize,
}

fn state(pod: &Pod) -> Response {
    let (running, waiting, kv) = pod.gauges();
    let c = pod
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    json(
        &serde_json::json!({"running": running, "waiting": waiting, "kvCacheUsage": kv, "inFlight": c.synthetic, "succeeded": c.succeeded, "metricsFault": c.fault, "eppQueue": c.epp_queue, "eppSaturation": c.epp_saturation, "eppRunning": c.epp_running}),
    )
}

/// Serves one emulated pod: HTTP/1.1 and h2c on every accepted connection.
async fn serve(listener: tokio::net::TcpListener, pod: Arc<Pod>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("vllm-emulator: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let pod = pod.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let pod = pod.clone();
                async move { Ok::<_, std::convert::Infallible>(route(pod, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.max_num_seqs == 0 || args.service_time < 0.0 || !(0.0..=1.0).contains(&args.kv_per_seq)
    {
        eprintln!(
            "error: --max-num-seqs must be >= 1, --service-time >= 0 and --kv-per-seq within 0..1"
        );
        return std::process::ExitCode::FAILURE;
    }
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut tasks = Vec::new();
    for addr in &args.listen {
        let pod = Arc::new(Pod {
            args: args.clone(),
            slots: Semaphore::new(args.max_num_seqs),
            counters: Mutex::new(Counters {
                synthetic: args.in_flight,
                latency_buckets: vec![0; BUCKETS.len()],
                ..Default::default()
            }),
            created,
        });
        let ticking = pod.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                ticking.complete_synthetic(0.1);
            }
        });
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: listening on {addr}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        eprintln!(
            "vllm-emulator: pod on http://{addr} (model {:?}, max-num-seqs {})",
            args.model, args.max_num_seqs
        );
        tasks.push(tokio::spawn(serve(listener, pod)));
    }
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
