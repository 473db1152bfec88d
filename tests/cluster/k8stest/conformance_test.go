//go:build k8s

package k8stest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// conformanceFocus selects Kubernetes' own pod-networking checks for a CNI:
// pod → pod (HTTP and UDP through agnhost netexec's /dial) and node → pod
// from a host-network pod (curl and nc), across the cluster's nodes.
const conformanceFocus = `\[sig-network\] Networking Granular Checks: Pods should function for (intra-pod|node-pod) communication: (http|udp)`

// TestConformanceSubset runs the e2e.test binary built from
// k8s.io/kubernetes/test/e2e (make kube-tools) against the cluster, with
// its agnhost image redirected to the one scripts/k8s.sh built and
// pre-pulled on both nodes (KUBE_TEST_REPO_LIST).
func TestConformanceSubset(t *testing.T) {
	c := loadCluster(t)
	e2e := filepath.Join(c.env["ESB_K8S_TOOLS"], "e2e.test")
	if _, err := os.Stat(e2e); err != nil {
		t.Fatalf("e2e.test is missing (make kube-tools builds it): %v", err)
	}
	repo, _, ok := strings.Cut(c.env["ESB_K8S_IMAGE"], "/agnhost:")
	if !ok {
		t.Fatalf("ESB_K8S_IMAGE %q is not a .../agnhost:<version> image", c.env["ESB_K8S_IMAGE"])
	}
	dir := t.TempDir()
	list := filepath.Join(dir, "repo-list.yaml")
	if err := os.WriteFile(list, []byte("promoterE2eRegistry: "+repo+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+c.env["ESB_K8S_CP_NETNS"], e2e,
		"--kubeconfig", c.env["ESB_K8S_KUBECONFIG"], "--provider", "skeleton",
		"--ginkgo.focus", conformanceFocus, "--ginkgo.no-color", "--ginkgo.v",
		"--report-dir", dir)
	cmd.Env = append(os.Environ(), "KUBE_TEST_REPO_LIST="+list)
	out, err := cmd.CombinedOutput()
	summary := regexp.MustCompile(`(?m)^(Ran \d+ of \d+ Specs.*|SUCCESS!.*|FAIL!.*)$`).FindAllString(string(out), -1)
	if err != nil {
		t.Fatalf("e2e.test: %v\n%s", err, tail(string(out), 120))
	}
	ran := regexp.MustCompile(`Ran (\d+) of`).FindStringSubmatch(string(out))
	if len(ran) < 2 || ran[1] != "4" {
		t.Fatalf("e2e.test ran %v specs, want the 4 focused:\n%s", ran, tail(string(out), 60))
	}
	for _, l := range regexp.MustCompile(`(?m)^.*\[It\].*Granular Checks.*$`).FindAllString(string(out), -1) {
		t.Log(strings.TrimSpace(l))
	}
	t.Log(strings.Join(summary, "\n"))
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
