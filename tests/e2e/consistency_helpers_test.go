package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/leakcheck"
)

// leakNode is the test's node as leakcheck sees it.
func (e *env) leakNode() leakcheck.Node {
	n := leakcheck.Node{
		NetNS: e.node.Path(), IPAMDir: e.ipamDir(), Network: netName, CNICacheDir: e.cacheDir(),
		Containers: func(context.Context) ([]string, error) { return e.containers() },
	}
	if !e.ownsNetNS() { // containerd: the agent's pins, containerd's snapshots, runc's cgroups
		n.PinDir, n.Snapshots, n.Cgroups = e.netnsDir(), e.workerSnapshots, e.workerCgroups
	}
	return n
}

// workerSnapshots lists the active snapshots of the test's containerd
// namespace (a worker's is keyed by its ID; image layers are committed).
func (e *env) workerSnapshots(context.Context) ([]string, error) {
	out, err := e.ctrOut("snapshots", "--snapshotter", e.stack.Snapshotter, "list")
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "Active" {
			ids = append(ids, f[0])
		}
	}
	return ids, nil
}

// workerCgroups lists runc's cgroups of the test's containerd namespace
// (/<namespace>/<worker ID> under each controller).
func (e *env) workerCgroups() ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", e.ctrNS, "*"))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && !seen[filepath.Base(d)] {
			seen[filepath.Base(d)] = true
			ids = append(ids, filepath.Base(d))
		}
	}
	return ids, nil
}

// liveOf maps workers to their reported addresses.
func liveOf(ws []*agentv1.Worker) map[string]netip.Addr {
	m := map[string]netip.Addr{}
	for _, w := range ws {
		ip, _ := netip.ParseAddr(w.GetIp())
		m[w.GetId()] = ip
	}
	return m
}

// expectConsistent waits (bounded) until the node holds exactly the
// traces of live, no address twice, else fails the test with the report.
func (e *env) expectConsistent(what string, live []*agentv1.Worker) leakcheck.Report {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*settleTimeout)
	defer cancel()
	start := time.Now()
	rep, err := leakcheck.Wait(ctx, e.leakNode(), liveOf(live), settleTimeout)
	noteWait("settle (leakcheck)", settleTimeout, time.Since(start))
	if err != nil {
		e.t.Errorf("%s: read the node: %v", what, err)
	}
	if !rep.Clean() {
		e.t.Errorf("%s: the node does not match the %d live workers:\n%s", what, len(live), rep)
	}
	return rep
}

// envInt reads a positive integer setting from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envDuration reads a duration setting from the environment.
func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procStatus reads VmRSS (bytes) and the open descriptors of pid.
func procStatus(pid int) (rss int64, fds int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse VmRSS %q: %w", v, err)
			}
			rss = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	return rss, len(ents), nil
}

// procFDs lists what pid's descriptors point at (socket:[inode],
// anon_inode:[eventpoll], paths), for the report of a descriptor that
// stayed open; unix sockets are named by their bound path where the
// kernel shows one.
func procFDs(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return []string{err.Error()}
	}
	unix := map[string]string{}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/unix", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) >= 8 {
				unix[f[6]] = f[7]
			}
		}
	}
	var out []string
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(t, "socket:["); ok {
			if path := unix[strings.TrimSuffix(ino, "]")]; path != "" {
				t += " unix " + path
			}
		}
		out = append(out, e.Name()+" -> "+t)
	}
	return out
}

// loadAvg is /proc/loadavg's first three fields, for the reports.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
