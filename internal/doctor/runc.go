package doctor

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// runcReadsAll is the last runc release that reads the whole mount table
// in every call: up to 1.1.8 its Intel RDT probe reads /proc/self/mountinfo
// to the end even where the host has no /sys/fs/resctrl; 1.1.9 looks for
// that directory first.
var runcReadsAll = [3]int{1, 1, 8}

// runcFix is the command line that gives a node a runc that does not.
const runcFix = "GOBIN=/opt/esbnet-tools/runc CGO_ENABLED=1 go install -tags seccomp github.com/opencontainers/runc@v1.5.3 " +
	"(needs gcc and libseccomp-dev), then set runc-binary: /opt/esbnet-tools/runc/runc in esb-agent's settings"

var runcVersionLine = regexp.MustCompile(`^runc version (\d+)\.(\d+)\.(\d+)`)

// runc checks the runc that containerd's shim runs for the workers: the
// agent's runc-binary, else runc on PATH. One that reads the whole mount
// table in every call slows each create, start and delete as live workers
// add their two mounts each (docs/performance.md, "runc and the mount
// table"): a warning with the fix.
func (d *doctor) runc(ctx context.Context) {
	if d.o.Runtime != "containerd" {
		return
	}
	path := d.o.RuncBinary
	if path == "" {
		p, err := exec.LookPath("runc")
		if err != nil {
			d.add("runc", Warn, "apt-get install runc, or set runc-binary in esb-agent's settings",
				"no runc on PATH: containerd's shim needs one to start workers")
			return
		}
		path = p
	}
	ctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		d.add("runc", Fail, "install runc, or point esb-agent's runc-binary at a working one",
			"%s --version: %v: containerd's shim cannot start workers with it", path, err)
		return
	}
	line, _, _ := strings.Cut(string(out), "\n")
	m := runcVersionLine.FindStringSubmatch(line)
	if m == nil {
		d.add("runc", Warn, "", "%s: cannot read the version from %q", path, line)
		return
	}
	var v [3]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	version := strings.Join(m[1:], ".")
	if slices.Compare(v[:], runcReadsAll[:]) <= 0 {
		d.add("runc", Warn, runcFix,
			"runc %s (%s) reads the host's whole mount table in every call, and each live worker adds two mounts: "+
				"creating and starting a worker slows as workers are added (on a 2-core machine 131 ms more at 1,000 live "+
				"than at none: docs/performance.md)", version, path)
		return
	}
	d.add("runc", OK, "", "runc %s (%s)", version, path)
}
