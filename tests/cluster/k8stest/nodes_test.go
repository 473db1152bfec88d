//go:build k8s

package k8stest

// The nodes seen from the machine: their containerd through crictl, what
// esb left in their namespaces (leakcheck, netns pins, routes) and
// scripts/k8s.sh, which restarts their kubelets.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const crictlPath = "/opt/esbnet-tools/bin/crictl"

// script runs scripts/k8s.sh with args.
func script(t *testing.T, args ...string) {
	t.Helper()
	root := nstest.RepoRoot(t)
	out, err := exec.Command("bash", append([]string{filepath.Join(root, "scripts", "k8s.sh")}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/k8s.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
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
// checks that a netns pin exists for exactly those, waiting for it as
// waitFor does.
func (c *cluster) checkNodeClean(t *testing.T, n node) {
	t.Helper()
	c.waitFor(t, n.name+" consistent with its live pods", func() (bool, string) {
		live, _, err := c.sandboxes(n)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := leakcheck.Check(context.Background(), c.leakNode(t, n), live)
		p, perr := pins(n)
		if err == nil && perr == nil && rep.Clean() && len(p) == len(live) {
			t.Logf("%s: consistent with %d live pods (%v)", n.name, len(live), rep.Found)
			return true, ""
		}
		return false, fmt.Sprintf("leakcheck: %v (read errors: %v, %v); %d netns pins for %d live pods:\n%s",
			rep, err, perr, len(p), len(live), rep)
	})
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

// kubeletLog returns what the kubelet of node n1 or n2 (as scripts/k8s.sh
// names them) has logged so far; nothing if the log cannot be read.
func (c *cluster) kubeletLog(n string) []byte {
	out, _ := os.ReadFile(filepath.Join(c.env["ESB_K8S_DIR"], "log", "kubelet-"+n+".log"))
	return out
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
