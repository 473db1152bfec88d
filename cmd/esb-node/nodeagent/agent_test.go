package nodeagent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

func node(name, cidr, ip string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if cidr != "" {
		n.Spec.PodCIDR = cidr
		n.Spec.PodCIDRs = []string{cidr}
	}
	if ip != "" {
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: name},
			{Type: corev1.NodeInternalIP, Address: ip},
		}
	}
	return n
}

func newAgent(t *testing.T, client *fake.Clientset, routes Routes) (*Agent, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "net.d", "10-esb.conflist")
	a, err := New(Config{
		NodeName: "n1", ConflistPath: path, CNIVersion: "1.0.0",
		DataDir: "/run/esb/ipam-n1", Resync: 50 * time.Millisecond,
	}, client, routes)
	if err != nil {
		t.Fatal(err)
	}
	return a, path
}

func TestNodeConflist(t *testing.T) {
	b, err := NodeConflist(netip.MustParsePrefix("10.88.3.0/24"), "1.0.0", "esb-cni0", "/run/esb/ipam-n1")
	if err != nil {
		t.Fatal(err)
	}
	one, err := pluginConf(conf.Conflist{CNIVersion: "1.0.0", Name: "esb"}, conf.BridgeConfig{})
	if err != nil || len(one) == 0 {
		t.Fatalf("plugin conf: %v", err)
	}
	s := string(b)
	for _, want := range []string{`"cniVersion": "1.0.0"`, `"subnet": "10.88.3.0/24"`, `"gateway": "10.88.3.1"`, `"isolation": false`, `"dataDir": "/run/esb/ipam-n1"`, `"type": "esb-bridge"`, `"type": "esb-ipam"`} {
		if !strings.Contains(s, want) {
			t.Errorf("conflist lacks %s:\n%s", want, s)
		}
	}
	for _, bad := range []struct{ cidr, version, want string }{
		{"10.88.3.0/31", "1.0.0", "spec.podCIDR"},
		{"fd00::/64", "1.0.0", "spec.podCIDR"},
		{"10.88.3.0/24", "9.9.9", "cniVersion"},
	} {
		_, err := NodeConflist(netip.MustParsePrefix(bad.cidr), bad.version, "esb-cni0", "")
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("NodeConflist(%s, %s) = %v, want an error naming %s", bad.cidr, bad.version, err, bad.want)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "10-esb.conflist")
	for i, step := range []struct {
		data    string
		changed bool
	}{{"a", true}, {"a", false}, {"b", true}} {
		changed, err := WriteFileAtomic(path, []byte(step.data), 0o644)
		if err != nil || changed != step.changed {
			t.Fatalf("step %d: changed=%v err=%v, want changed=%v", i, changed, err, step.changed)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != step.data {
			t.Fatalf("step %d: file holds %q (%v)", i, got, err)
		}
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(ents) != 1 {
		t.Fatalf("directory holds %d entries (%v), want the conflist alone", len(ents), err)
	}
}

func TestDesiredRoutes(t *testing.T) {
	gone := node("n4", "10.88.4.0/24", "192.168.50.4")
	gone.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	got := DesiredRoutes("n1", []*corev1.Node{
		node("n1", "10.88.1.0/24", "192.168.50.1"),
		node("n2", "10.88.2.0/24", "192.168.50.2"),
		node("n3", "", "192.168.50.3"), // no CIDR yet
		gone,
		node("n5", "10.88.5.0/24", ""), // no address yet
	})
	want := []Route{{Dst: netip.MustParsePrefix("10.88.2.0/24"), Gw: netip.MustParseAddr("192.168.50.2")}}
	if len(got) != 1 || got[0] != want[0] {
		t.Fatalf("DesiredRoutes = %v, want %v", got, want)
	}
}

// The whole agent against a fake API server: conflist, routes, condition,
// a node deleted, a restart, and the API server going away.
func TestAgentRun(t *testing.T) {
	client := fake.NewClientset(
		node("n1", "10.88.1.0/24", "192.168.50.1"),
		node("n2", "10.88.2.0/24", "192.168.50.2"),
		node("n3", "10.88.3.0/24", "192.168.50.3"),
	)
	foreign := Route{Dst: netip.MustParsePrefix("10.99.0.0/16"), Gw: netip.MustParseAddr("192.168.50.9")}
	routes := &FakeRoutes{Foreign: []Route{foreign}}
	// A stale route of ours from an earlier run, to a node that is gone.
	if err := routes.Replace(Route{Dst: netip.MustParsePrefix("10.88.7.0/24"), Gw: netip.MustParseAddr("192.168.50.7")}); err != nil {
		t.Fatal(err)
	}
	a, path := newAgent(t, client, routes)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	want := "10.88.2.0/24 via 192.168.50.2\n10.88.3.0/24 via 192.168.50.3\n"
	eventually(t, "routes to n2 and n3", func() bool { return routes.Dump() == want })
	eventually(t, "NetworkUnavailable=False", func() bool { return networkAvailable(t, client, "n1") })
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), `"subnet": "10.88.1.0/24"`) {
		t.Fatalf("conflist %s: %v\n%s", path, err, b)
	}
	if len(routes.Foreign) != 1 || routes.Foreign[0] != foreign {
		t.Fatalf("foreign routes changed: %v", routes.Foreign)
	}

	// A node deleted: its route goes, the other stays.
	if err := client.CoreV1().Nodes().Delete(ctx, "n3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route to n3 removed", func() bool { return routes.Dump() == "10.88.2.0/24 via 192.168.50.2\n" })

	// A node's address changes: the route follows.
	n2, err := client.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n2.Status.Addresses[1].Address = "192.168.50.22"
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "route to n2 via its new address", func() bool { return routes.Dump() == "10.88.2.0/24 via 192.168.50.22\n" })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}

	// Restart: nothing changes, the conflist is not rewritten.
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	changes := routes.Changes
	a2, _ := newAgent(t, client, routes)
	a2.cfg.ConflistPath = path
	nodes, err := client.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ptrs []*corev1.Node
	for i := range nodes.Items {
		ptrs = append(ptrs, &nodes.Items[i])
	}
	if err := a2.Sync(t.Context(), ptrs); err != nil {
		t.Fatal(err)
	}
	st2, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if routes.Changes != changes || !st2.ModTime().Equal(st.ModTime()) || !os.SameFile(st, st2) {
		t.Fatalf("restart changed something: %d route changes, conflist replaced=%v", routes.Changes-changes, !os.SameFile(st, st2))
	}
}

// While the API server cannot be reached, the routes stay as they are.
func TestAgentKeepsRoutesWhileAPIServerUnreachable(t *testing.T) {
	client := fake.NewClientset(
		node("n1", "10.88.1.0/24", "192.168.50.1"),
		node("n2", "10.88.2.0/24", "192.168.50.2"),
	)
	// The reactors are installed before the agent runs (the fake's
	// reaction chain is not safe to change while it is called) and fail
	// every call once apiDown is set.
	down := errors.New("connection refused")
	var apiDown atomic.Bool
	failed := make(chan struct{}, 16)
	client.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !apiDown.Load() {
			return false, nil, nil
		}
		select {
		case failed <- struct{}{}:
		default:
		}
		return true, nil, down
	})
	client.PrependWatchReactor("*", func(k8stesting.Action) (bool, watch.Interface, error) {
		if !apiDown.Load() {
			return false, nil, nil
		}
		return true, nil, down
	})
	routes := &FakeRoutes{}
	a, _ := newAgent(t, client, routes)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	eventually(t, "route to n2", func() bool { return routes.Dump() == "10.88.2.0/24 via 192.168.50.2\n" })

	// From now on every call to the API server fails (and the node's
	// condition is cleared, so each pass has to try to patch it).
	apiDown.Store(true)
	// Three passes that each fail at the API server. A patch let through
	// just before the switch may land after the condition was cleared and
	// set it again, so each wait clears it anew until a pass has failed.
	fails := 0
	eventually(t, "three passes failing at the API server", func() bool {
		select {
		case <-failed:
			fails++
		default:
			n1 := node("n1", "10.88.1.0/24", "192.168.50.1")
			if err := client.Tracker().Update(corev1.SchemeGroupVersion.WithResource("nodes"), n1, ""); err != nil {
				t.Fatal(err)
			}
		}
		a.trigger()
		return fails >= 3
	})
	if got := routes.Dump(); got != "10.88.2.0/24 via 192.168.50.2\n" {
		t.Fatalf("routes while the API server is away: %q", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel: %v, want context.Canceled", err)
	}
}

func networkAvailable(t *testing.T, client *fake.Clientset, name string) bool {
	t.Helper()
	n, err := client.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeNetworkUnavailable {
			return c.Status == corev1.ConditionFalse && c.Reason == ConditionReason
		}
	}
	return false
}

// eventually waits for cond, polling; the agent reacts to watch events on
// its own goroutine, so the test has nothing else to wait on.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
