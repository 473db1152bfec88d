package bridgetest

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/edge-serverless-box/esbnet/conf"
)

// TestBadConfig runs ADD with configurations that are wrong in one field
// each: the error is code 7 and names the field, and nothing is created
// (no bridge, no veth, no allocation, no guard).
func TestBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(plugin, ipamObj map[string]any)
		field string
	}{
		{"mtu too small", func(p, _ map[string]any) { p["mtu"] = 10 }, "mtu"},
		{"bridge name too long", func(p, _ map[string]any) { p["bridge"] = "esb-bridge-name-16" }, "bridge"},
		{"gateway outside subnet", func(_, i map[string]any) { i["gateway"] = "10.89.0.1" }, "ipam.gateway"},
		{"mtu of the wrong type", func(p, _ map[string]any) { p["mtu"] = "big" }, "mtu"},
		{"ipam missing", func(p, _ map[string]any) { delete(p, "ipam") }, "ipam"},
		{"subnet of the wrong type", func(_, i map[string]any) { i["subnet"] = 88 }, "ipam.subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, nil, nil)
			tc.edit(n.plugin, n.ipam)
			w := n.newWorker("bad-config")
			te := wantCNIError(t, n.add(w), types.ErrInvalidNetworkConfig, "ADD", tc.field)
			if !strings.Contains(te.Msg, "invalid "+tc.field+" ") && !strings.Contains(te.Msg, "invalid "+tc.field+":") {
				t.Errorf("error %q does not name the field as \"invalid %s\"", te.Msg, tc.field)
			}
			if n.hasLink(bridgeName) {
				t.Errorf("a rejected configuration created bridge %s", bridgeName)
			}
			n.assertClean("after the rejected ADD")
		})
	}
}

// TestMissingNetns runs ADD with a CNI_NETNS that does not exist: it fails
// with a CNI error naming the path, and allocates nothing and leaves no
// veth.
func TestMissingNetns(t *testing.T) {
	n := newNode(t, nil, nil)
	missing := "/run/netns/esb-bridgetest-no-such-netns"
	w := &worker{path: missing, id: "missing-netns"}
	_ = wantCNIError(t, n.add(w), types.ErrInvalidEnvironmentVariables, "ADD with a missing netns", missing)
	n.assertClean("after the failed ADD")
}

// TestExhaustedAddLeavesNothing fills a two-address range; an extra ADD
// then fails with code 100 and leaves no veth, no guard and no allocation
// of its own, and the two attachments are untouched.
func TestExhaustedAddLeavesNothing(t *testing.T) {
	n := newNode(t, nil, map[string]any{"rangeStart": "10.88.0.2", "rangeEnd": "10.88.0.3"})
	a, b := n.newWorker("full-a"), n.newWorker("full-b")
	n.mustAdd(a)
	n.mustAdd(b)
	extra := n.newWorker("full-extra")
	_ = wantCNIError(t, n.add(extra), conf.CodeExhausted, "ADD into a full range", "exhausted")
	n.assertClean("after the failed ADD", a, b)
	if out, err := inNS(extra.name, "ip", "link", "show", ifName); err == nil {
		t.Errorf("the failed ADD left %s in the container: %s", ifName, out)
	}
	for _, w := range []*worker{a, b} {
		if err := n.check(w); err != nil {
			t.Errorf("CHECK %s after the failed ADD: %v", w.id, err)
		}
	}
}

// TestIfNameTaken runs ADD into a container that already has an eth0: it
// fails with code 111 naming eth0 and rolls back, releasing the address
// and deleting the veth; the container's own eth0 stays.
func TestIfNameTaken(t *testing.T) {
	n := newNode(t, nil, nil)
	w := n.newWorker("eth0-taken")
	mustInNS(t, w.name, "ip", "link", "add", ifName, "type", "bridge")
	_ = wantCNIError(t, n.add(w), conf.CodeLinkConflict, "ADD with eth0 taken", ifName)
	n.assertClean("after the rolled-back ADD")
	if out := mustInNS(t, w.name, "ip", "-d", "link", "show", ifName); !strings.Contains(out, "bridge") {
		t.Errorf("the container's own %s changed: %s", ifName, out)
	}
	// The address the rolled-back ADD held is free again: a range of one
	// address proves it.
	n.ipam["rangeStart"], n.ipam["rangeEnd"] = "10.88.0.2", "10.88.0.2"
	ok := n.newWorker("eth0-free")
	n.mustAdd(ok)
	if ok.ip.String() != "10.88.0.2" {
		t.Errorf("ADD after the rollback got %s, want 10.88.0.2", ok.ip)
	}
}

// TestRepeatedAdd runs ADD twice for one attachment without a DEL in
// between. The second either returns the same address or fails with code
// 111; either way the first attachment stays whole and nothing extra is
// allocated.
func TestRepeatedAdd(t *testing.T) {
	n := newNode(t, nil, nil)
	w := n.newWorker("repeat")
	n.mustAdd(w)
	first := w.ip
	again := n.runtime() // a runtime that lost its cache retries the ADD
	if _, err := n.addVersion(again, w, "1.1.0"); err != nil {
		_ = wantCNIError(t, err, conf.CodeLinkConflict, "second ADD", w.veth())
	} else if w.ip != first {
		t.Errorf("second ADD returned %s, the first %s", w.ip, first)
	}
	w.ip = first
	n.assertClean("after the second ADD", w)
	if err := n.check(w); err != nil {
		t.Errorf("CHECK after the second ADD: %v", err)
	}
	if !pingWorks(w.name, netip.Addr{}, gateway) {
		t.Errorf("the worker cannot ping the gateway after the second ADD")
	}
	n.mustDel(w)
	n.assertClean("after DEL")
}
