package nattest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// buildEsbctl builds cmd/esbctl into a temporary directory of the test.
func buildEsbctl(t *testing.T) string { return nstest.GoBuild(t, t.TempDir(), "./cmd/esbctl") }

// esbctl runs the binary in the node and returns its standard output,
// standard error and exit code.
func (n *node) esbctl(bin string, args ...string) (stdout, stderr string, code int) {
	n.t.Helper()
	return nodetest.RunCode(n.t, cmdTimeout, "ip", append([]string{"netns", "exec", n.Name, bin}, args...)...)
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEsbctlNat drives `esbctl nat apply/show/delete` in the node as an
// operator would, and checks that bad rule files fail with exit code 1, a
// message naming the field, and no change to the installed table.
func TestEsbctlNat(t *testing.T) {
	bin := buildEsbctl(t)
	n := newNode(t)
	w := n.attach()
	const target = nodeAddr + ":19000"
	listenTCP(t, n.NS, target)
	good := writeFile(t, "rules.yaml", `egress: proxy-only
forwards:
  - {proto: tcp, port: 9000, to: "`+target+`"}
  - {proto: udp, port: 9053, to: "127.0.0.1:19053"}
`)

	out, errOut, code := n.esbctl(bin, "nat", "apply", "-f", good)
	if code != 0 || out != "table ip esb: rebuilt (2 forwards, egress proxy-only)\n" {
		t.Fatalf("esbctl nat apply: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if out, _, code := n.esbctl(bin, "nat", "apply", "-f", good); code != 0 || !strings.Contains(out, ": unchanged (") {
		t.Errorf("esbctl nat apply again: exit %d, stdout %q; want unchanged", code, out)
	}
	if got := n.localnet(); got != "1" {
		t.Errorf("route_localnet with a loopback forward = %s, want 1", got)
	}
	w.expectReach("through the forward", gatewayIP+":9000", w.IP)

	out, errOut, code = n.esbctl(bin, "nat", "show", "-o", "json")
	if code != 0 {
		t.Fatalf("esbctl nat show -o json: exit %d: %s", code, errOut)
	}
	type counter struct {
		Proto       string `json:"proto"`
		Port        uint16 `json:"port"`
		To          string `json:"to"`
		Connections uint64 `json:"connections"`
		Bytes       uint64 `json:"bytes"`
	}
	var shown []counter
	if err := json.Unmarshal([]byte(out), &shown); err != nil {
		t.Fatalf("parse show -o json: %v\n%s", err, out)
	}
	if len(shown) != 2 ||
		shown[0].Proto != "tcp" || shown[0].Port != 9000 || shown[0].To != target || shown[0].Connections != 1 || shown[0].Bytes == 0 ||
		shown[1].Proto != "udp" || shown[1].Port != 9053 || shown[1].To != "127.0.0.1:19053" || shown[1].Connections != 0 {
		t.Errorf("show -o json = %+v; want tcp/9000 with one connection, udp/9053 with none", shown)
	}

	before := n.list("ip", nat.TableName)
	for _, bad := range []struct{ name, text, field string }{
		{"port out of range", "forwards:\n  - {proto: tcp, port: 70000, to: \"127.0.0.1:9000\"}\n", "forwards[0].port"},
		{"unknown proto", "forwards:\n  - {proto: sctp, port: 9000, to: \"127.0.0.1:9000\"}\n", "forwards[0].proto"},
		{"unparsable address", "forwards:\n  - {proto: tcp, port: 9000, to: \"proxy.local:9000\"}\n", "forwards[0].to"},
		{"duplicate port", "forwards:\n  - {proto: tcp, port: 9000, to: \"127.0.0.1:9000\"}\n  - {proto: TCP, port: 9000, to: \"127.0.0.1:9001\"}\n", "forwards[1].port"},
		{"unknown egress", "egress: everything\nforwards: []\n", "egress"},
	} {
		path := writeFile(t, "bad.yaml", bad.text)
		out, errOut, code := n.esbctl(bin, "nat", "apply", "-f", path)
		if code != 1 || !strings.Contains(errOut, bad.field) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and a message naming %s", bad.name, code, errOut, bad.field)
		}
		if out != "" {
			t.Errorf("%s: stdout %q, want nothing", bad.name, out)
		}
	}
	if after := n.list("ip", nat.TableName); after != before {
		t.Errorf("bad rule files changed the table:\n--- before\n%s\n--- after\n%s", before, after)
	}

	if out, errOut, code := n.esbctl(bin, "nat", "delete"); code != 0 || out != "table ip esb deleted\n" {
		t.Errorf("esbctl nat delete: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n.hasESBTable() {
		t.Error("table ip esb remains after esbctl nat delete")
	}
	if got := n.localnet(); got != "0" {
		t.Errorf("route_localnet after esbctl nat delete = %s, want 0", got)
	}
	if _, errOut, code := n.esbctl(bin, "nat", "delete"); code != 0 {
		t.Errorf("esbctl nat delete with no table: exit %d: %s", code, errOut)
	}
	if out, _, code := n.esbctl(bin, "nat", "show", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("esbctl nat show with no table: exit %d, stdout %q; want []", code, out)
	}
}
