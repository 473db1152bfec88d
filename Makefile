# esbnet: CNI plugins, nftables manager and agent for Edge Serverless Box.
# Every target carries a "## " help line; "make help" lists them.

GO          ?= go
export PATH := $(PATH):/usr/local/go/bin
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/edge-serverless-box/esbnet/internal/buildinfo.Version=$(VERSION)
BIN         := bin
RUNTIME     ?= containerd
CNI_BIN_DIR ?= /opt/cni/bin
CNI_CONF    ?= /etc/cni/net.d/10-esb.conflist
PREFIX      ?= /usr/local
ESB_CONF    ?= /etc/esb/agent.yaml
UNIT_DIR    ?= /etc/systemd/system
SYSCTL_CONF ?= /etc/sysctl.d/10-esbnet.conf
# "make build && sudo make install INSTALL_BUILD=" installs bin/ without building as root.
INSTALL_BUILD ?= build
UNIT_PKGS    = $(shell $(GO) list ./... | grep -v /tests)

.PHONY: help kube-tools k8s-up k8s-down k8s-status test-k8s build install uninstall deps stack-up stack-down stack-status worker-image function-image test test-unit test-ns test-daemon test-e2e test-privileged bench bench-density reliability fuzz lint proto demo clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build all binaries into bin/ (the CNI plugins static: they start once per CNI call)
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./plugins/...
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/... ./agent/cmd/...

install: $(INSTALL_BUILD) ## install plugins (/opt/cni/bin), esbctl and esb-agent (/usr/local/bin), the conflist, /etc/esb/agent.yaml, the systemd unit and /etc/sysctl.d/10-esbnet.conf (kernel settings for 1,000 workers, applied at boot); a changed config file is kept (DESTDIR, PREFIX; root)
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BIN="$(BIN)" CNI_BIN_DIR="$(CNI_BIN_DIR)" CNI_CONF="$(CNI_CONF)" ESB_CONF="$(ESB_CONF)" UNIT_DIR="$(UNIT_DIR)" SYSCTL_CONF="$(SYSCTL_CONF)" scripts/install.sh install

uninstall: ## remove what install added, keeping config files changed since (same DESTDIR, PREFIX as install)
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" BIN="$(BIN)" CNI_BIN_DIR="$(CNI_BIN_DIR)" CNI_CONF="$(CNI_CONF)" ESB_CONF="$(ESB_CONF)" UNIT_DIR="$(UNIT_DIR)" SYSCTL_CONF="$(SYSCTL_CONF)" scripts/install.sh uninstall

deps: ## install the Debian packages and test tools the tests need (root)
	scripts/deps.sh

stack-up: deps ## start containerd and dockerd (own sockets under /run/esbnet), the registry on 127.0.0.1:5000 and push the worker image (root)
	scripts/stack.sh up

stack-down: ## stop what stack-up started (data in /var/lib/esbnet stays)
	scripts/stack.sh down

stack-status: ## show the runtime stack: pids, health, worker image digest
	scripts/stack.sh status

worker-image: ## build tests/images/worker and push it to the local registry as 127.0.0.1:5000/esb/worker:latest
	scripts/worker-image.sh

function-image: ## build tests/images/function (aws-lambda-go handler behind the Lambda RIE, its own module) and push it as 127.0.0.1:5000/esb/function:<source hash>; an unchanged function is not rebuilt
	scripts/function-image.sh

test: deps stack-up ## everything, as root: unit tests (race detector), then every tier under tests/ one package at a time (namespace, daemon, end to end; the cluster's needs make test-k8s), then the function image's module (the command CI runs)
	$(GO) test -race -count=1 $(UNIT_PKGS)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m ./tests/...
	cd tests/images/function && ESB_REQUIRE_PRIVILEGED=1 $(GO) test -count=1 ./...

test-unit: ## unit tests only, as any user, no daemons
	$(GO) test -race -count=1 $(UNIT_PKGS)

test-ns: deps ## the namespace tier, tests/ns: plugins, NAT, shim, clients and install in namespaces each test makes, with the programs it starts itself; no stack (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m ./tests/ns/...

test-daemon: deps stack-up ## the daemon tier: the test libraries' and images' own tests (stacktest proves the stack), then tests/daemon against the stack's containerd, dockerd and registry (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m ./tests/lib/... ./tests/images/... ./tests/daemon/...

test-e2e: deps stack-up ## the end-to-end tier: tests/e2e (esb-agent, both runtimes, the data services, the load, soak and fault tests scaled down), then the function image's own module (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m ./tests/e2e/
	cd tests/images/function && ESB_REQUIRE_PRIVILEGED=1 $(GO) test -count=1 ./...

test-privileged: deps stack-up ## every tier under tests/ but the cluster's, verbose: what make test runs after the unit tests (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -count=1 -timeout 40m -v ./tests/...

bench: deps stack-up ## benchmarks side by side: the plugins with the reference plugins, esb-agent with ctr run -d and docker run -d --network none; printed tables (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -count 1 -timeout 95m ./ipam/... ./tests/bench/ipam/... ./tests/bench/bridge/... ./tests/bench/nat/... ./tests/bench/agent/... $(BENCH_MORE)

bench-density: deps stack-up ## fill the node with live idle workers in steps (ESB_DENSITY_STEPS, default 0,100,250,500,1000) and measure each with cold acquire+release pairs (ESB_DENSITY_PAIRS, default 50) beside as many ctr run -d of the same image: latency, CNI ADD/DEL, agent RSS, memory per worker, NAT path; then 100 workers of the Lambda function image (ESB_DENSITY_FUNCTION); a printed table with the targets; then the control, a process start beside 2,000 idle processes; not part of make bench (root)
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -count 1 -timeout 120m ./tests/bench/density/

reliability: deps stack-up ## the load, soak and fault tests at full size, both runtimes: 2,000 acquire/invoke/release cycles from 16 clients (ESB_LOAD_CYCLES, ESB_LOAD_CLIENTS), a 10-minute soak (ESB_SOAK_DURATION) and the fault tests; then make test-k8s; make test runs the first ones scaled down (root)
	ESB_REQUIRE_PRIVILEGED=1 ESB_LOAD_CYCLES=$${ESB_LOAD_CYCLES:-2000} ESB_SOAK_DURATION=$${ESB_SOAK_DURATION:-10m} ESB_SOAK_INTERVAL=$${ESB_SOAK_INTERVAL:-20s} \
		$(GO) test -p 1 -count=1 -timeout 240m -v -run '^(TestLoadAcquireRelease|TestSoak|TestFault.*)$$' ./tests/e2e/
	$(MAKE) test-k8s

fuzz: ## run every fuzz target for FUZZTIME each (default 2m), one at a time; a failing input becomes a seed under testdata/fuzz
	FUZZTIME=$(or $(FUZZTIME),2m) scripts/fuzz.sh

kube-tools: ## build Kubernetes v1.37.2 and etcd v3.7.0 (tools/k8s, its own module) once per machine into /opt/esbnet-tools/k8s-v1.37.2/bin (ESB_K8S_TOOLS_DIR); about 30 min cold on 2 cores
	scripts/k8s-tools.sh

k8s-up: kube-tools ## start the two-node Kubernetes cluster on esb-bridge in network namespaces (scripts/k8s.sh; root, the stack's registry)
	scripts/k8s.sh up

k8s-down: ## stop the cluster, restore the sysctls the kubelet changed, remove its namespaces, mounts and cgroups
	scripts/k8s.sh down

k8s-status: ## show the cluster's processes, nodes and pods
	scripts/k8s.sh status

test-k8s: kube-tools stack-up ## the cluster tests (tests/cluster/k8stest, build tag k8s) and the e2e.test networking subset on a fresh cluster, then down; not part of make test (root)
	scripts/k8s.sh up
	ESB_REQUIRE_PRIVILEGED=1 $(GO) test -tags k8s -p 1 -count=1 -v -timeout 60m ./tests/cluster/k8stest/; rc=$$?; scripts/k8s.sh down; exit $$rc

lint: ## golangci-lint (pinned) with the checks in .golangci.yml
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

proto: ## regenerate the gRPC code in agent/api/v1 from agent.proto (installs protoc and its Go plugins)
	scripts/proto.sh

demo: deps build ## the main job: start the stack, serve the tests/images/function Lambda image through esb-agent, show its S3, DynamoDB and logs round trip by name through the proxy, release it (root; RUNTIME=containerd|docker)
	RUNTIME=$(RUNTIME) scripts/demo.sh

clean: ## remove build output
	rm -rf $(BIN)
