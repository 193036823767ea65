# wva-metrics-server tasks. `just --list` shows them all.

# Build the server and the emulator (release).
build:
    cargo build --release --bins

# The embedded default: emulated vLLM pods + the server in standalone mode + a load step (no cluster).
demo: build
    scripts/demo.sh

# Run the server in standalone mode on the bundled example (start pods with `just emulators`).
run: build
    target/release/wva-metrics-server serve --standalone manifests/examples/standalone.yaml --epp-token-file manifests/examples/standalone-epp-token

# Emulated vLLM pods for the bundled example (127.0.0.2-4:18000), and its endpoint picker (127.0.0.5:19090).
emulators: build
    #!/usr/bin/env bash
    set -euo pipefail
    target/release/vllm-emulator --listen 127.0.0.5:19090 --model ibm-granite/granite-3.3-8b-instruct \
      --epp-token "$(cat manifests/examples/standalone-epp-token)" &
    trap 'kill $!' EXIT
    target/release/vllm-emulator --listen 127.0.0.2:18000 --listen 127.0.0.3:18000 --listen 127.0.0.4:18000

# Unit, integration and CLI tests (needs the Debian package `prometheus` for the Prometheus tests).
test:
    cargo test --all-targets

# Formatting, lints, the alert rules (promtool, from the Debian package prometheus), the
# one-crypto-provider rule (no aws-lc in the tree), and licences, duplicate crates and sources (cargo-deny).
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --lib
    promtool check rules manifests/monitoring/rules.yml
    @if cargo tree -e normal,build -i aws-lc-sys >/dev/null 2>&1; then echo "aws-lc-sys is in the dependency tree" >&2; exit 1; fi
    @command -v cargo-deny >/dev/null || { echo "cargo-deny is not installed: cargo install cargo-deny --locked" >&2; exit 1; }
    cargo deny check licenses bans sources

# Known vulnerabilities (RustSec). Needs the advisory database from GitHub, so it is not part of `just lint`.
audit:
    cargo deny check advisories

# End-to-end: real etcd, kube-apiserver, kube-controller-manager and Prometheus; the real HPA scales a Deployment.
e2e:
    tests/e2e/run.sh

# End-to-end with a real KEDA (built once from its Go module, ~11 minutes the first time): KEDA holds the
# external metrics APIService and scales a ScaledObject through our external scaler over mTLS.
e2e-keda:
    tests/e2e/build-keda.sh >/dev/null
    WVA_E2E_TEST=keda_external_scaler tests/e2e/run.sh

# Benchmarks: figures and ratios against baselines measured in the same run (BENCHMARKS.md). Needs what
# `just e2e` needs (Go, the Debian package prometheus, curl); builds prometheus-adapter once (~2 min).
bench:
    tests/e2e/build-binaries.sh >/dev/null
    benches/tools/build-adapter.sh >/dev/null
    cargo bench --bench decision --bench parse
    cargo bench --bench request
    ulimit -n "$(ulimit -Hn)" 2>/dev/null; cargo bench --bench fleet
    ulimit -n "$(ulimit -Hn)" 2>/dev/null; cargo bench --bench hostile
    cargo test --test e2e -- reaction_time --exact --ignored --nocapture --test-threads=1

# Fuzz the exposition parser, seeded with the real captures (needs `rustup toolchain install nightly` and
# `cargo install cargo-fuzz`): just fuzz 300
fuzz seconds="60":
    mkdir -p fuzz/corpus/exposition && cp tests/fixtures/*.txt fuzz/corpus/exposition/
    cargo +nightly fuzz run exposition -- -max_total_time={{seconds}}

# Container image (needs a Docker engine).
image tag="wva-metrics-server:dev":
    docker build -t {{tag}} .

# Some end-to-end steps only, after the setup they need (names in tests/e2e/main.rs STEPS):
# just e2e-step load-step,security
e2e-step steps:
    WVA_E2E_STEPS={{steps}} tests/e2e/run.sh
