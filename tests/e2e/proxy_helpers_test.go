package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// The local proxy of the node, as production runs it: HAProxy on a node
// address in front of a data service (here a Go HTTP backend on the
// node's loopback). Workers reach it through the gateway, whose port 9000
// the agent's NAT rules forward to HAProxy.
const (
	nodeAddr     = "192.0.2.10" // the node's address, on nodeLink
	nodeLink     = "node0"
	proxyAddr    = nodeAddr + ":19000"
	backendAddr  = "127.0.0.1:18080"
	gatewayPort  = 9000
	frontendName = "fe_e2e"
	// proxyStartTimeout bounds the start of a service in the node (HAProxy,
	// the data services) to accepting; the wait
	// also ends when it exits.
	proxyStartTimeout = 30 * time.Second
)

// backendBody is what the backend answers to a request that came through
// the frontend via.
func backendBody(via string) string { return "esb e2e backend via " + via }

// fetchURL is what a worker GETs to reach the proxy through the gateway.
var fetchURL = fmt.Sprintf("http://%s:%d/", gatewayIP, gatewayPort)

// startProxy starts the backend and HAProxy in the node and returns a NAT
// rule file that forwards the gateway's port 9000 to HAProxy.
func (e *env) startProxy() string {
	e.t.Helper()
	bin, path := nodetest.HAProxy(e.t, nodetest.HAProxyConfig(backendAddr, map[string]string{frontendName: proxyAddr}))
	e.addNodeAddr()
	nodetest.ServeVia(e.t, e.node, backendAddr, backendBody)
	e.runInNode("haproxy", proxyAddr, bin, "-f", path, "-db")

	rules := filepath.Join(e.t.TempDir(), "nat.yaml")
	text := fmt.Sprintf("forwards:\n  - {proto: tcp, port: %d, to: %q}\n", gatewayPort, proxyAddr)
	if err := os.WriteFile(rules, []byte(text), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return rules
}

// runInNode starts argv in the node (nsenter execs it in place: the
// process is the program itself), waits until it accepts TCP on readyAddr
// and stops it when the test ends; a program that ends before the test
// fails the test with its output.
func (e *env) runInNode(name, readyAddr string, argv ...string) {
	e.t.Helper()
	took := nodetest.Program{
		Name:  name,
		Cmd:   exec.Command("nsenter", append([]string{"--net=" + e.node.Path()}, argv...)...),
		In:    e.inNode,
		Ready: []string{readyAddr},
		Limit: proxyStartTimeout,
	}.Start(e.t)
	noteWait(name+" start", proxyStartTimeout, took)
}

// addNodeAddr puts nodeAddr on one end of a veth pair kept inside the node
// (the kernel has no dummy driver; a veth end behaves like any other
// interface of a host).
func (e *env) addNodeAddr() {
	e.t.Helper()
	h, err := e.handle()
	if err != nil {
		e.t.Fatal(err)
	}
	defer h.Close()
	if err := nodetest.AddAddrLink(h, nodeLink, nodeAddr); err != nil {
		e.t.Fatal(err)
	}
}
