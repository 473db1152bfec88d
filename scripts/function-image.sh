#!/usr/bin/env bash
# Builds the test Lambda function (tests/images/function, a Go module of its own)
# and pushes it to the local registry as a Lambda-style container image:
#   /usr/local/bin/aws-lambda-rie  the Runtime Interface Emulator, built from
#                                  its Go module (the version in
#                                  tests/images/function/go.mod), the entry point;
#                                  it serves POST /2015-03-31/functions/
#                                  function/invocations on 8080
#   /var/runtime/bootstrap         the handler (aws-lambda-go), which the
#                                  RIE starts as the runtime
# Both static, no base layer, reproducible (fixed timestamps, -trimpath).
# The tag is a hash of the function's sources and go.sum, so an unchanged
# function is built once per registry: when the tag is already there this
# prints it and builds nothing. Prints the image reference on stdout;
# progress goes to stderr.
#
# Environment:
#   ESB_REGISTRY        registry host:port, plain HTTP   (default 127.0.0.1:5000)
#   ESB_FUNCTION_REPO   repository in the registry       (default esb/function)
#   ESB_IMAGE_CREATED   creation time in the image       (default 1970-01-01T00:00:00Z)
#   ESB_FUNCTION_FORCE  set: build and push even when the tag exists
#   GOARCH              image architecture (default: go env GOARCH)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
registry=${ESB_REGISTRY:-127.0.0.1:5000}
repo=${ESB_FUNCTION_REPO:-esb/function}
created=${ESB_IMAGE_CREATED:-1970-01-01T00:00:00Z}
arch=${GOARCH:-$(go env GOARCH)}
log() { echo "function-image.sh: $*" >&2; }

for t in go umoci skopeo sha256sum; do
	command -v "$t" >/dev/null || { log "$t is missing (run scripts/deps.sh)"; exit 1; }
done

src=tests/images/function
tag=$( (cd "$src" && cat go.mod go.sum $(ls ./*.go | grep -v '_test.go$' | sort); echo "$arch") | sha256sum | cut -c1-12)
ref="$registry/$repo:$tag"
# The registry is ours and plain HTTP; our own policy, as go-image.sh does.
work=$(mktemp -d /tmp/esb-function-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$work/policy.json"
if [ -z "${ESB_FUNCTION_FORCE:-}" ] &&
	skopeo --policy "$work/policy.json" inspect --raw --tls-verify=false "docker://$ref" >/dev/null 2>&1; then
	log "$ref is in the registry (sources unchanged): nothing to build"
	echo "$ref"
	exit 0
fi

start=$(date +%s)
mkdir -p "$work/rootfs"
log "building the handler and the RIE (linux/$arch, static)"
(
	cd "$src"
	export CGO_ENABLED=0 GOOS=linux GOARCH=$arch GOFLAGS=-buildvcs=false
	go build -trimpath -ldflags "-s -w" -o "$work/bootstrap" .
	go build -trimpath -ldflags "-s -w" -o "$work/aws-lambda-rie" \
		github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie
)
touch -d "$created" "$work/bootstrap" "$work/aws-lambda-rie"

layout=$work/oci
img="$layout:latest"
umoci init --layout "$layout"
umoci new --image "$img"
umoci insert --image "$img" --history.created "$created" \
	--history.created_by scripts/function-image.sh "$work/aws-lambda-rie" /usr/local/bin/aws-lambda-rie
umoci insert --image "$img" --history.created "$created" \
	--history.created_by scripts/function-image.sh "$work/bootstrap" /var/runtime/bootstrap
umoci config --image "$img" --created "$created" --history.created "$created" \
	--history.created_by scripts/function-image.sh \
	--os linux --architecture "$arch" \
	--config.entrypoint /usr/local/bin/aws-lambda-rie \
	--config.cmd /var/runtime/bootstrap \
	--config.exposedports 8080/tcp \
	--config.workingdir /var/task \
	--config.env LAMBDA_TASK_ROOT=/var/task \
	--config.env LAMBDA_RUNTIME_DIR=/var/runtime \
	--config.label org.opencontainers.image.title=esb-function \
	--config.label org.opencontainers.image.version="$tag"
umoci gc --layout "$layout"
log "pushing to $ref"
skopeo --policy "$work/policy.json" copy --quiet --dest-tls-verify=false \
	--digestfile "$work/digest" "oci:$img" "docker://$ref" >&2
size=$(du -cb "$layout"/blobs/sha256/* | tail -1 | cut -f1)
log "pushed $ref@$(cat "$work/digest") in $(($(date +%s) - start)) s, $((size / 1024)) KiB in the layout"
echo "$ref"
