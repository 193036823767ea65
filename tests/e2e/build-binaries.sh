#!/usr/bin/env bash
# Builds the real control-plane binaries for the end-to-end tests into a cache outside the repository,
# once per pinned version: kube-apiserver, kube-controller-manager, kubectl (k8s.io/kubernetes) and etcd
# (go.etcd.io/etcd/server/v3). The first build takes several minutes on 2 cores; later runs reuse it.
# WVA_E2E_K8S picks the Kubernetes minor: 1.34 (default, tests/e2e/tools) or 1.37 (tests/e2e/tools-1.37).
# Prints the bin directory on stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
case "${WVA_E2E_K8S:-1.34}" in
  1.34) tools="$here/tools" ;;
  1.37) tools="$here/tools-1.37" ;;
  *) echo "WVA_E2E_K8S=${WVA_E2E_K8S}: choose 1.34 or 1.37" >&2; exit 2 ;;
esac
version="$(cd "$tools" && go list -m -f "{{.Version}}" k8s.io/kubernetes)"
cache="${WVA_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wva-metrics-server/e2e}"
bin="$cache/k8s-$version/bin"
mkdir -p "$bin"
build() {
  local name="$1" pkg="$2"
  if [[ -x "$bin/$name" ]]; then
    return
  fi
  echo "building $name ($pkg @ $version) into $bin: not cached yet, this takes a few minutes" >&2
  (cd "$tools" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
}
build etcd ./etcd
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kubectl k8s.io/kubernetes/cmd/kubectl
echo "$bin"
