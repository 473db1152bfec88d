package clients

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/plugins/esb-bridge/bridge"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// cnitool drives the esb network with cnitool v1.3.0 from scripts/deps.sh,
// run in a node namespace.
type cnitool struct {
	t       *testing.T
	bin     string
	node    *node
	netDir  string // NETCONFPATH: holds only the esb conflist
	plugins string // CNI_PATH: our freshly built plugins
}

func newCnitool(t *testing.T, n *node, dataDir string) *cnitool {
	t.Helper()
	c := &cnitool{t: t, bin: nstest.Tool(t, "cnitool"), node: n, netDir: t.TempDir(), plugins: nstest.PluginDir(t)}
	nodetest.WriteConflist(t, c.netDir, conf.CNIVersion, dataDir, "0s")
	return c
}

// withVarLib runs its arguments with a directory bind-mounted over
// /var/lib. cnitool has no cache-dir setting: its libcni keeps results in
// /var/lib/cni, shared by every runtime on the machine, and "cnitool gc"
// deletes every attachment of the network it finds there. ip netns exec
// already runs the command in a private mount namespace (a slave of the
// machine's), so a bind mount there gives each test its own cache,
// <dir>/cni/results, without touching the machine's.
const withVarLib = `mount --bind "$1" /var/lib && shift && exec "$@"`

// run runs "cnitool <verb> esb <worker>" in the node namespace with
// varLib as /var/lib, and returns its stdout.
func (c *cnitool) run(verb string, worker ns.NetNS, varLib string) (string, error) {
	c.t.Helper()
	env := []string{"CNI_PATH=" + c.plugins, "NETCONFPATH=" + c.netDir}
	return run(c.t, env, "ip", "netns", "exec", c.node.name, "sh", "-c", withVarLib, "sh", varLib,
		c.bin, verb, netName, worker.Path())
}

func (c *cnitool) mustRun(verb string, worker ns.NetNS, varLib string) string {
	c.t.Helper()
	out, err := c.run(verb, worker, varLib)
	if err != nil {
		c.t.Fatalf("cnitool %s: %v", verb, err)
	}
	return out
}

// cnitoolWorld is what a test of one worker through cnitool starts from:
// the node, the worker's namespace, esb-ipam's data directory, cnitool's
// cache directory (its /var/lib), cnitool itself and the worker's
// container ID as cnitool names it.
func cnitoolWorld(t *testing.T) (n *node, worker ns.NetNS, dataDir, varLib string, c *cnitool, cid string) {
	t.Helper()
	nstest.RequirePrivileged(t)
	n, worker = newNode(t), nstest.NewNS(t)
	dataDir, varLib = t.TempDir(), t.TempDir()
	return n, worker, dataDir, varLib, newCnitool(t, n, dataDir), cnitoolID(worker.Path())
}

// cnitoolID is the container ID cnitool v1.3.0 uses: "cnitool-" and the
// first 10 bytes of the SHA-512 of the netns path, in hex.
func cnitoolID(netnsPath string) string {
	sum := sha512.Sum512([]byte(netnsPath))
	return fmt.Sprintf("cnitool-%x", sum[:10])
}

// cachedResult is where cnitool's libcni caches the attachment's result.
func cachedResult(varLib, containerID string) string {
	return filepath.Join(varLib, "cni", "results", netName+"-"+containerID+"-"+ifName)
}

func isCached(t *testing.T, varLib, containerID string) bool {
	t.Helper()
	_, err := os.Stat(cachedResult(varLib, containerID))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat cached result: %v", err)
	}
	return err == nil
}

// resultAddr checks the result cnitool add printed (cniVersion 1.1.0, one
// IPv4 address in the esb subnet on the sandbox's eth0 with gateway
// 10.88.0.1 and the MAC derived from the address) and returns the address.
func resultAddr(t *testing.T, out, netnsPath string) netip.Prefix {
	t.Helper()
	var res current.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("cnitool add printed no CNI result: %v\n%s", err, out)
	}
	if res.CNIVersion != conf.CNIVersion {
		t.Errorf("result cniVersion = %q, want %q", res.CNIVersion, conf.CNIVersion)
	}
	if len(res.IPs) != 1 {
		t.Fatalf("result has %d IPs, want 1:\n%s", len(res.IPs), out)
	}
	ip := res.IPs[0]
	addr := wantInSubnet(t, "result address", ip.Address.String())
	if ip.Gateway.String() != gateway {
		t.Errorf("result gateway = %s, want %s", ip.Gateway, gateway)
	}
	if ip.Interface == nil || *ip.Interface >= len(res.Interfaces) {
		t.Fatalf("result IP names no interface:\n%s", out)
	}
	sb := res.Interfaces[*ip.Interface]
	if sb.Name != ifName || sb.Sandbox != netnsPath {
		t.Errorf("result IP is on %q in %q, want %q in %q", sb.Name, sb.Sandbox, ifName, netnsPath)
	}
	if want := bridge.MACFor(addr.Addr()).String(); sb.Mac != want {
		t.Errorf("result MAC of %s = %s, want %s", ifName, sb.Mac, want)
	}
	return addr
}

// TestCnitoolLifecycle runs STATUS, ADD, CHECK, STATUS, DEL, DEL through
// cnitool: the worker gets an address of 10.88.0.0/16 that esb-ipam
// stored for cnitool's container ID, reaches the gateway (and the node
// reaches it), the veth is an anti-spoof guarded port, CHECK against
// cnitool's cached result passes, and DEL removes the veth, its guard, the
// worker's eth0, the address and the cache entry; a second DEL succeeds
// and a CHECK after it fails.
func TestCnitoolLifecycle(t *testing.T) {
	n, worker, dataDir, varLib, c, cid := cnitoolWorld(t)
	veth := conf.VethName(cid, ifName)

	c.mustRun("status", worker, varLib)

	addr := resultAddr(t, c.mustRun("add", worker, varLib), worker.Path())
	t.Logf("cnitool add: %s for %s, host veth %s", addr, cid, veth)
	if !isCached(t, varLib, cid) {
		t.Errorf("cnitool cached no result at %s", cachedResult(varLib, cid))
	}
	wantAllocation(t, dataDir, cid, addr)
	if !hasLink(t, n.ns, conf.BridgeName) || !hasLink(t, n.ns, veth) {
		t.Fatalf("node lacks %s or veth %s after ADD", conf.BridgeName, veth)
	}
	if hostHasLink(t, veth) {
		t.Fatalf("veth %s is in the machine's namespace, not the node's", veth)
	}
	if !guarded(t, n.name, veth) {
		t.Errorf("node's nft table bridge esb does not guard %s", veth)
	}
	if err := ping(t, nsName(worker), gateway); err != nil {
		t.Fatalf("worker cannot reach the gateway: %v", err)
	}
	if err := ping(t, n.name, addr.Addr().String()); err != nil {
		t.Fatalf("node cannot reach the worker: %v", err)
	}

	c.mustRun("check", worker, varLib)
	c.mustRun("status", worker, varLib)

	c.mustRun("del", worker, varLib)
	if hasLink(t, n.ns, veth) {
		t.Errorf("veth %s survived DEL", veth)
	}
	if guarded(t, n.name, veth) {
		t.Errorf("anti-spoof guard of %s survived DEL", veth)
	}
	if hasLink(t, worker, ifName) {
		t.Errorf("worker's %s survived DEL", ifName)
	}
	wantReleased(t, dataDir, cid)
	if isCached(t, varLib, cid) {
		t.Errorf("cnitool's cached result survived DEL")
	}

	c.mustRun("del", worker, varLib)
	if _, err := c.run("check", worker, varLib); err == nil {
		t.Errorf("cnitool check after DEL succeeded")
	}
}

// TestCnitoolGC shows what "cnitool gc" does. It passes no valid
// attachments (libcni.GCNetworkList with nil GCArgs), so libcni DELs every
// attachment of the network in cnitool's cache, and esb-bridge's GC, given
// no cni.dev/valid-attachments, removes every attachment older than
// gcGrace ("0s" here), cached or not: live attachments do not survive it.
// A runtime that does list them (libcni with GCArgs, as containerd does)
// keeps them, which is checked first.
func TestCnitoolGC(t *testing.T) {
	nstest.RequirePrivileged(t)
	n := newNode(t)
	a, b := nstest.NewNS(t), nstest.NewNS(t)
	dataDir := t.TempDir()
	// a is in the cache the GC reads; b is in another runtime's cache.
	varLibA, varLibB := t.TempDir(), t.TempDir()
	c := newCnitool(t, n, dataDir)
	cidA, cidB := cnitoolID(a.Path()), cnitoolID(b.Path())
	addrA := resultAddr(t, c.mustRun("add", a, varLibA), a.Path())
	addrB := resultAddr(t, c.mustRun("add", b, varLibB), b.Path())
	if addrA == addrB {
		t.Fatalf("both attachments got %s", addrA)
	}

	// libcni, the library cnitool is built on, with both attachments valid.
	list, err := libcni.LoadNetworkConf(c.netDir, netName)
	if err != nil {
		t.Fatalf("load conflist: %v", err)
	}
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	lib := libcni.NewCNIConfigWithCacheDir([]string{c.plugins}, filepath.Join(varLibA, "cni"), exec)
	valid := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{
		{ContainerID: cidA, IfName: ifName}, {ContainerID: cidB, IfName: ifName},
	}}
	err = n.ns.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(t.Context(), cmdTimeout)
		defer cancel()
		return lib.GCNetworkList(ctx, list, valid)
	})
	if err != nil {
		t.Fatalf("libcni GC with both attachments valid: %v", err)
	}
	wantAllocation(t, dataDir, cidA, addrA)
	wantAllocation(t, dataDir, cidB, addrB)
	for _, cid := range []string{cidA, cidB} {
		if !hasLink(t, n.ns, conf.VethName(cid, ifName)) {
			t.Fatalf("GC with %s valid removed its veth", cid)
		}
	}
	if err := ping(t, nsName(a), gateway); err != nil {
		t.Fatalf("worker a cannot reach the gateway after a GC that kept it: %v", err)
	}

	c.mustRun("gc", a, varLibA)
	for _, w := range []struct {
		name string
		ns   ns.NetNS
		cid  string
	}{{"a (DEL by libcni from the cache)", a, cidA}, {"b (esb-bridge GC)", b, cidB}} {
		if veth := conf.VethName(w.cid, ifName); hasLink(t, n.ns, veth) || guarded(t, n.name, veth) {
			t.Errorf("worker %s: veth or its anti-spoof guard survived cnitool gc", w.name)
		}
		if hasLink(t, w.ns, ifName) {
			t.Errorf("worker %s: %s survived cnitool gc", w.name, ifName)
		}
		wantReleased(t, dataDir, w.cid)
	}
	if isCached(t, varLibA, cidA) {
		t.Errorf("cnitool gc left a's cached result")
	}
	if !isCached(t, varLibB, cidB) {
		t.Errorf("b's cached result is gone, but cnitool gc never saw that cache")
	}

	// DEL after GC is still fine, from either runtime.
	c.mustRun("del", a, varLibA)
	c.mustRun("del", b, varLibB)
	if isCached(t, varLibB, cidB) {
		t.Errorf("cnitool del left b's cached result")
	}
}

// TestCnitoolSubnetTaken puts what Podman's CNI default network leaves on
// a host, a bridge cni-podman0 holding 10.88.0.1/16, on the node: STATUS
// and ADD then fail with a message naming that interface, ADD leaves no
// veth, bridge, address or cache entry behind, and DEL still succeeds.
func TestCnitoolSubnetTaken(t *testing.T) {
	n, worker, dataDir, varLib, c, cid := cnitoolWorld(t)
	for _, args := range [][]string{
		{"-n", n.name, "link", "add", "cni-podman0", "type", "bridge"},
		{"-n", n.name, "addr", "add", gateway + "/16", "dev", "cni-podman0"},
	} {
		if _, err := run(t, nil, "ip", args...); err != nil {
			t.Fatal(err)
		}
	}

	for _, verb := range []string{"status", "add"} {
		_, err := c.run(verb, worker, varLib)
		if err == nil {
			t.Fatalf("cnitool %s succeeded with cni-podman0 holding %s", verb, subnet)
		}
		if want := "subnet " + subnet.String() + " is already used by cni-podman0"; !strings.Contains(err.Error(), want) {
			t.Errorf("cnitool %s: error does not say %q:\n%v", verb, want, err)
		}
	}
	if hasLink(t, n.ns, conf.VethName(cid, ifName)) || hasLink(t, n.ns, conf.BridgeName) {
		t.Errorf("failed ADD left a veth or %s on the node", conf.BridgeName)
	}
	if hasLink(t, worker, ifName) {
		t.Errorf("failed ADD left %s in the worker", ifName)
	}
	if got := allocations(t, dataDir); len(got) != 0 {
		t.Errorf("failed ADD left allocations: %v", got)
	}
	if isCached(t, varLib, cid) {
		t.Errorf("failed ADD left a cached result")
	}
	c.mustRun("del", worker, varLib)
}
