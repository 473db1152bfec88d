package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// The second stack of the stacks test: network esb2 on its own subnet,
// with its own proxy (a backend on the node's loopback, reached only
// through esb2's forward) and its own metrics address.
const (
	stack2Name    = "esb2"
	stack2Gateway = "10.89.0.1"
	stack2Proxy   = "127.0.0.2:19002"
	stack2Body    = "esb2's proxy"
	stack2Metrics = "127.0.0.1:9465"
)

var stack2Subnet = netip.MustParsePrefix("10.89.0.0/16")

// lastAddr is the broadcast address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	for i := p.Bits(); i < 32; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(a)
}

// addStack makes a second stack in e's node: its own directory, IPAM
// store, pins, libcni cache, socket, state and runtime scope (containerd
// namespace or Docker label), its conflist (network on subnet) in e's CNI
// configuration directory beside e's, as stacks share /etc/cni/net.d on a
// host. Its teardown (the leak check of its own objects) runs before e's.
func (e *env) addStack(network string, subnet netip.Prefix) *env {
	t := e.t
	t.Helper()
	d := agenttest.NewDirs(t, "esbe2e-"+network+"-")
	d.Network, d.Subnet, d.Conf = network, subnet, e.ConfDir()
	s := &env{t: t, rt: e.rt, dc: e.dc, stack: e.stack, node: e.node, image: e.image,
		Dirs: d, ctrNS: "esbe2e-" + nstest.RandomHex(4), seen: &idSet{ids: map[string]bool{}}}
	s.WriteConflist(t)
	t.Cleanup(s.teardown)
	if e.rt == stacktest.Containerd {
		s.ctr("images", "pull", "--plain-http", "--snapshotter", e.stack.Snapshotter, e.image)
	}
	return s
}

// serveAt serves body over HTTP on addr in the node until the test ends.
func (e *env) serveAt(addr, body string) {
	e.t.Helper()
	var l net.Listener
	if err := e.inNode(func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	}); err != nil {
		e.t.Fatalf("listen on %s in the node: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprint(w, body) }),
		ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	e.t.Cleanup(func() { _ = srv.Close(); <-done })
}

// writeRules writes a NAT rule file of the test.
func writeRules(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nat.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// probe is one fetch from inside a worker: reach says whether it must
// answer (with body) or must fail to connect.
type probe struct {
	what, url string
	reach     bool
	body      string
}

// probeFrom runs the probes from inside w, all at once (a refused one
// waits for the worker's fetch timeout), and checks each.
func (e *env) probeFrom(w *agentv1.Worker, probes []probe) {
	e.t.Helper()
	errs := make([]string, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Go(func() {
			body, err := e.invoke(w, fmt.Sprintf(`{"fetch":%q}`, p.url), 3*invokeTimeout)
			var ans nodetest.Answer
			switch {
			case err != nil:
				errs[i] = "invoke: " + err.Error()
			case json.Unmarshal([]byte(body), &ans) != nil || ans.Fetch == nil:
				errs[i] = "answer without fetch: " + body
			case p.reach && (ans.Fetch.Status != http.StatusOK || ans.Fetch.Body != p.body):
				errs[i] = fmt.Sprintf("cannot reach it: status %d body %q error %q", ans.Fetch.Status, ans.Fetch.Body, ans.Fetch.Error)
			case !p.reach && (ans.Fetch.Status != 0 || !connectFailed(ans.Fetch.Error)):
				errs[i] = fmt.Sprintf("reached it: status %d body %q error %q; want a failed connect", ans.Fetch.Status, ans.Fetch.Body, ans.Fetch.Error)
			}
		})
	}
	wg.Wait()
	for i, p := range probes {
		if errs[i] != "" {
			e.t.Errorf("worker %s (%s), %s at %s: %s", w.GetId(), w.GetIp(), p.what, p.url, errs[i])
		}
	}
}

// ids returns the IDs of workers, sorted.
func ids(ws []*agentv1.Worker) []string {
	out := make([]string, 0, len(ws))
	for _, w := range ws {
		out = append(out, w.GetId())
	}
	slices.Sort(out)
	return out
}

// TestTwoStacks runs two ESB stacks in one node, each with its own agent,
// proxy and worker: esb (10.88.0.0/16, egress proxy-only) and esb2
// (10.89.0.0/16, egress open). Each worker reaches its own proxy and
// nothing of the other stack (workers, gateway ports, proxy); releasing
// all of one stack leaves the other's workers, table and store whole (the
// leak check of each stack sees only its own objects); a restart of one
// agent adopts only its own workers; esbctl doctor -network esb2 checks
// the second stack; and a third stack on an overlapping subnet stops at
// start naming both networks.
func TestTwoStacks(t *testing.T) { forRuntimes(t, testTwoStacks) }

func testTwoStacks(t *testing.T, a *env) {
	b := a.addStack(stack2Name, stack2Subnet)
	rulesA := a.startProxy()
	a.serveAt(stack2Proxy, stack2Body)
	rulesB := writeRules(t, fmt.Sprintf("egress: open\nbridge: esb2-cni0\nsubnet: %s\ngateway: %s\nforwards:\n  - {proto: tcp, port: %d, to: %q}\n",
		stack2Subnet, stack2Gateway, gatewayPort, stack2Proxy))
	a.startAgent("-nat-rules", rulesA)
	b.startAgent("-nat-rules", rulesB, "-metrics-listen", stack2Metrics)

	wa := a.mustAcquire(a.acquireReq("alice", "stack-a"))
	wb := b.mustAcquire(b.acquireReq("bob", "stack-b"))
	for _, c := range []struct {
		e       *env
		id, net string
	}{{a, wa.GetId(), conf.NetworkName}, {b, wb.GetId(), stack2Name}} {
		if got := c.e.containerLabels(c.id)[conf.LabelNetwork]; got != c.net {
			t.Errorf("worker %s carries %s=%q, want %q", c.id, conf.LabelNetwork, got, c.net)
		}
	}
	a.probeFrom(wa, []probe{
		{"its own proxy through its gateway", fetchURL, true, backendBody(frontendName)},
		{"esb2's gateway forward", url(stack2Gateway, gatewayPort), false, ""},
		{"esb2's proxy", "http://" + stack2Proxy + "/", false, ""},
		{"esb2's worker", url(wb.GetIp(), int(wb.GetPort())) + "healthz", false, ""},
	})
	// Under egress open a worker may reach the node's own addresses by
	// design, so the other stack's proxy is probed where esb's forward
	// reaches it: through esb's gateway.
	b.probeFrom(wb, []probe{
		{"its own proxy through its gateway", url(stack2Gateway, gatewayPort), true, stack2Body},
		{"esb's gateway forward", fetchURL, false, ""},
		{"esb's worker", url(wa.GetIp(), int(wa.GetPort())) + "healthz", false, ""},
	})

	// Release all of esb: nothing of esb is left, esb2 is whole.
	a.mustRelease(wa)
	a.expectNoTraces("after releasing all of esb")
	b.expectTraces(wb)
	b.mustInvoke(wb, `{"after":"esb released"}`)
	if out, errOut, code := a.esbctl(true, "nat", "show", "-network", stack2Name, "-o", "json"); code != 0 ||
		!strings.Contains(out, fmt.Sprintf(`"port": %d`, gatewayPort)) && !strings.Contains(out, fmt.Sprintf(`"port":%d`, gatewayPort)) {
		t.Errorf("esbctl nat show -network esb2 after esb's release: %d %q %q", code, out, errOut)
	}

	// A restart of esb2's agent adopts its own worker and nothing of esb's.
	wa2 := a.mustAcquire(a.acquireReq("alice", "stack-a"))
	b.stopAgent(syscall.SIGTERM)
	b.startAgent("-nat-rules", rulesB, "-metrics-listen", stack2Metrics)
	if got, want := ids(b.list("")), []string{wb.GetId()}; !slices.Equal(got, want) {
		t.Errorf("esb2 after its restart lists %v, want %v", got, want)
	}
	if got, want := ids(a.list("")), []string{wa2.GetId()}; !slices.Equal(got, want) {
		t.Errorf("esb lists %v, want %v", got, want)
	}
	b.mustInvoke(wb, `{"after":"restart"}`)

	b.checkDoctor(rulesB)

	a.mustRelease(wa2)
	b.mustRelease(wb)
	a.expectNoTraces("after release")
	b.expectNoTraces("after release")

	a.checkConflictStops("esb3", "10.89.128.0/17", stack2Name)
}

// checkDoctor runs esbctl doctor -network <e's network> in the node and
// checks that it looked at e's stack: its conflist, bridge, tables.
func (e *env) checkDoctor(rules string) {
	e.t.Helper()
	out, errOut, _ := e.esbctl(true, "doctor", "-network", e.Network, "-cni-conf-dir", e.ConfDir(),
		"-cni-bin-dirs", nstest.PluginDir(e.t), "-nat-rules", rules, "-runtime", "none", "-registry", "none", "-o", "json")
	var r struct {
		Findings []struct{ Check, Status, Message string } `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatalf("esbctl doctor -network %s: %v\n%s\n%s", e.Network, err, out, errOut)
	}
	want := map[string]string{
		"conflist":  e.Names().Bridge,
		"nftables":  "table ip " + e.Names().Table + " matches",
		"antispoof": "1 worker port(s)",
	}
	for _, f := range r.Findings {
		if w, ok := want[f.Check]; ok && f.Status == "ok" && strings.Contains(f.Message, w) {
			delete(want, f.Check)
		}
		if f.Check == "stacks" {
			e.t.Errorf("doctor reports a conflict between the stacks: %s", f.Message)
		}
	}
	if len(want) > 0 {
		e.t.Errorf("esbctl doctor -network %s lacks ok findings %v:\n%s", e.Network, want, out)
	}
}

// checkConflictStops writes a conflist of network on subnet (which
// overlaps other's) and checks that an agent of it stops at start with a
// message naming both networks; the conflist is removed again.
func (e *env) checkConflictStops(network, subnet, other string) {
	e.t.Helper()
	c := &env{t: e.t, Dirs: agenttest.Dirs{Base: e.t.TempDir(), Network: network, Subnet: netip.MustParsePrefix(subnet), Conf: e.ConfDir()}}
	c.WriteConflist(e.t)
	defer func() { _ = os.Remove(filepath.Join(e.ConfDir(), c.Names().Conflist)) }()
	agentBin, _ := binaries(e.t)
	args := append(e.runtimeFlags(), c.Flags(nstest.PluginDir(e.t))...)
	args = append(args, "-metrics-listen", "")
	p, _, err := agenttest.Start(filepath.Join(c.Base, "agent.log"), e.node.Path(), agentBin, args)
	if err != nil {
		e.t.Fatal(err)
	}
	select {
	case <-p.Exited:
	case <-time.After(agentStartTimeout):
		_ = p.Cmd.Process.Kill()
		<-p.Exited
		e.t.Fatalf("an agent of %s on %s, overlapping %s, did not stop at start:\n%s", network, subnet, other, p.Log())
	}
	_ = p.LogFile.Close()
	log := p.Log()
	if p.WaitErr == nil || !strings.Contains(log, "network "+network+" (") || !strings.Contains(log, "network "+other+" (") {
		e.t.Errorf("agent of %s: exit %v, want a failure naming %s and %s:\n%s", network, p.WaitErr, network, other, log)
	}
}
