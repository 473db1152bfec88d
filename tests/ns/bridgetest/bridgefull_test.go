package bridgetest

import (
	"errors"
	"fmt"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// TestBridgeFull fills the bridge to the kernel's limit of 1,023 ports
// (veth pairs made and enslaved directly, not through 1,022 ADDs); an ADD
// then fails with CodeBridgeFull naming the bridge and the limit, and
// leaves no veth (netlink leaves the pair it could not enslave; esb-bridge
// deletes it), no anti-spoof guard and no allocation of its own. With one
// port freed the same ADD succeeds.
func TestBridgeFull(t *testing.T) {
	n := newNode(t, nil, nil)
	first := n.newWorker("full-first")
	n.mustAdd(first) // makes the bridge and takes its first port
	fillers := n.fillBridge()
	if got := len(fillers) + 1; got != conf.BridgeMaxPorts {
		t.Fatalf("the bridge took %d ports before EXFULL, want %d", got, conf.BridgeMaxPorts)
	}

	extra := n.newWorker("full-extra")
	_ = wantCNIError(t, n.add(extra), conf.CodeBridgeFull, "ADD onto a full bridge",
		"bridge "+bridgeName+" is full", fmt.Sprintf("at most %d ports", conf.BridgeMaxPorts))
	if n.hasLink(extra.veth()) {
		t.Errorf("the failed ADD left veth %s in the node", extra.veth())
	}
	if ips, ok := nodetest.Allocs(n.t, n.dataDir, netName)[extra.attachment()]; ok {
		t.Errorf("the failed ADD left the allocation %v of %s", ips, extra.attachment())
	}
	if g, ok := n.guards()[extra.veth()]; ok {
		t.Errorf("the failed ADD left an anti-spoof guard: %+v", g)
	}
	if out, err := inNS(extra.name, "ip", "link", "show", ifName); err == nil {
		t.Errorf("the failed ADD left %s in the container: %s", ifName, out)
	}
	if err := n.check(first); err != nil {
		t.Errorf("CHECK %s after the failed ADD: %v", first.id, err)
	}

	// One port freed: the limit was the only obstacle.
	n.delLinks(fillers[:1])
	n.mustAdd(extra)
	n.delLinks(fillers[1:])
	n.mustDel(extra)
	n.mustDel(first)
	n.assertClean("after DEL of both workers")
}

// fillBridge adds veth pairs (named fill<i>, peers fillp<i>) to the node
// and enslaves each to the bridge until the kernel refuses one with
// EXFULL, which it deletes; it returns the host ends the bridge took. They
// are deleted when the test ends.
func (n *node) fillBridge() []string {
	n.t.Helper()
	h := n.handle()
	defer h.Close()
	br, err := h.LinkByName(bridgeName)
	if err != nil {
		n.t.Fatalf("look up %s: %v", bridgeName, err)
	}
	var names []string
	n.t.Cleanup(func() { n.delLinks(names) })
	for i := range conf.BridgeMaxPorts + 1 {
		name := fmt.Sprintf("fill%d", i)
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: fmt.Sprintf("fillp%d", i)}
		if err := h.LinkAdd(veth); err != nil {
			n.t.Fatalf("add veth %s after %d ports: %v", name, len(names), err)
		}
		err := h.LinkSetMasterByIndex(veth, br.Attrs().Index)
		if errors.Is(err, unix.EXFULL) {
			n.delLinks([]string{name})
			return names
		}
		names = append(names, name)
		if err != nil {
			n.t.Fatalf("enslave %s to %s after %d ports: %v", name, bridgeName, len(names)-1, err)
		}
	}
	n.t.Fatalf("%s took %d ports without EXFULL", bridgeName, len(names))
	return nil
}

// delLinks deletes the named links in the node; missing ones are fine.
func (n *node) delLinks(names []string) {
	n.t.Helper()
	h := n.handle()
	defer h.Close()
	for _, name := range names {
		l, err := h.LinkByName(name)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			continue
		}
		if err == nil {
			err = h.LinkDel(l)
		}
		if err != nil && !errors.Is(err, unix.ENODEV) {
			n.t.Errorf("delete %s: %v", name, err)
		}
	}
}
