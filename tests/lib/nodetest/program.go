package nodetest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// StartHAProxy runs Debian's haproxy in the node with cfg, in the
// foreground (-db) under ip netns exec, until the test ends, and waits
// until every address in binds accepts connections.
func (n *Node) StartHAProxy(cfg string, binds ...string) {
	n.TB.Helper()
	bin, path := HAProxy(n.TB, cfg)
	// ip netns exec execs haproxy in place: the process is haproxy itself.
	Program{
		Name:  "haproxy",
		Cmd:   exec.Command("ip", "netns", "exec", n.Name, bin, "-f", path, "-db"),
		In:    func(fn func() error) error { return n.NS.Do(func(ns.NetNS) error { return fn() }) },
		Ready: binds,
		Limit: 10 * time.Second,
	}.Start(n.TB)
}

// haproxyCheckTimeout bounds haproxy -c.
const haproxyCheckTimeout = time.Minute

// HAProxy writes cfg into a file of the test and checks it with
// haproxy -c; it returns the haproxy binary and the file. A missing
// haproxy fails the test under CI and skips it elsewhere.
func HAProxy(tb testing.TB, cfg string) (bin, path string) {
	tb.Helper()
	bin = nstest.LookPath(tb, "haproxy")
	path = filepath.Join(tb.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	if out, err := Run(haproxyCheckTimeout, nil, bin, "-c", "-q", "-f", path); err != nil {
		tb.Fatalf("haproxy -c: %v\n%s\n%s", err, out, cfg)
	}
	return bin, path
}

// Program is a program run in the node until the test ends.
type Program struct {
	Name string    // in messages
	Cmd  *exec.Cmd // enters the node itself (ip netns exec, nsenter) and execs in place
	// In runs a dial in the node.
	In func(fn func() error) error
	// Ready are the TCP addresses that accept once the program is up;
	// Limit bounds the wait for all of them.
	Ready []string
	Limit time.Duration
}

// Start starts the program and waits until every address in Ready
// accepts a TCP connection in the node; it returns how long that took.
// When the test ends the program is killed; a program that ended before
// then, or at start, fails the test with its output.
func (p Program) Start(tb testing.TB) time.Duration {
	tb.Helper()
	cmd := p.Cmd
	var out SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.Name, err)
	}
	// exited is closed when the program is gone; waitErr is then its status.
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		select {
		case <-exited:
			tb.Errorf("%s ended before the test did (%v):\n%s", p.Name, waitErr, out.String())
			return
		default:
		}
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			tb.Errorf("%s (pid %d) did not exit after kill", p.Name, cmd.Process.Pid)
		}
	})
	start := time.Now()
	deadline := start.Add(p.Limit)
	for _, addr := range p.Ready {
		for {
			err := p.In(func() error {
				c, err := net.DialTimeout("tcp4", addr, 200*time.Millisecond)
				if err == nil {
					_ = c.Close()
				}
				return err
			})
			if err == nil {
				break
			}
			select {
			case <-exited:
				tb.Fatalf("%s exited at start (%v):\n%s", p.Name, waitErr, out.String())
			default:
			}
			if time.Now().After(deadline) {
				tb.Fatalf("%s does not accept on %s within %s: %v\n%s", p.Name, addr, p.Limit, err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// SyncBuffer collects a child's output, safe for concurrent use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// HAProxyConfig renders a configuration with one HTTP frontend per bind
// address, named by frontends, all going to the backend at backend. Each
// frontend tells the backend its name in X-Esb-Via.
func HAProxyConfig(backend string, frontends map[string]string) string {
	var b strings.Builder
	b.WriteString(`global
	maxconn 256

defaults
	mode http
	timeout connect 2s
	timeout client 10s
	timeout server 10s
`)
	names := make([]string, 0, len(frontends))
	for name := range frontends {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "\nfrontend %s\n\tbind %s\n\thttp-request set-header X-Esb-Via %s\n\tdefault_backend be_go\n", name, frontends[name], name)
	}
	fmt.Fprintf(&b, "\nbackend be_go\n\tserver go %s\n", backend)
	return b.String()
}
