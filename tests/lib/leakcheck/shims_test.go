package leakcheck

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cmdline is argv as /proc/<pid>/cmdline holds it, NUL-terminated.
func cmdline(argv []string) []byte {
	if len(argv) == 0 {
		return nil
	}
	return []byte(strings.Join(argv, "\x00") + "\x00")
}

// fakeProc writes a /proc tree: each process's cmdline and stat.
func fakeProc(t *testing.T, procs map[int]struct {
	ppid int
	argv []string
}) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		// A whole stat line, as the kernel writes it (procfs reads every
		// field); the command name may hold spaces and parentheses.
		stat := fmt.Sprintf("%d (a (b) c) S %d 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 500 1000 10 "+
			"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", pid, p.ppid)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{"cmdline": cmdline(p.argv), "stat": []byte(stat)} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("/bundles/"+strconv.Itoa(pid), filepath.Join(dir, "cwd")); err != nil {
			t.Fatal(err)
		}
	}
	// Not a process.
	if err := os.WriteFile(filepath.Join(root, "meminfo"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestShimsIn(t *testing.T) {
	shim := func(ns, id string) []string {
		return []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", ns, "-id", id, "-address", "/run/c.sock"}
	}
	proc := fakeProc(t, map[int]struct {
		ppid int
		argv []string
	}{
		10:  {1, shim("esb", "group1")},
		11:  {10, []string{"/worker"}},
		12:  {10, []string{"/worker"}},
		20:  {1, shim("esb", "lone")},
		30:  {1, shim("other", "x")},
		31:  {30, []string{"/worker"}},
		40:  {1, []string{"/usr/bin/containerd", "--config", "c.toml"}},
		41:  {40, shim("esb", "starting")},
		100: {0, nil},
	})
	got, err := shimsIn(proc, "esb")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b Shim) int { return a.PID - b.PID })
	for i := range got {
		slices.Sort(got[i].Children)
	}
	want := []Shim{{PID: 10, ID: "group1", Children: []int{11, 12}, Dir: "/bundles/10"}, {PID: 20, ID: "lone", Dir: "/bundles/20"},
		{PID: 41, ID: "starting", Dir: "/bundles/41"}}
	if len(got) != len(want) {
		t.Fatalf("shims of esb = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].PID != want[i].PID || got[i].ID != want[i].ID || got[i].Dir != want[i].Dir || !slices.Equal(got[i].Children, want[i].Children) {
			t.Errorf("shim %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	// The check: a shim with a task process or a live worker's ID
	// serves; the others do not.
	for _, tc := range []struct {
		live    map[string]netip.Addr
		orphans []string
	}{
		{nil, []string{"lone", "starting"}},
		{map[string]netip.Addr{"lone": {}, "group1": {}}, []string{"starting"}},
	} {
		c := &checker{n: Node{ShimNamespace: "esb"}, live: tc.live, rep: Report{Found: map[string]int{}}}
		if err := c.shimsFrom(proc); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, o := range c.rep.Orphans {
			_, rest, _ := strings.Cut(o, "-id ")
			id, _, _ := strings.Cut(rest, ",")
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if c.rep.Found["shim"] != 3 || !slices.Equal(ids, tc.orphans) {
			t.Errorf("live %v: found %v, orphans %q; want 3 shims, orphans %q", tc.live, c.rep.Found, c.rep.Orphans, tc.orphans)
		}
	}
}

func TestParseShimArgs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		argv     []string
		ns, id   string
		wantShim bool
	}{
		{"containerd 1.6 runc v2 shim",
			[]string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "esb", "-id", "w1", "-address", "/run/c.sock"}, "esb", "w1", true},
		{"flags with = and two dashes", []string{"containerd-shim-runc-v2", "--namespace=esb2", "-id=g7"}, "esb2", "g7", true},
		{"the shim's start call", []string{"/usr/bin/containerd-shim-runc-v2", "-namespace", "n", "-address", "a",
			"-publish-binary", "/usr/bin/containerd", "-id", "x", "start"}, "n", "x", true},
		{"a value that looks like a flag", []string{"containerd-shim", "-namespace", "-id", "-id", "y"}, "-id", "y", true},
		{"no namespace", []string{"containerd-shim-runc-v2", "-id", "z"}, "", "z", true},
		{"flag without value", []string{"containerd-shim-runc-v2", "-id"}, "", "", true},
		{"containerd itself", []string{"/usr/bin/containerd", "-namespace", "esb"}, "", "", false},
		{"shim named only in an argument", []string{"/bin/sh", "containerd-shim-runc-v2", "-namespace", "esb"}, "", "", false},
		{"kernel thread", nil, "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, id, ok := parseShimArgs(tc.argv)
			if ok != tc.wantShim || ns != tc.ns || id != tc.id {
				t.Errorf("parseShimArgs(%q) = %q, %q, %v; want %q, %q, %v", tc.argv, ns, id, ok, tc.ns, tc.id, tc.wantShim)
			}
		})
	}
}
