#!/usr/bin/env bash
# Installs what esbnet's tests, benchmarks and demo need on a fresh Debian 12
# machine, as root. Safe to run again: it installs only what is missing.
#   - Debian packages: iproute2, iputils-ping, nftables, procps; for the
#     client tests (tests/ns/clients): podman with its CNI network backend
#     (containernetworking-plugins, named so that apt does not pick netavark),
#     runc (crun 1.8 refuses hybrid cgroup hosts) and busybox-static, the
#     test container's only binary; for the NAT tests
#     (tests/ns/nattest): haproxy, the local proxy behind the gateway's
#     forwards, and iptables (the nft backend) to build Docker-like tables;
#     for the runtime stack (scripts/stack.sh, tests/lib/stacktest): containerd
#     and runc, docker.io (Docker Engine 20.10, for the Docker runtime mode),
#     docker-registry (the local registry), umoci and skopeo (to build and
#     push the worker image) and curl; python3-grpcio and python3-grpc-tools
#     for the ESB Gateway's Python client test (tests/e2e, stubs generated
#     from agent.proto at test time). Package installs never start a
#     service: the stack runs its own daemons on loopback and unix sockets.
#   - into $ESB_TOOLS_DIR (default /opt/esbnet-tools/bin), from the Go module
#     proxy: cnitool v1.3.0 and the reference plugins bridge and host-local
#     v1.10.0, which the tests and benchmarks drive beside ours, and crictl
#     v1.37.0 (cri-tools), which tests/daemon/critest drives containerd's CRI
#     plugin with; the data services of the end-to-end tests and the demo
#     (behind HAProxy in the node namespace): gofakes3 v1.2.0 (S3) and
#     VictoriaLogs v1.52.2 (logs; its first build takes about 15 minutes
#     on a busy 2-core machine, at nice 15).
#   - into $ESB_TOOLS_DIR/../dynalite-4.0.0, from npm: dynalite 4.0.0, the
#     DynamoDB API server (Node >= 20, which must be installed already).
set -euo pipefail

tools_dir=${ESB_TOOLS_DIR:-/opt/esbnet-tools/bin}
export PATH=$PATH:/usr/local/go/bin

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: run as root (it installs Debian packages)" >&2
	exit 1
fi

pkgs=(iproute2 iputils-ping nftables procps podman containernetworking-plugins busybox-static haproxy iptables
	containerd runc docker.io docker-registry umoci skopeo curl python3-grpcio python3-grpc-tools)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps.sh: installing ${missing[*]}"
	# No maintainer script may start a daemon (docker-registry's init script
	# would listen on every interface, docker.io's would start a system
	# dockerd that makes docker0 and iptables rules): deny service starts
	# while we install, unless the machine already has its own policy.
	policy=/usr/sbin/policy-rc.d
	own_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		own_policy=1
		trap 'rm -f "$policy"' EXIT
	fi
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	if [ -n "$own_policy" ]; then
		rm -f "$policy"
		trap - EXIT
	fi
fi

mkdir -p "$tools_dir"
go_tool() { # name module@version
	if [ ! -x "$tools_dir/$1" ]; then
		echo "deps.sh: go install $2"
		(cd / && GOBIN="$tools_dir" GOFLAGS=-buildvcs=false nice -n 15 go install "$2")
	fi
}
go_tool cnitool github.com/containernetworking/cni/cnitool@v1.3.0
go_tool bridge github.com/containernetworking/plugins/plugins/main/bridge@v1.10.0
go_tool host-local github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
go_tool crictl sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0
go_tool gofakes3 github.com/johannesboyne/gofakes3/cmd/gofakes3@v1.2.0
go_tool victoria-logs github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@v1.52.2
dynalite_dir=$(dirname "$tools_dir")/dynalite-4.0.0
if [ ! -x "$dynalite_dir/node_modules/.bin/dynalite" ]; then
	node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
	if [ "$node_major" -lt 20 ]; then
		echo "deps.sh: dynalite 4.0.0 needs Node.js >= 20 (node and npm on PATH); found ${node_major}" >&2
		exit 1
	fi
	echo "deps.sh: npm install dynalite@4.0.0"
	mkdir -p "$dynalite_dir"
	# classic-level (its storage) ships prebuilt linux binaries: no compiler.
	npm install --prefix "$dynalite_dir" --no-audit --no-fund --omit=dev dynalite@4.0.0 >&2
fi
echo "deps.sh: ready (tools in $tools_dir)"
