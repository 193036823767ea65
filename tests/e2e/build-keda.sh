#!/usr/bin/env bash
# Builds KEDA's real operator and metrics adapter (github.com/kedacore/keda/v2, pinned in tests/e2e/keda/go.mod)
# into the e2e cache, once per version, and copies KEDA's CRDs beside them. The first build pulls about 350
# modules and takes about 11 minutes on 2 cores. Prints the directory (bin/ and crds/ inside).
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
echo "$cache"
