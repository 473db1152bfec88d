package ipamtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	netName  = "esbt"
	ifName   = "eth0"
	pluginTy = "esb-ipam"
	// testSubnet is where the esb-ipam-only tests allocate; nothing is
	// configured on any interface from it.
	testSubnet  = "10.77.0.0/24"
	testGateway = "10.77.0.1"
	// callTimeout bounds one plugin execution.
	callTimeout = time.Minute
)

// ipamNet is one esb-ipam network under test: a private data dir, the
// "ipam" object, a libcni runtime (CNIConfig) with a private cache dir,
// and a network namespace whose path is CNI_NETNS.
type ipamNet struct {
	t       *testing.T
	dataDir string
	ipam    map[string]any
	cni     *libcni.CNIConfig
	netns   string
	plugins string
}

// newIPAMNet makes a network on testSubnet with a fresh data dir; fields
// are added to (or override) the "ipam" object.
func newIPAMNet(t *testing.T, fields map[string]any) *ipamNet {
	t.Helper()
	nstest.RequirePrivileged(t)
	n := &ipamNet{
		t:       t,
		dataDir: t.TempDir(),
		netns:   nstest.NewNS(t).Path(),
		plugins: nstest.PluginDir(t),
	}
	n.ipam = map[string]any{"type": pluginTy, "subnet": testSubnet, "dataDir": n.dataDir}
	maps.Copy(n.ipam, fields)
	n.cni = n.runtime()
	return n
}

// runtime returns another libcni runtime on the same plugins with its own
// (empty) result cache, as a second runtime or a runtime that lost its
// cache would be.
func (n *ipamNet) runtime() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{n.plugins}, n.t.TempDir(), nodetest.PluginExec())
}

// confBytes renders the network configuration for cniVersion with the
// "ipam" object changed by over.
func (n *ipamNet) confBytes(cniVersion string, over map[string]any) []byte {
	n.t.Helper()
	ipamObj := maps.Clone(n.ipam)
	maps.Copy(ipamObj, over)
	b, err := json.Marshal(map[string]any{
		"cniVersion": cniVersion,
		"name":       netName,
		"type":       pluginTy,
		"ipam":       ipamObj,
	})
	if err != nil {
		n.t.Fatalf("marshal config: %v", err)
	}
	return b
}

func (n *ipamNet) conf(cniVersion string) *libcni.PluginConfig {
	return n.confWith(cniVersion, nil)
}

func (n *ipamNet) confWith(cniVersion string, over map[string]any) *libcni.PluginConfig {
	n.t.Helper()
	pc, err := libcni.NetworkPluginConfFromBytes(n.confBytes(cniVersion, over))
	if err != nil {
		n.t.Fatalf("parse plugin config: %v", err)
	}
	return pc
}

// list is the 1.1.0 configuration as a one-plugin list, for GC and STATUS.
func (n *ipamNet) list(over map[string]any) *libcni.NetworkConfigList {
	n.t.Helper()
	l, err := libcni.ConfListFromConf(n.confWith("1.1.0", over)) //nolint:staticcheck // a one-plugin list of the plugin config under test is exactly what this helper wants
	if err != nil {
		n.t.Fatalf("config list: %v", err)
	}
	return l
}

func (n *ipamNet) rt(cid string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: cid, NetNS: n.netns, IfName: ifName}
}

func (n *ipamNet) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.t.Context(), callTimeout)
}

// add runs ADD (cniVersion 1.1.0) and returns the address of the result.
func (n *ipamNet) add(cni *libcni.CNIConfig, cid string) (netip.Prefix, error) {
	ctx, cancel := n.ctx()
	defer cancel()
	res, err := cni.AddNetwork(ctx, n.conf("1.1.0"), n.rt(cid))
	if err != nil {
		return netip.Prefix{}, err
	}
	ip, _, err := firstIP(res)
	return ip, err
}

func (n *ipamNet) mustAdd(cid string) netip.Prefix {
	n.t.Helper()
	ip, err := n.add(n.cni, cid)
	if err != nil {
		n.t.Fatalf("ADD %s: %v", cid, err)
	}
	return ip
}

func (n *ipamNet) del(cni *libcni.CNIConfig, cid string) error {
	ctx, cancel := n.ctx()
	defer cancel()
	return cni.DelNetwork(ctx, n.conf("1.1.0"), n.rt(cid))
}

func (n *ipamNet) mustDel(cid string) {
	n.t.Helper()
	if err := n.del(n.cni, cid); err != nil {
		n.t.Fatalf("DEL %s: %v", cid, err)
	}
}

func (n *ipamNet) check(cni *libcni.CNIConfig, cid string) error {
	ctx, cancel := n.ctx()
	defer cancel()
	return cni.CheckNetwork(ctx, n.conf("1.1.0"), n.rt(cid))
}

// gc runs GC through cni with the given valid container IDs (interface
// eth0) and the "ipam" object changed by over.
func (n *ipamNet) gc(cni *libcni.CNIConfig, over map[string]any, valid ...string) error {
	ctx, cancel := n.ctx()
	defer cancel()
	args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{}}
	for _, cid := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: cid, IfName: ifName})
	}
	return cni.GCNetworkList(ctx, n.list(over), args)
}

func (n *ipamNet) status(over map[string]any) error {
	ctx, cancel := n.ctx()
	defer cancel()
	return n.cni.GetStatusNetworkList(ctx, n.list(over))
}

// parsed is the network's IPAM configuration as esb-ipam reads it.
func (n *ipamNet) parsed() *conf.IPAM {
	n.t.Helper()
	nc, err := conf.ParseIPAMNetConf(n.confBytes("1.1.0", nil))
	if err != nil {
		n.t.Fatalf("parse config: %v", err)
	}
	return nc.IPAM
}

// storeState is what the store holds, read directly through package ipam.
type storeState struct {
	allocs         map[string]netip.Prefix // container ID -> its one address
	used, capacity uint64                  // ipam.Usage of the IPv4 range
}

// state opens the network's store (waiting for the lock like a plugin) and
// reads every allocation and the range's usage. It fails the test when an
// allocation is not of interface eth0 or does not hold exactly one address.
func (n *ipamNet) state() storeState {
	n.t.Helper()
	st, err := readStore(n.dataDir, n.parsed())
	if err != nil {
		n.t.Fatalf("read store: %v", err)
	}
	return st
}

func readStore(dataDir string, cfg *conf.IPAM) (storeState, error) {
	st := storeState{allocs: map[string]netip.Prefix{}}
	s, err := ipam.OpenBolt(dataDir, netName, ipam.BoltOptions{LockWait: 30 * time.Second})
	if err != nil {
		return st, err
	}
	err = s.View(func(tx ipam.Txn) error {
		err := tx.ForEachAllocation(func(a *ipam.Allocation) error {
			if a.ID.IfName != ifName || len(a.IPs) != 1 {
				return fmt.Errorf("allocation %s holds %v, want one address on %s", a.ID, a.IPs, ifName)
			}
			st.allocs[a.ID.ContainerID] = a.IPs[0]
			return nil
		})
		if err != nil {
			return err
		}
		st.used, st.capacity, err = ipam.Usage(tx, cfg.V4)
		return err
	})
	return st, errors.Join(err, s.Close())
}

// consistent checks the store's invariants: every allocation lies in the
// range and is not reserved, no address is held by two attachments, and
// the free map marks exactly the allocated addresses as used.
func (st storeState) consistent(cfg *conf.IPAM) error {
	owner := map[netip.Addr]string{}
	var errs []error
	for cid, p := range st.allocs {
		a := p.Addr()
		if !cfg.V4.Contains(a) || cfg.V4.Reserved(a) || p.Bits() != cfg.V4.Subnet.Bits() {
			errs = append(errs, fmt.Errorf("%s holds %s, outside range %s or reserved", cid, p, cfg.V4))
		}
		if other, dup := owner[a]; dup {
			errs = append(errs, fmt.Errorf("address %s is held by %s and %s", a, other, cid))
		}
		owner[a] = cid
	}
	if st.used != uint64(len(st.allocs)) {
		errs = append(errs, fmt.Errorf("free map marks %d addresses used, %d allocations exist", st.used, len(st.allocs)))
	}
	return errors.Join(errs...)
}

// firstIP returns the first address of a result of any version, and its gateway.
func firstIP(res types.Result) (netip.Prefix, netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("convert result: %w", err)
	}
	if len(r.IPs) != 1 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("result has %d IPs, want 1: %v", len(r.IPs), r)
	}
	return ipConfigAddr(r.IPs[0].Address.IP, r.IPs[0].Address.Mask, r.IPs[0].Gateway)
}

func ipConfigAddr(ip, mask, gw []byte) (netip.Prefix, netip.Addr, error) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("bad address %v", ip)
	}
	ones, _ := net.IPMask(mask).Size()
	g, _ := netip.AddrFromSlice(gw)
	return netip.PrefixFrom(a.Unmap(), ones), g.Unmap(), nil
}

// wantCode fails the test unless err carries the CNI error code want, and
// returns the error.
func wantCode(t *testing.T, err error, want uint, what string) *types.Error {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("%s: want CNI error %d, got %v (%T)", what, want, err, err)
	}
	if te.Code != want {
		t.Fatalf("%s: want CNI error %d, got %d: %v", what, want, te.Code, te)
	}
	return te
}

func TestMain(m *testing.M) { nstest.Main(m) }
