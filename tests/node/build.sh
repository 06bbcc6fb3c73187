#!/usr/bin/env bash
# Build a real node's parts once per version into a cache outside git:
#   ${TOKEN_PROJECTOR_NODE_CACHE:-~/.cache/token-projector/node}/
#     kubelet-<kubernetes version>/kubelet    k8s.io/kubernetes/cmd/kubelet at the version tests/e2e/go.mod pins
#     containerd-<version>/                   containerd, its runc shim and ctr, from containerd's Go module
# Only the Go module proxy is used (Debian's runc and image tools come from `make node-deps`'s apt step).
#   build.sh            build what is missing, print the cache folder
#   build.sh --where    print, without building, where each part is: `kubelet=DIR`, `containerd=DIR`, `images=DIR`
#                       (the tests read it to find them; images.sh writes the images)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
e2e=$(cd "$here/../e2e" && pwd)
CONTAINERD_VERSION=v2.4.2
k8s=$(awk '{ for (i = 1; i < NF; i++) if ($i == "k8s.io/kubernetes" && $(i+1) ~ /^v[0-9]/) { print $(i+1); exit } }' "$e2e/go.mod")
cache=${TOKEN_PROJECTOR_NODE_CACHE:-$HOME/.cache/token-projector/node}
kubelet=$cache/kubelet-$k8s
containerd=$cache/containerd-$CONTAINERD_VERSION
if [ "${1:-}" = "--where" ]; then
  printf 'kubelet=%s\ncontainerd=%s\nimages=%s\n' "$kubelet" "$containerd" "$cache/images"; exit 0
fi
mkdir -p "$cache"

if [ ! -x "$kubelet/kubelet" ]; then
  start=$(date +%s)
  rm -rf "$kubelet.tmp" && mkdir -p "$kubelet.tmp"
  # The e2e module's go.sum pins it, as it pins kube-apiserver: the two share the Go build cache.
  (cd "$e2e" && go build -trimpath -ldflags="-s -w" -o "$kubelet.tmp/" k8s.io/kubernetes/cmd/kubelet) >&2
  rm -rf "$kubelet" && mv "$kubelet.tmp" "$kubelet"
  echo "kubelet $k8s built in $(( $(date +%s) - start ))s" >&2
fi

if [ ! -x "$containerd/containerd" ] || [ ! -x "$containerd/containerd-shim-runc-v2" ] || [ ! -x "$containerd/ctr" ]; then
  start=$(date +%s)
  rm -rf "$containerd.tmp" && mkdir -p "$containerd.tmp"
  (cd "$containerd.tmp" && GOBIN="$containerd.tmp" GOFLAGS= go install -trimpath -ldflags="-s -w" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION") >&2
  rm -rf "$containerd" && mv "$containerd.tmp" "$containerd"
  echo "containerd $CONTAINERD_VERSION built in $(( $(date +%s) - start ))s" >&2
fi
echo "$cache"
