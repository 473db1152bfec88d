#!/usr/bin/env bash
# A two-node Kubernetes v1.37.2 cluster whose pod network is esb-bridge and
# esb-ipam, in network namespaces of this machine, from the binaries that
# scripts/k8s-tools.sh builds (make kube-tools). For a person to look at and
# for make test-k8s (tests/cluster/k8stest), as scripts/stack.sh is for the stack.
#
#   scripts/k8s.sh up       tear down what is left, then start the cluster
#   scripts/k8s.sh down     stop everything, restore the sysctls, remove it all
#   scripts/k8s.sh status   processes, nodes and pods
#   scripts/k8s.sh kubectl ARGS...   kubectl against the cluster
#   scripts/k8s.sh restart-kubelet n1|n2   stop a kubelet and start it again
#
# Topology (docs/kubernetes.md has the figure):
#   esbk8s-cp   etcd, kube-apiserver, kube-controller-manager
#               (--allocate-node-cidrs, cluster CIDR 10.88.0.0/16, /24 per
#               node), kube-scheduler; bridge k8s0 10.87.0.1/24
#   esbk8s-n1   node 1, 10.87.0.11: containerd (Debian's 1.6, the config of
#   esbk8s-n2   deploy/containerd with its own root, state, socket and CNI
#               directories), kubelet, esb-node; node 2 is 10.87.0.12
# Every daemon runs with nsenter --net= (the machine's mount namespace: runc
# fails under ip netns exec here). The machine's own network is not touched;
# kubectl reaches the API server inside esbk8s-cp (the kubectl subcommand
# does that).
#
# The kubelet sets six global sysctls (kernel.panic, kernel.panic_on_oops,
# vm.overcommit_memory, vm.panic_on_oom, kernel.keys.root_maxkeys and
# root_maxbytes). up saves them to $ESB_K8S_RUN/sysctl.saved before the first
# kubelet starts (only when that file is absent: a second up keeps the
# original values); down writes them back and removes the file.
#
# Environment:
#   ESB_K8S_TOOLS_DIR   the Kubernetes binaries (default /opt/esbnet-tools/k8s-v1.37.2/bin)
#   ESB_K8S_DIR         data: certificates, etcd, containerd roots, kubelet
#                       roots, logs (default /var/lib/esbnet/k8s)
#   ESB_K8S_RUN         sockets, pids, IPAM stores, the saved sysctls
#                       (default /run/esbnet/k8s)
#   ESB_REGISTRY        the stack's registry (default 127.0.0.1:5000)
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
root=$(cd "$(dirname "$0")/.." && pwd)
tools=${ESB_K8S_TOOLS_DIR:-/opt/esbnet-tools/k8s-v1.37.2/bin}
base=${ESB_K8S_DIR:-/var/lib/esbnet/k8s}
run=${ESB_K8S_RUN:-/run/esbnet/k8s}
registry=${ESB_REGISTRY:-127.0.0.1:5000}
pause_image=$registry/esbk8s/pause:latest
# The image of the test pods and of e2e.test's agnhost pods (KUBE_TEST_REPO_LIST):
# agnhost 2.66.1 (the version k8s.io/kubernetes v1.37.2's e2e asks for) with
# dash, busybox's tools, the machine's curl and netcat-openbsd.
agnhost_image=$registry/e2e-test-images/agnhost:2.66.1
nodes=(n1 n2)
cp_ns=esbk8s-cp
cp_ip=10.87.0.1
declare -A node_ip=([n1]=10.87.0.11 [n2]=10.87.0.12)
# The reference bridge's node-local subnets (RuntimeClass refbridge).
declare -A ref_subnet=([n1]=10.89.1.0/24 [n2]=10.89.2.0/24)
sysctls=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
cgroup_ctrls=(blkio cpu cpuacct cpuset devices freezer hugetlb memory net_cls net_prio perf_event pids rdma misc systemd unified)

log() { echo "k8s.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}
ns_path() { echo "/run/netns/$1"; }
node_name() { echo "esbk8s-$1"; }
kc() { nsenter --net="$(ns_path $cp_ns)" "$tools/kubectl" --kubeconfig "$base/pki/admin.kubeconfig" "$@"; }

# ---------------------------------------------------------------- teardown

# pids_of_cmdline prints the pids whose command line contains the path $1
# (our own directories and sockets only, so nobody else's process).
pids_of_cmdline() {
	pgrep -f -- "$(sed 's/[.[\*^$]/\\&/g' <<<"$1")" || true
}

# stop_pid TERMs a pid and waits up to $2 seconds before KILL.
stop_pid() {
	local pid=$1 wait=${2:-20} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < wait * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
}

stop_daemon() {
	local f=$run/pids/$1.pid
	[ -f "$f" ] || return 0
	local pid
	pid=$(cat "$f")
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		stop_pid "$pid" "${2:-20}"
	fi
	rm -f "$f"
}

# remove_pods stops and removes every pod sandbox of a node's containerd,
# so that containerd sends the CNI DELs (libcni's cache in /var/lib/cni is
# the machine's) before the node goes.
remove_pods() {
	local n=$1 sock=$run/$1/containerd/containerd.sock
	[ -S "$sock" ] || return 0
	local crictl=(/opt/esbnet-tools/bin/crictl --runtime-endpoint "unix://$sock" --timeout 60s)
	local ids
	ids=$("${crictl[@]}" pods -q 2>/dev/null) || return 0
	for id in $ids; do
		"${crictl[@]}" stopp "$id" >/dev/null 2>&1 || log "$n: stopp $id failed"
		"${crictl[@]}" rmp -f "$id" >/dev/null 2>&1 || log "$n: rmp $id failed"
	done
}

unmount_under() {
	local m
	# Deepest first.
	awk -v p="$1" '$5 == p || index($5, p "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done
}

remove_cgroups() {
	local n=$1 c d
	for c in "${cgroup_ctrls[@]}"; do
		d=/sys/fs/cgroup/$c/$(node_name "$n")
		[ -d "$d" ] || continue
		# Processes left inside (pods whose runc state is gone) would keep
		# the directories busy.
		find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | while read -r pid; do
			kill -KILL "$pid" 2>/dev/null || true
		done
		find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[ ! -d "$d" ] || log "cgroup $d is still there"
	done
}

restore_sysctls() {
	local f=$run/sysctl.saved k v
	[ -f "$f" ] || return 0
	while read -r k v; do
		sysctl -q -w "$k=$v" >/dev/null || log "cannot restore $k=$v"
	done <"$f"
	rm -f "$f"
	log "sysctls restored: $(tr '\n' ' ' <"$f.copy" 2>/dev/null)"
	rm -f "$f.copy"
}

down() {
	local n pid
	for n in "${nodes[@]}"; do
		stop_daemon "esb-node-$n" 10
		stop_daemon "kubelet-$n" 30
	done
	for n in "${nodes[@]}"; do
		remove_pods "$n"
	done
	for n in "${nodes[@]}"; do
		stop_daemon "containerd-$n" 30
		# Shims and containers of this node's containerd (its socket path is
		# on their command lines; runc's state root names the containers).
		for pid in $(pids_of_cmdline "$run/$n/containerd/containerd.sock"); do
			stop_pid "$pid" 5
		done
		if [ -d "$run/$n/containerd/runc/k8s.io" ]; then
			for c in $(runc --root "$run/$n/containerd/runc/k8s.io" list -q 2>/dev/null); do
				runc --root "$run/$n/containerd/runc/k8s.io" kill "$c" KILL 2>/dev/null || true
				runc --root "$run/$n/containerd/runc/k8s.io" delete -f "$c" 2>/dev/null || true
			done
		fi
	done
	for d in kube-scheduler kube-controller-manager kube-apiserver etcd; do
		stop_daemon "$d" 20
	done
	# Whatever a crash left: any process still started from our directories.
	for pid in $(pids_of_cmdline "$base/") $(pids_of_cmdline "$run/"); do
		[ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] || continue
		stop_pid "$pid" 5
	done
	unmount_under "$run"
	unmount_under "$base"
	for n in "${nodes[@]}"; do
		remove_cgroups "$n"
		# libcni cache entries of this node's pods (a DEL that did not run).
		{ grep -lsF "$run/$n/" /var/lib/cni/results/* 2>/dev/null || true; } | xargs -r rm -f
		# The kubelet links every container's log in /var/log/containers.
		find /var/log/containers -maxdepth 1 -lname "$base/$n/*" -delete 2>/dev/null || true
		ip netns del "esbk8s-$n" 2>/dev/null || true
	done
	ip netns del "$cp_ns" 2>/dev/null || true
	restore_sysctls
	# Logs stay for a look (removed by the next up); the rest goes.
	if [ -d "$base" ]; then
		find "$base" -mindepth 1 -maxdepth 1 ! -name log -exec rm -rf {} +
	fi
	[ ! -d "$run" ] || rm -rf "$run"
}

# -------------------------------------------------------------------- up

need_tools() {
	local t
	for t in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl agnhost; do
		[ -x "$tools/$t" ] || die "$tools/$t is missing: run make kube-tools"
	done
	for t in containerd containerd-shim-runc-v2 runc ctr nsenter openssl umoci skopeo busybox curl apt-get dpkg-deb pgrep; do
		command -v "$t" >/dev/null || die "$t is missing (scripts/deps.sh; busybox and curl from Debian)"
	done
	[ -x /opt/esbnet-tools/bin/crictl ] || die "crictl is missing: run scripts/deps.sh"
	[ -x /usr/lib/cni/loopback ] || die "/usr/lib/cni/loopback is missing: apt-get install containernetworking-plugins"
}

# start NAME NETNS CMD... runs CMD in NETNS in the background, detached,
# logging to $base/log/NAME.log, and records its pid.
start() {
	local name=$1 ns=$2
	shift 2
	setsid nsenter --net="$(ns_path "$ns")" "$@" >"$base/log/$name.log" 2>&1 </dev/null &
	echo $! >"$run/pids/$name.pid"
}

# wait_for DESCRIPTION SECONDS CMD... retries CMD until it succeeds.
wait_for() {
	local what=$1 secs=$2 i
	shift 2
	for ((i = 0; i < secs * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	die "$what: not ready after ${secs}s (logs in $base/log)"
}

make_netns() {
	ip netns add "$cp_ns"
	ip -n "$cp_ns" link set lo up
	ip -n "$cp_ns" link add k8s0 type bridge
	ip -n "$cp_ns" addr add "$cp_ip/24" dev k8s0
	ip -n "$cp_ns" link set k8s0 up
	local n
	for n in "${nodes[@]}"; do
		ip netns add "esbk8s-$n"
		ip -n "esbk8s-$n" link set lo up
		ip -n "esbk8s-$n" link add eth0 type veth peer name "$n" netns "$cp_ns"
		ip -n "$cp_ns" link set "$n" master k8s0 up
		ip -n "esbk8s-$n" addr add "${node_ip[$n]}/24" dev eth0
		ip -n "esbk8s-$n" link set eth0 up
		ip -n "esbk8s-$n" route add default via "$cp_ip"
		# Pods' traffic to the other node's pod CIDR is forwarded by the node.
		ip netns exec "esbk8s-$n" sysctl -q -w net.ipv4.ip_forward=1
	done
}

# cert NAME CN [O] [SANS] signs a client/server certificate with the CA.
cert() {
	local name=$1 cn=$2 o=${3:-} sans=${4:-} subj
	subj="/CN=$cn"
	[ -z "$o" ] || subj="/O=$o$subj"
	local ext=$base/pki/$name.ext
	{
		echo "basicConstraints=CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=serverAuth,clientAuth"
		[ -z "$sans" ] || echo "subjectAltName=$sans"
	} >"$ext"
	openssl ecparam -name prime256v1 -genkey -noout -out "$base/pki/$name.key" 2>/dev/null
	openssl req -new -key "$base/pki/$name.key" -subj "$subj" -out "$base/pki/$name.csr" 2>/dev/null
	openssl x509 -req -in "$base/pki/$name.csr" -CA "$base/pki/ca.crt" -CAkey "$base/pki/ca.key" \
		-CAcreateserial -days 30 -extfile "$ext" -out "$base/pki/$name.crt" 2>/dev/null
	rm -f "$base/pki/$name.csr" "$ext"
}

kubeconfig() {
	local name=$1
	cat >"$base/pki/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: esbk8s
  cluster:
    server: https://$cp_ip:6443
    certificate-authority: $base/pki/ca.crt
users:
- name: $name
  user:
    client-certificate: $base/pki/$name.crt
    client-key: $base/pki/$name.key
contexts:
- name: esbk8s
  context: {cluster: esbk8s, user: $name}
current-context: esbk8s
EOF
}

make_pki() {
	mkdir -p "$base/pki"
	openssl ecparam -name prime256v1 -genkey -noout -out "$base/pki/ca.key" 2>/dev/null
	openssl req -x509 -new -key "$base/pki/ca.key" -subj "/CN=esbk8s-ca" -days 30 \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
		-out "$base/pki/ca.crt" 2>/dev/null
	cert apiserver kube-apiserver "" "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:$cp_ip,IP:127.0.0.1,IP:10.96.0.1"
	cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
	cert admin esbk8s-admin system:masters
	cert controller-manager system:kube-controller-manager
	cert scheduler system:kube-scheduler
	kubeconfig admin
	kubeconfig controller-manager
	kubeconfig scheduler
	local n
	for n in "${nodes[@]}"; do
		cert "kubelet-$n" "system:node:$(node_name "$n")" system:nodes "DNS:$(node_name "$n"),IP:${node_ip[$n]}"
		kubeconfig "kubelet-$n"
		cert "esb-node-$n" "esbnet:esb-node:$(node_name "$n")" esbnet:esb-node
		kubeconfig "esb-node-$n"
	done
	openssl genrsa -out "$base/pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$base/pki/sa.key" -pubout -out "$base/pki/sa.pub" 2>/dev/null
}

start_control_plane() {
	local p=$base/pki
	mkdir -p "$base/etcd"
	start etcd "$cp_ns" "$tools/etcd" --name esbk8s --data-dir "$base/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster esbk8s=http://127.0.0.1:2380 --log-level warn
	wait_for etcd 60 nsenter --net="$(ns_path $cp_ns)" curl -sf http://127.0.0.1:2379/health
	start kube-apiserver "$cp_ns" "$tools/kube-apiserver" \
		--etcd-servers http://127.0.0.1:2379 \
		--advertise-address "$cp_ip" --bind-address 0.0.0.0 --secure-port 6443 \
		--tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" \
		--client-ca-file "$p/ca.crt" \
		--kubelet-client-certificate "$p/apiserver-kubelet-client.crt" --kubelet-client-key "$p/apiserver-kubelet-client.key" \
		--service-account-issuer https://kubernetes.default.svc.cluster.local \
		--service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
		--service-cluster-ip-range 10.96.0.0/16 \
		--authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
		--kubelet-preferred-address-types InternalIP \
		--allow-privileged=true --profiling=false
	wait_for kube-apiserver 120 kc get --raw /readyz
	wait_for "esb-node's RBAC" 30 kc apply -f "$root/deploy/kubernetes/esb-node-rbac.yaml"
	kc apply -f - >/dev/null <<EOF
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: refbridge}
handler: refbridge
EOF
	start kube-controller-manager "$cp_ns" "$tools/kube-controller-manager" \
		--kubeconfig "$p/controller-manager.kubeconfig" \
		--authentication-kubeconfig "$p/controller-manager.kubeconfig" \
		--authorization-kubeconfig "$p/controller-manager.kubeconfig" \
		--use-service-account-credentials \
		--service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" \
		--allocate-node-cidrs --cluster-cidr 10.88.0.0/16 --node-cidr-mask-size 24 \
		--service-cluster-ip-range 10.96.0.0/16 \
		--leader-elect=false --bind-address 127.0.0.1 --profiling=false
	start kube-scheduler "$cp_ns" "$tools/kube-scheduler" \
		--kubeconfig "$p/scheduler.kubeconfig" \
		--authentication-kubeconfig "$p/scheduler.kubeconfig" \
		--authorization-kubeconfig "$p/scheduler.kubeconfig" \
		--leader-elect=false --bind-address 127.0.0.1 --profiling=false
}

build_plugins() {
	mkdir -p "$base/bin"
	log "building esb-bridge, esb-ipam and esb-node"
	(cd "$root" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false nice -n 10 go build -o "$base/bin/" ./plugins/... &&
		GOFLAGS=-buildvcs=false nice -n 10 go build -o "$base/bin/" ./cmd/esb-node)
}

# agnhost_image builds the test pods' image (and e2e.test's agnhost): the
# agnhost binary, busybox for sh and nc, curl with its libraries.
build_agnhost_image() {
	# The image is rebuilt when agnhost or this recipe changes.
	local agnhost_recipe
	agnhost_recipe="$(sha256sum <"$tools/agnhost" | cut -c1-16)-3"
	if skopeo inspect --tls-verify=false "docker://$agnhost_image" >/dev/null 2>&1 &&
		[ "$(skopeo inspect --tls-verify=false --format '{{index .Labels "esbnet.agnhost.recipe"}}' "docker://$agnhost_image" 2>/dev/null)" = "$agnhost_recipe" ]; then
		return 0
	fi
	log "building $agnhost_image"
	local w
	w=$(mktemp -d /tmp/esbk8s-agnhost.XXXXXX)
	mkdir -p "$w/rootfs/bin" "$w/rootfs/etc" "$w/rootfs/tmp"
	cp "$tools/agnhost" "$w/rootfs/agnhost"
	cp "$(command -v busybox)" "$w/rootfs/bin/busybox"
	for a in $(busybox --list); do
		case $a in busybox | curl | nc | sh) ;; *) ln -s busybox "$w/rootfs/bin/$a" ;; esac
	done
	# Debian's busybox sh runs its own applets before PATH (its nc among
	# them), so sh is Debian's dash.
	cp /bin/dash "$w/rootfs/bin/sh"
	cp "$(command -v curl)" "$w/rootfs/bin/curl"
	# busybox's nc has no -u, which e2e.test's node-pod UDP check uses
	# (echo hostName | nc -w 1 -u IP PORT): Debian's netcat-openbsd, taken
	# from its package without installing it on this machine.
	(cd "$w" && apt-get download netcat-openbsd >/dev/null) || die "apt-get download netcat-openbsd failed"
	dpkg-deb -x "$w"/netcat-openbsd_*.deb "$w/nc"
	cp "$w/nc/bin/nc.openbsd" "$w/rootfs/bin/nc.openbsd"
	ln -sf nc.openbsd "$w/rootfs/bin/nc"
	# The shared libraries of agnhost (cgo), curl and nc, at their paths.
	for lib in $( (ldd "$tools/agnhost"; ldd "$(command -v curl)"; ldd "$w/nc/bin/nc.openbsd"; ldd /bin/dash) | awk '/=>/ {print $3} /^\t\// {print $1}' | sort -u); do
		mkdir -p "$w/rootfs$(dirname "$lib")"
		cp -L "$lib" "$w/rootfs$lib"
	done
	echo "root:x:0:0:root:/:/bin/sh" >"$w/rootfs/etc/passwd"
	echo "hosts: files dns" >"$w/rootfs/etc/nsswitch.conf"
	umoci init --layout "$w/oci" >/dev/null
	umoci new --image "$w/oci:latest" >/dev/null
	umoci insert --image "$w/oci:latest" "$w/rootfs" / >/dev/null
	umoci config --image "$w/oci:latest" --os linux --architecture amd64 \
		--config.entrypoint /agnhost --config.cmd pause --config.workingdir / \
		--config.env PATH=/bin:/usr/bin \
		--config.label "esbnet.agnhost.recipe=$agnhost_recipe" >/dev/null
	printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$w/policy.json"
	skopeo --policy "$w/policy.json" copy --quiet --dest-tls-verify=false "oci:$w/oci:latest" "docker://$agnhost_image"
	rm -rf "$w"
}

node_cgroups() {
	local n=$1 c d
	for c in "${cgroup_ctrls[@]}"; do
		[ -d "/sys/fs/cgroup/$c" ] || continue
		d=/sys/fs/cgroup/$c/$(node_name "$n")
		mkdir -p "$d"
		if [ "$c" = cpuset ]; then
			cat /sys/fs/cgroup/cpuset/cpuset.cpus >"$d/cpuset.cpus"
			cat /sys/fs/cgroup/cpuset/cpuset.mems >"$d/cpuset.mems"
		fi
	done
}

containerd_config() {
	local n=$1 st=$run/$1/containerd
	sed -e "s|^root = .*|root = \"$base/$n/containerd\"|" \
		-e "s|^state = .*|state = \"$st\"|" \
		-e "s|^  address = .*|  address = \"$st/containerd.sock\"|" \
		-e "s|^    bin_dir = .*|    bin_dir = \"$base/$n/cni/bin\"|" \
		-e "s|^    conf_dir = .*|    conf_dir = \"$base/$n/cni/net.d\"|" \
		-e "s|^        Root = .*|        Root = \"$st/runc\"|" \
		-e "s|^  sandbox_image = .*|  sandbox_image = \"$pause_image\"|" \
		"$root/deploy/containerd/config.toml" >"$base/$n/containerd.toml"
	# A second runtime handler whose pods get the reference bridge and
	# host-local plugins (containerd 1.6's per-handler cni_conf_dir), for the
	# pod start comparison in tests/cluster/k8stest (RuntimeClass "refbridge").
	cat >>"$base/$n/containerd.toml" <<EOF

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.refbridge]
      runtime_type = "io.containerd.runc.v2"
      cni_conf_dir = "$base/$n/cni/ref.d"
      cni_max_conf_num = 1
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.refbridge.options]
        Root = "$st/runc"
        SystemdCgroup = false
EOF
	mkdir -p "$base/$n/cni/ref.d"
	cat >"$base/$n/cni/ref.d/10-refbridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "refbridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni-ref0",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "${ref_subnet[$n]}"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$run/$n/host-local"
      }
    }
  ]
}
EOF
	grep -q "$base/$n/cni/bin" "$base/$n/containerd.toml" || die "containerd config: bin_dir not replaced"
	grep -q "$st/runc" "$base/$n/containerd.toml" || die "containerd config: runc Root not replaced"
}

kubelet_config() {
	local n=$1
	cat >"$base/$n/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host runs cgroup v1; kubelet 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$(node_name "$n")
containerRuntimeEndpoint: unix://$run/$n/containerd/containerd.sock
# No CAP_SYS_RESOURCE on this machine: no negative OOM scores.
oomScoreAdj: 0
address: ${node_ip[$n]}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $base/pki/ca.crt}
authorization:
  mode: AlwaysAllow
podLogsDir: $base/$n/pod-logs
failSwapOn: false
clusterDomain: cluster.local
resolvConf: ""
registerNode: true
serializeImagePulls: false
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

start_kubelet() {
	local n=$1
	start "kubelet-$n" "esbk8s-$n" "$tools/kubelet" --config "$base/$n/kubelet.yaml" \
		--kubeconfig "$base/pki/kubelet-$n.kubeconfig" --root-dir "$base/$n/kubelet" \
		--hostname-override "$(node_name "$n")" --node-ip "${node_ip[$n]}"
}

# restart_kubelet stops a node's kubelet and starts it again (its pods keep
# running under containerd); tests/cluster/k8stest uses it.
restart_kubelet() {
	local n=${1:-}
	[ -n "$n" ] && [ -n "${node_ip[$n]:-}" ] || die "restart-kubelet: name a node (${nodes[*]})"
	[ -f "$run/pids/kubelet-$n.pid" ] || die "restart-kubelet: the cluster is not up"
	stop_daemon "kubelet-$n" 30
	mv "$base/log/kubelet-$n.log" "$base/log/kubelet-$n.log.$(date +%s)"
	start_kubelet "$n"
}

start_node() {
	local n=$1 name
	name=$(node_name "$n")
	mkdir -p "$base/$n/cni/bin" "$base/$n/cni/net.d" "$base/$n/kubelet" "$base/$n/pod-logs" "$run/$n/containerd" "$run/$n/ipam"
	cp "$base/bin/esb-bridge" "$base/bin/esb-ipam" "$base/$n/cni/bin/"
	# The CRI plugin runs loopback for every pod's lo; bridge and
	# host-local are the reference plugins the benchmark compares with.
	for p in loopback bridge host-local; do ln -sf "/usr/lib/cni/$p" "$base/$n/cni/bin/$p"; done
	containerd_config "$n"
	start "containerd-$n" "esbk8s-$n" containerd --config "$base/$n/containerd.toml"
	wait_for "containerd of $n" 60 ctr --address "$run/$n/containerd/containerd.sock" version
	local img
	for img in "$pause_image" "$agnhost_image"; do
		ctr --address "$run/$n/containerd/containerd.sock" -n k8s.io images pull --plain-http "$img" >/dev/null ||
			die "$n: pull $img failed"
	done
	node_cgroups "$n"
	kubelet_config "$n"
	start_kubelet "$n"
	start "esb-node-$n" "esbk8s-$n" "$base/bin/esb-node" --kubeconfig "$base/pki/esb-node-$n.kubeconfig" \
		--node-name "$name" --conflist "$base/$n/cni/net.d/10-esb.conflist" --cni-version 1.0.0 \
		--data-dir "$run/$n/ipam"
}

save_sysctls() {
	local f=$run/sysctl.saved k
	[ ! -f "$f" ] || return 0
	for k in "${sysctls[@]}"; do
		echo "$k $(sysctl -n "$k")"
	done >"$f.tmp"
	cp "$f.tmp" "$f.copy"
	mv "$f.tmp" "$f"
}

nodes_ready() {
	local out
	out=$(kc get nodes -o 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status} {.spec.podCIDR}{"\n"}{end}')
	[ "$(grep -c ' True 10\.88\.' <<<"$out")" = "${#nodes[@]}" ]
}

up() {
	need_tools
	[ "$(id -u)" = 0 ] || die "run as root"
	[ -S "$(sed -n 's/^ESB_CONTAINERD_SOCK=//p' /run/esbnet/stack.env 2>/dev/null)" ] || true
	curl -sf "http://$registry/v2/" >/dev/null || die "no registry on $registry: scripts/stack.sh up"
	log "tearing down what an earlier run left"
	down
	local began=$SECONDS
	rm -rf "$base/log"
	mkdir -p "$base/log" "$run/pids"
	build_plugins
	ESB_REGISTRY=$registry ESB_PAUSE_REPO=esbk8s/pause:latest "$root/scripts/pause-image.sh" >/dev/null
	build_agnhost_image
	make_pki
	make_netns
	save_sysctls
	start_control_plane
	local n
	for n in "${nodes[@]}"; do
		start_node "$n"
	done
	log "waiting for both nodes to be Ready with a pod CIDR"
	wait_for "nodes Ready" 180 nodes_ready
	cat >"$run/cluster.env" <<EOF
ESB_K8S_KUBECTL=$tools/kubectl
ESB_K8S_KUBECONFIG=$base/pki/admin.kubeconfig
ESB_K8S_CP_NETNS=$(ns_path $cp_ns)
ESB_K8S_NODES=$(for n in "${nodes[@]}"; do printf '%s ' "$(node_name "$n")"; done)
ESB_K8S_IMAGE=$agnhost_image
ESB_K8S_TOOLS=$tools
ESB_K8S_DIR=$base
ESB_K8S_RUN=$run
EOF
	for n in "${nodes[@]}"; do
		cat >>"$run/cluster.env" <<EOF
ESB_K8S_$(tr a-z A-Z <<<"$n")_NETNS=$(ns_path "esbk8s-$n")
ESB_K8S_$(tr a-z A-Z <<<"$n")_IPAM=$run/$n/ipam
ESB_K8S_$(tr a-z A-Z <<<"$n")_CONTAINERD=$run/$n/containerd/containerd.sock
ESB_K8S_$(tr a-z A-Z <<<"$n")_CNI=$base/$n/cni
EOF
	done
	log "up in $((SECONDS - began)) s; settings in $run/cluster.env"
	status
}

status() {
	local d f
	for f in "$run"/pids/*.pid; do
		[ -f "$f" ] || {
			echo "not running"
			return 0
		}
		d=$(basename "$f" .pid)
		if kill -0 "$(cat "$f")" 2>/dev/null; then
			printf '%-26s pid %s\n' "$d" "$(cat "$f")"
		else
			printf '%-26s DEAD (log: %s)\n' "$d" "$base/log/$d.log"
		fi
	done
	kc get nodes -o wide 2>/dev/null || echo "API server not answering"
	kc get nodes -o 'custom-columns=NODE:.metadata.name,POD CIDR:.spec.podCIDR' 2>/dev/null || true
	kc get pods -A -o wide 2>/dev/null || true
}

case ${1:-} in
up) up ;;
down)
	down
	log "down"
	;;
status) status ;;
restart-kubelet) restart_kubelet "${2:-}" ;;
kubectl)
	shift
	kc "$@"
	;;
*)
	echo "usage: $0 up|down|status|restart-kubelet NODE|kubectl ARGS..." >&2
	exit 2
	;;
esac
