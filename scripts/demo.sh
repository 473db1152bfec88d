#!/usr/bin/env bash
# The esbnet demo (the README's main job): start the stack, serve a Lambda
# function through esb-agent, show its data path, and stop what was started.
#
#   1. containerd, dockerd, the local registry and the worker image
#      (scripts/stack.sh), and the function image (scripts/function-image.sh:
#      aws-lambda-go behind the Lambda RIE; built once, reused);
#   2. a "node" network namespace that plays the host, so this machine's own
#      network is never changed; in it, the data services (gofakes3 for S3,
#      dynalite for DynamoDB, VictoriaLogs) and HAProxy in front of them on
#      127.0.0.1:9000, :8000 and :9428, the local proxy;
#   3. esb-agent in the node namespace, with the NAT rules 10.88.0.1:9000,
#      :8000, :9428 -> HAProxy and the names s3-storage, database and
#      victorialogs for them (the agent's resolver; workers get nameserver
#      10.88.0.1, udp+tcp 53 forwarded);
#   4. esbctl acquires a worker of the function with the services' URLs in
#      its environment, invokes it through the Lambda path (the function
#      puts and gets an object on s3-storage and an item on database and
#      pushes a log line to victorialogs), finds the log line again by
#      querying VictoriaLogs, prints the NAT counters per forward and
#      releases the worker.
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
pids=()
tools=$(dirname "${ESB_TOOLS_DIR:-/opt/esbnet-tools/bin}")
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
say "starting containerd, dockerd, the local registry and the worker image; the function image"
t0=$(now_ms)
# The demo runs the function image; the worker image need only exist.
ESB_WORKER_IMAGE_BUILD=missing scripts/stack.sh up >/dev/null
# shellcheck disable=SC1091
. /run/esbnet/stack.env
image=$(scripts/function-image.sh 2>/dev/null)
echo "   stack ready in $(( $(now_ms) - t0 )) ms (runtime $runtime, containerd at $ESB_CONTAINERD_SOCK, dockerd at $ESB_DOCKER_SOCK, function image $image)"
if [ "$runtime" = docker ]; then
	# dockerd lives in the host's network namespace and pulls by itself.
	runtime_flags=(-runtime docker -docker-host "unix://$ESB_DOCKER_SOCK" -docker-namespace "$ctd_ns")
else
	# The agent runs in the node namespace, which has no route to the host's
	# 127.0.0.1:5000: the image is pulled from here first.
	ctr --address "$ESB_CONTAINERD_SOCK" -n "$ctd_ns" images pull --plain-http "$image" >/dev/null
	runtime_flags=(-runtime containerd -containerd-address "$ESB_CONTAINERD_SOCK" -containerd-namespace "$ctd_ns")
fi

say "making the node namespace $node with the data services behind HAProxy"
if ip netns list | grep -qw "$node"; then ip netns del "$node"; fi
ip netns add "$node"
ip -n "$node" link set lo up
mkdir -p "$work/conf" "$work/logs"
ip netns exec "$node" "$tools/bin/gofakes3" -host 127.0.0.1:19190 -backend memory -quiet 2>"$work/gofakes3.log" &
pids+=($!)
ip netns exec "$node" "$tools/dynalite-4.0.0/node_modules/.bin/dynalite" --host 127.0.0.1 --port 19180 --createTableMs 0 >/dev/null &
pids+=($!)
ip netns exec "$node" "$tools/bin/victoria-logs" -httpListenAddr 127.0.0.1:19428 -storageDataPath "$work/vl" -loggerLevel ERROR 2>"$work/victoria-logs.log" &
pids+=($!)
cat >"$work/haproxy.cfg" <<CFG
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend s3-storage
    bind 127.0.0.1:9000
    default_backend gofakes3
backend gofakes3
    server s1 127.0.0.1:19190
frontend database
    bind 127.0.0.1:8000
    default_backend dynalite
backend dynalite
    server d1 127.0.0.1:19180
frontend victorialogs
    bind 127.0.0.1:9428
    default_backend victorialogs
backend victorialogs
    server v1 127.0.0.1:19428
CFG
ip netns exec "$node" haproxy -db -f "$work/haproxy.cfg" &
pids+=($!)
cat >"$work/nat.yaml" <<YAML
egress: proxy-only
forwards:
  - {proto: tcp, port: 9000, to: "127.0.0.1:9000"}
  - {proto: tcp, port: 8000, to: "127.0.0.1:8000"}
  - {proto: tcp, port: 9428, to: "127.0.0.1:9428"}
YAML
for p in 19190 19180 19428 9000 8000 9428; do
	for _ in $(seq 300); do ip netns exec "$node" bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null && break; sleep 0.1; done
done
echo "   gofakes3 (S3), dynalite (DynamoDB) and VictoriaLogs up; HAProxy on 127.0.0.1:9000, :8000, :9428"
sed "s|/run/esb/ipam|$work/ipam|" <(bin/esbctl conflist) >"$work/conf/10-esb.conflist"

say "starting esb-agent ($runtime) in the node namespace"
nsenter --net="$ns_path" bin/esb-agent "${runtime_flags[@]}" \
	-socket "$sock" -cni-conf-dir "$work/conf" -cni-bin-dirs "$PWD/bin" -cni-cache-dir "$work/cache" \
	-log-dir "$work/logs" -state-file "$work/state.db" -metrics-listen "" -nat-rules "$work/nat.yaml" -services s3-storage=9000,database=8000,victorialogs=9428 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && bin/esbctl status -socket "$sock" >/dev/null 2>&1 && break; sleep 0.1; done
bin/esbctl status -socket "$sock"

say "acquiring a worker for function 'orders' (the services' URLs in its environment, as the ESB Gateway sets them)"
t0=$(now_ms)
out=$(bin/esbctl acquire -socket "$sock" -owner demo -function orders -image "$image" -o json \
	-env AWS_ENDPOINT_URL_S3=http://s3-storage:9000 -env AWS_ENDPOINT_URL_DYNAMODB=http://database:8000 \
	-env VICTORIALOGS_URL=http://victorialogs:9428 -env AWS_LAMBDA_FUNCTION_NAME=orders -env AWS_REGION=us-east-1 \
	-env AWS_ACCESS_KEY_ID=esb -env AWS_SECRET_ACCESS_KEY=esb-secret)
acq=$(( $(now_ms) - t0 ))
id=$(sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' <<<"$out" | head -1)
ip=$(sed -n 's/.*"ip": *"\([^"]*\)".*/\1/p' <<<"$out" | head -1)
echo "   worker $id at $ip:8080 (the Lambda RIE in front of the handler), acquired in $acq ms"
bin/esbctl ls -socket "$sock" -owner demo

say "invoking it through the Lambda path: POST /2015-03-31/functions/function/invocations"
echo "   the function puts and gets s3://esb-function/order-42 on s3-storage:9000, an item in table esb-function on database:8000,"
echo "   and pushes a log line to victorialogs:9428 (each name answers 10.88.0.1; DNAT to HAProxy)"
t0=$(now_ms)
answer=$(nsenter --net="$ns_path" bin/esbctl invoke -socket "$sock" -owner demo "$id" '{"key":"order-42","body":"2 coffees, 1 cake"}')
echo "   invoke took $(( $(now_ms) - t0 )) ms (the first: it starts the handler); the function answered:"
echo "   $answer"
rid=$(sed -n 's/.*"request_id": *"\([^"]*\)".*/\1/p' <<<"$answer")
t0=$(now_ms)
answer=$(nsenter --net="$ns_path" bin/esbctl invoke -socket "$sock" -owner demo "$id" '{"key":"order-43","body":"1 tea"}')
echo "   a second invoke took $(( $(now_ms) - t0 )) ms: $answer"

say "finding the first invoke's log line again by querying VictoriaLogs (request_id $rid)"
found=
for _ in $(seq 100); do
	found=$(ip netns exec "$node" curl -s --max-time 5 http://127.0.0.1:9428/select/logsql/query \
		--data-urlencode "query=function:orders AND request_id:\"$rid\"")
	[ -n "$found" ] && break
	sleep 0.2
done
echo "   ${found:-no line found}"
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
