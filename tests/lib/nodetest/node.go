// Package nodetest builds the world of esbnet's namespace tier: a "node"
// network namespace that plays the host, the esb network's conflist as
// conf.DefaultConflist renders it (with the test's own IPAM store), worker
// namespaces attached to the node through libcni as a runtime would, and
// programs (HAProxy, data services) run in the node until the test ends.
// Everything it makes is removed when the test ends.
package nodetest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
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
	return StackConflist(tb, conf.NetworkName, netip.MustParsePrefix(conf.DefaultSubnet), cniVersion, dataDir, gcGrace)
}

// StackConflist is Conflist for the stack of network on subnet
// (conf.StackConflist: bridge <network>-cni0, the gateway the subnet's
// first address); the default network on the default subnet is exactly
// Conflist.
func StackConflist(tb testing.TB, network string, subnet netip.Prefix, cniVersion, dataDir, gcGrace string) []byte {
	tb.Helper()
	stack, err := conf.StackOf(network)
	if err != nil {
		tb.Fatal(err)
	}
	list := conf.StackConflist(stack, subnet)
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

// WriteStackConflist writes StackConflist to dir/10-<network>.conflist
// (conf.Stack.Conflist), making dir.
func WriteStackConflist(tb testing.TB, dir, network string, subnet netip.Prefix, cniVersion, dataDir string) {
	tb.Helper()
	stack, err := conf.StackOf(network)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("make %s: %v", dir, err)
	}
	b := StackConflist(tb, network, subnet, cniVersion, dataDir, "")
	if err := os.WriteFile(filepath.Join(dir, stack.Conflist), b, 0o644); err != nil {
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

// NFT returns an nftables connection bound to the node, with opts; one
// made nftables.AsLasting keeps its socket until the test ends.
func (n *Node) NFT(opts ...nftables.ConnOption) *nftables.Conn {
	n.TB.Helper()
	c, err := nftables.New(append([]nftables.ConnOption{nftables.WithNetNSFd(int(n.NS.Fd()))}, opts...)...)
	if err != nil {
		n.TB.Fatalf("nftables in node: %v", err)
	}
	n.TB.Cleanup(func() { _ = c.CloseLasting() })
	return c
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
	return InNS(n.NS, CallTimeout, fn)
}

// InNS runs fn on a thread in netns with a context bounded by timeout (not
// the test's, so that cleanups can call plugins too).
func InNS(netns ns.NetNS, timeout time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return netns.Do(func(ns.NetNS) error { return fn(ctx) })
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

// LoUp sets lo up in netns and puts each of addrs on it as a /32.
func LoUp(netns ns.NetNS, addrs ...string) error {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(netns.Fd())))
	if err != nil {
		return fmt.Errorf("netlink handle in %s: %w", netns.Path(), err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	for _, addr := range addrs {
		a, err := netlink.ParseAddr(addr + "/32")
		if err != nil {
			return err
		}
		if err := h.AddrAdd(lo, a); err != nil {
			return fmt.Errorf("put %s on lo: %w", addr, err)
		}
	}
	return nil
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

// Allocs returns the allocations in network's IPAM store under dataDir,
// read through package ipam (which waits for the store's lock like a
// plugin does).
func Allocs(tb testing.TB, dataDir, network string) map[ipam.AttachmentID][]netip.Prefix {
	tb.Helper()
	out := map[ipam.AttachmentID][]netip.Prefix{}
	s, err := ipam.OpenBolt(dataDir, network, ipam.BoltOptions{LockWait: 30 * time.Second})
	if err != nil {
		tb.Fatalf("open the IPAM store: %v", err)
	}
	err = s.View(func(tx ipam.Txn) error {
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			out[a.ID] = a.IPs
			return nil
		})
	})
	if err = errors.Join(err, s.Close()); err != nil {
		tb.Fatalf("read the IPAM store: %v", err)
	}
	return out
}
