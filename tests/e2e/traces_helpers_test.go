package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// --- what a worker leaves ----------------------------------------------------------

// traces lists what of any worker is on the node: containers in the
// test's namespace, netns pins (in the test's directory, and in /run/netns
// for any worker the test saw), esb veths in the node, addresses in the
// IPAM store, results in libcni's cache and, containerd, the shims of the
// test's namespace. only, when given, restricts the report to those
// workers (and leaves shims out: a grouped shim is not one worker's).
func (e *env) traces(only ...string) []string {
	keep := func(id string) bool { return len(only) == 0 || slices.Contains(only, id) }
	var out []string
	ids, err := e.containers()
	if err != nil {
		out = append(out, err.Error())
	}
	for _, id := range ids {
		if keep(id) {
			out = append(out, "container "+id)
		}
	}
	prefix := e.Names().NetNSPrefix
	pins, _ := filepath.Glob(filepath.Join(e.NetnsDir(), prefix+"*"))
	for _, p := range pins {
		if keep(strings.TrimPrefix(filepath.Base(p), prefix)) {
			out = append(out, "netns pin "+p)
		}
	}
	for _, id := range e.seen.list() {
		if p := "/run/netns/" + prefix + id; keep(id) {
			if _, err := os.Lstat(p); err == nil {
				out = append(out, "netns pin "+p)
			}
		}
	}
	veths, err := agenttest.Veths(e.node, e.Names().Bridge)
	if err != nil {
		out = append(out, err.Error())
	}
	for name, alias := range veths {
		if len(only) == 0 || slices.ContainsFunc(only, func(id string) bool { return strings.Contains(alias, id) }) {
			out = append(out, fmt.Sprintf("veth %s (%s)", name, alias))
		}
	}
	allocs, err := e.Allocations(e.Names().Network)
	if err != nil {
		out = append(out, err.Error())
	}
	for id, ip := range allocs {
		if keep(strings.TrimSuffix(id, "/eth0")) {
			out = append(out, fmt.Sprintf("address %s of %s", ip, id))
		}
	}
	etcs, _ := filepath.Glob(filepath.Join(e.EtcDir(), "*"))
	for _, p := range etcs {
		if keep(filepath.Base(p)) {
			out = append(out, "/etc files "+p)
		}
	}
	results, _ := filepath.Glob(filepath.Join(e.CacheDir(), "results", "*"))
	for _, r := range results {
		if len(only) == 0 || slices.ContainsFunc(only, func(id string) bool { return strings.Contains(filepath.Base(r), id) }) {
			out = append(out, "libcni cache entry "+r)
		}
	}
	if len(only) == 0 && !e.ownsNetNS() && !e.cutsCreations {
		// With no worker left, no shim of the namespace may run.
		shims, err := leakcheck.Shims(e.ctrNS)
		if err != nil {
			out = append(out, err.Error())
		}
		for _, s := range shims {
			out = append(out, fmt.Sprintf("shim pid %d (-id %s, in %s, %d children)", s.PID, s.ID, s.Dir, len(s.Children)))
		}
	}
	slices.Sort(out)
	return out
}

// expectNoTraces waits (bounded: the kernel removes the veths of a dead
// namespace asynchronously) until traces reports nothing, else fails the
// test with what is left.
func (e *env) expectNoTraces(what string, only ...string) {
	e.t.Helper()
	if left := e.tracesAfterSettle(only...); len(left) > 0 {
		e.t.Errorf("%s: left behind:\n  %s", what, strings.Join(left, "\n  "))
	}
}

// tracesAfterSettle polls traces until it reports nothing, for at most
// settleTimeout, and returns what is left then.
func (e *env) tracesAfterSettle(only ...string) []string {
	start := time.Now()
	defer since("settle (traces)", settleTimeout, start)
	deadline := start.Add(settleTimeout)
	for {
		left := e.traces(only...)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(pollInterval)
	}
}

// vethOf returns the node-side veth of worker id.
func (e *env) vethOf(id string) (string, bool) {
	e.t.Helper()
	veths, err := agenttest.Veths(e.node, e.Names().Bridge)
	if err != nil {
		e.t.Fatal(err)
	}
	for name, alias := range veths {
		if strings.Contains(alias, " "+id+" ") { // "esb-bridge <created> <id> <ifname>"
			return name, true
		}
	}
	return "", false
}

// expectTraces checks that a live worker has everything it needs: its
// container, pin (both runtimes: the agent pins Docker's too), veth,
// address (the one the API gave) and cache entry.
func (e *env) expectTraces(w *agentv1.Worker) {
	e.t.Helper()
	left := e.traces(w.GetId())
	want := []string{"container " + w.GetId(), fmt.Sprintf("address %s of %s/eth0", w.GetIp(), w.GetId()),
		"netns pin " + e.pinPath(w.GetId())}
	for _, want := range want {
		if !slices.Contains(left, want) {
			e.t.Errorf("worker %s: no %s; it has:\n  %s", w.GetId(), want, strings.Join(left, "\n  "))
		}
	}
	if _, ok := e.vethOf(w.GetId()); !ok {
		e.t.Errorf("worker %s has no veth in the node", w.GetId())
	}
	if !slices.ContainsFunc(left, func(s string) bool { return strings.HasPrefix(s, "libcni cache entry") }) {
		e.t.Errorf("worker %s has no libcni cache entry", w.GetId())
	}
}

// --- teardown ------------------------------------------------------------------

// teardown stops the agent, checks that no worker is left, then removes
// whatever is (so a failed test leaves the machine clean too), the image
// and the containerd namespace.
func (e *env) teardown() {
	t := e.t
	if e.agent != nil {
		if err := e.stopAgentErr(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
	}
	if left := e.traces(); len(left) > 0 {
		// The kernel may still be removing veths of namespaces that
		// died: wait for it (expectNoTraces's wait, without its error).
		left = e.tracesAfterSettle()
		if len(left) > 0 {
			if t.Failed() {
				t.Logf("removing what the failed test left:\n  %s", strings.Join(left, "\n  "))
			} else {
				t.Errorf("the test left:\n  %s", strings.Join(left, "\n  "))
			}
		}
	}
	if err := e.forceClean(); err != nil {
		t.Errorf("clean up: %v", err)
	}
	if t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(e.Base, "agent-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", filepath.Base(l), b)
		}
	}
}

// forceClean removes every container, pin, image and the containerd
// namespace of the test, and runc's cgroups of that namespace.
func (e *env) forceClean() error {
	var errs []error
	ids, err := e.containers()
	errs = append(errs, err)
	for _, id := range ids {
		errs = append(errs, removeContainer(e, id))
	}
	if e.rt == stacktest.Docker {
		// The worker image is dockerd's, shared; only images of the
		// test's own are removed.
		errs = append(errs, e.removeDockerImages())
		return errors.Join(errs...)
	}
	killStrayShims(e.ctrNS)
	prefix := e.Names().NetNSPrefix
	pins, _ := filepath.Glob(filepath.Join(e.NetnsDir(), prefix+"*"))
	for _, id := range e.seen.list() {
		if _, err := os.Lstat("/run/netns/" + prefix + id); err == nil {
			pins = append(pins, "/run/netns/"+prefix+id)
		}
	}
	for _, p := range pins {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if out, err := e.ctrOut("images", "list", "-q"); err == nil {
		if imgs := strings.Fields(out); len(imgs) > 0 {
			_, err := e.ctrOut(append([]string{"images", "remove", "--sync"}, imgs...)...)
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := e.stack.Ctr(ctx, "", "namespaces", "remove", e.ctrNS).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("remove containerd namespace %s: %w: %s", e.ctrNS, err, strings.TrimSpace(string(out))))
	}
	// runc leaves the namespace's parent cgroup under each v1 controller.
	errs = append(errs, stacktest.RemoveNamespaceCgroups(e.ctrNS))
	return errors.Join(errs...)
}

// killStrayShims kills the containerd shims still running for namespace ns
// once its containers are gone: containerd 1.6 leaves a shim behind when a
// creation is cut off (the agent or containerd killed mid-create, as the
// fault tests marked cutsCreations do), and it would outlive the test.
// The namespace is the test's own, so no other test's shim matches. The
// other tests' leak checks fail on such a shim first (leakNode).
func killStrayShims(ns string) {
	shims, _ := leakcheck.Shims(ns)
	for _, s := range shims {
		_ = syscall.Kill(s.PID, syscall.SIGKILL)
	}
}

// leakNode is the test's node as leakcheck sees it.
func (e *env) leakNode() leakcheck.Node {
	n := leakcheck.Node{
		NetNS: e.node.Path(), IPAMDir: e.IPAMDir(), Network: netName, CNICacheDir: e.CacheDir(), PinDir: e.NetnsDir(),
		EtcDir: e.EtcDir(), Containers: func(context.Context) ([]string, error) { return e.containers() },
	}
	if !e.ownsNetNS() { // containerd: its snapshots, runc's cgroups, shims
		n.Snapshots, n.Cgroups = e.workerSnapshots, e.workerCgroups
		if !e.cutsCreations {
			n.ShimNamespace = e.ctrNS
		}
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
		m[w.GetId()] = addrOf(w)
	}
	return m
}

// addrOf is the address the API reported for w (invalid if none).
func addrOf(w *agentv1.Worker) netip.Addr {
	ip, _ := netip.ParseAddr(w.GetIp())
	return ip
}

// expectConsistent waits (bounded) until the node holds exactly the
// traces of live, no address twice, else fails the test with the report.
func (e *env) expectConsistent(what string, live []*agentv1.Worker) leakcheck.Report {
	e.t.Helper()
	return e.waitNode(what, "settle", live, settleTimeout, 2*settleTimeout)
}

// waitNode waits up to settle (the whole within bound) until the node
// holds exactly the traces of live, no address twice, notes the wait as
// name, and fails the test with the report if it does not.
func (e *env) waitNode(what, name string, live []*agentv1.Worker, settle, bound time.Duration) leakcheck.Report {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	rep, err := leakcheck.Wait(ctx, e.leakNode(), liveOf(live), settle)
	noteWait(name+" (leakcheck)", settle, time.Since(start))
	if err != nil {
		e.t.Errorf("%s: read the node: %v", what, err)
	}
	if !rep.Clean() {
		e.t.Errorf("%s: after %s the node does not match the %d live workers:\n%s", what, settle, len(live), rep)
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
	kb, err := agenttest.KB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS")
	if err != nil {
		return 0, 0, err
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, err
	}
	return int64(kb["VmRSS"]) << 10, len(ents), nil
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
