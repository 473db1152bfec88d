package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
)

// leakNode is the test's node as leakcheck sees it.
func (e *env) leakNode() leakcheck.Node {
	n := leakcheck.Node{
		NetNS: e.node.Path(), IPAMDir: e.IPAMDir(), Network: netName, CNICacheDir: e.CacheDir(),
		Containers: func(context.Context) ([]string, error) { return e.containers() },
	}
	if !e.ownsNetNS() { // containerd: the agent's pins, containerd's snapshots, runc's cgroups
		n.PinDir, n.Snapshots, n.Cgroups = e.NetnsDir(), e.workerSnapshots, e.workerCgroups
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
func (e *env) workerCgroups() ([]string, error) { return agenttest.NamespaceCgroups(e.ctrNS) }

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

// procFDs lists what pid's descriptors point at, without their numbers:
// paths, pipes, anon inodes, and sockets by what they connect (a unix
// socket by its bound path or its peer's, "unix -> /x/docker.sock"; TCP
// by its addresses), read in pid's network namespace.
func procFDs(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return []string{err.Error()}
	}
	socks := socketNames(pid)
	var out []string
	for _, e := range ents {
		t, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(t, "socket:["); ok {
			if name := socks[strings.TrimSuffix(ino, "]")]; name != "" {
				t = name
			}
		}
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// socketNames maps the socket inodes of pid's network namespace to what
// they are: "unix <path>" (bound), "unix -> <path>" (connected to a bound
// socket), "tcp <local> -> <remote>".
func socketNames(pid int) map[string]string {
	names := map[string]string{}
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid), "-n", "ss", "-xaH").Output()
	if err == nil {
		path, peer := map[string]string{}, map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 8 {
				continue
			}
			path[f[5]], peer[f[5]] = f[4], f[7]
		}
		for ino, p := range path {
			switch {
			case p != "*":
				names[ino] = "unix " + p
			case path[peer[ino]] != "" && path[peer[ino]] != "*":
				names[ino] = "unix -> " + path[peer[ino]]
			}
		}
	}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if x := strings.Fields(line); len(x) >= 10 {
				names[x[9]] = fmt.Sprintf("tcp %s -> %s", hexAddr(x[1]), hexAddr(x[2]))
			}
		}
	}
	return names
}

// hexAddr turns /proc/net/tcp's "0100007F:1388" into "127.0.0.1:5000"
// (IPv4; IPv6 addresses stay as the kernel prints them).
func hexAddr(s string) string {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || len(h) != 8 {
		return s
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return s
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", v&0xff, v>>8&0xff, v>>16&0xff, v>>24, port)
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
