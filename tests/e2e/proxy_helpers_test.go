package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
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
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		nstest.Unavailable(e.t, "haproxy is not installed (run scripts/deps.sh): %v", err)
	}
	e.addNodeAddr()
	e.serveBackend()

	dir := e.t.TempDir()
	cfg := fmt.Sprintf(`global
	maxconn 256

defaults
	mode http
	timeout connect 2s
	timeout client 10s
	timeout server 10s

frontend %s
	bind %s
	http-request set-header X-Esb-Via %s
	default_backend be_go

backend be_go
	server go %s
`, frontendName, proxyAddr, frontendName, backendAddr)
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		e.t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	e.runInNode("haproxy", proxyAddr, bin, "-f", path, "-db")

	rules := filepath.Join(dir, "nat.yaml")
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
	cmd := exec.Command("nsenter", append([]string{"--net=" + e.node.Path()}, argv...)...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	e.t.Cleanup(func() {
		select {
		case <-exited:
			e.t.Errorf("%s ended before the test did (%v):\n%s", name, waitErr, out.String())
			return
		default:
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			e.t.Errorf("%s (pid %d) did not exit after kill", name, cmd.Process.Pid)
		}
	})
	start := time.Now()
	deadline := start.Add(proxyStartTimeout)
	for {
		err := e.inNode(func() error {
			c, err := net.DialTimeout("tcp4", readyAddr, 200*time.Millisecond)
			if err == nil {
				_ = c.Close()
			}
			return err
		})
		if err == nil {
			noteWait(name+" start", proxyStartTimeout, time.Since(start))
			return
		}
		select {
		case <-exited:
			e.t.Fatalf("%s exited at start (%v):\n%s", name, waitErr, out.String())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s does not accept on %s within %s: %v\n%s", name, readyAddr, proxyStartTimeout, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	link := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: nodeLink}, PeerName: nodeLink + "p"}
	if err := h.LinkAdd(link); err != nil {
		e.t.Fatalf("add %s: %v", nodeLink, err)
	}
	peer, err := h.LinkByName(nodeLink + "p")
	if err != nil {
		e.t.Fatal(err)
	}
	addr, err := netlink.ParseAddr(nodeAddr + "/32")
	if err != nil {
		e.t.Fatal(err)
	}
	if err := errors.Join(h.AddrAdd(link, addr), h.LinkSetUp(peer), h.LinkSetUp(link)); err != nil {
		e.t.Fatalf("put %s on %s: %v", nodeAddr, nodeLink, err)
	}
}

// serveBackend runs the data service on backendAddr in the node.
func (e *env) serveBackend() {
	e.t.Helper()
	var l net.Listener
	err := e.inNode(func() error {
		var err error
		l, err = net.Listen("tcp4", backendAddr)
		return err
	})
	if err != nil {
		e.t.Fatalf("backend listen on %s: %v", backendAddr, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, backendBody(r.Header.Get("X-Esb-Via")))
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	e.t.Cleanup(func() { _ = srv.Close(); <-done })
}

// syncBuffer collects a child's output.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
