#!/usr/bin/env bash
# Build the images the node tests run, for real, from the repository's Dockerfiles, with no registry:
#   base      Debian bookworm with python3 from Debian's packages (mmdebstrap), imported as a local image and
#             cached by its package list; given to both Dockerfiles as their PYTHON_IMAGE argument
#   pause     the sandbox image: tests/node/pause.c compiled statically, FROM scratch
#   token-projector, api-and-data-store    `buildah bud` of Dockerfile and examples/api-and-data-store/Dockerfile
# Each is saved as a docker archive (what `ctr images import` names) into
#   ${TOKEN_PROJECTOR_NODE_CACHE:-~/.cache/token-projector/node}/images/<name>.tar
# Needs root and Debian's buildah, podman and mmdebstrap (`make node-deps`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TOKEN_PROJECTOR_NODE_CACHE:-$HOME/.cache/token-projector/node}
out=$cache/images
TAG=node-e2e
for tool in buildah podman mmdebstrap gcc; do
  command -v "$tool" >/dev/null || { echo "images.sh needs $tool: run \`make node-deps\` (as root)" >&2; exit 2; }
done
mkdir -p "$out"
# crun (podman's default) refuses a hybrid cgroup v1 host, and this host's hard nofile limit is below the
# default ulimits: builds run with chroot isolation, and any runtime podman starts is runc with lower limits.
conf=$out/containers.conf
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' >"$conf"
export CONTAINERS_CONF=$conf BUILDAH_ISOLATION=chroot

# The base: Debian's python3 (3.11) with venv, `python` on PATH as in the python image, and this machine's CA
# bundle (the package registries may be reached through a proxy whose CA only the host bundle has).
packages=python3,python3-venv,python-is-python3,ca-certificates
ca=/etc/ssl/certs/ca-certificates.crt
key=$( (echo "bookworm $packages"; cat "$ca") | sha256sum | cut -c1-16)
base=localhost/python-base:$key
if ! podman image exists "$base"; then
  start=$(date +%s)
  rootfs=$out/base-$key.tar
  if [ ! -s "$rootfs" ]; then
    mmdebstrap --quiet --format=tar --variant=essential --include="$packages" \
      --customize-hook="copy-in $ca /etc/ssl/certs" bookworm "$rootfs.tmp"
    mv "$rootfs.tmp" "$rootfs"
  fi
  podman import --quiet --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' "$rootfs" "$base" >/dev/null
  rm -f "$rootfs"
  echo "base $base made in $(( $(date +%s) - start ))s" >&2
fi

build() {  # build NAME DOCKERFILE: buildah bud from the repository's root, saved as NAME.tar
  local name=$1 dockerfile=$2 start
  start=$(date +%s)
  buildah bud --quiet --layers --build-arg "PYTHON_IMAGE=$base" -f "$dockerfile" -t "localhost/$name:$TAG" "$repo" >/dev/null
  rm -f "$out/$name.tar"
  podman save --quiet --format docker-archive -o "$out/$name.tar" "localhost/$name:$TAG"
  echo "$name built in $(( $(date +%s) - start ))s" >&2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -Os -static -o "$work/pause" "$here/pause.c"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$work/Containerfile"
buildah bud --quiet -f "$work/Containerfile" -t "localhost/pause:$TAG" "$work" >/dev/null
rm -f "$out/pause.tar" && podman save --quiet --format docker-archive -o "$out/pause.tar" "localhost/pause:$TAG"

build token-projector "$repo/Dockerfile"
build api-and-data-store "$repo/examples/api-and-data-store/Dockerfile"
echo "$out"
