//! A small, zero-copy parser for the Prometheus text exposition format (0.0.4, and the OpenMetrics text
//! that python prometheus_client emits), and the extraction of the vLLM signals the analysis needs.
//!
//! Why our own: `prometheus-parse` drops every name with a colon (all `vllm:*` series) and splits label
//! values on commas (prometheus-parse 0.2.5's line pattern). This parser accepts names `[a-zA-Z_:][a-zA-Z0-9_:]*`,
//! quoted label values with `\\`, `\"` and `\n` escapes (borrowed unless escaped), Go float spellings,
//! an optional timestamp, OpenMetrics exemplars (skipped) and `# EOF`. A bad line becomes a warning with
//! its line number; the rest of the page is kept.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line. `labels` is borrowed from a buffer reused across lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a, 'b> {
    pub name: &'a str,
    pub labels: &'b [(&'a str, Cow<'a, str>)],
    pub value: f64,
    pub timestamp: Option<f64>,
}

impl Sample<'_, '_> {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_ref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseWarning {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses `text`, calling `on_sample` for every valid sample line. Returns the warnings for bad lines.
pub fn parse<'a>(text: &'a str, on_sample: impl FnMut(&Sample<'a, '_>)) -> Vec<ParseWarning> {
    parse_wanted(text, |_| true, on_sample)
}

/// Like [`parse`], but only the lines of metrics for which `wanted(name)` holds are parsed past their
/// name (labels, value, timestamp) and reported; others are skipped, and their malformations too. The
/// scraper wants 3 of ~250 series on a vLLM page, most of them histogram buckets with labels, so this
/// is what keeps parsing 10,000 pods every few seconds cheap.
pub(crate) fn parse_wanted<'a>(
    text: &'a str,
    wanted: impl Fn(&str) -> bool,
    mut on_sample: impl FnMut(&Sample<'a, '_>),
) -> Vec<ParseWarning> {
    let mut warnings = Vec::new();
    let mut labels: Vec<(&'a str, Cow<'a, str>)> = Vec::with_capacity(8);
    // memchr finds line ends with SIMD; std's `split('\n')` was a fifth of the scraper's parse time.
    let mut start = 0;
    let lines = memchr::memchr_iter(b'\n', text.as_bytes())
        .map(Some)
        .chain(std::iter::once(None))
        .map(|end| {
            let end = end.unwrap_or(text.len());
            // Line ends are ASCII, so these are char boundaries.
            let line = &text[start..end];
            start = end + 1;
            line
        });
    for (idx, raw) in lines.enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() {
            continue;
        }
        if let Some(comment) = trimmed.strip_prefix('#') {
            if comment.trim() == "EOF" {
                break;
            }
            continue;
        }
        labels.clear();
        match parse_sample_line(trimmed, &wanted, &mut labels) {
            Ok(None) => {}
            Ok(Some((name, value, timestamp))) => on_sample(&Sample {
                name,
                labels: &labels,
                value,
                timestamp,
            }),
            Err(message) => warnings.push(ParseWarning {
                line: idx + 1,
                message,
            }),
        }
    }
    warnings
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// A parsed sample line (name, value, timestamp), `None` for a metric that is not wanted.
type SampleLine<'a> = Option<(&'a str, f64, Option<f64>)>;

fn parse_sample_line<'a>(
    line: &'a str,
    wanted: &impl Fn(&str) -> bool,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<SampleLine<'a>, String> {
    let bytes = line.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err(format!(
            "expected a metric name, found {:?}",
            first_char(line)
        ));
    }
    let mut i = 1;
    while i < bytes.len() && is_name_char(bytes[i]) {
        i += 1;
    }
    let name = &line[..i];
    if !wanted(name) {
        return Ok(None);
    }
    if i < bytes.len() && bytes[i] == b'{' {
        i = parse_labels(line, i + 1, labels)?;
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err(if rest.is_empty() {
            "expected a value after the labels".to_string()
        } else {
            format!("unexpected {:?} after the metric name", first_char(rest))
        });
    }
    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields.next().ok_or("expected a value after the labels")?;
    let value = parse_float(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    let timestamp = match fields.next() {
        None => None,
        // An OpenMetrics exemplar follows ` # `; it carries nothing we use.
        Some("#") => None,
        Some(t) => {
            let ts = parse_float(t)
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("invalid timestamp {t:?}"))?;
            match fields.next() {
                None | Some("#") => Some(ts),
                Some(extra) => return Err(format!("unexpected {extra:?} after the timestamp")),
            }
        }
    };
    Ok(Some((name, value, timestamp)))
}

fn first_char(s: &str) -> char {
    s.chars().next().unwrap_or(' ')
}

/// Parses `{…}` content starting after the `{`; returns the index just after the closing `}`.
fn parse_labels<'a>(
    line: &'a str,
    mut i: usize,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<usize, String> {
    let bytes = line.as_bytes();
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
            i += 1;
        }
        match bytes.get(i) {
            None => return Err("unterminated label set: missing '}'".to_string()),
            Some(b'}') => return Ok(i + 1),
            Some(&b) if is_name_start(b) && b != b':' => {}
            Some(_) => {
                return Err(format!(
                    "expected a label name or '}}', found {:?}",
                    first_char(&line[i..])
                ))
            }
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let key = &line[start..i];
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err(format!("expected '=' after label name {key:?}"));
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if bytes.get(i) != Some(&b'"') {
            return Err(format!("expected '\"' to open the value of label {key:?}"));
        }
        i += 1;
        let (value, next) = parse_label_value(line, i)
            .ok_or_else(|| format!("unterminated or badly escaped value of label {key:?}"))?;
        labels.push((key, value));
        i = next;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => {
                return Err(format!(
                    "expected ',' or '}}' after the value of label {key:?}"
                ))
            }
        }
    }
}

/// Reads a quoted value starting after the opening quote; returns the value and the index after the closing quote.
fn parse_label_value(line: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = line.as_bytes();
    let mut i = start;
    // Fast path: no escapes, borrow the slice.
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some((Cow::Borrowed(&line[start..i]), i + 1)),
            b'\\' => break,
            _ => i += 1,
        }
    }
    let mut owned = String::from(&line[start..i]);
    let mut chars = line[i..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(owned), i + off + 1)),
            '\\' => match chars.next()?.1 {
                'n' => owned.push('\n'),
                '\\' => owned.push('\\'),
                '"' => owned.push('"'),
                _ => return None,
            },
            c => owned.push(c),
        }
    }
    None
}

/// Go's float spellings: `NaN`, `+Inf`, `-Inf`, exponents with any number of digits.
pub(crate) fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => {
            // Rust also accepts "inf"/"infinity" in any case; Prometheus does not, so refuse words.
            if s.bytes()
                .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E')
            {
                return None;
            }
            s.parse().ok()
        }
    }
}

/// The per-model signals of one page.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSignals {
    /// Max over series of the KV-cache usage (0–1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage: Option<f64>,
    /// Max over series of the waiting-queue length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<f64>,
    /// Sum over series (engines) of running requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_requests: Option<f64>,
    /// Sum over series (engines, finish reasons) of `vllm:request_success_total`: the counter scale to
    /// zero reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_total: Option<f64>,
    /// The request-shape counters saturation V2 averages over five minutes, summed over series.
    #[serde(flatten)]
    pub tokens: TokenCounters,
}

/// Cumulative counters of one model on one page: prompt and generated tokens per finished request
/// (`vllm:request_{prompt,generation}_tokens` histograms' `_sum` and `_count`) and prefix-cache
/// queries and hits (`vllm:prefix_cache_{queries,hits}`, `vllm:gpu_prefix_cache_*` before vLLM 0.10).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenCounters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_count: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_tokens_sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation_tokens_count: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_queries: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_cache_hits: Option<f64>,
}

impl TokenCounters {
    pub(crate) fn is_empty(&self) -> bool {
        *self == TokenCounters::default()
    }
}

/// The KV cache of a server (vLLM's `vllm:cache_config_info` labels, or SGLang's
/// `sglang:max_total_num_tokens` as blocks of one token; one per page, no model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheConfig {
    pub num_gpu_blocks: i64,
    pub block_size: i64,
}

impl CacheConfig {
    /// From `vllm:cache_config_info`'s `num_gpu_blocks` and `block_size` labels, when both are positive
    /// integers.
    pub fn from_labels<'a>(label: impl Fn(&str) -> Option<&'a str>) -> Option<Self> {
        let number = |k| {
            label(k)
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|v| *v > 0)
        };
        Some(CacheConfig {
            num_gpu_blocks: number("num_gpu_blocks")?,
            block_size: number("block_size")?,
        })
    }

    /// From SGLang's `max_total_num_tokens` (WVA reads it as that many blocks of one token), when it is
    /// a positive whole number.
    pub fn from_tokens(v: f64) -> Option<Self> {
        #[allow(clippy::cast_possible_truncation)] // Checked: whole, positive and below 2^53.
        (v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v < 9.0e15).then_some(CacheConfig {
            num_gpu_blocks: v as i64,
            block_size: 1,
        })
    }

    /// KV tokens the server holds: blocks × block size.
    pub fn total_tokens(&self) -> i64 {
        self.num_gpu_blocks.saturating_mul(self.block_size)
    }
}

impl ModelSignals {
    /// The analysis needs both KV usage and queue length.
    pub(crate) fn is_complete(&self) -> bool {
        self.kv_cache_usage.is_some() && self.queue_length.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Extraction {
    pub models: BTreeMap<String, ModelSignals>,
    /// With a model filter: the first few other `model_name`s the page serves (memory stays bounded
    /// whatever the page holds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_models: Vec<String>,
    /// With a model filter: how many signal series belonged to other models.
    #[serde(skip_serializing_if = "is_zero")]
    pub other_series: usize,
    /// `vllm:cache_config_info`, when the page has it with both labels positive integers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_config: Option<CacheConfig>,
    pub warnings: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Copy)]
enum Signal {
    Kv,
    KvDeprecated,
    Queue,
    Running,
    Success,
    /// A cumulative counter of saturation V2's request shape.
    Counter(Counter),
    CacheConfig,
    /// SGLang's `max_total_num_tokens`: the KV cache's size in tokens (page-level, like vLLM's
    /// `cache_config_info`).
    KvTokens,
    /// SGLang's `prompt_tokens_total` and `generation_tokens_total`: the request shape's sums when
    /// its token histograms are off (they are opt-in), divided by `num_requests_total`.
    TokensTotal(Phase),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Prompt,
    Generation,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counter {
    PromptSum,
    PromptCount,
    GenerationSum,
    GenerationCount,
    PrefixQueries,
    PrefixHits,
    PrefixQueriesDeprecated,
    PrefixHitsDeprecated,
}

/// Maps a sample name to the signal it carries. `vllm_x` is accepted for `vllm:x` because python
/// prometheus_client ≥ 0.23 rewrites colons to underscores in OpenMetrics output (its `openmetrics/exposition.py`);
/// SGLang's gauges map onto the same signals.
fn signal_of(name: &str) -> Option<Signal> {
    let base = name
        .strip_prefix("vllm:")
        .or_else(|| name.strip_prefix("vllm_"));
    if let Some(base) = base {
        return match base {
            "kv_cache_usage_perc" => Some(Signal::Kv),
            "gpu_cache_usage_perc" => Some(Signal::KvDeprecated),
            "num_requests_waiting" => Some(Signal::Queue),
            "num_requests_running" => Some(Signal::Running),
            "request_success_total" => Some(Signal::Success),
            "request_prompt_tokens_sum" => Some(Signal::Counter(Counter::PromptSum)),
            "request_prompt_tokens_count" => Some(Signal::Counter(Counter::PromptCount)),
            "request_generation_tokens_sum" => Some(Signal::Counter(Counter::GenerationSum)),
            "request_generation_tokens_count" => Some(Signal::Counter(Counter::GenerationCount)),
            "prefix_cache_queries_total" | "prefix_cache_queries" => {
                Some(Signal::Counter(Counter::PrefixQueries))
            }
            "prefix_cache_hits_total" | "prefix_cache_hits" => {
                Some(Signal::Counter(Counter::PrefixHits))
            }
            "gpu_prefix_cache_queries_total" | "gpu_prefix_cache_queries" => {
                Some(Signal::Counter(Counter::PrefixQueriesDeprecated))
            }
            "gpu_prefix_cache_hits_total" | "gpu_prefix_cache_hits" => {
                Some(Signal::Counter(Counter::PrefixHitsDeprecated))
            }
            "cache_config_info" => Some(Signal::CacheConfig),
            _ => None,
        };
    }
    // SGLang's names as WVA v0.9 reads them (its `internal/constants/metrics.go`), checked against
    // SGLang's `python/sglang/srt/metrics/collector.py`.
    match name
        .strip_prefix("sglang:")
        .or_else(|| name.strip_prefix("sglang_"))?
    {
        "token_usage" => Some(Signal::Kv),
        "num_queue_reqs" => Some(Signal::Queue),
        "num_running_reqs" => Some(Signal::Running),
        "num_requests_total" => Some(Signal::Success),
        "max_total_num_tokens" => Some(Signal::KvTokens),
        "prompt_tokens_histogram_sum" => Some(Signal::Counter(Counter::PromptSum)),
        "prompt_tokens_histogram_count" => Some(Signal::Counter(Counter::PromptCount)),
        "generation_tokens_histogram_sum" => Some(Signal::Counter(Counter::GenerationSum)),
        "generation_tokens_histogram_count" => Some(Signal::Counter(Counter::GenerationCount)),
        // Prefix-cache hit rate = cached prompt tokens / prompt tokens (WVA's SGLang query).
        "cached_tokens_total" => Some(Signal::Counter(Counter::PrefixHits)),
        "prompt_tokens_total" => Some(Signal::TokensTotal(Phase::Prompt)),
        "generation_tokens_total" => Some(Signal::TokensTotal(Phase::Generation)),
        _ => None,
    }
}

/// Extracts per-`model_name` signals from one page, reading only the lines of the series it needs:
/// malformed lines of other metrics go unnoticed. The scraper's path.
pub fn extract(text: &str) -> Extraction {
    extract_with(text, false, &|_| true)
}

/// Like [`extract`], keeping only the models `wanted` accepts: a page with 150,000 `model_name`s
/// costs a counter, not 150,000 entries. The scraper's path.
pub(crate) fn extract_wanted(text: &str, wanted: &dyn Fn(&str) -> bool) -> Extraction {
    extract_with(text, false, wanted)
}

/// Like [`extract`], but every line is parsed and every malformed line is reported: for diagnosing a
/// page (`wva-metrics-server scrape`), where the cost does not matter.
pub fn extract_validated(text: &str) -> Extraction {
    extract_with(text, true, &|_| true)
}

/// One model's signals as a page is read.
#[derive(Default)]
struct Acc {
    kv: Option<f64>,
    kv_old: Option<f64>,
    queue: Option<f64>,
    running: Option<f64>,
    success: Option<f64>,
    tokens: TokenCounters,
    prefix_old: (Option<f64>, Option<f64>),
    /// SGLang's prompt and generation token totals.
    totals: (Option<f64>, Option<f64>),
}

fn add(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.unwrap_or(0.0) + v);
}

fn max(slot: &mut Option<f64>, v: f64) {
    *slot = Some(slot.map_or(v, |cur| cur.max(v)));
}

impl Acc {
    /// Takes one sample of `signal`; `false` when its value is no measurement (infinite or negative).
    fn take(&mut self, signal: Signal, v: f64) -> bool {
        let gauge = matches!(signal, Signal::Kv | Signal::KvDeprecated | Signal::Queue);
        let counter = matches!(
            signal,
            Signal::Success | Signal::Counter(_) | Signal::TokensTotal(_)
        );
        // An infinite or negative KV fraction, queue or counter is no measurement; the pod's sample is
        // missing (and ages into a 503) rather than poisoning its model's decision.
        if (gauge || counter) && (v.is_infinite() || v < 0.0) {
            return false;
        }
        match signal {
            Signal::Kv => max(&mut self.kv, v),
            Signal::KvDeprecated => max(&mut self.kv_old, v),
            Signal::Queue => max(&mut self.queue, v),
            Signal::Running => add(&mut self.running, v),
            Signal::Success => add(&mut self.success, v),
            Signal::Counter(c) => {
                let t = &mut self.tokens;
                let slot = match c {
                    Counter::PromptSum => &mut t.prompt_tokens_sum,
                    Counter::PromptCount => &mut t.prompt_tokens_count,
                    Counter::GenerationSum => &mut t.generation_tokens_sum,
                    Counter::GenerationCount => &mut t.generation_tokens_count,
                    Counter::PrefixQueries => &mut t.prefix_cache_queries,
                    Counter::PrefixHits => &mut t.prefix_cache_hits,
                    Counter::PrefixQueriesDeprecated => &mut self.prefix_old.0,
                    Counter::PrefixHitsDeprecated => &mut self.prefix_old.1,
                };
                add(slot, v);
            }
            Signal::TokensTotal(Phase::Prompt) => add(&mut self.totals.0, v),
            Signal::TokensTotal(Phase::Generation) => add(&mut self.totals.1, v),
            Signal::CacheConfig | Signal::KvTokens => {}
        }
        true
    }

    fn finish(mut self) -> ModelSignals {
        // SGLang: prompt tokens are the prefix cache's queries; without the opt-in token histograms,
        // the totals over requests served give the same averages.
        let t = &mut self.tokens;
        if let Some(prompt) = self.totals.0 {
            t.prefix_cache_queries.get_or_insert(prompt);
            if t.prompt_tokens_count.is_none() && self.success.is_some() {
                t.prompt_tokens_sum = Some(prompt);
                t.prompt_tokens_count = self.success;
            }
        }
        if let (Some(generated), None, Some(_)) =
            (self.totals.1, t.generation_tokens_count, self.success)
        {
            t.generation_tokens_sum = Some(generated);
            t.generation_tokens_count = self.success;
        }
        ModelSignals {
            // The deprecated name only when the new one is absent: with hidden metrics re-enabled both exist.
            kv_cache_usage: self.kv.or(self.kv_old),
            queue_length: self.queue,
            running_requests: self.running,
            success_total: self.success,
            // The deprecated prefix-cache names only when the new ones are absent (vLLM 0.10
            // publishes both).
            tokens: if self.tokens.prefix_cache_queries.is_none() {
                TokenCounters {
                    prefix_cache_queries: self.prefix_old.0,
                    prefix_cache_hits: self.prefix_old.1,
                    ..self.tokens
                }
            } else {
                self.tokens
            },
        }
    }
}

fn extract_with(text: &str, validate_all: bool, wanted: &dyn Fn(&str) -> bool) -> Extraction {
    let mut cache_config: Option<CacheConfig> = None;
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let mut nan_series = 0usize;
    let mut unusable_series = 0usize;
    let mut other_models: Vec<String> = Vec::new();
    let mut other_series = 0usize;
    let warnings = parse_wanted(
        text,
        |name| validate_all || signal_of(name).is_some(),
        |s| {
            let Some(signal) = signal_of(s.name) else {
                return;
            };
            if matches!(signal, Signal::CacheConfig) {
                cache_config = CacheConfig::from_labels(|k| s.label(k)).or(cache_config);
                return;
            }
            if matches!(signal, Signal::KvTokens) {
                cache_config = CacheConfig::from_tokens(s.value).or(cache_config);
                return;
            }
            // NaN is legal for a gauge but says nothing; it must not poison a max.
            if s.value.is_nan() {
                nan_series += 1;
                return;
            }
            // SGLang's `priority` label: the series with priority="" is the total, others are parts of it.
            if s.label("priority").is_some_and(|p| !p.is_empty()) {
                return;
            }
            let model = s.label("model_name").unwrap_or("");
            if !wanted(model) {
                other_series += 1;
                if other_models.len() < crate::error::MAX_NAMES_LISTED {
                    // A label value can be megabytes: what is kept to report is cut.
                    let name = crate::error::cap(model, crate::error::MAX_ECHO_BYTES);
                    if !other_models.iter().any(|m| *m == name) {
                        other_models.push(name.into_owned());
                    }
                }
                return;
            }
            let entry = match acc.get_mut(model) {
                Some(e) => e,
                None => acc.entry(model.to_string()).or_default(),
            };
            if !entry.take(signal, s.value) {
                unusable_series += 1;
            }
        },
    );
    let mut warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    if nan_series > 0 {
        warnings.push(format!(
            "{nan_series} NaN sample(s) of vLLM signals ignored"
        ));
    }
    if unusable_series > 0 {
        warnings.push(format!(
            "{unusable_series} infinite or negative sample(s) of vLLM signals ignored"
        ));
    }
    let models = acc
        .into_iter()
        .map(|(model, a)| (model, a.finish()))
        .collect();
    Extraction {
        models,
        other_models,
        other_series,
        cache_config,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saturation V2's series: `vllm:cache_config_info` (page-level, no model), the token histograms'
    /// sums and counts and the prefix-cache counters (summed over series; the pre-0.10 names only
    /// when the new ones are absent).
    #[test]
    fn token_counters_and_cache_config() {
        let page = "vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"4574\",enable_prefix_caching=\"True\"} 1.0\n\
                    vllm:request_prompt_tokens_sum{model_name=\"m\",engine=\"0\"} 60.0\n\
                    vllm:request_prompt_tokens_sum{model_name=\"m\",engine=\"1\"} 40.0\n\
                    vllm:request_prompt_tokens_count{model_name=\"m\"} 6.0\n\
                    vllm:request_generation_tokens_sum{model_name=\"m\"} 2400.0\n\
                    vllm:request_generation_tokens_count{model_name=\"m\"} 6.0\n\
                    vllm:prefix_cache_queries_total{model_name=\"m\"} 100\n\
                    vllm:prefix_cache_hits_total{model_name=\"m\"} 30\n\
                    vllm:gpu_prefix_cache_queries_total{model_name=\"m\"} 999\n\
                    vllm:gpu_prefix_cache_queries_total{model_name=\"old\"} 10\n\
                    vllm:gpu_prefix_cache_hits_total{model_name=\"old\"} 4\n\
                    vllm:request_prompt_tokens_count{model_name=\"old\"} -1\n";
        let e = extract(page);
        assert_eq!(
            e.cache_config,
            Some(CacheConfig {
                num_gpu_blocks: 4574,
                block_size: 16
            })
        );
        let t = e.models["m"].tokens;
        assert_eq!(
            (
                t.prompt_tokens_sum,
                t.prompt_tokens_count,
                t.generation_tokens_sum
            ),
            (Some(100.0), Some(6.0), Some(2400.0))
        );
        assert_eq!(
            (t.prefix_cache_queries, t.prefix_cache_hits),
            (Some(100.0), Some(30.0))
        );
        let old = e.models["old"].tokens;
        assert_eq!(
            (old.prefix_cache_queries, old.prefix_cache_hits),
            (Some(10.0), Some(4.0))
        );
        assert_eq!(
            old.prompt_tokens_count, None,
            "a negative counter is no count"
        );
        assert!(e
            .warnings
            .iter()
            .any(|w| w.contains("infinite or negative")));
        // A cache_config_info without usable labels is no capacity.
        assert_eq!(
            extract("vllm:cache_config_info{block_size=\"16\",num_gpu_blocks=\"None\"} 1\n")
                .cache_config,
            None
        );
    }

    /// A page with 150,000 model names: the wanted model is extracted, the rest is a counter and
    /// five names; infinite and negative signals are dropped with a warning.
    #[test]
    fn unwanted_models_cost_a_counter_and_unusable_values_are_dropped() {
        let mut page = String::new();
        for i in 0..150_000 {
            page.push_str(&format!(
                "vllm:num_requests_waiting{{model_name=\"m{i}\"}} 1\n"
            ));
        }
        page.push_str("vllm:kv_cache_usage_perc{model_name=\"want\"} 0.5\n");
        page.push_str("vllm:num_requests_waiting{model_name=\"want\"} 2\n");
        page.push_str("vllm:kv_cache_usage_perc{model_name=\"bad\"} +Inf\n");
        page.push_str("vllm:num_requests_waiting{model_name=\"bad\"} -3\n");
        let e = extract_wanted(&page, &|m| m == "want" || m == "bad");
        assert_eq!(e.models.len(), 2);
        assert!(e.models["want"].is_complete());
        assert_eq!(e.models["bad"], ModelSignals::default());
        assert_eq!(e.other_series, 150_000);
        assert_eq!(e.other_models, vec!["m0", "m1", "m2", "m3", "m4"]);
        // A megabyte label value is kept cut, not whole.
        let huge = format!(
            "vllm:num_requests_waiting{{model_name=\"{}\"}} 1\n",
            "m".repeat(1 << 20)
        );
        let cut = extract_wanted(&huge, &|m| m == "wanted");
        assert!(
            cut.other_models[0].len() < 400,
            "{}",
            cut.other_models[0].len()
        );

        assert!(
            e.warnings
                .iter()
                .any(|w| w.contains("2 infinite or negative")),
            "{:?}",
            e.warnings
        );
    }

    #[test]
    fn the_scraper_path_skips_other_metrics_and_their_malformations() {
        let page = "broken line {\nvllm:num_requests_waiting{model_name=\"m\"} 2\nvllm:kv_cache_usage_perc{model_name=\"m\"} oops\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.5\n";
        let fast = extract(page);
        let full = extract_validated(page);
        assert_eq!(fast.models, full.models);
        assert_eq!(fast.models["m"].queue_length, Some(2.0));
        assert_eq!(fast.models["m"].kv_cache_usage, Some(0.5));
        // A malformed line of a wanted series is reported either way; others only when validating all.
        assert_eq!(fast.warnings.len(), 1, "{:?}", fast.warnings);
        assert!(
            fast.warnings[0].starts_with("line 3:"),
            "{:?}",
            fast.warnings
        );
        assert_eq!(full.warnings.len(), 2, "{:?}", full.warnings);
        assert!(
            full.warnings[0].starts_with("line 1:"),
            "{:?}",
            full.warnings
        );
    }

    const SPEC_FIXTURE: &str = include_str!("../../tests/fixtures/spec-appendix-a.txt");
    const KUBEAI_V0: &str =
        include_str!("../../tests/fixtures/vllm-0.5.x-v0-kubeai-hack-mock-metrics.txt");
    const SGLANG: &str =
        include_str!("../../tests/fixtures/sglang-0.4.x-sglang-docs-production-metrics.txt");

    type Collected = (
        Vec<(String, Vec<(String, String)>, f64, Option<f64>)>,
        Vec<ParseWarning>,
    );

    fn collect(text: &str) -> Collected {
        let mut out = Vec::new();
        let w = parse(text, |s| {
            out.push((
                s.name.to_string(),
                s.labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                s.value,
                s.timestamp,
            ))
        });
        (out, w)
    }

    #[test]
    fn spec_fixture_every_quirk() {
        let (samples, warnings) = collect(SPEC_FIXTURE);
        assert!(warnings.is_empty(), "{warnings:?}");
        let find = |name: &str, label: (&str, &str)| {
            samples
                .iter()
                .find(|(n, l, _, _)| {
                    n == name && l.iter().any(|(k, v)| k == label.0 && v == label.1)
                })
                .unwrap_or_else(|| panic!("{name} {label:?} missing"))
                .clone()
        };
        assert_eq!(find("vllm:kv_cache_usage_perc", ("engine", "0")).2, 0.4213);
        let lora = find("vllm:lora_requests_info", ("max_lora", "2"));
        assert_eq!(lora.1[1].1, "sql-lora,chat \"v2\"");
        assert_eq!(
            lora.1[2],
            ("waiting_lora_adapters".to_string(), String::new())
        );
        let tricky = find("demo_tricky", ("b", "C:\\path"));
        assert_eq!(tricky.1[0].1, "x=y}z");
        assert_eq!(tricky.1[2].1, "line1\nline2");
        let spaced = find("demo_tricky", ("a", "spaced"));
        assert_eq!(spaced.1[1], ("b".to_string(), "after comma".to_string()));
        assert!(find("demo_special", ("kind", "nan")).2.is_nan());
        assert_eq!(find("demo_special", ("kind", "pinf")).2, f64::INFINITY);
        assert_eq!(find("demo_special", ("kind", "ninf")).2, f64::NEG_INFINITY);
        assert_eq!(
            find("demo_special", ("kind", "ts")).3,
            Some(1_732_000_000_000.0)
        );
        assert_eq!(
            find("vllm:e2e_request_latency_seconds_bucket", ("le", "+Inf")).2,
            94.0
        );
        assert_eq!(
            samples
                .iter()
                .filter(|s| s.0 == "demo_summary_count")
                .count(),
            1
        );
        // Every sample line of the fixture came out.
        let sample_lines = SPEC_FIXTURE
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(samples.len(), sample_lines);
    }

    #[test]
    fn spec_fixture_extraction() {
        let e = extract(SPEC_FIXTURE);
        assert_eq!(
            e.models["Qwen/Qwen3-0.6B"],
            ModelSignals {
                kv_cache_usage: Some(0.4213),
                queue_length: Some(7.0),
                running_requests: Some(3.0),
                // stop 90 + length 4: the finish reasons are summed.
                success_total: Some(94.0),
                tokens: TokenCounters::default(),
            }
        );
    }

    #[test]
    fn real_v0_capture_uses_the_deprecated_kv_name_and_keeps_models_apart() {
        let (samples, warnings) = collect(KUBEAI_V0);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            samples.len(),
            KUBEAI_V0
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count()
        );
        let e = extract(KUBEAI_V0);
        let m = e.models["neuralmagic/Meta-Llama-3.1-8B-Instruct-FP8"];
        assert_eq!(m.kv_cache_usage, Some(0.0026235242675994863));
        assert_eq!(m.queue_length, Some(2.0));
        assert_eq!(m.running_requests, Some(3.0));
        assert_eq!(e.models["other/OTHER"].queue_length, Some(3.0));
        assert_eq!(e.models["other/OTHER"].kv_cache_usage, None);
    }

    #[test]
    fn real_sglang_capture_multiprocess_order_and_ugly_floats() {
        let (samples, warnings) = collect(SGLANG);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(samples.iter().any(|(_, l, _, _)| l
            .iter()
            .any(|(k, v)| k == "le" && v == "0.07500000000000001")));
        let e = extract(SGLANG);
        assert_eq!(e.models.len(), 1);
        let m = e.models.values().next().unwrap();
        assert!(m.is_complete(), "{m:?}");
    }

    /// SGLang's current names (its `metrics/collector.py`): capacity from `max_total_num_tokens`
    /// (blocks of one token), the opt-in token histograms, hits from cached over prompt tokens, and
    /// `num_requests_total` as the counter scale to zero reads; without the histograms, the totals
    /// over requests give the averages.
    #[test]
    fn sglang_capacity_request_shape_and_activity() {
        let page = "\
# TYPE sglang:max_total_num_tokens gauge
sglang:max_total_num_tokens{model_name=\"m\",engine_type=\"unified\",tp_rank=\"0\",pp_rank=\"0\"} 471258.0
sglang:token_usage{model_name=\"m\",engine_type=\"unified\",tp_rank=\"0\",pp_rank=\"0\"} 0.4
sglang:num_queue_reqs{model_name=\"m\",engine_type=\"unified\",tp_rank=\"0\",pp_rank=\"0\"} 3.0
sglang:num_running_reqs{model_name=\"m\",engine_type=\"unified\",tp_rank=\"0\",pp_rank=\"0\"} 12.0
sglang:prompt_tokens_total{model_name=\"m\"} 5000.0
sglang:generation_tokens_total{model_name=\"m\"} 2000.0
sglang:cached_tokens_total{model_name=\"m\"} 1500.0
sglang:num_requests_total{model_name=\"m\"} 10.0
sglang:prompt_tokens_histogram_sum{model_name=\"m\"} 4800.0
sglang:prompt_tokens_histogram_count{model_name=\"m\"} 8.0
sglang:generation_tokens_histogram_sum{model_name=\"m\"} 1900.0
sglang:generation_tokens_histogram_count{model_name=\"m\"} 8.0
";
        let e = extract(page);
        assert_eq!(
            e.cache_config,
            Some(CacheConfig {
                num_gpu_blocks: 471_258,
                block_size: 1
            })
        );
        let m = &e.models["m"];
        assert!(m.is_complete());
        assert_eq!(
            (m.kv_cache_usage, m.queue_length, m.running_requests),
            (Some(0.4), Some(3.0), Some(12.0))
        );
        assert_eq!(m.success_total, Some(10.0));
        let t = m.tokens;
        assert_eq!(
            (t.prompt_tokens_sum, t.prompt_tokens_count),
            (Some(4800.0), Some(8.0))
        );
        assert_eq!(
            (t.generation_tokens_sum, t.generation_tokens_count),
            (Some(1900.0), Some(8.0))
        );
        assert_eq!(
            (t.prefix_cache_hits, t.prefix_cache_queries),
            (Some(1500.0), Some(5000.0))
        );
        // Histograms off (SGLang's default): the totals over requests served.
        let without: String = page
            .lines()
            .filter(|l| !l.contains("_histogram_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = extract(&without).models["m"].tokens;
        assert_eq!(
            (t.prompt_tokens_sum, t.prompt_tokens_count),
            (Some(5000.0), Some(10.0))
        );
        assert_eq!(
            (t.generation_tokens_sum, t.generation_tokens_count),
            (Some(2000.0), Some(10.0))
        );
        // A capacity that is no whole positive number is none.
        for bad in ["0", "-5", "NaN", "1.5", "+Inf"] {
            let page = format!("sglang:max_total_num_tokens{{model_name=\"m\"}} {bad}\n");
            assert_eq!(extract(&page).cache_config, None, "{bad}");
        }
    }

    #[test]
    fn two_engines_new_and_deprecated_names_created_series() {
        let page = "\
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.25
vllm:kv_cache_usage_perc{engine=\"1\",model_name=\"m\"} 0.5
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"m\"} 0.99
vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 1.0
vllm:num_requests_waiting{engine=\"1\",model_name=\"m\"} 4.0
vllm:num_requests_running{engine=\"0\",model_name=\"m\"} 2.0
vllm:num_requests_running{engine=\"1\",model_name=\"m\"} 3.0
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine=\"0\",model_name=\"m\"} 1.7769301736864982e+09
vllm_num_requests_waiting{engine=\"2\",model_name=\"m\"} 6.0
";
        let e = extract(page);
        assert_eq!(
            e.models["m"],
            ModelSignals {
                kv_cache_usage: Some(0.5),
                queue_length: Some(6.0),
                running_requests: Some(5.0),
                success_total: None,
                tokens: TokenCounters::default(),
            }
        );
        assert!(e.warnings.is_empty());
    }

    #[test]
    fn bad_lines_are_reported_by_number_and_the_rest_is_kept() {
        let page = "vllm:num_requests_waiting{model_name=\"m\"} 3\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\"}\n\
                    9bad 1\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\" 0.1\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\",engine=\"1\"} zero\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\\q\"} 0.3\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\"} 0.2 123 extra\n\
                    vllm:kv_cache_usage_perc{model_name=\"m\"} 0.1\n\
                    vllm:num_requests_running{model_name=\"m\"} NaN\n";
        let e = extract(page);
        assert_eq!(
            e.models["m"],
            ModelSignals {
                kv_cache_usage: Some(0.1),
                queue_length: Some(3.0),
                running_requests: None,
                success_total: None,
                tokens: TokenCounters::default(),
            }
        );
        let lines: Vec<&str> = e.warnings.iter().map(String::as_str).collect();
        assert_eq!(lines.len(), 7, "{lines:?}");
        assert!(
            lines[0].starts_with("line 2: expected a value after the labels"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("line 3: expected a metric name"));
        assert!(lines[2].starts_with("line 4: expected ',' or '}'"));
        assert!(lines[3].starts_with("line 5: invalid value \"zero\""));
        assert!(lines[4].starts_with("line 6: unterminated or badly escaped"));
        assert!(lines[5].starts_with("line 7: unexpected \"extra\""));
        assert!(lines[6].contains("NaN"));
    }

    #[test]
    fn openmetrics_exemplars_timestamps_and_eof() {
        let page = "# TYPE vllm:num_requests_waiting gauge\n# UNIT x y\n\
                    vllm:num_requests_waiting{model_name=\"m\"} 2 1732000000.123 # {trace_id=\"a\"} 0.7 1732000000.123\n\
                    vllm:num_requests_running{model_name=\"m\"} 1 # {trace_id=\"b\"} 1\r\n\
                    # EOF\nvllm:num_requests_waiting{model_name=\"m\"} 99\n";
        let (samples, warnings) = collect(page);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].3, Some(1_732_000_000.123));
        assert_eq!(extract(page).models["m"].queue_length, Some(2.0));
    }

    #[test]
    fn go_float_spellings() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1.0", Some(1.0)),
            ("3.9024848896e+010", Some(3.9024848896e10)),
            ("1.048576e+06", Some(1_048_576.0)),
            ("+Inf", Some(f64::INFINITY)),
            ("-Inf", Some(f64::NEG_INFINITY)),
            ("-1", Some(-1.0)),
            ("inf", None),
            ("infinity", None),
            ("0x10", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_float(s), *want, "{s:?}");
        }
        assert!(parse_float("NaN").unwrap().is_nan());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn escape(v: &str) -> String {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    proptest! {
        #[test]
        fn label_values_round_trip(values in prop::collection::vec("[a-z\"\\\\\n,=} {]{0,12}", 1..4), value in -1e9f64..1e9) {
            let rendered: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("l{i}=\"{}\"", escape(v))).collect();
            let line = format!("vllm:metric{{{}}} {value}\n", rendered.join(","));
            let mut seen = Vec::new();
            let warnings = parse(&line, |s| {
                seen.push((s.labels.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>(), s.value));
            });
            prop_assert!(warnings.is_empty(), "{:?}", warnings);
            prop_assert_eq!(seen.len(), 1);
            prop_assert_eq!(&seen[0].0, &values);
            prop_assert_eq!(seen[0].1, value);
        }
    }
}
