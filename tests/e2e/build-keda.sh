#!/usr/bin/env bash
# Builds KEDA's real operator and metrics adapter (github.com/kedacore/keda/v2, pinned in tests/e2e/keda/go.mod)
# into the e2e cache, once per version, and copies KEDA's CRDs beside them. The first build pulls about 350
# modules and takes about 11 minutes on 2 cores. Also fetches the InferencePool CRD of the Gateway API
# Inference Extension (sigs.k8s.io/gateway-api-inference-extension, pinned below) for scale from zero.
# Prints the directory (bin/, crds/ and inference-crds/ inside).
set -euo pipefail
here="$(cd "$(dirname "$0")/keda" && pwd)"
version="$(cd "$here" && go list -m -f "{{.Version}}" github.com/kedacore/keda/v2)"
cache="${WVA_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wva-metrics-server/e2e}/keda-$version"
mkdir -p "$cache/bin" "$cache/crds"
for cmd in operator adapter; do
  if [[ ! -x "$cache/bin/keda-$cmd" ]]; then
    echo "building keda-$cmd ($version) into $cache/bin: not cached yet, this takes several minutes" >&2
    (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$cache/bin/keda-$cmd.tmp" \
      "github.com/kedacore/keda/v2/cmd/$cmd")
    mv "$cache/bin/keda-$cmd.tmp" "$cache/bin/keda-$cmd"
  fi
done
moddir="$(cd "$here" && go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
cp "$moddir"/config/crd/bases/*.yaml "$cache/crds/"
chmod u+w "$cache/crds/"*.yaml
gie_version=v1.4.0
mkdir -p "$cache/inference-crds"
if [[ ! -s "$cache/inference-crds/inferencepools.yaml" ]]; then
  gie_dir="$(cd "$(mktemp -d)" && go mod download -json "sigs.k8s.io/gateway-api-inference-extension@$gie_version" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  cp "$gie_dir/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" "$cache/inference-crds/inferencepools.yaml"
  chmod u+w "$cache/inference-crds/inferencepools.yaml"
fi
echo "$cache"
