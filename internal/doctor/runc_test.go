package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestRunc: doctor runs the runc of the agent's settings with --version; a
// release that reads the whole mount table in every call (to 1.1.8) is a
// warning with the fix, a later one is fine, one that does not run fails,
// and Docker's nodes are not asked.
func TestRunc(t *testing.T) {
	dir := t.TempDir()
	fake := func(name, answer string, code int) string {
		p := filepath.Join(dir, name)
		script := "#!/bin/sh\n[ \"$1\" = --version ] || exit 9\necho '" + answer + "'\nexit " + strconv.Itoa(code) + "\n"
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		runtime, path string
		want          Status
		in            string
	}{
		{"containerd", fake("debian", "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1", 0), Warn, "runc 1.1.5 ("},
		{"containerd", fake("last", "runc version 1.1.8", 0), Warn, "whole mount table"},
		{"containerd", fake("fixed", "runc version 1.1.9", 0), OK, "runc 1.1.9"},
		{"containerd", fake("new", "runc version 1.5.3\nspec: 1.3.0", 0), OK, "runc 1.5.3"},
		{"containerd", fake("odd", "crun version 1.8", 0), Warn, "cannot read the version"},
		{"containerd", fake("broken", "", 1), Fail, "--version"},
		{"containerd", filepath.Join(dir, "absent"), Fail, "absent --version"},
	} {
		d := &doctor{o: Options{Runtime: tc.runtime, RuncBinary: tc.path}.withDefaults()}
		d.runc(context.Background())
		if len(d.findings) != 1 {
			t.Fatalf("%s: findings %+v, want one", tc.path, d.findings)
		}
		f := d.findings[0]
		if f.Check != "runc" || f.Status != tc.want || !strings.Contains(f.Message, tc.in) {
			t.Errorf("%s: %+v, want %s with %q", tc.path, f, tc.want, tc.in)
		}
		if (f.Status == Fail || strings.Contains(f.Message, "mount table")) && !strings.Contains(f.Fix, "runc") {
			t.Errorf("%s: fix %q names no runc", tc.path, f.Fix)
		}
	}
	d := &doctor{o: Options{Runtime: "docker", RuncBinary: filepath.Join(dir, "debian")}.withDefaults()}
	d.runc(context.Background())
	if len(d.findings) != 0 {
		t.Errorf("runtime docker: %+v, want no runc finding", d.findings)
	}
}
