// Package nodetest builds the world of esbnet's namespace tier: a "node"
// network namespace that plays the host, the esb network's conflist as
// conf.DefaultConflist renders it (with the test's own IPAM store), worker
// namespaces attached to the node through libcni as a runtime would, and
// programs (HAProxy, data services) run in the node until the test ends.
// Everything it makes is removed when the test ends.
package nodetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

// CallTimeout bounds one libcni call (one or more plugin executions).
const CallTimeout = time.Minute

// ConflistName is the file name runtimes read the esb network from.
const ConflistName = "10-esb.conflist"

// Conflist renders the esb network, conf.DefaultConflist, at cniVersion
// with esb-ipam's store in dataDir and, when gcGrace is not empty, that
// grace period for GC: the form written to /etc/cni/net.d.
func Conflist(tb testing.TB, cniVersion, dataDir, gcGrace string) []byte {
	tb.Helper()
	list := conf.DefaultConflist()
	list.CNIVersion = cniVersion
	br, ok := list.Plugins[0].(conf.BridgeConfig)
	if !ok {
		tb.Fatalf("conf.DefaultConflist: first plugin is a %T, not a conf.BridgeConfig", list.Plugins[0])
	}
	br.IPAM.DataDir = dataDir
	br.IPAM.GCGrace = gcGrace
	list.Plugins[0] = br
	b, err := list.Marshal()
	if err != nil {
		tb.Fatalf("render conflist: %v", err)
	}
	return b
}

// WriteConflist writes Conflist to dir/10-esb.conflist, making dir.
func WriteConflist(tb testing.TB, dir, cniVersion, dataDir, gcGrace string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("make %s: %v", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConflistName), Conflist(tb, cniVersion, dataDir, gcGrace), 0o644); err != nil {
		tb.Fatalf("write conflist: %v", err)
	}
}

// PluginExec is libcni's default executor, passed explicitly because a
// CNIConfig with a nil Exec sets its default on first use without a lock,
// which races when goroutines share it.
func PluginExec() invoke.Exec {
	return &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
}

// Node is one test's host namespace, with the IPAM store of its esb
// network and the workers attached to it.
type Node struct {
	TB      testing.TB
	NS      ns.NetNS
	Name    string // for ip netns exec
	DataDir string // esb-ipam's store

	prefix  string // of the container IDs of attached workers
	cni     *libcni.CNIConfig
	workers int
}

// New makes the node namespace and a directory for its IPAM store; the
// workers Attach makes are named prefix-1, prefix-2, ...
func New(tb testing.TB, prefix string) *Node {
	tb.Helper()
	nsNode := nstest.NewNS(tb)
	return &Node{TB: tb, NS: nsNode, Name: filepath.Base(nsNode.Path()), DataDir: tb.TempDir(), prefix: prefix}
}

// Handle returns a netlink handle bound to the node; the caller closes it.
func (n *Node) Handle() *netlink.Handle {
	n.TB.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(n.NS.Fd())))
	if err != nil {
		n.TB.Fatalf("netlink handle in node: %v", err)
	}
	return h
}

// Conflist is the node's esb network (cniVersion 1.1.0, IPAM store in
// DataDir) for libcni.
func (n *Node) Conflist() *libcni.NetworkConfigList {
	n.TB.Helper()
	l, err := libcni.ConfListFromBytes(Conflist(n.TB, conf.CNIVersion, n.DataDir, ""))
	if err != nil {
		n.TB.Fatalf("parse conflist: %v", err)
	}
	return l
}

// InNode runs fn on a thread in the node namespace with a context bounded
// by CallTimeout, so that plugins libcni executes from there run in the
// node. fn runs on another goroutine, so it must not call t.Fatal.
func (n *Node) InNode(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), CallTimeout)
	defer cancel()
	return n.NS.Do(func(ns.NetNS) error { return fn(ctx) })
}

// Worker is a namespace attached to the node's bridge by esb-bridge.
type Worker struct {
	NS   ns.NetNS
	Name string // for ip netns exec
	IP   netip.Addr
}

// Attach makes a worker namespace and runs CNI ADD for it through libcni
// inside the node; DEL runs at cleanup, before the namespace goes.
func (n *Node) Attach() *Worker {
	n.TB.Helper()
	if n.cni == nil {
		n.cni = libcni.NewCNIConfigWithCacheDir([]string{nstest.PluginDir(n.TB)}, n.TB.TempDir(), PluginExec())
	}
	n.workers++
	wns := nstest.NewNS(n.TB)
	w := &Worker{NS: wns, Name: filepath.Base(wns.Path())}
	rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("%s-%d", n.prefix, n.workers), NetNS: wns.Path(), IfName: "eth0"}
	list := n.Conflist()
	var res *current.Result
	err := n.InNode(func(ctx context.Context) error {
		r, err := n.cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		n.TB.Fatalf("CNI ADD %s: %v", rt.ContainerID, err)
	}
	n.TB.Cleanup(func() {
		if err := n.InNode(func(ctx context.Context) error { return n.cni.DelNetworkList(ctx, list, rt) }); err != nil {
			n.TB.Errorf("CNI DEL %s: %v", rt.ContainerID, err)
		}
	})
	for _, ipc := range res.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP.To4()); ok {
			w.IP = a
		}
	}
	if !w.IP.IsValid() {
		n.TB.Fatalf("CNI ADD %s: no IPv4 address in %+v", rt.ContainerID, res)
	}
	return w
}

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
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		nstest.Unavailable(tb, "haproxy is not installed (run scripts/deps.sh): %v", err)
	}
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

// Run runs a command bounded by timeout, with stdin when not nil, and
// returns its combined output; the error names the command and holds its
// output.
func Run(timeout time.Duration, stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
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

// AddAddrLink puts addr (as a /32) on link, one end of a veth pair (link,
// link+"p") that stays inside the namespace of h, and sets both ends up:
// a second address of the node. (This kernel has no dummy driver; a veth
// end behaves like any other non-loopback interface of a host.)
func AddAddrLink(h *netlink.Handle, link, addr string) error {
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: link}, PeerName: link + "p"}
	if err := h.LinkAdd(l); err != nil {
		return fmt.Errorf("add %s: %w", link, err)
	}
	peer, err := h.LinkByName(link + "p")
	if err != nil {
		return fmt.Errorf("find %sp: %w", link, err)
	}
	a, err := netlink.ParseAddr(addr + "/32")
	if err != nil {
		return err
	}
	if err := errors.Join(h.AddrAdd(l, a), h.LinkSetUp(peer), h.LinkSetUp(l)); err != nil {
		return fmt.Errorf("put %s on %s: %w", addr, link, err)
	}
	return nil
}
