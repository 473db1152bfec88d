#!/usr/bin/env bash
# Build the Kubernetes v1.37.2 and etcd v3.7.0 binaries of the cluster tier
# (scripts/k8s.sh, make test-k8s) from the Go module proxy, once per machine,
# into $ESB_K8S_TOOLS_DIR (default /opt/esbnet-tools/k8s-v1.37.2/bin), as
# scripts/deps.sh does for crictl. The versions live in tools/k8s/go.mod, a
# module of its own: k8s.io/kubernetes cannot be "go install"-ed (its go.mod
# has replace lines) and never enters the product's go.mod.
#
# Cold, on this project's 2-core machine shared with other builds: about
# 27 minutes for the seven tools (docs/kubernetes.md has the figures).
set -euo pipefail
export PATH=$PATH:/usr/local/go/bin
root=$(cd "$(dirname "$0")/.." && pwd)
out=${ESB_K8S_TOOLS_DIR:-/opt/esbnet-tools/k8s-v1.37.2/bin}
mkdir -p "$out"
cd "$root/tools/k8s"
export GOFLAGS=-buildvcs=false
# Without these the binaries call themselves v0.0.0-master and the kubelet
# registers its node with that version.
v=v1.37.2
ld="-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$v"

need=0
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl agnhost e2e.test; do
	[ -x "$out/$b" ] || need=1
done
if [ "$need" = 0 ]; then
	echo "k8s-tools.sh: ready (in $out)"
	exit 0
fi

start=$(date +%s)
# go install tool names each binary after its package's last element; etcd's
# server package is "server", so it is built by name.
for t in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
	[ -x "$out/$t" ] || nice -n 15 go build -ldflags "$ld" -o "$out/$t" "k8s.io/kubernetes/cmd/$t"
done
[ -x "$out/agnhost" ] || nice -n 15 go build -o "$out/agnhost" k8s.io/kubernetes/test/images/agnhost
[ -x "$out/etcd" ] || nice -n 15 go build -o "$out/etcd" go.etcd.io/etcd/server/v3
# e2e.test: the e2e suite compiled as a test binary (its imports are listed
# in tools/k8s/e2e_imports.go so that go.sum covers them).
[ -x "$out/e2e.test" ] || nice -n 15 go test -c -ldflags "$ld" -o "$out/e2e.test" k8s.io/kubernetes/test/e2e
echo "k8s-tools.sh: built in $(($(date +%s) - start)) s (into $out)"
