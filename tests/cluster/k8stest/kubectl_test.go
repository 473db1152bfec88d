//go:build k8s

package k8stest

// The cluster through its API server: its settings, kubectl in the control
// plane's namespace, nodes, pods and the waits on them.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
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
