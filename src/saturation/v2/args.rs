//! The engine parameters a variant's capacity can be estimated from, read from its pod template's
//! container images, commands, arguments and environment as WVA v0.9 reads them: which server runs
//! (`internal/inferenceengine/engine.go`), then vLLM's flags
//! (`internal/engines/analyzers/saturation_v2/deployment_parser.go`) or SGLang's (`sglang_parser.go`).
//!
//! Parsing never fails: a flag whose value does not parse keeps its default, as in WVA.

use serde::{Deserialize, Serialize};

/// The inference server a pod template runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceEngine {
    #[default]
    Vllm,
    Sglang,
}

impl InferenceEngine {
    /// SGLang when some container's image names it, or its command line launches it
    /// (`sglang.launch_server`, `sglang serve`); vLLM otherwise. As WVA v0.9 detects it.
    pub fn detect(containers: &[ContainerArgs<'_>]) -> Self {
        let sglang = containers.iter().any(|c| {
            if c.image.to_ascii_lowercase().contains("sglang") {
                return true;
            }
            let line = c
                .command
                .iter()
                .chain(c.args)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase();
            line.contains("sglang.launch_server") || line.contains("sglang serve")
        });
        if sglang {
            InferenceEngine::Sglang
        } else {
            InferenceEngine::Vllm
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InferenceEngine::Vllm => "vllm",
            InferenceEngine::Sglang => "sglang",
        }
    }

    fn is_vllm(&self) -> bool {
        *self == InferenceEngine::Vllm
    }
}

/// What the capacity estimate needs of one server's configuration (vLLM's flag names; SGLang's flags
/// map onto the same fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct EngineParams {
    #[serde(skip_serializing_if = "InferenceEngine::is_vllm")]
    pub engine: InferenceEngine,
    /// vLLM's `--gpu-memory-utilization`, SGLang's `--mem-fraction-static`.
    pub gpu_memory_utilization: f64,
    pub block_size: i64,
    pub kv_cache_dtype: String,
    pub tensor_parallel_size: i64,
    /// `--num-gpu-blocks-override` (0: unset).
    pub num_gpu_blocks_override: i64,
    /// SGLang's `--max-total-tokens` (0: unset).
    #[serde(skip_serializing_if = "is_zero")]
    pub total_kv_tokens_override: i64,
    /// `--max-num-batched-tokens` (0: the engine's default, see [`EngineParams::effective_max_batched_tokens`]).
    pub max_num_batched_tokens: i64,
    pub max_num_seqs: i64,
    /// `--max-model-len` (0: the model's).
    pub max_model_len: i64,
    pub enforce_eager: bool,
    /// vLLM's V1 engine (unless the environment sets `VLLM_USE_V1=0`).
    pub v1_engine: bool,
    pub chunked_prefill: bool,
}

impl Default for EngineParams {
    /// vLLM's defaults (V1 engine, chunked prefill).
    fn default() -> Self {
        Self {
            engine: InferenceEngine::Vllm,
            gpu_memory_utilization: 0.9,
            block_size: 16,
            kv_cache_dtype: "auto".into(),
            tensor_parallel_size: 1,
            num_gpu_blocks_override: 0,
            total_kv_tokens_override: 0,
            max_num_batched_tokens: 0,
            max_num_seqs: 256,
            max_model_len: 0,
            enforce_eager: false,
            v1_engine: true,
            chunked_prefill: true,
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One container's image, command line and environment, as the pod template has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerArgs<'a> {
    pub image: &'a str,
    pub command: &'a [String],
    pub args: &'a [String],
    /// `(name, value)` of the container's `env` entries with a literal value.
    pub env: &'a [(String, String)],
}

impl EngineParams {
    /// SGLang's defaults (its `server_args.py`, as WVA takes them): page size 1, chunked prefill on.
    pub fn sglang() -> Self {
        Self {
            engine: InferenceEngine::Sglang,
            block_size: 1,
            ..Self::default()
        }
    }

    /// Reads every container of the (leader) pod template, in order; later flags win.
    pub fn from_containers(containers: &[ContainerArgs<'_>]) -> Self {
        if InferenceEngine::detect(containers) == InferenceEngine::Sglang {
            let mut p = Self::sglang();
            for c in containers {
                p.apply_flags(&command_line(c.command, c.args));
            }
            return p;
        }
        let mut p = Self::default();
        for c in containers {
            if c.env.iter().any(|(k, v)| k == "VLLM_USE_V1" && v == "0") {
                p.v1_engine = false;
                p.chunked_prefill = false;
            }
            let tokens = command_line(c.command, c.args);
            p.apply_flags(&tokens);
        }
        if p.v1_engine {
            p.chunked_prefill = true;
        }
        p
    }

    fn apply_flags(&mut self, tokens: &[String]) {
        let mut i = 0;
        while i < tokens.len() {
            let arg = &tokens[i];
            i += 1;
            if !arg.starts_with("--") {
                continue;
            }
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (normalize(k), v),
                None => {
                    // The next token is the value unless it is a flag: a boolean flag swallows a
                    // following positional argument, as WVA's parser does.
                    let value = match tokens.get(i) {
                        Some(next) if !next.starts_with("--") => {
                            i += 1;
                            next.as_str()
                        }
                        _ => "",
                    };
                    (normalize(arg), value)
                }
            };
            match self.engine {
                InferenceEngine::Vllm => self.apply(&key, value),
                InferenceEngine::Sglang => self.apply_sglang(&key, value),
            }
        }
    }

    /// SGLang's flags onto the same fields (WVA's `applySGLangParam`).
    fn apply_sglang(&mut self, key: &str, value: &str) {
        let int = |slot: &mut i64| {
            if let Ok(v) = value.parse::<i64>() {
                *slot = v;
            }
        };
        match key {
            "mem_fraction_static" => {
                if let Ok(v) = value.parse::<f64>() {
                    self.gpu_memory_utilization = v;
                }
            }
            "page_size" => int(&mut self.block_size),
            "kv_cache_dtype" => self.kv_cache_dtype = value.to_string(),
            "tp_size" | "tensor_parallel_size" | "tp" => int(&mut self.tensor_parallel_size),
            "max_running_requests" => int(&mut self.max_num_seqs),
            "max_total_tokens" => int(&mut self.total_kv_tokens_override),
            "context_length" => int(&mut self.max_model_len),
            "max_prefill_tokens" => int(&mut self.max_num_batched_tokens),
            // `--chunked-prefill-size -1` turns chunking off.
            "chunked_prefill_size" => {
                if let Ok(v) = value.parse::<i64>() {
                    if v > 0 {
                        self.max_num_batched_tokens = v;
                        self.chunked_prefill = true;
                    } else {
                        self.chunked_prefill = false;
                    }
                }
            }
            "disable_cuda_graph" => self.enforce_eager = true,
            _ => {}
        }
    }

    fn apply(&mut self, key: &str, value: &str) {
        let int = |slot: &mut i64| {
            if let Ok(v) = value.parse::<i64>() {
                *slot = v;
            }
        };
        match key {
            "gpu_memory_utilization" => {
                if let Ok(v) = value.parse::<f64>() {
                    self.gpu_memory_utilization = v;
                }
            }
            "block_size" => int(&mut self.block_size),
            "kv_cache_dtype" => self.kv_cache_dtype = value.to_string(),
            "tensor_parallel_size" => int(&mut self.tensor_parallel_size),
            "num_gpu_blocks_override" => int(&mut self.num_gpu_blocks_override),
            "max_num_batched_tokens" => int(&mut self.max_num_batched_tokens),
            "max_num_seqs" => int(&mut self.max_num_seqs),
            "max_model_len" => int(&mut self.max_model_len),
            "enforce_eager" => self.enforce_eager = true,
            "enable_chunked_prefill" => self.chunked_prefill = true,
            _ => {}
        }
    }

    /// The per-step token budget B: `--max-num-batched-tokens`, else the engine's default (8192 with
    /// the V1 engine's chunked prefill, 2048 with V0's, else max(`--max-model-len`, 2048)).
    pub fn effective_max_batched_tokens(&self) -> i64 {
        if self.max_num_batched_tokens > 0 {
            self.max_num_batched_tokens
        } else if self.chunked_prefill {
            if self.v1_engine {
                8192
            } else {
                2048
            }
        } else {
            self.max_model_len.max(2048)
        }
    }

    /// KV tokens the flags fix outright (vLLM's `--num-gpu-blocks-override` × block size, SGLang's
    /// `--max-total-tokens`), 0 when they do not.
    pub fn total_kv_tokens(&self) -> i64 {
        if self.num_gpu_blocks_override > 0 {
            self.num_gpu_blocks_override.saturating_mul(self.block_size)
        } else {
            self.total_kv_tokens_override.max(0)
        }
    }

    /// Whether two variants' servers have the same capacity per replica on the same hardware (WVA's
    /// `IsCapacityCompatible`).
    pub fn capacity_compatible(&self, other: &EngineParams) -> bool {
        self.engine == other.engine
            && self.gpu_memory_utilization == other.gpu_memory_utilization
            && self.block_size == other.block_size
            && self.kv_cache_dtype == other.kv_cache_dtype
            && self.tensor_parallel_size == other.tensor_parallel_size
            && self.num_gpu_blocks_override == other.num_gpu_blocks_override
            && self.total_kv_tokens_override == other.total_kv_tokens_override
            && self.effective_max_batched_tokens() == other.effective_max_batched_tokens()
    }
}

/// `--max-num-seqs` → `max_num_seqs`.
fn normalize(flag: &str) -> String {
    flag.trim_start_matches('-').replace('-', "_")
}

/// `command` then `args`; when they run a shell (`sh -c "…"`), the words of its script instead.
fn command_line(command: &[String], args: &[String]) -> Vec<String> {
    let all: Vec<&String> = command.iter().chain(args).collect();
    for (i, base) in all.iter().enumerate() {
        if matches!(base.as_str(), "/bin/sh" | "/bin/bash" | "sh" | "bash")
            && all.get(i + 1).is_some_and(|a| *a == "-c")
        {
            if let Some(script) = all.get(i + 2) {
                return shell_words(script);
            }
        }
    }
    all.into_iter().cloned().collect()
}

/// Splits a shell script on spaces, honouring '…' and "…" (WVA's `splitShellString`: no escapes, no
/// other whitespace).
fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let (mut single, mut double) = (false, false);
    for ch in s.chars() {
        match ch {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ' ' if !single && !double => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    fn parse(command: &[&str], args: &[&str], env: &[(&str, &str)]) -> EngineParams {
        let (command, args) = (strings(command), strings(args));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EngineParams::from_containers(&[ContainerArgs {
            image: "vllm/vllm-openai:v0.11.0",
            command: &command,
            args: &args,
            env: &env,
        }])
    }

    /// WVA's parsing rules, one row each.
    #[test]
    fn flags_are_read_as_wva_reads_them() {
        let p = parse(
            &["vllm", "serve", "m"],
            &[
                "--max-num-seqs=64",
                "--block-size",
                "32",
                "--gpu_memory_utilization",
                "0.95",
                "--max-num-batched-tokens",
                "4096",
                "--enforce-eager",
                "--tensor-parallel-size",
                "two",
            ],
            &[],
        );
        assert_eq!(p.max_num_seqs, 64);
        assert_eq!(p.block_size, 32);
        assert_eq!(p.gpu_memory_utilization, 0.95);
        assert_eq!(p.effective_max_batched_tokens(), 4096);
        assert!(p.enforce_eager);
        assert_eq!(
            p.tensor_parallel_size, 1,
            "an unparsable value keeps the default"
        );
        // Defaults: V1 engine with chunked prefill, B = 8192.
        assert_eq!(
            parse(&["vllm"], &[], &[]).effective_max_batched_tokens(),
            8192
        );
        // V0 engine: no chunking, B = max(max_model_len, 2048).
        let v0 = parse(
            &["vllm"],
            &["--max-model-len", "4096"],
            &[("VLLM_USE_V1", "0")],
        );
        assert!(!v0.chunked_prefill);
        assert_eq!(v0.effective_max_batched_tokens(), 4096);
        let v0_chunked = parse(
            &["vllm"],
            &["--enable-chunked-prefill"],
            &[("VLLM_USE_V1", "0")],
        );
        assert_eq!(v0_chunked.effective_max_batched_tokens(), 2048);
        // A boolean flag swallows the positional argument after it (WVA's parser does).
        let swallowed = parse(&["vllm"], &["--enforce-eager", "--max-num-seqs", "8"], &[]);
        assert_eq!(swallowed.max_num_seqs, 8);
        // Overrides fix the KV tokens.
        let fixed = parse(
            &["vllm"],
            &["--num-gpu-blocks-override", "1000", "--block-size", "16"],
            &[],
        );
        assert_eq!(fixed.total_kv_tokens(), 16_000);
    }

    #[test]
    fn shell_scripts_are_split_into_words() {
        let p = parse(
            &["/bin/sh", "-c"],
            &["exec vllm serve 'my model' --max-num-seqs \"128\" --block-size=64"],
            &[],
        );
        assert_eq!((p.max_num_seqs, p.block_size), (128, 64));
        assert_eq!(
            shell_words("a 'b c' \"d e\"  f"),
            strings(&["a", "b c", "d e", "f"])
        );
    }

    #[test]
    fn compatibility_compares_what_sets_capacity() {
        let a = parse(&["vllm"], &["--max-num-seqs", "64"], &[]);
        let b = parse(&["vllm"], &["--max-num-seqs", "128"], &[]);
        assert!(
            a.capacity_compatible(&b),
            "max_num_seqs is not compared (as WVA)"
        );
        let c = parse(&["vllm"], &["--block-size", "32"], &[]);
        assert!(!a.capacity_compatible(&c));
    }

    /// SGLang is detected from the image or the launch command, and its flags map onto the same
    /// fields with its own defaults (WVA's `sglang_parser.go`).
    #[test]
    fn sglang_is_detected_and_its_flags_read() {
        let detect = |image: &str, command: &[&str]| {
            let command = strings(command);
            InferenceEngine::detect(&[ContainerArgs {
                image,
                command: &command,
                ..ContainerArgs::default()
            }])
        };
        assert_eq!(
            detect("lmsysorg/SGLang:v0.5.4", &[]),
            InferenceEngine::Sglang
        );
        assert_eq!(
            detect("python:3.12", &["python3", "-m", "sglang.launch_server"]),
            InferenceEngine::Sglang
        );
        assert_eq!(
            detect("x", &["/bin/sh", "-c", "exec SGLang serve --model-path m"]),
            InferenceEngine::Sglang
        );
        assert_eq!(
            detect("x", &["python", "-m", "sglang_bench"]),
            InferenceEngine::Vllm
        );
        assert_eq!(
            detect("vllm/vllm-openai", &["vllm", "serve"]),
            InferenceEngine::Vllm
        );

        let args = strings(&[
            "--mem-fraction-static",
            "0.85",
            "--page-size",
            "16",
            "--tp",
            "2",
            "--max-running-requests",
            "128",
            "--max-total-tokens",
            "200000",
            "--context-length",
            "8192",
            "--chunked-prefill-size",
            "4096",
            "--disable-cuda-graph",
            "--max-num-seqs",
            "7",
        ]);
        let p = EngineParams::from_containers(&[ContainerArgs {
            image: "lmsysorg/sglang:latest",
            args: &args,
            ..ContainerArgs::default()
        }]);
        assert_eq!(p.engine, InferenceEngine::Sglang);
        assert_eq!(
            (
                p.gpu_memory_utilization,
                p.block_size,
                p.tensor_parallel_size,
                p.max_num_seqs
            ),
            (0.85, 16, 2, 128),
            "vLLM's --max-num-seqs means nothing to SGLang"
        );
        assert_eq!((p.total_kv_tokens(), p.max_model_len), (200_000, 8192));
        assert_eq!(p.effective_max_batched_tokens(), 4096);
        assert!(p.enforce_eager && p.chunked_prefill);
        // Defaults: page size 1, B 8192; chunking off with -1: B = max(context length, 2048).
        let bare = EngineParams::from_containers(&[ContainerArgs {
            image: "sglang",
            ..ContainerArgs::default()
        }]);
        assert_eq!(
            (bare.block_size, bare.effective_max_batched_tokens()),
            (1, 8192)
        );
        let off = strings(&["--chunked-prefill-size", "-1", "--context-length", "32768"]);
        let p = EngineParams::from_containers(&[ContainerArgs {
            image: "sglang",
            args: &off,
            ..ContainerArgs::default()
        }]);
        assert!(!p.chunked_prefill);
        assert_eq!(p.effective_max_batched_tokens(), 32768);
        // Never compatible with a vLLM server's record.
        assert!(!bare.capacity_compatible(&EngineParams {
            block_size: 1,
            ..EngineParams::default()
        }));
    }
}
