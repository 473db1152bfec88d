#!/usr/bin/env bash
# The esbnet demo (the README's main job): start the stack, serve a worker,
# show it working, and stop what was started.
#
#   1. containerd, dockerd, the local registry and the worker image
#      (scripts/stack.sh);
#   2. a "node" network namespace that plays the host, so this machine's own
#      network is never changed; in it, a demo data service (busybox httpd) and
#      HAProxy in front of it on 127.0.0.1:9000, the local proxy;
#   3. esb-agent in the node namespace, with the NAT rule 10.88.0.1:9000 ->
#      127.0.0.1:9000 (HAProxy) and the name s3-storage for it (the agent's
#      resolver; workers get nameserver 10.88.0.1, udp+tcp 53 forwarded);
#   4. esbctl acquires a worker, invokes it with a payload that makes the
#      worker fetch http://s3-storage:9000/ (by name, through the DNAT and HAProxy),
#      prints its IP, the answer and the timings, and releases it.
#
# RUNTIME=containerd (default) or RUNTIME=docker picks the agent's runtime:
# the same agent, API and network, workers made by containerd or by Docker
# Engine (network mode none, attached to esb-cni0 by our plugins).
# KEEP=1 leaves everything running for a look (the agent socket is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

node=esb-demo-node
ns_path=/run/netns/$node
work=$(mktemp -d /tmp/esb-demo.XXXXXX)
sock=$work/agent.sock
ctd_ns=esb-demo
runtime=${RUNTIME:-containerd}
case "$runtime" in
containerd | docker) ;;
*) echo "demo: RUNTIME must be containerd or docker, not '$runtime'" >&2; exit 2 ;;
esac
image=127.0.0.1:5000/esb/worker:latest
pids=()
stack_was_up=0

say() { printf '== %s\n' "$*"; }
now_ms() { date +%s%3N; }

cleanup() {
	set +e
	if [ -n "${KEEP:-}" ]; then
		say "KEEP set: agent socket $sock (use: nsenter --net=$ns_path bin/esbctl ls -socket $sock)"
		return
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	# Workers outlive the agent by design: remove what the demo left.
	if [ "$runtime" = docker ]; then
		for c in $(docker --host "unix://$ESB_DOCKER_SOCK" ps -aq --filter "label=esb.namespace=$ctd_ns" 2>/dev/null); do
			docker --host "unix://$ESB_DOCKER_SOCK" rm -f "$c" >/dev/null 2>&1
		done
	fi
	for c in $(ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" containers ls -q 2>/dev/null); do
		ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" tasks kill -s SIGKILL "$c" >/dev/null 2>&1
		sleep 0.2
		ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" tasks rm -f "$c" >/dev/null 2>&1
		ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" containers rm "$c" >/dev/null 2>&1
		umount "/run/netns/esb-$c" 2>/dev/null; rm -f "/run/netns/esb-$c"
	done
	# runc leaves the namespace's (empty) parent cgroups; the namespace
	# itself stays, with the pulled image, so the next demo starts faster.
	rmdir /sys/fs/cgroup/*/"$ctd_ns" 2>/dev/null
	ip netns del "$node" 2>/dev/null
	rm -rf "$work"
	if [ "$stack_was_up" = 0 ]; then scripts/stack.sh down >/dev/null; fi
}
trap cleanup EXIT

say "installing what the demo needs (only what is missing)"
scripts/deps.sh >/dev/null
make -s build
if scripts/stack.sh status >/dev/null 2>&1; then stack_was_up=1; fi
say "starting containerd, dockerd, the local registry and the worker image"
t0=$(now_ms)
scripts/stack.sh up >/dev/null
# shellcheck disable=SC1091
. /run/esbnet/stack.env
echo "   stack ready in $(( $(now_ms) - t0 )) ms (runtime $runtime, containerd at $ESB_CONTAINERD_SOCK, dockerd at $ESB_DOCKER_SOCK, image $image)"
if [ "$runtime" = docker ]; then
	# dockerd lives in the host's network namespace and pulls by itself.
	runtime_flags=(-runtime docker -docker-host "unix://$ESB_DOCKER_SOCK" -docker-namespace "$ctd_ns")
else
	# The agent runs in the node namespace, which has no route to the host's
	# 127.0.0.1:5000: the image is pulled from here first.
	ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" images pull --plain-http "$image" >/dev/null
	runtime_flags=(-runtime containerd -containerd-address "$ESB_CONTAINERD_SOCK" -containerd-namespace "$ctd_ns")
fi

say "making the node namespace $node with a data service behind HAProxy"
if ip netns list | grep -qw "$node"; then ip netns del "$node"; fi
ip netns add "$node"
ip -n "$node" link set lo up
mkdir -p "$work/www" "$work/conf" "$work/logs"
echo "hello from the data services behind HAProxy" >"$work/www/index.html"
ip netns exec "$node" busybox httpd -f -p 127.0.0.1:8081 -h "$work/www" &
pids+=($!)
cat >"$work/haproxy.cfg" <<CFG
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend s3
    bind 127.0.0.1:9000
    default_backend data
backend data
    server d1 127.0.0.1:8081
CFG
ip netns exec "$node" haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
cat >"$work/nat.yaml" <<YAML
egress: proxy-only
forwards:
  - {proto: tcp, port: 9000, to: "127.0.0.1:9000"}
YAML
sed "s|/run/esb/ipam|$work/ipam|" <(bin/esbctl conflist) >"$work/conf/10-esb.conflist"

say "starting esb-agent ($runtime) in the node namespace"
nsenter --net="$ns_path" bin/esb-agent "${runtime_flags[@]}" \
	-socket "$sock" -cni-conf-dir "$work/conf" -cni-bin-dirs "$PWD/bin" -cni-cache-dir "$work/cache" \
	-log-dir "$work/logs" -state-file "$work/state.db" -metrics-listen "" -nat-rules "$work/nat.yaml" -services s3-storage=9000 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && bin/esbctl status -socket "$sock" >/dev/null 2>&1 && break; sleep 0.1; done
bin/esbctl status -socket "$sock"

say "acquiring a worker for function 'hello'"
t0=$(now_ms)
out=$(bin/esbctl acquire -socket "$sock" -owner demo -function hello -image "$image" -o json)
acq=$(( $(now_ms) - t0 ))
id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' <<<"$out" | head -1)
ip=$(sed -n 's/.*"ip": *"\([^"]*\)".*/\1/p' <<<"$out" | head -1)
echo "   worker $id at $ip:8080, acquired in $acq ms"
bin/esbctl ls -socket "$sock" -owner demo

say "invoking it; the worker fetches http://s3-storage:9000/ (the agent's resolver answers 10.88.0.1; DNAT to HAProxy)"
t0=$(now_ms)
nsenter --net="$ns_path" bin/esbctl invoke -socket "$sock" -owner demo "$id" '{"fetch":"http://s3-storage:9000/"}'
echo "   invoke took $(( $(now_ms) - t0 )) ms"
echo "   NAT counters (connections per forward):"
nsenter --net="$ns_path" bin/esbctl nat show | sed 's/^/   /'

if [ -z "${KEEP:-}" ]; then
	say "releasing the worker"
	bin/esbctl release -socket "$sock" -owner demo "$id"
	if [ "$runtime" = docker ]; then
		left=$(docker --host "unix://$ESB_DOCKER_SOCK" ps -aq --filter "label=esb.namespace=$ctd_ns" | wc -l)
	else
		left=$(ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" containers ls -q | wc -l)
	fi
	echo "   containers left: $left; worker namespaces left: $(ls /run/netns | grep -cE '^esb-[0-9a-f]{16}$' || true)"
fi
say "done"
