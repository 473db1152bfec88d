// Package installtest runs the real "make install" and "make uninstall" into
// a temporary root (DESTDIR) and checks what they add, keep and remove, and
// that every installed binary names its build. It needs make and Go, not
// root.
package installtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const version = "installtest-0.0.1"

// What make install adds, relative to the root.
var installed = []string{
	"etc/cni/net.d/10-esb.conflist",
	"etc/esb/agent.yaml",
	"etc/sysctl.d/10-esbnet.conf",
	"etc/systemd/system/esb-agent.service",
	"opt/cni/bin/esb-bridge",
	"opt/cni/bin/esb-ipam",
	"usr/local/bin/esb-agent",
	"usr/local/bin/esbctl",
	"usr/local/share/esbnet/installed.sha256",
}

// A root as a Debian system has it before install: the usual directories,
// and a file of someone else in each directory install writes to.
var preexisting = []string{
	"etc/cni/net.d/99-other.conflist",
	"etc/systemd/system/other.service",
	"opt/cni/bin/bridge",
	"usr/local/bin/other",
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildOnce runs "make build" once per test binary (linking four binaries
// takes a while); the tests then run "make install INSTALL_BUILD=" with it.
func buildOnce(t *testing.T, repo string) string {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "esbnet-installtest-"); built.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "make", "-C", repo, "--no-print-directory", "build",
			"BIN="+built.dir, "VERSION="+version).CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("make build: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

type tree struct {
	t    *testing.T
	repo string
	root string
	bin  string
}

func newTree(t *testing.T) *tree {
	repo := nstest.RepoRoot(t)
	tr := &tree{t: t, repo: repo, root: t.TempDir(), bin: buildOnce(t, repo)}
	for _, f := range preexisting {
		p := filepath.Join(tr.root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("not esbnet's\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(tr.root, "usr/local/share"), 0o755); err != nil {
		t.Fatal(err)
	}
	return tr
}

// make runs a make target with DESTDIR set and returns its output.
func (tr *tree) make(target string) string {
	tr.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "-C", tr.repo, "--no-print-directory", target,
		"DESTDIR="+tr.root, "BIN="+tr.bin, "VERSION="+version, "INSTALL_BUILD=")
	// An operator's settings in the environment must not reach the files.
	cmd.Env = append(os.Environ(), "ESB_AGENT_PORT=1234")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tr.t.Fatalf("make %s: %v\n%s", target, err, out)
	}
	return string(out)
}

// files lists the regular files under the root, relative to it.
func (tr *tree) files() []string {
	tr.t.Helper()
	var out []string
	err := filepath.WalkDir(tr.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(tr.root, p)
		out = append(out, rel)
		return err
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func (tr *tree) path(rel string) string { return filepath.Join(tr.root, rel) }

func sorted(lists ...[]string) []string {
	out := slices.Concat(lists...)
	slices.Sort(out)
	return out
}

func TestInstallUninstall(t *testing.T) {
	tr := newTree(t)
	before := tr.files()
	out := tr.make("install")
	if got, want := tr.files(), sorted(preexisting, installed); !slices.Equal(got, want) {
		t.Fatalf("after install:\n got %q\nwant %q\n%s", got, want, out)
	}
	for _, f := range []string{"opt/cni/bin/esb-bridge", "opt/cni/bin/esb-ipam", "usr/local/bin/esbctl", "usr/local/bin/esb-agent"} {
		if st, err := os.Stat(tr.path(f)); err != nil || st.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v %v, want mode 0755", f, st.Mode(), err)
		}
	}
	for _, f := range preexisting {
		if b, err := os.ReadFile(tr.path(f)); err != nil || string(b) != "not esbnet's\n" {
			t.Errorf("install touched %s: %q %v", f, b, err)
		}
	}

	// The conflist is esbctl's default; the unit runs the installed agent
	// with the installed settings; the settings load back unchanged.
	conflist, err := exec.Command(tr.path("usr/local/bin/esbctl"), "conflist").Output()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(tr.path("etc/cni/net.d/10-esb.conflist")); string(b) != string(conflist) {
		t.Errorf("installed conflist differs from esbctl conflist:\n%s", b)
	}
	unit, _ := os.ReadFile(tr.path("etc/systemd/system/esb-agent.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/local/bin/esb-agent --config /etc/esb/agent.yaml\n") ||
		!strings.Contains(string(unit), "WantedBy=multi-user.target") {
		t.Errorf("unit:\n%s", unit)
	}
	// The kernel settings are the repository's, applied at boot only.
	want, _ := os.ReadFile(filepath.Join(nstest.RepoRoot(t), "deploy/sysctl/10-esbnet.conf"))
	if b, err := os.ReadFile(tr.path("etc/sysctl.d/10-esbnet.conf")); err != nil || len(want) == 0 || string(b) != string(want) {
		t.Errorf("installed sysctl file differs from deploy/sysctl/10-esbnet.conf (%v):\n%s", err, b)
	}
	yamlFile := tr.path("etc/esb/agent.yaml")
	written, _ := os.ReadFile(yamlFile)
	if strings.Contains(string(written), "1234") {
		t.Errorf("ESB_AGENT_PORT from make's environment leaked into agent.yaml:\n%s", written)
	}
	cmd := exec.Command(tr.path("usr/local/bin/esb-agent"), "--config", yamlFile, "--print-config")
	cmd.Env = []string{}
	again, err := cmd.Output()
	if err != nil || string(again) != string(written) {
		t.Errorf("agent.yaml does not load back to itself (%v):\n%s\n---\n%s", err, written, again)
	}

	// Installing again changes nothing and says so.
	out = tr.make("install")
	for _, f := range []string{"/etc/cni/net.d/10-esb.conflist", "/etc/esb/agent.yaml", "/etc/systemd/system/esb-agent.service", "/etc/sysctl.d/10-esbnet.conf"} {
		if !strings.Contains(out, f+" is up to date") {
			t.Errorf("second install should report %s up to date:\n%s", f, out)
		}
	}

	out = tr.make("uninstall")
	if got := tr.files(); !slices.Equal(got, before) {
		t.Fatalf("after uninstall:\n got %q\nwant %q\n%s", got, before, out)
	}
	if _, err := os.Stat(tr.path("etc/esb")); !os.IsNotExist(err) {
		t.Errorf("uninstall left /etc/esb: %v", err)
	}
	if out := tr.make("uninstall"); !strings.Contains(out, "nothing to uninstall") {
		t.Errorf("second uninstall:\n%s", out)
	}
}

// A configuration file the operator changed is never overwritten by install
// nor removed by uninstall, and both say so.
func TestChangedConfigKept(t *testing.T) {
	tr := newTree(t)
	before := tr.files()
	tr.make("install")
	edits := map[string]string{
		"etc/cni/net.d/10-esb.conflist": `{"cniVersion":"1.0.0","name":"esb","plugins":[{"type":"esb-bridge","mtu":1400}]}` + "\n",
		"etc/esb/agent.yaml":            "pool-min-idle: 2\n",
	}
	for f, body := range edits {
		if err := os.WriteFile(tr.path(f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := tr.make("install")
	for f, body := range edits {
		if !strings.Contains(out, "KEPT /"+f) {
			t.Errorf("install should name the kept %s:\n%s", f, out)
		}
		if b, _ := os.ReadFile(tr.path(f)); string(b) != body {
			t.Errorf("install overwrote the changed %s: %q", f, b)
		}
	}
	out = tr.make("uninstall")
	for f := range edits {
		if !strings.Contains(out, "KEPT /"+f+": changed since make install") {
			t.Errorf("uninstall should name the kept %s:\n%s", f, out)
		}
	}
	if got, want := tr.files(), sorted(before, []string{"etc/cni/net.d/10-esb.conflist", "etc/esb/agent.yaml"}); !slices.Equal(got, want) {
		t.Errorf("after uninstall:\n got %q\nwant %q\n%s", got, want, out)
	}
}

// Every binary answers --version with the build's version; the plugins'
// CNI VERSION result names the build too and still decodes with libcni.
func TestVersions(t *testing.T) {
	tr := newTree(t)
	tr.make("install")
	for _, b := range []string{"usr/local/bin/esbctl", "usr/local/bin/esb-agent", "opt/cni/bin/esb-bridge", "opt/cni/bin/esb-ipam"} {
		name := filepath.Base(b)
		cmd := exec.Command(tr.path(b), "--version")
		cmd.Env = []string{}
		out, err := cmd.Output()
		if err != nil || !strings.HasPrefix(string(out), name+" "+version) {
			t.Errorf("%s --version: %q %v, want %q first", name, out, err, name+" "+version)
		}
	}
	for _, p := range []string{"esb-bridge", "esb-ipam"} {
		path := tr.path("opt/cni/bin/" + p)
		info, err := invoke.GetVersionInfo(context.Background(), path, nil)
		if err != nil {
			t.Fatalf("libcni VERSION of %s: %v", p, err)
		}
		if !slices.Contains(info.SupportedVersions(), "1.1.0") {
			t.Errorf("%s supports %v", p, info.SupportedVersions())
		}
		cmd := exec.Command(path)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		out, err := cmd.Output()
		var res struct {
			CNIVersion string `json:"cniVersion"`
			About      string `json:"about"`
		}
		if err != nil || json.Unmarshal(out, &res) != nil || res.About != p+" "+version+" (esbnet)" || res.CNIVersion == "" {
			t.Errorf("%s VERSION: %s %v", p, out, err)
		}
		// Run by hand without CNI_COMMAND, skel prints the same line.
		cmd = exec.Command(path)
		cmd.Env = []string{}
		stderr, _ := cmd.CombinedOutput()
		if !strings.Contains(string(stderr), p+" "+version+" (esbnet)") {
			t.Errorf("%s without CNI_COMMAND: %q", p, stderr)
		}
	}
}

// Without DESTDIR, install talks to systemd only where systemd runs (PID 1
// is systemd: /run/systemd/system exists), and says so elsewhere. Every
// path is under a temporary directory; systemctl is a stand-in that logs
// its arguments, so a real systemd's units are never touched.
func TestSystemdReload(t *testing.T) {
	repo := nstest.RepoRoot(t)
	bin := buildOnce(t, repo)
	root := t.TempDir()
	logFile := filepath.Join(root, "systemctl.log")
	fake := filepath.Join(root, "systemctl")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >>"+logFile+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	vars := []string{"BIN=" + bin, "VERSION=" + version, "INSTALL_BUILD=", "PREFIX=" + root + "/usr",
		"CNI_BIN_DIR=" + root + "/cni/bin", "CNI_CONF=" + root + "/net.d/10-esb.conflist",
		"ESB_CONF=" + root + "/esb/agent.yaml", "UNIT_DIR=" + root + "/systemd", "SYSCTL_CONF=" + root + "/sysctl.d/10-esbnet.conf"}
	mk := func(target string) string {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-C", repo, "--no-print-directory", target}, vars...)...)
		cmd.Env = append(os.Environ(), "SYSTEMCTL="+fake)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	out := mk("install")
	unit, err := os.ReadFile(filepath.Join(root, "systemd/esb-agent.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart="+root+"/usr/bin/esb-agent --config "+root+"/esb/agent.yaml\n") {
		t.Errorf("unit with PREFIX and ESB_CONF (%v):\n%s", err, unit)
	}
	out += mk("uninstall")
	calls, _ := os.ReadFile(logFile)
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if string(calls) != "daemon-reload\ndisable --now esb-agent.service\ndaemon-reload\n" {
			t.Errorf("systemctl calls with systemd running: %q\n%s", calls, out)
		}
	} else {
		if len(calls) != 0 || !strings.Contains(out, "systemd is not running here: no daemon-reload") ||
			!strings.Contains(out, "apply at the next boot; now: sysctl -p "+root+"/sysctl.d/10-esbnet.conf") {
			t.Errorf("without systemd: systemctl calls %q\n%s", calls, out)
		}
	}
	var left []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && p != fake && p != logFile {
			left = append(left, p)
		}
		return err
	})
	if len(left) > 0 {
		t.Errorf("uninstall left %q", left)
	}
}
