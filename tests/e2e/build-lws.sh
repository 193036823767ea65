#!/usr/bin/env bash
# Builds the real LeaderWorkerSet controller manager (sigs.k8s.io/lws, pinned below) into the e2e cache,
# once per version, from its own module (its go.mod and go.sum, as its release is built), and copies its
# CRD beside it. The first build pulls about 100 modules and takes under two minutes on 2 cores.
# Prints the directory (bin/lws-manager and crds/leaderworkersets.yaml inside).
set -euo pipefail
version=v0.7.0
cache="${WVA_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wva-metrics-server/e2e}/lws-$version"
mkdir -p "$cache/bin" "$cache/crds"
if [[ ! -x "$cache/bin/lws-manager" || ! -s "$cache/crds/leaderworkersets.yaml" ]]; then
  dir="$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/lws@$version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  if [[ ! -x "$cache/bin/lws-manager" ]]; then
    echo "building lws-manager ($version) into $cache/bin: not cached yet, this takes a minute or two" >&2
    (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$cache/bin/lws-manager.tmp" ./cmd)
    mv "$cache/bin/lws-manager.tmp" "$cache/bin/lws-manager"
  fi
  # The base CRD: LeaderWorkerSet has one version, so the release's conversion-webhook patch is not needed.
  cp "$dir/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml" "$cache/crds/leaderworkersets.yaml"
  chmod u+w "$cache/crds/leaderworkersets.yaml"
fi
echo "$cache"
