#!/usr/bin/env bash
# Builds esbnet's pod sandbox ("pause") program (tests/pause) statically and
# pushes it, as an OCI image with no base layer (just the binary /pause,
# which is the entrypoint), to the local registry that scripts/stack.sh
# starts. A Kubernetes node under containerd's CRI plugin runs one such
# container per pod (sandbox_image in deploy/containerd/config.toml); this
# one is built from source, for nodes and tests without internet access.
# Prints the image reference on stdout; progress goes to stderr.
#
# The image is reproducible: the same source gives the same digest (fixed
# timestamps, -trimpath), so running this again pushes nothing new.
#
# Tools: go, umoci and skopeo (scripts/deps.sh installs them).
#
# Environment:
#   ESB_REGISTRY        registry host:port, plain HTTP   (default 127.0.0.1:5000)
#   ESB_PAUSE_REPO      repository:tag in that registry  (default esb/pause:latest)
#   ESB_IMAGE_CREATED   creation time in the image, RFC 3339
#                       (default 1970-01-01T00:00:00Z, for reproducibility)
#   GOARCH              image architecture (default: go env GOARCH)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

registry=${ESB_REGISTRY:-127.0.0.1:5000}
repo=${ESB_PAUSE_REPO:-esb/pause:latest}
created=${ESB_IMAGE_CREATED:-1970-01-01T00:00:00Z}
ref="$registry/$repo"
arch=${GOARCH:-$(go env GOARCH)}
log() { echo "pause-image.sh: $*" >&2; }

for t in go umoci skopeo; do
	command -v "$t" >/dev/null || { log "$t is missing (run scripts/deps.sh)"; exit 1; }
done

work=$(mktemp -d /tmp/esb-pause-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
layout=$work/oci

version=$(git describe --always --dirty 2>/dev/null || echo dev)
log "building tests/pause ($version, linux/$arch, static)"
CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS=-buildvcs=false go build -trimpath \
	-ldflags "-s -w -X github.com/edge-serverless-box/esbnet/internal/buildinfo.Version=$version" \
	-o "$work/pause" ./tests/pause
touch -d "$created" "$work/pause"

img="$layout:latest"
umoci init --layout "$layout"
umoci new --image "$img"
umoci insert --image "$img" --history.created "$created" \
	--history.created_by "scripts/pause-image.sh" "$work/pause" /pause
umoci config --image "$img" --created "$created" --history.created "$created" \
	--history.created_by "scripts/pause-image.sh" \
	--os linux --architecture "$arch" \
	--config.entrypoint /pause --config.workingdir / \
	--config.label org.opencontainers.image.title=esb-pause \
	--config.label org.opencontainers.image.version="$version"
umoci gc --layout "$layout"

printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$work/policy.json"
log "pushing to $ref"
skopeo --policy "$work/policy.json" copy --quiet --dest-tls-verify=false \
	--digestfile "$work/digest" "oci:$img" "docker://$ref" >&2
log "pushed $ref@$(cat "$work/digest")"
echo "$ref"
