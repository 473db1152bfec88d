package clients

// The test's node: a network namespace that plays the host, and the
// interfaces in it and in the machine's own namespace.

import (
	"net"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// node is a network namespace that plays the host: the clients run in it,
// so esb-cni0, the veths and the nftables tables the plugins make live
// and die with it.
type node struct {
	ns   ns.NetNS
	name string // the name under /run/netns, for ip netns exec
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := nstest.NewNS(t)
	return &node{ns: n, name: nsName(n)}
}

// nsName returns the name of an nstest namespace, which is pinned under
// /run/netns.
func nsName(n ns.NetNS) string { return filepath.Base(n.Path()) }

// links returns the names of the interfaces in a namespace.
func links(n ns.NetNS) ([]string, error) {
	var names []string
	err := n.Do(func(ns.NetNS) error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return nil
	})
	return names, err
}

// hasLink reports whether a namespace holds the named interface.
func hasLink(t *testing.T, n ns.NetNS, name string) bool {
	t.Helper()
	names, err := links(n)
	if err != nil {
		t.Fatalf("list links of %s: %v", n.Path(), err)
	}
	return slices.Contains(names, name)
}

// hostHasLink reports whether the test's own (the machine's) namespace
// holds the named interface.
func hostHasLink(t *testing.T, name string) bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatalf("list the machine's links: %v", err)
	}
	return slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Name == name })
}
