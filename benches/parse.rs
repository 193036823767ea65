//! Exposition parsing speed (MB/s) on real-size vLLM pages with one and eight engines, against
//! `prometheus-parse` 0.2.5 on the same bytes (which silently drops every `vllm:*` sample; the
//! samples each parser returns are printed so the comparison is honest).

mod page;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wva_metrics_server::sources::exposition::{extract, extract_validated, parse};

fn ours_count(text: &str) -> usize {
    let mut n = 0;
    let _ = parse(text, |_| n += 1);
    n
}

fn baseline_count(text: &str) -> usize {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).map_or(0, |s| s.samples.len())
}

/// Median MB/s over a fixed time, measured here so the ratio is printed with the figures.
fn mbps(text: &str, f: impl Fn(&str) -> usize) -> f64 {
    let mut rates = Vec::new();
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        let t = Instant::now();
        let mut n = 0;
        for _ in 0..20 {
            n += std::hint::black_box(f(std::hint::black_box(text)));
        }
        std::hint::black_box(n);
        rates.push(20.0 * text.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("exposition");
    for engines in [1usize, 8] {
        let text = page::vllm_page(engines);
        let lines = text.lines().filter(|l| !l.starts_with('#')).count();
        let (ours, base) = (ours_count(&text), baseline_count(&text));
        // `cargo test --all-targets` runs benches once in test mode; the side-by-side figures are for `cargo bench`.
        if !std::env::args().any(|a| a == "--bench") {
            assert!(ours > base, "our parser must return every sample");
            continue;
        }
        let (ours_rate, extract_rate, validated_rate, base_rate) = (
            mbps(&text, ours_count),
            mbps(&text, |t| extract(t).models.len()),
            mbps(&text, |t| extract_validated(t).models.len()),
            mbps(&text, baseline_count),
        );
        println!(
            "\n[parse] {engines} engine(s): page {} bytes, {lines} sample lines | ours parse {ours_rate:.0} MB/s ({ours} samples), \
             extract (scraper) {extract_rate:.0} MB/s, extract validating every line {validated_rate:.0} MB/s | \
             prometheus-parse 0.2.5 {base_rate:.0} MB/s ({base} samples) | parse ratio {:.1}x, extract ratio {:.1}x",
            text.len(),
            ours_rate / base_rate,
            extract_rate / base_rate
        );
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("parse/{engines}-engines"), |b| {
            b.iter(|| ours_count(std::hint::black_box(&text)))
        });
        group.bench_function(format!("extract/{engines}-engines"), |b| {
            b.iter(|| extract(std::hint::black_box(&text)))
        });
        group.bench_function(format!("prometheus-parse-0.2.5/{engines}-engines"), |b| {
            b.iter(|| baseline_count(std::hint::black_box(&text)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
