// Package bridgetest is the privileged test suite of the esb-bridge CNI
// plugin. Every test makes a "node" network namespace that plays the host
// and runs the plugin there through libcni, as a runtime would, with worker
// namespaces attached to it; traffic goes only between those namespaces.
// It needs root: CI=1 go test -count=1 -v ./tests/ns/bridgetest/
package bridgetest

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

const (
	netName    = "esb"
	bridgeName = "esb-cni0"
	subnet     = "10.88.0.0/16"
	gatewayIP  = "10.88.0.1"
	ifName     = "eth0"
	// callTimeout bounds one libcni call (one or more plugin executions).
	callTimeout = time.Minute
)

var gateway = netip.MustParseAddr(gatewayIP)

// node is one test's "host": a network namespace in which esb-bridge runs,
// the IPAM data dir, the plugin's configuration (rendered anew for every
// call, so a test may change it in between) and a libcni runtime with a
// private result cache.
type node struct {
	t       *testing.T
	ns      ns.NetNS
	name    string // for ip netns exec
	dataDir string
	plugins string
	cni     *libcni.CNIConfig
	// plugin is the esb-bridge object of the conflist; ipam is its "ipam".
	plugin map[string]any
	ipam   map[string]any
}

// newNode makes a node namespace and the default esb configuration, with
// the plugin object changed by plugin and the "ipam" object by ipamOver.
func newNode(t *testing.T, plugin, ipamOver map[string]any) *node {
	t.Helper()
	nsNode := nstest.NewNS(t)
	n := &node{
		t:       t,
		ns:      nsNode,
		name:    filepath.Base(nsNode.Path()),
		dataDir: t.TempDir(),
		plugins: nstest.PluginDir(t),
	}
	n.ipam = map[string]any{
		"type":    "esb-ipam",
		"subnet":  subnet,
		"gateway": gatewayIP,
		"routes":  []any{map[string]any{"dst": "0.0.0.0/0"}},
		"dataDir": n.dataDir,
	}
	maps.Copy(n.ipam, ipamOver)
	n.plugin = map[string]any{"type": "esb-bridge", "bridge": bridgeName, "ipam": n.ipam}
	maps.Copy(n.plugin, plugin)
	n.cni = n.runtime()
	return n
}

// in returns n bound to the subtest t, so that its assertions, fatal
// errors and cleanups belong to t. The configuration and the runtime stay
// shared.
func (n *node) in(t *testing.T) *node {
	c := *n
	c.t = t
	return &c
}

// runtime returns a libcni runtime on the built plugins with its own empty
// result cache, as a second runtime (or one that lost its cache) would be.
func (n *node) runtime() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{n.plugins}, n.t.TempDir(), nodetest.PluginExec())
}

// confBytes renders the conflist for cniVersion.
func (n *node) confBytes(cniVersion string) []byte {
	n.t.Helper()
	b, err := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       netName,
		"plugins":    []any{n.plugin},
	})
	if err != nil {
		n.t.Fatalf("marshal conflist: %v", err)
	}
	return b
}

func (n *node) list(cniVersion string) *libcni.NetworkConfigList {
	n.t.Helper()
	l, err := libcni.ConfListFromBytes(n.confBytes(cniVersion))
	if err != nil {
		n.t.Fatalf("parse conflist: %v", err)
	}
	return l
}

// inNode runs fn on a thread in the node namespace with a bounded context;
// plugins that libcni executes from there inherit the namespace. fn runs
// on another goroutine (ns.Do's), so it must not call t.Fatal. The context
// is not the test's, so that cleanups can call plugins too.
func (n *node) inNode(fn func(ctx context.Context) error) error {
	return nodetest.InNS(n.ns, callTimeout, fn)
}

// worker is a container network namespace attached (or to be attached) to
// the node under one container ID.
type worker struct {
	ns   ns.NetNS
	name string // for ip netns exec
	path string // CNI_NETNS
	id   string
	ip   netip.Addr // set by a successful add
}

func (n *node) newWorker(id string) *worker {
	n.t.Helper()
	w := nstest.NewNS(n.t)
	return &worker{ns: w, name: filepath.Base(w.Path()), path: w.Path(), id: id}
}

// veth is the node-side veth name esb-bridge gives the worker's eth0.
func (w *worker) veth() string { return conf.VethName(w.id, ifName) }

func (w *worker) attachment() ipam.AttachmentID {
	return ipam.AttachmentID{ContainerID: w.id, IfName: ifName}
}

func (w *worker) rt() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: w.id, NetNS: w.path, IfName: ifName}
}

// addVersion runs ADD through libcni with a conflist of cniVersion and
// returns the result as the plugin printed it.
func (n *node) addVersion(cni *libcni.CNIConfig, w *worker, cniVersion string) (types.Result, error) {
	var res types.Result
	list := n.list(cniVersion)
	err := n.inNode(func(ctx context.Context) error {
		var err error
		res, err = cni.AddNetworkList(ctx, list, w.rt())
		return err
	})
	if err != nil {
		return nil, err
	}
	if r, cerr := current.NewResultFromResult(res); cerr == nil && len(r.IPs) > 0 {
		w.ip, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	}
	return res, nil
}

func (n *node) add(w *worker) error {
	_, err := n.addVersion(n.cni, w, "1.1.0")
	return err
}

// mustAdd attaches w and fails the test when that does not work.
func (n *node) mustAdd(w *worker) {
	n.t.Helper()
	if err := n.add(w); err != nil {
		n.t.Fatalf("ADD %s: %v", w.id, err)
	}
	if !w.ip.IsValid() {
		n.t.Fatalf("ADD %s: result has no IPv4 address", w.id)
	}
}

func (n *node) check(w *worker) error { return n.checkVersion(w, "1.1.0") }

func (n *node) checkVersion(w *worker, cniVersion string) error {
	list := n.list(cniVersion)
	return n.inNode(func(ctx context.Context) error { return n.cni.CheckNetworkList(ctx, list, w.rt()) })
}

func (n *node) del(w *worker) error { return n.delVersion(w, "1.1.0") }

func (n *node) delVersion(w *worker, cniVersion string) error {
	list := n.list(cniVersion)
	return n.inNode(func(ctx context.Context) error { return n.cni.DelNetworkList(ctx, list, w.rt()) })
}

func (n *node) mustDel(w *worker) {
	n.t.Helper()
	if err := n.del(w); err != nil {
		n.t.Fatalf("DEL %s: %v", w.id, err)
	}
}

// gc runs GC through cni with the given workers' eth0 as the valid
// attachments. libcni first DELs the attachments in cni's own cache that
// are not valid; a runtime with an empty cache (n.runtime()) leaves all of
// the work to the plugin's GC.
func (n *node) gc(cni *libcni.CNIConfig, valid ...*worker) error {
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, w := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: w.id, IfName: ifName})
	}
	list := n.list("1.1.0")
	return n.inNode(func(ctx context.Context) error { return cni.GCNetworkList(ctx, list, args) })
}

func (n *node) status() error {
	list := n.list("1.1.0")
	return n.inNode(func(ctx context.Context) error { return n.cni.GetStatusNetworkList(ctx, list) })
}

// --- what the node holds -------------------------------------------------

// --- commands and traffic -------------------------------------------------

// --- CNI errors ------------------------------------------------------------

// wantCNIError fails the test unless err carries CNI error code want and
// its message (with details) contains every one of subs.
func wantCNIError(t *testing.T, err error, want uint, what string, subs ...string) *types.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want CNI error %d", what, want)
	}
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: want CNI error %d, got %v (%T)", what, want, err, err)
	}
	if te.Code != want {
		t.Fatalf("%s: want CNI error %d, got %d: %v", what, want, te.Code, te)
	}
	t.Logf("%s: error %d as wanted: %v", what, te.Code, te)
	for _, s := range subs {
		if !strings.Contains(te.Msg+" "+te.Details, s) {
			t.Errorf("%s: error %q does not mention %q", what, te.Error(), s)
		}
	}
	return te
}
