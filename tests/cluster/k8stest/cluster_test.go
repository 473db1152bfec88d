//go:build k8s

// Package k8stest checks esb-bridge, esb-ipam and esb-node as the pod
// network of the two-node cluster that scripts/k8s.sh brings up (make
// test-k8s does both). It drives the cluster with the real kubectl, crictl
// and ip, never a fake. The build tag keeps it out of make test; with the
// tag, a missing cluster or tool is a failure, not a skip.
package k8stest

import (
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestNodesReady: both nodes Ready with a pod CIDR inside 10.88.0.0/16,
// esb-node's NetworkUnavailable=False, its conflist and its route to the
// other node.
func TestNodesReady(t *testing.T) {
	c := loadCluster(t)
	cluster := netip.MustParsePrefix("10.88.0.0/16")
	ns := c.getNodes(t)
	for _, n := range c.nodes {
		k, ok := ns[n.name]
		if !ok {
			t.Fatalf("node %s is not registered", n.name)
		}
		if s, _ := k.condition("Ready"); s != "True" {
			t.Errorf("%s: Ready=%q", n.name, s)
		}
		if s, r := k.condition("NetworkUnavailable"); s != "False" || r != "EsbNodeRoutesProgrammed" {
			t.Errorf("%s: NetworkUnavailable=%q reason %q, want False from esb-node", n.name, s, r)
		}
		cidr, err := netip.ParsePrefix(k.Spec.PodCIDR)
		if err != nil || cidr.Bits() != 24 || !cluster.Contains(cidr.Addr()) {
			t.Fatalf("%s: podCIDR %q, want a /24 in %s", n.name, k.Spec.PodCIDR, cluster)
		}
		t.Logf("%s: podCIDR %s, InternalIP %s", n.name, cidr, k.internalIP())
		for _, other := range c.nodes {
			if other.name == n.name {
				continue
			}
			o := ns[other.name]
			if gw := routes(t, n)[o.Spec.PodCIDR]; gw != o.internalIP() {
				t.Errorf("%s: route to %s via %q, want via %s", n.name, o.Spec.PodCIDR, gw, o.internalIP())
			}
		}
	}
}

// TestPodTraffic: addresses from the node's pod CIDR, held in that node's
// esb-ipam store; pod → pod across nodes and on one node, node → pod, all
// without NAT (the server sees the client's own address).
func TestPodTraffic(t *testing.T) {
	c := loadCluster(t)
	ns := c.namespace(t, "traffic")
	n1, n2 := c.nodes[0], c.nodes[1]
	pods := c.placed(t, ns, map[string]string{"a1": n1.name, "b1": n1.name, "c2": n2.name})
	nodes := c.getNodes(t)
	for name, p := range pods {
		cidr := netip.MustParsePrefix(nodes[p.Spec.NodeName].Spec.PodCIDR)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !cidr.Contains(ip) || ip == cidr.Addr().Next() {
			t.Errorf("pod %s on %s: address %q, want one of %s other than its gateway", name, p.Spec.NodeName, p.Status.PodIP, cidr)
		}
	}
	// Each node's esb-ipam store holds exactly its pods' attachments, with
	// veth, anti-spoof element and libcni cache entry (leakcheck).
	for _, n := range c.nodes {
		live, sbs, err := c.sandboxes(n)
		if err != nil {
			t.Fatal(err)
		}
		for id, ip := range live {
			sb := sbs[id]
			if sb.Metadata.Namespace != ns {
				continue
			}
			if p := pods[sb.Metadata.Name]; p.Status.PodIP != ip.String() || p.Spec.NodeName != n.name {
				t.Errorf("sandbox %s (%s) on %s has %s; the API says %s on %s", id, sb.Metadata.Name, n.name, ip, p.Status.PodIP, p.Spec.NodeName)
			}
		}
		c.checkNodeClean(t, n)
	}

	a1, b1, c2 := pods["a1"].Status.PodIP, pods["b1"].Status.PodIP, pods["c2"].Status.PodIP
	for _, tc := range []struct{ what, from, to, want string }{
		{"cross-node pod → pod", "a1", c2, a1},
		{"cross-node pod → pod, the other way", "c2", b1, c2},
		{"same-node pod → pod", "a1", b1, a1},
	} {
		if got := c.clientIPFromPod(t, ns, tc.from, tc.to); got != tc.want {
			t.Errorf("%s (%s → %s): the server saw %q, want the client's own %s", tc.what, tc.from, tc.to, got, tc.want)
		} else {
			t.Logf("%s: %s → %s, the server saw %s", tc.what, tc.from, tc.to, got)
		}
	}
	// Node → pod: from the other node the source is that node's address
	// (routed, not masqueraded); from the pod's own node it is the bridge's.
	nodeIP := nodes[n2.name].internalIP()
	if got := clientIPFromNode(t, n2, a1); got != nodeIP {
		t.Errorf("node %s → pod a1 (%s): the server saw %q, want %s", n2.name, a1, got, nodeIP)
	}
	gw := netip.MustParsePrefix(nodes[n1.name].Spec.PodCIDR).Addr().Next().String()
	if got := clientIPFromNode(t, n1, a1); got != gw {
		t.Errorf("node %s → its pod a1 (%s): the server saw %q, want the bridge address %s", n1.name, a1, got, gw)
	}
}

// TestKubeletRestartKeepsAddresses: a kubelet restarted finds its pods
// running with the same sandboxes and addresses, and they still answer.
func TestKubeletRestartKeepsAddresses(t *testing.T) {
	c := loadCluster(t)
	ns := c.namespace(t, "restart")
	n1, n2 := c.nodes[0], c.nodes[1]
	before := c.placed(t, ns, map[string]string{"r1": n1.name, "r2": n1.name, "peer": n2.name})
	sbBefore, _, err := c.sandboxes(n1)
	if err != nil {
		t.Fatal(err)
	}
	script(t, "restart-kubelet", "n1")
	c.waitFor(t, n1.name+" Ready again after the restart", func() (bool, string) {
		s, _ := c.getNodes(t)[n1.name].condition("Ready")
		// Ready is True before the restart too: wait for the new kubelet
		// to have synced its pods.
		return s == "True" && bytes.Contains(c.kubeletLog("n1"), []byte("\"Started kubelet\"")), "Ready=" + s
	})
	after := c.placed(t, ns, map[string]string{"r1": n1.name, "r2": n1.name, "peer": n2.name})
	for name, p := range before {
		if after[name].Status.PodIP != p.Status.PodIP || after[name].Metadata.UID != p.Metadata.UID {
			t.Errorf("pod %s: %s (uid %s) before the restart, %s (uid %s) after", name, p.Status.PodIP, p.Metadata.UID, after[name].Status.PodIP, after[name].Metadata.UID)
		}
	}
	sbAfter, _, err := c.sandboxes(n1)
	if err != nil {
		t.Fatal(err)
	}
	for id, ip := range sbBefore {
		if sbAfter[id] != ip {
			t.Errorf("sandbox %s had %s before the restart, %v after", id, ip, sbAfter[id])
		}
	}
	if got := c.clientIPFromPod(t, ns, "peer", before["r1"].Status.PodIP); got != before["peer"].Status.PodIP {
		t.Errorf("peer → r1 after the restart: the server saw %q, want %s", got, before["peer"].Status.PodIP)
	}
	c.checkNodeClean(t, n1)
}

// TestDeployment20: a Deployment of 20 replicas spread over both nodes,
// each pod with an address from its node's CIDR; scaled to 0 and deleted,
// it leaves no veth, address, anti-spoof element, libcni cache entry or
// netns pin on either node. Logs each pod's create → Ready time.
func TestDeployment20(t *testing.T) {
	c := loadCluster(t)
	ns := c.namespace(t, "deploy")
	pt, stopWatch := c.watchPods(t, ns)
	const replicas = 20
	dep := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: many}
spec:
  replicas: %d
  selector: {matchLabels: {app: many}}
  template:
    metadata: {labels: {app: many}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: many}}}
      containers:
      - name: pause
        image: %s
        imagePullPolicy: Never
        args: ["pause"]
`, replicas, c.env["ESB_K8S_IMAGE"])
	c.mustKubectl(t, []byte(dep), "-n", ns, "apply", "-f", "-")
	var pods []pod
	c.waitFor(t, "20 replicas Ready", func() (bool, string) {
		pods = c.getPods(t, ns, "app=many")
		ready := 0
		for _, p := range pods {
			if p.ready() {
				ready++
			}
		}
		return ready == replicas && len(pods) == replicas, fmt.Sprintf("%d of %d ready", ready, len(pods))
	})
	stopWatch()
	nodes := c.getNodes(t)
	perNode := map[string]int{}
	seen := map[string]string{}
	for _, p := range pods {
		perNode[p.Spec.NodeName]++
		cidr := netip.MustParsePrefix(nodes[p.Spec.NodeName].Spec.PodCIDR)
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || !cidr.Contains(ip) {
			t.Errorf("pod %s on %s: address %q not in %s", p.Metadata.Name, p.Spec.NodeName, p.Status.PodIP, cidr)
		}
		if other, dup := seen[p.Status.PodIP]; dup {
			t.Errorf("pods %s and %s share %s", other, p.Metadata.Name, p.Status.PodIP)
		}
		seen[p.Status.PodIP] = p.Metadata.Name
	}
	for _, n := range c.nodes {
		if perNode[n.name] == 0 {
			t.Errorf("no replica on %s: %v", n.name, perNode)
		}
	}
	var starts []time.Duration
	for name, r := range pt.ready {
		starts = append(starts, r.Sub(pt.added[name]))
	}
	slices.Sort(starts)
	if len(starts) == replicas {
		t.Logf("pod start (watch: first seen → Ready) of %d pods: p50 %s, min %s, max %s; per node %v",
			len(starts), starts[len(starts)/2].Round(time.Millisecond), starts[0].Round(time.Millisecond), starts[len(starts)-1].Round(time.Millisecond), perNode)
	}
	for _, n := range c.nodes {
		c.checkNodeClean(t, n)
		c.logSandboxMetric(t, n)
	}

	c.mustKubectl(t, nil, "-n", ns, "scale", "deployment", "many", "--replicas=0")
	c.waitFor(t, "scaled to 0", func() (bool, string) {
		n := len(c.getPods(t, ns, "app=many"))
		return n == 0, fmt.Sprintf("%d pods left", n)
	})
	c.mustKubectl(t, nil, "-n", ns, "delete", "deployment", "many", "--wait=true")
	for _, n := range c.nodes {
		c.checkNodeClean(t, n)
	}
}

// TestPodStartEsbVsBridge times pod start (first seen in the watch →
// Ready) for 20 pods on esb and 20 on the reference bridge and host-local
// plugins (RuntimeClass refbridge: the same containerd with another CNI
// directory), alternating one pod at a time over both nodes, and logs the
// p50 of each with the kubelets' kubelet_run_podsandbox_duration_seconds
// per runtime handler. A figure, not an assertion: every pod must start.
func TestPodStartEsbVsBridge(t *testing.T) {
	c := loadCluster(t)
	ns := c.namespace(t, "podstart")
	pt, stopWatch := c.watchPods(t, ns)
	defer stopWatch()
	const perKind = 20
	times := map[string][]time.Duration{}
	for i := range perKind {
		kinds := []string{"esb", "ref"}
		if i%2 == 1 {
			slices.Reverse(kinds)
		}
		for _, kind := range kinds {
			name := fmt.Sprintf("%s-%02d", kind, i)
			rc := ""
			if kind == "ref" {
				rc = "  runtimeClassName: " + refHandler + "\n"
			}
			spec := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  nodeName: %s
%s  terminationGracePeriodSeconds: 1
  containers:
  - name: pause
    image: %s
    imagePullPolicy: Never
    args: ["pause"]
`, name, c.nodes[i%2].name, rc, c.env["ESB_K8S_IMAGE"])
			c.mustKubectl(t, []byte(spec), "-n", ns, "apply", "-f", "-")
			var took time.Duration
			c.waitFor(t, "pod "+name+" Ready", func() (bool, string) {
				d, ok := pt.readyIn(name)
				took = d
				return ok, "not Ready"
			})
			times[kind] = append(times[kind], took)
		}
	}
	nodes := c.getNodes(t)
	for _, p := range c.getPods(t, ns) {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		want := netip.MustParsePrefix(nodes[p.Spec.NodeName].Spec.PodCIDR)
		if strings.HasPrefix(p.Metadata.Name, "ref-") {
			want = netip.MustParsePrefix("10.89.0.0/16")
		}
		if err != nil || !want.Contains(ip) {
			t.Errorf("pod %s: address %q, want one in %s", p.Metadata.Name, p.Status.PodIP, want)
		}
	}
	for _, kind := range []string{"esb", "ref"} {
		d := times[kind]
		slices.Sort(d)
		t.Logf("pod start, %s (%d pods, alternating): p50 %s, min %s, max %s", map[string]string{"esb": "esb-bridge + esb-ipam", "ref": "bridge + host-local"}[kind],
			len(d), d[len(d)/2].Round(time.Millisecond), d[0].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
	}
	for _, n := range c.nodes {
		c.logSandboxMetric(t, n)
	}
}
