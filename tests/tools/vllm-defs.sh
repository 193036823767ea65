#!/usr/bin/env bash
# vLLM's own metric definitions, for the test that checks the emulator's pages against them: the files
# vllm/v1/metrics/loggers.py (every vllm:* metric, its type and label names) and vllm/config/cache.py
# (the labels of vllm:cache_config_info) of vLLM's PyPI source distribution, fetched once into the cache.
# Prints the directory. WVA_VLLM_VERSION picks another release (default: the newest on 2026-12-04).
set -euo pipefail
version="${WVA_VLLM_VERSION:-0.34.0}"
dir="${XDG_CACHE_HOME:-$HOME/.cache}/wva-metrics-server/vllm-$version"
if [[ ! -f "$dir/vllm/v1/metrics/loggers.py" || ! -f "$dir/vllm/config/cache.py" ]]; then
  url=$(curl -fsS https://pypi.org/simple/vllm/ | grep -o "https://[^\"#]*/vllm-$version\.tar\.gz" | head -1)
  [[ -n "$url" ]] || { echo "vllm $version: no source distribution on PyPI" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL -o "$tmp/vllm.tar.gz" "$url"
  mkdir -p "$dir"
  tar xzf "$tmp/vllm.tar.gz" -C "$dir" --strip-components=1 \
    "vllm-$version/vllm/v1/metrics/loggers.py" "vllm-$version/vllm/config/cache.py"
fi
echo "$dir"
