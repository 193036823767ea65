//! Fuzzes the exposition parser and the vLLM extraction: arbitrary pages must never panic, every
//! reported warning must name a line that exists, and extracted values must come from real samples.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wva_metrics_server::sources::exposition::{extract, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let lines = text.split('\n').count();
    let mut samples = 0usize;
    let warnings = parse(text, |s| {
        samples += 1;
        assert!(!s.name.is_empty());
        for (k, _) in s.labels {
            assert!(!k.is_empty());
        }
    });
    for w in &warnings {
        assert!(w.line >= 1 && w.line <= lines, "warning on line {} of {lines}", w.line);
    }
    let e = extract(text);
    for m in e.models.values() {
        for v in [m.kv_cache_usage, m.queue_length, m.running_requests].into_iter().flatten() {
            assert!(!v.is_nan(), "NaN samples must not become signals");
        }
    }
    if samples == 0 {
        assert!(e.models.is_empty());
    }
});
