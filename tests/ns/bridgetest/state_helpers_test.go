package bridgetest

// What the plugins leave in a node: links, veths, anti-spoof guards, and
// the check that nothing but the kept workers' is left.

import (
	"fmt"
	"slices"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

func (n *node) handle() netlinksafe.Handle {
	n.t.Helper()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(int(n.ns.Fd())))
	if err != nil {
		n.t.Fatalf("netlink handle in node: %v", err)
	}
	return h
}

// links returns the node's links by name.
func (n *node) links() map[string]netlink.Link {
	n.t.Helper()
	h := n.handle()
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		n.t.Fatalf("list node links: %v", err)
	}
	out := make(map[string]netlink.Link, len(ls))
	for _, l := range ls {
		out[l.Attrs().Name] = l
	}
	return out
}

// veths returns the names of the veths in the node namespace, sorted.
func (n *node) veths() []string {
	var out []string
	for name, l := range n.links() {
		if l.Type() == "veth" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (n *node) hasLink(name string) bool {
	_, ok := n.links()[name]
	return ok
}

// guards returns the anti-spoof guards installed in the node, by port.
func (n *node) guards() map[string]nat.Guard {
	n.t.Helper()
	gs, err := nat.NewManager(n.ns).ListGuards(n.t.Context())
	if err != nil {
		n.t.Fatalf("list anti-spoof guards: %v", err)
	}
	out := make(map[string]nat.Guard, len(gs))
	for _, g := range gs {
		out[g.Port] = g
	}
	return out
}

// leftovers describes the veths, anti-spoof guards and allocations the
// node holds besides those of the workers in keep (and keep's veths that
// are missing).
func (n *node) leftovers(keep ...*worker) []string {
	n.t.Helper()
	var out []string
	wantVeths := []string{}
	for _, w := range keep {
		wantVeths = append(wantVeths, w.veth())
	}
	slices.Sort(wantVeths)
	if got := n.veths(); !slices.Equal(got, wantVeths) {
		out = append(out, fmt.Sprintf("node veths %v, want %v", got, wantVeths))
	}
	guards := n.guards()
	for _, w := range keep {
		delete(guards, w.veth())
	}
	if len(guards) > 0 {
		out = append(out, fmt.Sprintf("anti-spoof guards left: %v", guards))
	}
	allocs := nodetest.Allocs(n.t, n.dataDir, netName)
	for _, w := range keep {
		delete(allocs, w.attachment())
	}
	if len(allocs) > 0 {
		out = append(out, fmt.Sprintf("allocations left: %v", allocs))
	}
	return out
}

// assertClean fails the test unless the node holds no veth, no anti-spoof
// guard and no allocation, except those of the workers in keep.
func (n *node) assertClean(what string, keep ...*worker) {
	n.t.Helper()
	for _, p := range n.leftovers(keep...) {
		n.t.Errorf("%s: %s", what, p)
	}
}
