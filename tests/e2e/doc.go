// Package e2e is the end-to-end suite of esb-agent: the daemon built from
// this tree drives the real containerd and dockerd that scripts/stack.sh
// starts (the main scenarios run on both runtimes, forRuntimes), runs
// workers from the local registry's image, and attaches them through the
// esb plugins to a bridge in a test-made "node" network namespace that plays
// the host, so the machine's own network is never changed. Clients are the
// gRPC API and esbctl; invokes go to the workers' addresses from the node.
//
// Run as root with the stack up (CI=1 makes a missing stack a failure):
//
//	scripts/stack.sh up
//	CI=1 go test -count=1 -v ./tests/e2e/
//
// Each test gets its own node namespace, runtime scope (containerd
// namespace or Docker label, esbe2e-*),
// conflist, IPAM store, libcni cache, worker log and netns directories, and
// removes all of them, checking first that the agent left nothing behind.
package e2e
