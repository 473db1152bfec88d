//go:build k8s

package k8stest

import (
	"fmt"
	"testing"
)

// TestNodeDeleteRemovesRoute: deleting a node's object makes the other
// node's esb-node remove its route; the kubelet, restarted, registers the
// node again and the route comes back. Runs last (go test runs the files
// in name order): the node's pods go.
func TestNodeDeleteRemovesRoute(t *testing.T) {
	c := loadCluster(t)
	n1, n2 := c.nodes[0], c.nodes[1]
	cidr := c.getNodes(t)[n2.name].Spec.PodCIDR
	if _, ok := routes(t, n1)[cidr]; !ok {
		t.Fatalf("%s has no route to %s's %s before the test", n1.name, n2.name, cidr)
	}
	c.mustKubectl(t, nil, "delete", "node", n2.name)
	c.waitFor(t, n1.name+"'s route to the deleted node", func() (bool, string) {
		r := routes(t, n1)
		_, ok := r[cidr]
		return !ok, fmt.Sprint(r)
	})
	t.Logf("%s: the route to %s went with node %s", n1.name, cidr, n2.name)
	// The kubelet registers its node only when it starts.
	script(t, "restart-kubelet", "n2")
	c.waitFor(t, n2.name+" registered, Ready and routed again", func() (bool, string) {
		k, ok := c.getNodes(t)[n2.name]
		if !ok {
			return false, "not registered"
		}
		s, _ := k.condition("Ready")
		gw := routes(t, n1)[k.Spec.PodCIDR]
		return s == "True" && k.Spec.PodCIDR != "" && gw == k.internalIP(), fmt.Sprintf("Ready=%s podCIDR=%s route via %q", s, k.Spec.PodCIDR, gw)
	})
}
