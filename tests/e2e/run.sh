#!/usr/bin/env bash
# `just e2e`: builds the control-plane binaries and the LeaderWorkerSet manager if they are not cached yet
# (tests/e2e/build-binaries.sh, tests/e2e/build-lws.sh), then runs the end-to-end scenarios against them. Logs of every process stay in target/e2e/run-*/.
# WVA_E2E_TEST picks another ignored test of tests/e2e (e.g. keda_external_scaler, which `just e2e-keda` runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v go >/dev/null || { echo "just e2e needs Go (1.24+) to build kube-apiserver, kube-controller-manager, kubectl and etcd" >&2; exit 1; }
command -v prometheus >/dev/null || { echo "just e2e needs Prometheus: sudo apt-get install -y prometheus" >&2; exit 1; }
tests/e2e/build-binaries.sh >/dev/null
tests/e2e/build-lws.sh >/dev/null
exec cargo test --test e2e -- "${WVA_E2E_TEST:-end_to_end}" --exact --ignored --nocapture --test-threads=1
