#!/usr/bin/env bash
# The demo behind `just demo`: emulated vLLM pods for two variants of one model, the server in
# standalone mode on a copy of manifests/examples/standalone.yaml, a load step, and
# inferno_desired_replicas for each variant before and after, read through the real HTTPS endpoint;
# then GPU Nodes and the limiter are added to the copy (the server reloads it) and the +1 moves to the
# accelerator with free GPUs. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release"
port="${WVA_DEMO_PORT:-16443}"
certs="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$certs"; }
trap cleanup EXIT INT TERM

"$bin/vllm-emulator" --listen 127.0.0.2:18000 --listen 127.0.0.3:18000 --listen 127.0.0.4:18000 --max-num-seqs 16 2>/dev/null &
pids+=($!)
token_file=manifests/examples/standalone-epp-token
"$bin/vllm-emulator" --listen 127.0.0.5:19090 --model ibm-granite/granite-3.3-8b-instruct \
  --epp-token "$(cat "$token_file")" 2>/dev/null &
pids+=($!)
file="$certs/standalone.yaml"
cp manifests/examples/standalone.yaml "$file"
"$bin/wva-metrics-server" serve --standalone "$file" --secure-port "$port" \
  --cert-dir "$certs" --scrape-interval 1s --lookback 5s --epp-token-file "$token_file" --log-level warn &
pids+=($!)

url="https://127.0.0.1:${port}/apis/external.metrics.k8s.io/v1beta1/namespaces/llm/inferno_desired_replicas"
show() {
  # What `kubectl get --raw` would print for the HPA's query, one line per variant.
  curl -sf --cacert "$certs/ca.crt" "$url" | python3 -c '
import json, sys
for i in json.load(sys.stdin)["items"]:
    l = i["metricLabels"]
    print("    %-10s accelerator=%-5s inferno_desired_replicas=%s" % (l["variant_name"], l["accelerator_type"], i["value"]))'
}
wait_for() { # wait_for WHAT EXPECTED [VARIANT]: poll until the output has the expected target for the variant
  for _ in $(seq 1 60); do
    out="$(show 2>/dev/null || true)"
    if grep -q "${3:-qwen-l40s} .*=$2\$" <<<"$out"; then echo "$out"; return 0; fi
    sleep 0.5
  done
  echo "demo: timed out waiting for $1; last answer:" >&2; echo "$out" >&2; return 1
}

echo "== variants (manifests/examples/standalone.yaml): qwen-l40s (a VariantAutoscaling: L40S, cost 5, 2 pods),"
echo "   qwen-h100 (an HPA annotated llm-d.ai/managed, as WVA v0.8 discovers them: H100, cost 20, 1 pod, max 4),"
echo "   and granite-l4 (another model, parked at 0 replicas with scale to zero enabled)"
echo "== idle: every pod has spare KV cache and no queue, so the cheap variant can give one replica back"
wait_for "the idle decision" 1
echo "== load step: 30 requests in flight on every pod (16 running, 14 waiting, KV cache 80%)"
for a in 127.0.0.2 127.0.0.3 127.0.0.4; do
  curl -sf -XPOST "http://$a:18000/emulator/load" -H 'content-type: application/json' -d '{"inFlight": 30}' >/dev/null
done
echo "== saturated: the cheapest variant gets +1"
wait_for "the scale-up" 3
echo "== scale from zero: 2 requests queue at granite's endpoint picker (an emulated EPP behind a bearer token)"
curl -sf -XPOST "http://127.0.0.5:19090/emulator/queue" -H 'content-type: application/json' -d '{"size": 2}' >/dev/null
wait_for "the scale from zero" 1 granite-l4
echo "== GPU limiter: Nodes with 2 L40S (another tenant's pod holds both), 8 H100 and 1 L4, and enableLimiter"
echo "   in the saturation ConfigMap, added to the file (the server reloads it): the +1 goes where GPUs are free"
cat >>"$file" <<'YAML'
---
apiVersion: v1
kind: Node
metadata: {name: gpu-l40s, labels: {nvidia.com/gpu.product: NVIDIA-L40S-48GB}}
status: {allocatable: {nvidia.com/gpu: "2"}}
---
apiVersion: v1
kind: Node
metadata: {name: gpu-h100, labels: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
status: {allocatable: {nvidia.com/gpu: "8"}}
---
apiVersion: v1
kind: Node
metadata: {name: gpu-l4, labels: {nvidia.com/gpu.product: NVIDIA-L4}}
status: {allocatable: {nvidia.com/gpu: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: training, namespace: tenant}
spec: {nodeName: gpu-l40s, containers: [{name: train, resources: {requests: {nvidia.com/gpu: "2"}}}]}
status: {phase: Running}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: wva-saturation-scaling-config, namespace: wva-metrics-server}
data:
  default: |
    enableLimiter: true
YAML
wait_for "the limiter's move" 2 qwen-h100
echo "== done; to keep it running: just emulators (one terminal), just run (another), then curl --cacert <printed ca.crt> $url"
