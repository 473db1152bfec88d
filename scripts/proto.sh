#!/usr/bin/env bash
# Regenerates agent/api/v1 from agent.proto: Debian's protoc plus the Go
# plugins at pinned versions (installed into $ESB_TOOLS_DIR when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
tools_dir=${ESB_TOOLS_DIR:-/opt/esbnet-tools/bin}
export PATH=$tools_dir:$PATH:/usr/local/go/bin
if ! command -v protoc >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends protobuf-compiler
fi
mkdir -p "$tools_dir"
[ -x "$tools_dir/protoc-gen-go" ] || (cd / && GOBIN="$tools_dir" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12)
[ -x "$tools_dir/protoc-gen-go-grpc" ] || (cd / && GOBIN="$tools_dir" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0)
protoc --go_out=. --go_opt=paths=source_relative \
	--go-grpc_out=. --go-grpc_opt=paths=source_relative \
	agent/api/v1/agent.proto
echo "proto.sh: regenerated agent/api/v1"
