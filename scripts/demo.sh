#!/usr/bin/env bash
# The esbnet demo: attach a network namespace (a stand-in worker) to the esb
# network and show its address and a ping of the gateway 10.88.0.1.
#
# It runs entirely inside namespaces it makes: a "node" namespace plays the
# host, so this machine's own network is never changed. IPAM state goes to a
# demo directory, not /run/esb/ipam. Everything is removed at the end unless
# KEEP=1 is set.
#
# The attachment is made by esb-bridge with esb-ipam in-process, driven by
# cnitool (the CNI project's own client) as a runtime would.
set -euo pipefail
cd "$(dirname "$0")/.."

tools_dir=${ESB_TOOLS_DIR:-/opt/esbnet-tools/bin}
node=esb-demo-node
worker=esb-demo-worker
work=$(mktemp -d /tmp/esb-demo.XXXXXX)

cleanup() {
	set +e
	if [ -z "${KEEP:-}" ]; then
		ip netns exec "$node" env CNI_PATH="$PWD/bin:$tools_dir" NETCONFPATH="$work" \
			"$tools_dir/cnitool" del esb "/run/netns/$worker" >/dev/null 2>&1
		ip netns del "$worker" 2>/dev/null
		ip netns del "$node" 2>/dev/null
		rm -rf "$work"
	else
		echo "KEEP set: leaving namespaces $node and $worker and $work"
	fi
}
trap cleanup EXIT

for n in "$node" "$worker"; do
	if ip netns list | grep -qw "$n"; then ip netns del "$n"; fi
	ip netns add "$n"
done
ip -n "$node" link set lo up

cat >"$work/10-esb.conflist" <<JSON
{
  "cniVersion": "1.1.0",
  "name": "esb",
  "plugins": [{
    "type": "esb-bridge",
    "bridge": "esb-cni0",
    "ipam": {
      "type": "esb-ipam",
      "subnet": "10.88.0.0/16",
      "gateway": "10.88.0.1",
      "routes": [{"dst": "0.0.0.0/0"}],
      "dataDir": "$work/ipam"
    }
  }]
}
JSON

echo "== attaching namespace $worker to network esb (node namespace $node)"
result=$(ip netns exec "$node" env CNI_PATH="$PWD/bin:$tools_dir" NETCONFPATH="$work" \
	"$tools_dir/cnitool" add esb "/run/netns/$worker")
echo "$result"
addr=$(ip -n "$worker" -4 -o addr show dev eth0 | awk '{print $4}')
echo "== worker address: $addr"
echo "== worker pings the gateway 10.88.0.1"
ip netns exec "$worker" ping -c 3 -W 2 10.88.0.1
echo "== anti-spoofing elements in the node's nftables table bridge esb"
ip netns exec "$node" nft list set bridge esb ipv4
