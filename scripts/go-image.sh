#!/usr/bin/env bash
# Builds a Go program of this repository statically and pushes it, as an OCI
# image with no base layer (just the binary /<name>, which is the
# entrypoint), to the local registry that scripts/stack.sh starts. Prints the
# image reference on stdout; progress goes to stderr. scripts/worker-image.sh
# (the test worker) and scripts/pause-image.sh (the pod sandbox) call it.
#
#   scripts/go-image.sh PACKAGE NAME REPO [EXPOSED-PORT]
#   e.g. scripts/go-image.sh ./tests/images/worker esb-worker esb/worker:latest 8080/tcp
#
# The image is reproducible: the same source gives the same digest (fixed
# timestamps, -trimpath), so running this again pushes nothing new and a
# runtime that already pulled the image keeps it.
#
# Tools: go, umoci and skopeo (scripts/deps.sh installs them).
#
# Environment:
#   ESB_REGISTRY        registry host:port, plain HTTP   (default 127.0.0.1:5000)
#   ESB_IMAGE_CREATED   creation time in the image, RFC 3339
#                       (default 1970-01-01T00:00:00Z, for reproducibility)
#   ESB_IMAGE_OCI       keep the OCI layout in this directory instead of a
#                       temporary one (it is rebuilt from scratch each run)
#   GOARCH              image architecture (default: go env GOARCH)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
	echo "usage: $0 PACKAGE NAME REPO [EXPOSED-PORT]" >&2
	exit 2
fi
pkg=$1 name=$2 repo=$3 port=${4:-}
registry=${ESB_REGISTRY:-127.0.0.1:5000}
created=${ESB_IMAGE_CREATED:-1970-01-01T00:00:00Z}
ref="$registry/$repo"
arch=${GOARCH:-$(go env GOARCH)}
by=${ESB_IMAGE_BY:-scripts/go-image.sh}
log() { echo "${by##*/}: $*" >&2; }

for t in go umoci skopeo; do
	command -v "$t" >/dev/null || { log "$t is missing (run scripts/deps.sh)"; exit 1; }
done

work=$(mktemp -d "/tmp/esb-$name-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout=${ESB_IMAGE_OCI:-$work/oci}
rm -rf "$layout"

version=$(git describe --always --dirty 2>/dev/null || echo dev)
log "building $pkg ($version, linux/$arch, static)"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS=-buildvcs=false go build -trimpath \
	-ldflags "-s -w -X github.com/edge-serverless-box/esbnet/internal/buildinfo.Version=$version" \
	-o "$work/$name" "$pkg"
# The layer's tar carries the file's mtime: pin it so the digest only moves
# with the binary.
touch -d "$created" "$work/$name"

img="$layout:latest"
umoci init --layout "$layout"
umoci new --image "$img"
umoci insert --image "$img" --history.created "$created" \
	--history.created_by "$by" "$work/$name" "/$name"
ports=()
[ -z "$port" ] || ports=(--config.exposedports "$port")
umoci config --image "$img" --created "$created" --history.created "$created" \
	--history.created_by "$by" \
	--os linux --architecture "$arch" \
	--config.entrypoint "/$name" "${ports[@]}" \
	--config.workingdir / \
	--config.label org.opencontainers.image.title="$name" \
	--config.label org.opencontainers.image.version="$version"
umoci gc --layout "$layout" # drop the intermediate manifests and configs

# Our own signature policy, so the push does not depend on the machine's
# /etc/containers/policy.json: the source is the layout we just built.
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$work/policy.json"
log "pushing to $ref"
skopeo --policy "$work/policy.json" copy --quiet --dest-tls-verify=false \
	--digestfile "$work/digest" "oci:$img" "docker://$ref" >&2
log "pushed $ref@$(cat "$work/digest")"
echo "$ref"
