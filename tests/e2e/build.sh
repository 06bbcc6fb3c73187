#!/usr/bin/env bash
# Build the e2e control plane once per version into a cache outside git:
#   ${TOKEN_PROJECTOR_E2E_CACHE:-~/.cache/token-projector/e2e}/kubernetes-<version>-etcd-<version>/
# Prints that folder. Only the Go module proxy is used (no other downloads).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version_of() { awk -v m="$1" '{ for (i = 1; i < NF; i++) if ($i == m && $(i+1) ~ /^v[0-9]/) { print $(i+1); exit } }' "$here/go.mod"; }
k8s=$(version_of k8s.io/kubernetes)
etcd=$(version_of go.etcd.io/etcd/server/v3)
cache=${TOKEN_PROJECTOR_E2E_CACHE:-$HOME/.cache/token-projector/e2e}/kubernetes-$k8s-etcd-${etcd:-unknown}
# --where: print the folder without building (the test suite uses it to find the binaries).
if [ "${1:-}" = "--where" ] || { [ -x "$cache/kube-apiserver" ] && [ -x "$cache/kubectl" ] && [ -x "$cache/etcd" ]; }; then
  echo "$cache"; exit 0
fi
mkdir -p "$cache.tmp"
cd "$here"
start=$(date +%s)
# -mod=mod: go.sum is committed; this only fills the module cache.
GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w" -o "$cache.tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3 >&2
mv "$cache.tmp/server" "$cache.tmp/etcd"  # go names it after the module path, minus /v3
rm -rf "$cache" && mv "$cache.tmp" "$cache"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$cache"
