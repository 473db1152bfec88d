//go:build k8s

// Package k8stest checks esb-bridge, esb-ipam and esb-node as the pod
// network of the two-node cluster that scripts/k8s.sh brings up (make
// test-k8s does both). It drives the cluster with the real kubectl, crictl
// and ip, never a fake. The build tag keeps it out of make test; with the
// tag, a missing cluster or tool is a failure, not a skip.
package k8stest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
)

// clusterEnv is where scripts/k8s.sh up writes the cluster's settings.
const defaultClusterEnv = "/run/esbnet/k8s/cluster.env"

// waitLimit bounds every wait for the cluster to reach a state (pods
// Ready, a route gone); the tests wait for the state, not for a time.
const waitLimit = 4 * time.Minute

type node struct {
	name, netns, ipam, containerd string
}

type cluster struct {
	env   map[string]string
	nodes []node
}

func loadCluster(t *testing.T) *cluster {
	t.Helper()
	path := os.Getenv("ESB_K8S_ENV")
	if path == "" {
		path = defaultClusterEnv
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no cluster (run scripts/k8s.sh up, or make test-k8s): %v", err)
	}
	c := &cluster{env: map[string]string{}}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			c.env[k] = strings.TrimSpace(v)
		}
	}
	for _, n := range []string{"N1", "N2"} {
		c.nodes = append(c.nodes, node{
			name:       "esbk8s-" + strings.ToLower(n),
			netns:      c.env["ESB_K8S_"+n+"_NETNS"],
			ipam:       c.env["ESB_K8S_"+n+"_IPAM"],
			containerd: c.env["ESB_K8S_"+n+"_CONTAINERD"],
		})
	}
	for _, k := range []string{"ESB_K8S_KUBECTL", "ESB_K8S_KUBECONFIG", "ESB_K8S_CP_NETNS", "ESB_K8S_IMAGE", "ESB_K8S_N1_NETNS", "ESB_K8S_N2_NETNS"} {
		if c.env[k] == "" {
			t.Fatalf("%s: %s is not set", path, k)
		}
	}
	for _, tool := range []string{"nsenter", "ip", crictlPath} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: %v", tool, err)
		}
	}
	return c
}

const crictlPath = "/opt/esbnet-tools/bin/crictl"

// refHandler is the runtime handler (and RuntimeClass) whose pods get the
// reference bridge and host-local plugins instead of esb (scripts/k8s.sh).
const refHandler = "refbridge"

// kubectl runs kubectl in the control plane's namespace.
func (c *cluster) kubectl(stdin []byte, args ...string) (string, error) {
	full := append([]string{"--net=" + c.env["ESB_K8S_CP_NETNS"], c.env["ESB_K8S_KUBECTL"], "--kubeconfig", c.env["ESB_K8S_KUBECONFIG"]}, args...)
	cmd := exec.Command("nsenter", full...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (c *cluster) mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := c.kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// script runs scripts/k8s.sh with args.
func script(t *testing.T, args ...string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("bash", append([]string{filepath.Join(root, "scripts", "k8s.sh")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/k8s.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// namespace makes a namespace for one test and deletes it (waiting for its
// pods to go) when the test ends.
func (c *cluster) namespace(t *testing.T, name string) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", name, time.Now().UnixNano()%100000)
	c.mustKubectl(t, nil, "create", "namespace", ns)
	// Pods are created only once the namespace's default service account is
	// there.
	c.waitFor(t, "service account default in "+ns, func() (bool, string) {
		_, err := c.kubectl(nil, "-n", ns, "get", "serviceaccount", "default")
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() {
		if _, err := c.kubectl(nil, "delete", "namespace", ns, "--wait=true", "--timeout=3m"); err != nil {
			t.Errorf("delete namespace: %v", err)
		}
	})
	return ns
}

// waitFor polls cond until it holds or waitLimit passes.
func (c *cluster) waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last: %s", what, waitLimit, state)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

type k8sNode struct {
	Metadata struct{ Name string }
	Spec     struct{ PodCIDR string }
	Status   struct {
		Conditions []struct{ Type, Status, Reason string }
		Addresses  []struct{ Type, Address string }
	}
}

func (n k8sNode) condition(typ string) (string, string) {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Status, c.Reason
		}
	}
	return "", ""
}

func (n k8sNode) internalIP() string {
	for _, a := range n.Status.Addresses {
		if a.Type == "InternalIP" {
			return a.Address
		}
	}
	return ""
}

func (c *cluster) getNodes(t *testing.T) map[string]k8sNode {
	t.Helper()
	var l struct{ Items []k8sNode }
	if err := json.Unmarshal([]byte(c.mustKubectl(t, nil, "get", "nodes", "-o", "json")), &l); err != nil {
		t.Fatal(err)
	}
	m := map[string]k8sNode{}
	for _, n := range l.Items {
		m[n.Metadata.Name] = n
	}
	return m
}

type pod struct {
	Metadata struct {
		Name, Namespace, UID string
		Labels               map[string]string
	}
	Spec   struct{ NodeName string }
	Status struct {
		PodIP      string
		Phase      string
		Conditions []struct{ Type, Status string }
	}
}

func (p pod) ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

func (c *cluster) getPods(t *testing.T, ns string, selector ...string) []pod {
	t.Helper()
	args := []string{"-n", ns, "get", "pods", "-o", "json"}
	if len(selector) > 0 {
		args = append(args, "-l", selector[0])
	}
	var l struct{ Items []pod }
	if err := json.Unmarshal([]byte(c.mustKubectl(t, nil, args...)), &l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// netexecPod is agnhost's netexec (HTTP on 8080, UDP on 8081) pinned to a
// node; /clientip answers with the address the connection came from.
func (c *cluster) netexecPod(name, nodeName string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, labels: {app: netexec}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: netexec
    image: %s
    imagePullPolicy: Never
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
`, name, nodeName, c.env["ESB_K8S_IMAGE"]))
}

// sandbox is one pod sandbox as a node's containerd sees it.
type sandbox struct {
	ID             string
	Metadata       struct{ Name, Namespace string }
	State          string
	RuntimeHandler string
}

func (c *cluster) crictl(n node, args ...string) (string, error) {
	cmd := exec.Command(crictlPath, append([]string{"--runtime-endpoint", "unix://" + n.containerd, "--timeout", "60s"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		return "", fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, stderr)
	}
	return string(out), nil
}

// sandboxes lists a node's ready sandboxes with their pod addresses.
func (c *cluster) sandboxes(n node) (map[string]netip.Addr, map[string]sandbox, error) {
	out, err := c.crictl(n, "pods", "--state", "ready", "-o", "json")
	if err != nil {
		return nil, nil, err
	}
	var l struct{ Items []sandbox }
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, nil, fmt.Errorf("decode crictl pods: %w", err)
	}
	ips, byID := map[string]netip.Addr{}, map[string]sandbox{}
	for _, s := range l.Items {
		if s.RuntimeHandler == refHandler { // the reference bridge's pods
			continue
		}
		out, err := c.crictl(n, "inspectp", "-o", "json", s.ID)
		if err != nil {
			return nil, nil, err
		}
		var in struct {
			Status struct {
				Network struct{ IP string }
			}
		}
		if err := json.Unmarshal([]byte(out), &in); err != nil {
			return nil, nil, fmt.Errorf("decode crictl inspectp: %w", err)
		}
		if in.Status.Network.IP == "" { // host network
			continue
		}
		ip, err := netip.ParseAddr(in.Status.Network.IP)
		if err != nil {
			return nil, nil, fmt.Errorf("sandbox %s: address %q: %w", s.ID, in.Status.Network.IP, err)
		}
		ips[s.ID], byID[s.ID] = ip, s
	}
	return ips, byID, nil
}

// leakNode describes a node for leakcheck. libcni's cache is the machine's
// /var/lib/cni (containerd 1.6 cannot move it) and holds other runtimes'
// entries too, so the check reads a copy of this node's entries only.
func (c *cluster) leakNode(t *testing.T, n node) leakcheck.Node {
	t.Helper()
	return leakcheck.Node{
		NetNS: n.netns, IPAMDir: n.ipam, Network: "esb",
		CNICacheDir: c.nodeCache(t, n),
		Containers: func(context.Context) ([]string, error) {
			ips, _, err := c.sandboxes(n)
			var ids []string
			for id := range ips {
				ids = append(ids, id)
			}
			return ids, err
		},
	}
}

func (c *cluster) nodeCache(t *testing.T, n node) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "results"), 0o755); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Dir(n.containerd)
	entries, _ := filepath.Glob("/var/lib/cni/results/esb-*")
	for _, e := range entries {
		b, err := os.ReadFile(e)
		if err != nil {
			continue // removed meanwhile
		}
		if bytes.Contains(b, []byte(stateDir+"/")) {
			if err := os.WriteFile(filepath.Join(dir, "results", filepath.Base(e)), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// pins counts the network namespace pins of a node's containerd.
func pins(n node) ([]string, error) {
	return filepath.Glob(filepath.Join(filepath.Dir(n.containerd), "io.containerd.grpc.v1.cri", "netns", "cni-*"))
}

// checkNodeClean runs leakcheck on a node against its ready sandboxes and
// checks that a netns pin exists for exactly those.
func (c *cluster) checkNodeClean(t *testing.T, n node) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		live, _, err := c.sandboxes(n)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := leakcheck.Check(context.Background(), c.leakNode(t, n), live)
		p, perr := pins(n)
		if err == nil && perr == nil && rep.Clean() && len(p) == len(live) {
			t.Logf("%s: consistent with %d live pods (%v)", n.name, len(live), rep.Found)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: leakcheck: %v (read errors: %v, %v); %d netns pins for %d live pods:\n%s",
				n.name, rep, err, perr, len(p), len(live), rep)
		}
		time.Sleep(time.Second)
	}
}

// routes lists a node's routes carrying esb-node's protocol (210).
func routes(t *testing.T, n node) map[string]string {
	t.Helper()
	out, err := exec.Command("ip", "-n", filepath.Base(n.netns), "-j", "route", "show", "proto", "210").Output()
	if err != nil {
		t.Fatalf("ip route in %s: %v", n.name, err)
	}
	var rs []struct{ Dst, Gateway string }
	if err := json.Unmarshal(out, &rs); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, r := range rs {
		m[r.Dst] = r.Gateway
	}
	return m
}

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

// placed creates netexec pods (name → node) and waits until they are Ready.
func (c *cluster) placed(t *testing.T, ns string, where map[string]string) map[string]pod {
	t.Helper()
	for name, nodeName := range where {
		c.mustKubectl(t, c.netexecPod(name, nodeName), "-n", ns, "apply", "-f", "-")
	}
	got := map[string]pod{}
	c.waitFor(t, "netexec pods Ready", func() (bool, string) {
		ps := c.getPods(t, ns, "app=netexec")
		ready := 0
		for _, p := range ps {
			if p.ready() {
				ready++
			}
			got[p.Metadata.Name] = p
		}
		return ready == len(where), fmt.Sprintf("%d of %d ready", ready, len(where))
	})
	return got
}

// clientIP asks a pod's netexec for /clientip from inside pod from (kubectl
// exec; curl in the image) and returns the address the server saw.
func (c *cluster) clientIPFromPod(t *testing.T, ns, from, target string) string {
	t.Helper()
	out := c.mustKubectl(t, nil, "-n", ns, "exec", from, "--", "curl", "-sS", "--max-time", "10", "http://"+target+":8080/clientip")
	host, _, _ := strings.Cut(strings.TrimSpace(out), ":")
	return host
}

func clientIPFromNode(t *testing.T, n node, target string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+n.netns, "curl", "-sS", "--max-time", "10", "http://"+target+":8080/clientip").CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s from node %s: %v: %s", target, n.name, err, out)
	}
	host, _, _ := strings.Cut(strings.TrimSpace(string(out)), ":")
	return host
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
		out, _ := os.ReadFile(filepath.Join(c.env["ESB_K8S_DIR"], "log", "kubelet-n1.log"))
		// Ready is True before the restart too: wait for the new kubelet
		// to have synced its pods.
		return s == "True" && bytes.Contains(out, []byte("\"Started kubelet\"")), "Ready=" + s
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

// watchPods follows a namespace's pods through kubectl's watch and records,
// per pod, when it was first seen and when it turned Ready.
type podTimes struct {
	mu           sync.Mutex
	added, ready map[string]time.Time
}

// readyIn returns how long pod took from first seen to Ready, if it is.
func (pt *podTimes) readyIn(name string) (time.Duration, bool) {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	r, ok := pt.ready[name]
	return r.Sub(pt.added[name]), ok
}

func (c *cluster) watchPods(t *testing.T, ns string) (*podTimes, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+c.env["ESB_K8S_CP_NETNS"], c.env["ESB_K8S_KUBECTL"],
		"--kubeconfig", c.env["ESB_K8S_KUBECONFIG"], "-n", ns, "get", "pods", "--watch", "--output-watch-events", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pt := &podTimes{added: map[string]time.Time{}, ready: map[string]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dec := json.NewDecoder(bufio.NewReader(out))
		for {
			var ev struct {
				Type   string
				Object pod
			}
			if err := dec.Decode(&ev); err != nil {
				return
			}
			now := time.Now()
			name := ev.Object.Metadata.Name
			pt.mu.Lock()
			if _, ok := pt.added[name]; !ok {
				pt.added[name] = now
			}
			if _, ok := pt.ready[name]; !ok && ev.Object.ready() {
				pt.ready[name] = now
			}
			pt.mu.Unlock()
		}
	}()
	return pt, func() {
		cancel()
		_ = cmd.Wait()
		<-done
	}
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

// logSandboxMetric logs the kubelet's kubelet_run_podsandbox_duration_seconds
// (through the API server's node proxy).
func (c *cluster) logSandboxMetric(t *testing.T, n node) {
	t.Helper()
	out, err := c.kubectl(nil, "get", "--raw", "/api/v1/nodes/"+n.name+"/proxy/metrics")
	if err != nil {
		t.Errorf("kubelet metrics of %s: %v", n.name, err)
		return
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "kubelet_run_podsandbox_duration_seconds_sum") || strings.HasPrefix(l, "kubelet_run_podsandbox_duration_seconds_count") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		t.Errorf("%s: no kubelet_run_podsandbox_duration_seconds in the kubelet's metrics", n.name)
		return
	}
	t.Logf("%s:\n  %s", n.name, strings.Join(lines, "\n  "))
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
