#!/usr/bin/env bash
# The runtime stack that esbnet's end-to-end tests and the demo run against:
#   - containerd (Debian's 1.6, with runc) under its own config, root, state
#     and socket, so it never touches a system containerd;
#   - Docker Engine (Debian's docker.io 20.10) under its own config, data
#     root, exec root and socket, with its own managed containerd, so it never
#     touches a system dockerd. It runs in the machine's network namespace and
#     must not change it: no docker0 bridge, no iptables rules, no forwarding
#     or masquerade (workers run with network mode "none" and get the esb
#     network from our plugins);
#   - Debian's docker-registry on 127.0.0.1:5000 only, with its own config and
#     storage (dockerd pulls from it over plain HTTP: 127.0.0.0/8 registries
#     are insecure registries by default);
#   - the worker image (tests/images/worker), built and pushed to that registry by
#     scripts/worker-image.sh as 127.0.0.1:5000/esb/worker:latest.
# Everything listens on loopback or a unix socket. Run scripts/deps.sh first.
#
# Usage (root): scripts/stack.sh up|down|status|env
#   up      start what is not running and healthy (a healthy daemon is left
#           alone), wait (bounded) until each answers, then push the image
#   down    stop what up started (by its pid file): dockerd (which stops its
#           running containers; containers and images stay), the containerd
#           tasks still running in any namespace (killed and deleted;
#           containers, images and snapshots stay), then containerd and the
#           registry. Data directories stay.
#   status  what runs, with pids, health and the image digest; exit 0 when
#           everything is up, 3 otherwise
#   env     print the stack's settings as shell assignments (the same lines
#           as $ESB_RUN_DIR/stack.env, which up writes for tests to read)
#
# Environment (defaults in brackets):
#   ESB_RUN_DIR            pid files, generated configs, stack.env [/run/esbnet]
#   ESB_LOG_DIR            daemon logs [/var/log/esbnet]
#   ESB_CONTAINERD_ROOT    containerd root (images, snapshots) [/var/lib/esbnet/containerd]
#   ESB_CONTAINERD_STATE   containerd state [/run/esbnet/containerd]
#   ESB_CONTAINERD_SOCK    containerd gRPC socket [$ESB_CONTAINERD_STATE/containerd.sock]
#   ESB_SNAPSHOTTER        overlayfs | native | auto: overlayfs when an
#                          overlay mount works under the root, else native [auto]
#   ESB_DOCKER_ROOT        dockerd data root (images, containers) [/var/lib/esbnet/docker]
#   ESB_DOCKER_EXEC        dockerd exec root (its containerd, netns mounts) [/run/esbnet/docker-exec]
#   ESB_DOCKER_SOCK        dockerd API socket [/run/esbnet/docker.sock]
#   ESB_REGISTRY           registry listen address, loopback only [127.0.0.1:5000]
#   ESB_REGISTRY_DIR       registry storage [/var/lib/esbnet/registry]
#   ESB_WORKER_REPO        worker repository:tag [esb/worker:latest]
#   ESB_WORKER_IMAGE_BUILD always | missing | never: when up runs
#                          scripts/worker-image.sh; the build is reproducible,
#                          so always pushes nothing new for unchanged
#                          sources [always]
#   ESB_STACK_WAIT         seconds to wait for each daemon to answer [30]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin:/usr/local/go/bin

run_dir=${ESB_RUN_DIR:-/run/esbnet}
log_dir=${ESB_LOG_DIR:-/var/log/esbnet}
ctd_root=${ESB_CONTAINERD_ROOT:-/var/lib/esbnet/containerd}
ctd_state=${ESB_CONTAINERD_STATE:-/run/esbnet/containerd}
ctd_sock=${ESB_CONTAINERD_SOCK:-$ctd_state/containerd.sock}
snapshotter=${ESB_SNAPSHOTTER:-auto}
dk_root=${ESB_DOCKER_ROOT:-/var/lib/esbnet/docker}
dk_exec=${ESB_DOCKER_EXEC:-/run/esbnet/docker-exec}
dk_sock=${ESB_DOCKER_SOCK:-/run/esbnet/docker.sock}
registry=${ESB_REGISTRY:-127.0.0.1:5000}
reg_dir=${ESB_REGISTRY_DIR:-/var/lib/esbnet/registry}
worker_repo=${ESB_WORKER_REPO:-esb/worker:latest}
image_build=${ESB_WORKER_IMAGE_BUILD:-always}
wait_s=${ESB_STACK_WAIT:-30}

ctd_conf=$run_dir/containerd.toml
ctd_pid=$run_dir/containerd.pid
ctd_log=$log_dir/containerd.log
dk_conf=$run_dir/docker.json
dk_pid=$run_dir/docker.pid
dk_log=$log_dir/docker.log
reg_conf=$run_dir/registry.yml
reg_pid=$run_dir/registry.pid
reg_log=$log_dir/registry.log
env_file=$run_dir/stack.env
worker_image=$registry/$worker_repo

say() { echo "stack.sh: $*"; }
die() {
	echo "stack.sh: $*" >&2
	exit 1
}

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root"; }

need_tools() {
	local t missing=()
	for t in containerd containerd-shim-runc-v2 ctr runc dockerd docker-init docker-registry curl umoci skopeo start-stop-daemon; do
		command -v "$t" >/dev/null || missing+=("$t")
	done
	[ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}: run scripts/deps.sh first"
}

# The registry must never listen beyond loopback.
check_registry_addr() {
	case $registry in
	127.*:* | localhost:* | \[::1\]:*) ;;
	*) die "ESB_REGISTRY=$registry: the registry listens on loopback only (127.0.0.0/8 or [::1])" ;;
	esac
}

# --- containerd -------------------------------------------------------------

ctd_answers() { [ -S "$ctd_sock" ] && timeout 5 ctr --connect-timeout 2s --address "$ctd_sock" version >/dev/null 2>&1; }

ctd_running() { start-stop-daemon --status --pidfile "$ctd_pid" --exec "$(command -v containerd)"; }

# ctd_started: the daemon just started has not exited (its pid file may not
# be written yet).
ctd_started() { [ ! -s "$ctd_pid" ] || ctd_running; }

# pick_snapshotter prints overlayfs when an overlay mount works on the
# containerd root's file system, else native.
pick_snapshotter() {
	case $snapshotter in
	overlayfs | native)
		echo "$snapshotter"
		return
		;;
	auto) ;;
	*) die "ESB_SNAPSHOTTER=$snapshotter: want overlayfs, native or auto" ;;
	esac
	local d ok=native
	d=$(mktemp -d "$ctd_root/overlay-check.XXXXXX")
	mkdir "$d/lower" "$d/upper" "$d/work" "$d/merged"
	echo x >"$d/lower/f"
	if mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/merged" 2>/dev/null; then
		if [ "$(cat "$d/merged/f" 2>/dev/null)" = x ] && echo y >"$d/merged/g" 2>/dev/null; then
			ok=overlayfs
		fi
		umount "$d/merged"
	fi
	rm -rf "$d"
	echo "$ok"
}

write_ctd_conf() {
	cat >"$ctd_conf" <<EOF
# Generated by scripts/stack.sh: esbnet's own containerd, apart from any
# system containerd. Only the socket is served; no TCP, no metrics, no CRI.
version = 2
root = "$ctd_root"
state = "$ctd_state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$ctd_sock"

[ttrpc]
  address = "$ctd_sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$ctd_root/opt"
EOF
}

ctd_up() {
	if ctd_answers; then
		if ctd_running; then
			say "containerd: already running (pid $(cat "$ctd_pid")), socket $ctd_sock"
		else
			say "containerd: socket $ctd_sock answers (not started by this script), leaving it"
		fi
		return
	fi
	if ctd_running; then
		say "containerd: pid $(cat "$ctd_pid") runs but $ctd_sock does not answer; waiting"
		if wait_for "containerd" ctd_answers; then return; fi
		say "containerd: restarting it"
		ctd_down
	fi
	mkdir -p "$ctd_root" "$ctd_state"
	chmod 0711 "$ctd_root" "$ctd_state"
	rm -f "$ctd_pid" "$ctd_sock" "$ctd_sock.ttrpc"
	write_ctd_conf
	say "containerd: starting (config $ctd_conf, log $ctd_log)"
	start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$ctd_pid" \
		--exec "$(command -v containerd)" -- --config "$ctd_conf" \
		</dev/null >>"$ctd_log" 2>&1
	wait_for "containerd" ctd_answers ctd_started || {
		tail -n 20 "$ctd_log" >&2
		die "containerd did not answer on $ctd_sock within ${wait_s}s (log: $ctd_log)"
	}
	say "containerd: up (pid $(cat "$ctd_pid")), socket $ctd_sock"
}

# ctd_kill_tasks kills and deletes every task still running in any
# namespace, so that no shim or container outlives the daemon.
ctd_kill_tasks() {
	ctd_answers || return 0
	local ns id
	for ns in $(ctr --address "$ctd_sock" namespaces list -q 2>/dev/null); do
		for id in $(ctr --address "$ctd_sock" -n "$ns" tasks list -q 2>/dev/null); do
			say "containerd: deleting task $ns/$id"
			timeout 20 ctr --address "$ctd_sock" -n "$ns" tasks delete --force "$id" >/dev/null 2>&1 ||
				echo "stack.sh: could not delete task $ns/$id" >&2
		done
	done
}

ctd_down() {
	if ! ctd_running; then
		rm -f "$ctd_pid"
		say "containerd: not running (from $ctd_pid)"
		return
	fi
	ctd_kill_tasks
	start-stop-daemon --stop --quiet --pidfile "$ctd_pid" --exec "$(command -v containerd)" \
		--retry TERM/15/KILL/5 || true
	rm -f "$ctd_pid" "$ctd_sock" "$ctd_sock.ttrpc"
	say "containerd: stopped"
}

# --- dockerd ----------------------------------------------------------------

dk_answers() { [ -S "$dk_sock" ] && [ "$(curl -sf --max-time 3 --unix-socket "$dk_sock" http://docker/_ping 2>/dev/null)" = OK ]; }

dk_running() { start-stop-daemon --status --pidfile "$dk_pid" --exec "$(command -v dockerd)"; }

dk_started() { [ ! -s "$dk_pid" ] || dk_running; }

# dk_info FIELD prints a top-level string field of dockerd's GET /info.
dk_info() {
	curl -sf --max-time 5 --unix-socket "$dk_sock" http://docker/info 2>/dev/null |
		sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
}

# The settings keep dockerd off the machine's network: no default bridge
# (so no docker0), no iptables or ip6tables rules, no masquerade, no
# ip_forward sysctl, no userland proxy. "containerd" is left unset: dockerd
# then supervises its own containerd under the exec root, unless a system
# containerd has /run/containerd/containerd.sock (dockerd 20.10 prefers that
# one; dk_up warns). The file is dockerd's only configuration: it never
# reads /etc/docker/daemon.json.
write_dk_conf() {
	cat >"$dk_conf" <<EOF
{
  "data-root": "$dk_root",
  "exec-root": "$dk_exec",
  "pidfile": "$dk_exec/dockerd.pid",
  "hosts": ["unix://$dk_sock"],
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-masq": false,
  "ip-forward": false,
  "userland-proxy": false,
  "live-restore": false,
  "shutdown-timeout": 10,
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
}

dk_up() {
	if dk_answers; then
		if dk_running; then
			say "dockerd: already running (pid $(cat "$dk_pid")), socket $dk_sock"
		else
			say "dockerd: socket $dk_sock answers (not started by this script), leaving it"
		fi
		return
	fi
	if dk_running; then
		say "dockerd: pid $(cat "$dk_pid") runs but $dk_sock does not answer; waiting"
		if wait_for "dockerd" dk_answers; then return; fi
		say "dockerd: restarting it"
		dk_down
	fi
	if [ -S /run/containerd/containerd.sock ]; then
		echo "stack.sh: warning: /run/containerd/containerd.sock exists: dockerd 20.10 uses that system containerd instead of its own" >&2
	fi
	mkdir -p "$dk_root" "$dk_exec"
	chmod 0711 "$dk_root" "$dk_exec"
	rm -f "$dk_pid" "$dk_sock" "$dk_exec/dockerd.pid"
	write_dk_conf
	say "dockerd: starting (config $dk_conf, log $dk_log)"
	start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$dk_pid" \
		--exec "$(command -v dockerd)" -- --config-file "$dk_conf" \
		</dev/null >>"$dk_log" 2>&1
	wait_for "dockerd" dk_answers dk_started || {
		tail -n 20 "$dk_log" >&2
		die "dockerd did not answer on $dk_sock within ${wait_s}s (log: $dk_log)"
	}
	say "dockerd: up (pid $(cat "$dk_pid")), socket $dk_sock, storage driver $(dk_info Driver)"
}

# dk_down stops dockerd with SIGTERM: it stops its running containers
# (within shutdown-timeout), unmounts their network namespaces and stops its
# containerd.
dk_down() {
	if ! dk_running; then
		rm -f "$dk_pid"
		say "dockerd: not running (from $dk_pid)"
		return
	fi
	start-stop-daemon --stop --quiet --pidfile "$dk_pid" --exec "$(command -v dockerd)" \
		--retry TERM/30/KILL/5 || true
	rm -f "$dk_pid" "$dk_sock"
	say "dockerd: stopped"
}

# --- registry ---------------------------------------------------------------

reg_answers() { curl -sf --max-time 3 -o /dev/null "http://$registry/v2/"; }

reg_running() { start-stop-daemon --status --pidfile "$reg_pid" --exec "$(command -v docker-registry)"; }

reg_started() { [ ! -s "$reg_pid" ] || reg_running; }

write_reg_conf() {
	cat >"$reg_conf" <<EOF
# Generated by scripts/stack.sh: esbnet's local registry, loopback only.
version: 0.1
log:
  level: info
  fields:
    service: esb-registry
storage:
  filesystem:
    rootdirectory: $reg_dir
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: $registry
  headers:
    X-Content-Type-Options: [nosniff]
EOF
}

reg_up() {
	if reg_answers; then
		if reg_running; then
			say "registry: already running (pid $(cat "$reg_pid")) on $registry"
		else
			say "registry: $registry answers (not started by this script), leaving it"
		fi
		return
	fi
	if reg_running; then
		say "registry: pid $(cat "$reg_pid") runs but $registry does not answer; waiting"
		if wait_for "registry" reg_answers; then return; fi
		say "registry: restarting it"
		reg_down
	fi
	mkdir -p "$reg_dir"
	# Run as Debian's docker-registry system user when the package made it.
	local user=()
	if getent passwd docker-registry >/dev/null; then
		chown docker-registry:docker-registry "$reg_dir"
		user=(--chuid docker-registry:docker-registry)
	fi
	rm -f "$reg_pid"
	write_reg_conf
	say "registry: starting on $registry (config $reg_conf, storage $reg_dir, log $reg_log)"
	start-stop-daemon --start --background --no-close --make-pidfile --pidfile "$reg_pid" \
		"${user[@]}" --exec "$(command -v docker-registry)" -- serve "$reg_conf" \
		</dev/null >>"$reg_log" 2>&1
	wait_for "registry" reg_answers reg_started || {
		tail -n 20 "$reg_log" >&2
		die "registry did not answer on http://$registry/v2/ within ${wait_s}s (log: $reg_log)"
	}
	say "registry: up (pid $(cat "$reg_pid")) on $registry"
}

reg_down() {
	if ! reg_running; then
		rm -f "$reg_pid"
		say "registry: not running (from $reg_pid)"
		return
	fi
	start-stop-daemon --stop --quiet --pidfile "$reg_pid" --exec "$(command -v docker-registry)" \
		--retry TERM/10/KILL/5 || true
	rm -f "$reg_pid"
	say "registry: stopped"
}

# image_digest prints the registry's digest of the worker image, or nothing.
image_digest() {
	local repo=${worker_repo%:*} tag=${worker_repo##*:}
	curl -sf --max-time 5 -I \
		-H 'Accept: application/vnd.oci.image.manifest.v1+json' \
		-H 'Accept: application/vnd.oci.image.index.v1+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
		-H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
		"http://$registry/v2/$repo/manifests/$tag" 2>/dev/null |
		tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

image_up() {
	case $image_build in
	always) ;;
	missing)
		if [ -n "$(image_digest)" ]; then
			say "image: $worker_image is in the registry"
			return
		fi
		;;
	never)
		say "image: not built (ESB_WORKER_IMAGE_BUILD=never)"
		return
		;;
	*) die "ESB_WORKER_IMAGE_BUILD=$image_build: want always, missing or never" ;;
	esac
	ESB_REGISTRY=$registry ESB_WORKER_REPO=$worker_repo scripts/worker-image.sh >/dev/null
	say "image: $worker_image@$(image_digest)"
}

# --- helpers ----------------------------------------------------------------

# wait_for NAME CHECK [ALIVE]: polls CHECK every 0.2 s for ESB_STACK_WAIT
# seconds; gives up early when ALIVE (a pid check) fails.
wait_for() {
	local name=$1 check=$2 alive=${3:-true} i
	for ((i = 0; i < wait_s * 5; i++)); do
		if "$check"; then return 0; fi
		if ! "$alive"; then
			echo "stack.sh: $name exited" >&2
			return 1
		fi
		sleep 0.2
	done
	return 1
}

print_env() {
	cat <<EOF
ESB_CONTAINERD_SOCK=$ctd_sock
ESB_CONTAINERD_ROOT=$ctd_root
ESB_CONTAINERD_STATE=$ctd_state
ESB_SNAPSHOTTER=$1
ESB_DOCKER_SOCK=$dk_sock
ESB_DOCKER_ROOT=$dk_root
ESB_DOCKER_EXEC=$dk_exec
ESB_REGISTRY=$registry
ESB_WORKER_IMAGE=$worker_image
EOF
}

# current_snapshotter prints the snapshotter up chose, from stack.env.
current_snapshotter() {
	local s=
	[ -f "$env_file" ] && s=$(sed -n 's/^ESB_SNAPSHOTTER=//p' "$env_file")
	echo "${s:-$snapshotter}"
}

cmd_up() {
	need_root
	need_tools
	check_registry_addr
	mkdir -p "$run_dir" "$log_dir" "$ctd_root"
	local snap
	snap=$(pick_snapshotter)
	print_env "$snap" >"$env_file"
	ctd_up
	dk_up
	reg_up
	image_up
	say "snapshotter: $snap (clients pass it; ctr reads CONTAINERD_SNAPSHOTTER)"
	say "ready; settings in $env_file"
}

cmd_down() {
	need_root
	dk_down
	ctd_down
	reg_down
}

cmd_status() {
	local rc=0 d
	if ctd_running; then
		if ctd_answers; then
			say "containerd: running (pid $(cat "$ctd_pid")), socket $ctd_sock answers"
		else
			say "containerd: running (pid $(cat "$ctd_pid")), socket $ctd_sock does NOT answer"
			rc=3
		fi
	elif ctd_answers; then
		say "containerd: socket $ctd_sock answers (not started by this script)"
	else
		say "containerd: stopped"
		rc=3
	fi
	if dk_running; then
		if dk_answers; then
			say "dockerd: running (pid $(cat "$dk_pid")), socket $dk_sock answers (Docker $(dk_info ServerVersion), $(dk_info Driver))"
		else
			say "dockerd: running (pid $(cat "$dk_pid")), socket $dk_sock does NOT answer"
			rc=3
		fi
	elif dk_answers; then
		say "dockerd: socket $dk_sock answers (not started by this script)"
	else
		say "dockerd: stopped"
		rc=3
	fi
	if reg_running; then
		if reg_answers; then
			say "registry: running (pid $(cat "$reg_pid")) on $registry"
		else
			say "registry: running (pid $(cat "$reg_pid")) but http://$registry/v2/ does NOT answer"
			rc=3
		fi
	elif reg_answers; then
		say "registry: $registry answers (not started by this script)"
	else
		say "registry: stopped"
		rc=3
	fi
	if reg_answers; then
		d=$(image_digest)
		if [ -n "$d" ]; then
			say "image: $worker_image@$d"
		else
			say "image: $worker_image is NOT in the registry"
			rc=3
		fi
	fi
	say "snapshotter: $(current_snapshotter); logs in $log_dir"
	return $rc
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
env) print_env "$(current_snapshotter)" ;;
*)
	echo "usage: $0 up|down|status|env" >&2
	exit 2
	;;
esac
