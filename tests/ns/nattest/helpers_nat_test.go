// Package nattest holds the privileged tests of package nat: rules applied
// in a fresh network namespace and compared, as the kernel renders them,
// with golden texts.
package nattest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// The topology every test here builds: a "node" namespace that plays the
// host, with the esb bridge made by esb-bridge, a second node address on
// nodeLink, and worker namespaces attached through libcni.
const (
	bridgeName = "esb-cni0"
	gatewayIP  = "10.88.0.1"
	nodeAddr   = "192.0.2.10" // the node's other address, on nodeLink
	nodeLink   = "node0"

	// The outside network of the egress tests: a third namespace behind
	// the node's ext0.
	extNodeAddr = "198.51.100.1"
	extAddr     = "198.51.100.2"

	// cmdTimeout bounds one command.
	cmdTimeout = 15 * time.Second
	// dialTimeout bounds a dial or request that should work; blockedTimeout
	// one that should not (a dropped SYN: nothing ever answers).
	dialTimeout    = 3 * time.Second
	blockedTimeout = 1 * time.Second
)

// node is one test's host namespace with its NAT manager.
type node struct {
	*nodetest.Node
	t   *testing.T
	mgr *nat.Manager
}

// newNode makes the node namespace: lo up, nodeLink up with nodeAddr/32, and
// a NAT manager bound to it.
func newNode(t *testing.T) *node {
	t.Helper()
	n := &node{Node: nodetest.New(t, "nattest"), t: t}
	n.mgr = nat.NewManager(n.NS)
	if err := nodetest.LoUp(n.NS); err != nil {
		t.Fatalf("set lo up in node: %v", err)
	}
	h := n.Handle()
	defer h.Close()
	if err := nodetest.AddAddrLink(h, nodeLink, nodeAddr); err != nil {
		t.Fatal(err)
	}
	return n
}

func netlinkNet(cidr string) *net.IPNet {
	p := netip.MustParsePrefix(cidr)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// worker is a namespace attached to the node's bridge by esb-bridge.
type worker struct {
	*nodetest.Worker
	t *testing.T
}

// attach makes a worker namespace and runs CNI ADD for it through libcni
// inside the node; DEL runs at cleanup, before the namespace goes.
func (n *node) attach() *worker {
	n.t.Helper()
	return &worker{Worker: n.Attach(), t: n.t}
}

// --- traffic from a worker -----------------------------------------------------

// dial opens a connection whose socket is created in the worker namespace
// (the socket keeps its namespace when the thread switches back).
func (w *worker) dial(ctx context.Context, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := w.NS.Do(func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// httpGet sends one request, on a fresh connection, from the worker.
func (w *worker) httpGet(url string) (string, error) {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return w.dial(ctx, network, addr, dialTimeout)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: dialTimeout}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err = errors.Join(err, resp.Body.Close()); err != nil {
		return "", fmt.Errorf("read response of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	return string(b), nil
}

// mustGet fails the test unless the worker's request returns want.
func (w *worker) mustGet(url, want string) {
	w.t.Helper()
	got, err := w.httpGet(url)
	if err != nil {
		w.t.Fatalf("worker GET %s: %v", url, err)
	}
	if got != want {
		w.t.Fatalf("worker GET %s = %q, want %q", url, got, want)
	}
}

// greeting connects over TCP and returns the first line the peer sends
// (the node's test listeners greet with the address the connection came
// from).
func (w *worker) greeting(addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := w.dial(ctx, "tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read greeting of %s: %w", addr, err)
	}
	return strings.TrimSpace(line), nil
}

// udpConn is a connected UDP socket of the worker.
func (w *worker) udpConn(addr string) *net.UDPConn {
	w.t.Helper()
	c, err := w.dial(context.Background(), "udp", addr, dialTimeout)
	if err != nil {
		w.t.Fatalf("worker udp socket to %s: %v", addr, err)
	}
	w.t.Cleanup(func() { _ = c.Close() })
	return c.(*net.UDPConn)
}

// udpRoundTrip sends msg and returns the first datagram that comes back
// within timeout.
func udpRoundTrip(c *net.UDPConn, msg string, timeout time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", fmt.Errorf("send datagram: %w", err)
	}
	buf := make([]byte, 1500)
	k, err := c.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read echo: %w", err)
	}
	return string(buf[:k]), nil
}

// ping sends echo requests from the worker to dst, a few tries for the
// first ARP resolution.
func (w *worker) ping(dst string) error {
	var err error
	for range 3 {
		if _, err = run("ip", "netns", "exec", w.Name, "ping", "-n", "-q", "-c", "1", "-W", "1", dst); err == nil {
			return nil
		}
	}
	return err
}

// isTimeout reports whether err is a timeout: what a dropped SYN gives,
// as opposed to a refusal (which means the packet got through).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// expectBlocked checks, in parallel, that the worker's connections to addrs
// time out.
func (w *worker) expectBlocked(what string, addrs ...string) {
	w.t.Helper()
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			g, err := w.greeting(a, blockedTimeout)
			switch {
			case err == nil:
				errs[i] = fmt.Errorf("connection to %s went through (greeting %q)", a, g)
			case !isTimeout(err):
				errs[i] = fmt.Errorf("connection to %s failed, but not by a drop: %w", a, err)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			w.t.Errorf("%s: %v", what, err)
		}
	}
}

// expectReach checks that the worker's connection to addr works and that
// the listener saw it come from wantFrom.
func (w *worker) expectReach(what, addr string, wantFrom netip.Addr) {
	w.t.Helper()
	g, err := w.greeting(addr, dialTimeout)
	if err != nil {
		w.t.Errorf("%s: connect to %s: %v", what, addr, err)
		return
	}
	if want := "from " + wantFrom.String() + " to "; !strings.HasPrefix(g, want) {
		w.t.Errorf("%s: %s greeted %q, want %q", what, addr, g, want)
	}
}

// --- services in the node ------------------------------------------------

// listenTCP starts a listener on addr in namespace n that greets every
// connection with "from <peer address> to <addr>" and closes it.
func listenTCP(t *testing.T, n ns.NetNS, addr string) {
	t.Helper()
	l, err := nodetest.Listen(n, "tcp4", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			_ = c.SetDeadline(time.Now().Add(dialTimeout))
			_, _ = fmt.Fprintf(c, "from %s to %s\n", peer, addr)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() { _ = l.Close(); <-done })
}

// backendBody is what the HTTP backend answers, with the frontend HAProxy
// says it came through.
func backendBody(via string) string { return "esb backend via " + via }

// udpEchoReply is what the UDP echo server on addr sends back for msg.
func udpEchoReply(addr, msg string) string { return "echo from " + addr + ": " + msg }

// serveUDPEcho runs a UDP echo server on addr in the node.
func (n *node) serveUDPEcho(addr string) {
	n.t.Helper()
	pc, err := nodetest.ListenPacket(n.NS, "udp4", addr)
	if err != nil {
		n.t.Fatalf("udp listen on %s: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo([]byte(udpEchoReply(addr, string(buf[:k]))), from)
		}
	}()
	n.t.Cleanup(func() { _ = pc.Close(); <-done })
}

// The proxy stack most tests use: HAProxy frontends on the node address
// and on loopback, a Go HTTP backend, UDP echo servers on both.
const (
	feNode    = nodeAddr + ":19000"
	feLo      = "127.0.0.1:19001"
	backend   = "127.0.0.1:18080"
	udpNode   = nodeAddr + ":19053"
	udpLo     = "127.0.0.1:19053"
	fwdURL    = "http://" + gatewayIP + ":9000/"
	fwdUDP    = gatewayIP + ":9053"
	viaNode   = "fe_node"
	viaLo     = "fe_lo"
	rulesLo   = "forwards:\n  - {proto: tcp, port: 9000, to: \"" + feLo + "\"}\n  - {proto: udp, port: 9053, to: \"" + udpLo + "\"}\n"
	rulesNode = "forwards:\n  - {proto: tcp, port: 9000, to: \"" + feNode + "\"}\n  - {proto: udp, port: 9053, to: \"" + udpNode + "\"}\n"
)

// startProxyStack starts the backend, HAProxy and the UDP echo servers.
func (n *node) startProxyStack() {
	n.t.Helper()
	nodetest.ServeVia(n.t, n.NS, backend, backendBody)
	n.serveUDPEcho(udpNode)
	n.serveUDPEcho(udpLo)
	n.StartHAProxy(nodetest.HAProxyConfig(backend, map[string]string{viaNode: feNode, viaLo: feLo}), feNode, feLo)
}

// --- rules, nftables, sysctls ---------------------------------------------

// rules parses a rule file's text.
func rules(t *testing.T, text string) *conf.NATRules {
	t.Helper()
	r, err := natfile.Parse([]byte(text))
	if err != nil {
		t.Fatalf("parse rules: %v\n%s", err, text)
	}
	return r
}

// mustApply applies r, failing the test on an error, and checks what
// Apply says it did.
func (n *node) mustApply(r *conf.NATRules, want nat.Change) {
	n.t.Helper()
	got, err := n.mgr.Apply(context.Background(), r)
	if err != nil {
		n.t.Fatalf("apply: %v", err)
	}
	if got != want {
		n.t.Errorf("Apply = %s, want %s", got, want)
	}
}

// run runs a command with cmdTimeout and returns its combined output.
func run(name string, args ...string) (string, error) {
	return nodetest.Run(cmdTimeout, nil, name, args...)
}

// inNS runs a command in the node with ip netns exec, failing the test
// when it fails.
func (n *node) inNS(args ...string) string {
	n.t.Helper()
	out, err := run("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	if err != nil {
		n.t.Fatalf("in node: %v", err)
	}
	return out
}

// list is the kernel's rendering of a table of the node.
func (n *node) list(family, table string) string {
	n.t.Helper()
	return nftList(n.t, n.NS.Path(), family, table)
}

// hasESBTable reports whether table ip esb exists in the node.
func (n *node) hasESBTable() bool {
	n.t.Helper()
	return strings.Contains(n.inNS("nft", "list", "tables"), "table ip "+nat.TableName+"\n")
}

// localnet reads route_localnet of the bridge in the node.
func (n *node) localnet() string {
	n.t.Helper()
	var b []byte
	err := n.NS.Do(func(ns.NetNS) error {
		var err error
		b, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + bridgeName + "/route_localnet")
		return err
	})
	if err != nil {
		n.t.Fatalf("read route_localnet of %s: %v", bridgeName, err)
	}
	return strings.TrimSpace(string(b))
}

var esbTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nat.TableName}

// esbRule returns the rule of chain whose comment starts with "esb: "+prefix.
func (n *node) esbRule(chain, prefix string) *nftables.Rule {
	n.t.Helper()
	rs, err := n.NFT().GetRules(esbTable, &nftables.Chain{Table: esbTable, Name: chain})
	if err != nil {
		n.t.Fatalf("list rules of ip esb %s: %v", chain, err)
	}
	for _, r := range rs {
		if c, _ := userdata.GetString(r.UserData, userdata.TypeComment); strings.HasPrefix(c, "esb: "+prefix) {
			return r
		}
	}
	n.t.Fatalf("no rule %q in chain ip esb %s", prefix, chain)
	return nil
}

// ruleCounter returns the packets of a rule's counter.
func (n *node) ruleCounter(chain, prefix string) uint64 {
	n.t.Helper()
	for _, e := range n.esbRule(chain, prefix).Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c.Packets
		}
	}
	n.t.Fatalf("rule %q of ip esb %s has no counter", prefix, chain)
	return 0
}

// shape reads the shape of table ip esb in the node; zeros when the
// table is missing.
func (n *node) shape() (nodetest.NATShape, error) {
	n.t.Helper()
	return nodetest.ReadNATShape(n.NFT())
}

// waitShape polls until the table has shape want, for at most limit, and
// returns how long that took.
func (n *node) waitShape(want nodetest.NATShape, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		got, err := n.shape()
		if err == nil && got == want {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return time.Since(start), fmt.Errorf("table ip esb is %+v after %v, want %+v (last error: %w)", got, limit, want, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// watch runs the manager's Watch in the background and returns its
// reports and a function that stops it (also called when the test ends).
// It waits for the start pass to have applied r, so the table must not
// match r already.
func (n *node) watch(r *conf.NATRules, interval time.Duration) (<-chan nat.Event, func()) {
	n.t.Helper()
	events, stop := nodetest.Watch(n.t, n.mgr, r, interval, 1024)
	select {
	case e := <-events:
		if e.Err != nil || e.Trigger != "start" {
			n.t.Fatalf("first Watch report = %+v, want the start pass", e)
		}
	case <-time.After(10 * time.Second):
		n.t.Fatal("Watch made no start pass within 10s")
	}
	// Watch subscribes to notifications before its start pass, so a
	// change made from here on reaches it by the notification path.
	return events, stop
}

// drain returns the reports waiting in events.
func drain(events <-chan nat.Event) []nat.Event {
	var out []nat.Event
	for {
		select {
		case e := <-events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func TestMain(m *testing.M) { nstest.Main(m) }
