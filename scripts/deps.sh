#!/usr/bin/env bash
# Installs what esbnet's tests, benchmarks and demo need on a fresh Debian 12
# machine, as root. Safe to run again: it installs only what is missing.
#   - Debian packages: iproute2, iputils-ping, nftables, procps; for the
#     client tests (tests/clients): podman with its CNI network backend
#     (containernetworking-plugins, named so that apt does not pick netavark)
#     and busybox-static, the test image's only binary.
#   - into $ESB_TOOLS_DIR (default /opt/esbnet-tools/bin), from the Go module
#     proxy: cnitool v1.3.0 and the reference plugins bridge and host-local
#     v1.10.0, which the tests and benchmarks drive beside ours.
set -euo pipefail

tools_dir=${ESB_TOOLS_DIR:-/opt/esbnet-tools/bin}
export PATH=$PATH:/usr/local/go/bin

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: run as root (it installs Debian packages)" >&2
	exit 1
fi

pkgs=(iproute2 iputils-ping nftables procps podman containernetworking-plugins busybox-static)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps.sh: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mkdir -p "$tools_dir"
go_tool() { # name module@version
	if [ ! -x "$tools_dir/$1" ]; then
		echo "deps.sh: go install $2"
		(cd / && GOBIN="$tools_dir" GOFLAGS=-buildvcs=false go install "$2")
	fi
}
go_tool cnitool github.com/containernetworking/cni/cnitool@v1.3.0
go_tool bridge github.com/containernetworking/plugins/plugins/main/bridge@v1.10.0
go_tool host-local github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
echo "deps.sh: ready (tools in $tools_dir)"
