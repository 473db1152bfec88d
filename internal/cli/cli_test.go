package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(args, &o, &e)
	return code, o.String(), e.String()
}

func TestConflist(t *testing.T) {
	code, out, _ := run("conflist")
	if code != 0 || !strings.Contains(out, `"type": "esb-bridge"`) || !strings.Contains(out, `"cniVersion": "1.1.0"`) {
		t.Fatalf("conflist: %d %s", code, out)
	}
	if code, out, _ := run("conflist", "-cni-version", "1.0.0"); code != 0 || !strings.Contains(out, `"cniVersion": "1.0.0"`) {
		t.Errorf("-cni-version 1.0.0: %d %s", code, out)
	}
	if code, _, errOut := run("conflist", "-cni-version", "2.0.0"); code != 2 || !strings.Contains(errOut, "-cni-version must be") {
		t.Errorf("-cni-version 2.0.0: %d %s", code, errOut)
	}

	path := filepath.Join(t.TempDir(), "net.d", "10-esb.conflist")
	if code, out, errOut := run("conflist", "-o", path); code != 0 || !strings.Contains(out, "wrote") {
		t.Fatalf("write: %d %s %s", code, out, errOut)
	}
	if code, out, _ := run("conflist", "-o", path); code != 0 || !strings.Contains(out, "up to date") {
		t.Errorf("rewrite of the same: %d %s", code, out)
	}
	if err := os.WriteFile(path, []byte(`{"changed":true}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := run("conflist", "-o", path); code != 1 || !strings.Contains(errOut, "keeping it") {
		t.Errorf("a changed file was not kept: %d %s", code, errOut)
	}
	if b, _ := os.ReadFile(path); string(b) != `{"changed":true}` {
		t.Errorf("changed file overwritten: %s", b)
	}
	if code, _, _ := run("conflist", "-o", path, "-force"); code != 0 {
		t.Errorf("-force: %d", code)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "esb-bridge") {
		t.Errorf("-force did not write the default: %s", b)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"frobnicate"}, {"nat"}, {"nat", "sideways"}, {"nat", "apply"}, {"acquire", "-o", "yaml"}} {
		if code, _, _ := run(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, out, _ := run("help"); code != 0 || !strings.Contains(out, "esbctl nat") {
		t.Errorf("help: %d %s", code, out)
	}
}

func TestNatApplyNamesBadField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte("forwards:\n  - {proto: tcp, port: 70000, to: \"127.0.0.1:1\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run("nat", "apply", "-f", path)
	if code != 1 || !strings.Contains(errOut, `invalid forwards[0].port "70000"`) {
		t.Errorf("bad rules: %d %s", code, errOut)
	}
}

// esbctl doctor takes its paths from esb-agent's settings file, prints a
// JSON report with -o json and exits 1 when a finding blocks workers.
func TestDoctorCLI(t *testing.T) {
	if code, _, errOut := run("doctor", "-o", "xml"); code != 2 || !strings.Contains(errOut, "-o must be text or json") {
		t.Errorf("-o xml: %d %s", code, errOut)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	body := "cni-conf-dir: " + filepath.Join(dir, "net.d") + "\ncni-bin-dirs: " + dir + "\n"
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("doctor", "-config", cfg, "-runtime", "none", "-registry", "none", "-o", "json")
	var r struct {
		OK       bool
		Findings []struct{ Check, Status, Message, Fix string }
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor -o json: %v\n%s\n%s", err, out, errOut)
	}
	if code != 1 || r.OK || !strings.Contains(errOut, "block workers") {
		t.Errorf("a node without a conflist: exit %d, ok %v, %s", code, r.OK, errOut)
	}
	found := false
	for _, f := range r.Findings {
		if f.Check == "conflist" {
			found = f.Status == "fail" && strings.Contains(f.Message, filepath.Join(dir, "net.d")) && strings.Contains(f.Fix, "esbctl conflist -o")
		}
		if f.Check == "runtime" || f.Check == "registry" {
			t.Errorf("%s was to be skipped: %+v", f.Check, f)
		}
	}
	if !found {
		t.Errorf("no conflist failure naming %s: %+v", dir, r.Findings)
	}
	// The text report closes with its verdict; the error is not repeated.
	code, out, errOut = run("doctor", "-config", cfg, "-runtime", "none", "-registry", "none")
	if code != 1 || !strings.Contains(out, "problem(s) block workers") || errOut != "" {
		t.Errorf("doctor text: exit %d, stderr %q, stdout ends %q", code, errOut, out[max(0, len(out)-80):])
	}
	if code, _, errOut := run("doctor", "-config", filepath.Join(dir, "missing.yaml")); code != 1 || !strings.Contains(errOut, "missing.yaml") {
		t.Errorf("a missing -config: %d %s", code, errOut)
	}
}
