#!/usr/bin/env bash
# Builds the Prometheus Adapter baseline of the request-path benchmark (sigs.k8s.io/prometheus-adapter,
# pinned in benches/tools/go.mod) into a cache outside the repository, once per version. Prints its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(cd "$here" && go list -m -f "{{.Version}}" sigs.k8s.io/prometheus-adapter)"
cache="${WVA_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wva-metrics-server/bench}"
bin="$cache/prometheus-adapter-$version/adapter"
if [[ ! -x "$bin" ]]; then
  echo "building prometheus-adapter $version into $bin: not cached yet, this takes about two minutes" >&2
  mkdir -p "$(dirname "$bin")"
  (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin.tmp" sigs.k8s.io/prometheus-adapter/cmd/adapter)
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
