package benchdensity

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	benchnat "github.com/edge-serverless-box/esbnet/tests/bench/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/leakcheck"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// Bounds of every wait.
const (
	agentStartTimeout = 2 * time.Minute  // start to the first ListWorkers answer
	agentStopTimeout  = 2 * time.Minute  // SIGTERM to exit
	cleanTimeout      = 20 * time.Minute // removing up to 1,000 workers behind the agent's back
	settleTimeout     = time.Minute      // leakcheck's wait for the kernel's asynchronous cleanup
	loadWindow        = 10 * time.Second // the quiet window of a step's CPU load
	prefix            = "esbdensity-"    // of the run's directory and containerd namespaces
)

// env is the run's world: a node namespace with HAProxy and its backend
// (benchnat's topology) on a node address, the agent's directory and
// containerd namespace, the profiler's own (so that the agent's sweep and
// CNI GC never take the profiler's workers for leftovers), and at most
// one running agent. Everything is removed when the benchmark ends, even
// when it fails; what a killed run left is removed when the next starts.
type env struct {
	agenttest.Dirs                // the agent's files, below Base
	prof           agenttest.Dirs // the profiler's libcni cache, pins and logs
	b              *testing.B
	stack          stacktest.Stack
	node           *nodetest.Node
	image          string
	agentBin       string
	pluginDir      string
	loadgen        string
	natRules       string
	maxWorkers     int
	shimGroup      int // esb-agent's -shim-group-size (ESB_DENSITY_SHIM_GROUP)
	ctrd, profCtrd *agenttest.Containerd
	// baseCtrd is the namespace of the baseline's `ctr run -d` containers.
	baseCtrd *agenttest.Containerd
	agent    *agenttest.Proc
}

// newEnv builds the world for up to maxLive held workers.
func newEnv(b *testing.B, maxLive int) *env {
	b.Helper()
	s := stacktest.Require(b)
	nstest.RequirePrograms(b, "nsenter", "haproxy")
	lockRun(b)
	sweepStale(b, s)
	e := &env{b: b, stack: s, Dirs: agenttest.NewDirs(b, prefix), image: s.WorkerImage, maxWorkers: maxLive + 8}
	e.prof = e.ProfilerDirs()
	e.agentBin = agenttest.BuildAgent(b, filepath.Join(e.Base, "bin"))
	e.pluginDir = nstest.PluginDir(b)
	e.loadgen = benchnat.BuildLoadgen(b)
	e.node = nodetest.New(b, "density")
	if err := nodetest.LoUp(e.node.NS, benchnat.NodeAddr); err != nil {
		b.Fatalf("set up lo with %s in the node: %v", benchnat.NodeAddr, err)
	}
	e.WriteConflist(b)
	benchnat.ServeBackend(b, e.node.NS)
	e.node.StartHAProxy(benchnat.HAProxyConfig, benchnat.Frontend, benchnat.Direct)
	// Egress open, so that a worker may reach the proxy directly too.
	e.natRules = filepath.Join(e.Base, "nat.yaml")
	rules := fmt.Sprintf("egress: %s\nforwards:\n  - {proto: tcp, port: %d, to: %q}\n", conf.EgressOpen, benchnat.FwdPort, benchnat.Frontend)
	if err := os.WriteFile(e.natRules, []byte(rules), 0o644); err != nil {
		b.Fatal(err)
	}
	ns := filepath.Base(e.Base)
	e.ctrd = agenttest.NewContainerd(b, s, ns)
	e.profCtrd = agenttest.NewContainerd(b, s, ns+"-prof")
	e.baseCtrd = agenttest.NewContainerd(b, s, ns+"-ctr")
	b.Cleanup(e.teardown)
	for _, c := range []*agenttest.Containerd{e.ctrd, e.profCtrd, e.baseCtrd} {
		c.Pull(b, e.image)
	}
	return e
}

// lockRun holds a lock for the run's length: with it held, whatever an
// earlier run left (prefix) is stale.
func lockRun(b *testing.B) {
	b.Helper()
	path := filepath.Join(os.TempDir(), "esbdensity.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		b.Fatalf("another density run holds %s: %v", path, err)
	}
	b.Cleanup(func() { _ = f.Close() })
}

// sweepStale removes what a killed run left: the processes of its node
// namespace (its esb-agent, found by its binary, and HAProxy) and the
// namespace's pin, the containers, images and cgroups of its containerd
// namespaces, its pins and its directories.
func sweepStale(b *testing.B, s stacktest.Stack) {
	b.Helper()
	self, _ := os.Readlink("/proc/self/ns/net")
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(exe, filepath.Join(os.TempDir(), prefix)) || !strings.Contains(exe, "/bin/esb-agent") {
			continue
		}
		node, err := os.Readlink(filepath.Join(filepath.Dir(p), "ns", "net"))
		if err != nil || node == self { // the agent runs in a node, never in the host's namespace
			continue
		}
		b.Logf("removing the node namespace %s of a killed run (its esb-agent %s)", node, exe)
		if err := removeNode(node); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanTimeout)
	defer cancel()
	out, err := s.Ctr(ctx, "", "namespaces", "list", "-q").Output()
	if err != nil {
		b.Fatalf("list containerd namespaces: %v", err)
	}
	for _, ns := range strings.Fields(string(out)) {
		if !strings.HasPrefix(ns, prefix) {
			continue
		}
		b.Logf("removing containerd namespace %s of a killed run", ns)
		if err := agenttest.NewContainerd(b, s, ns).Clean(ctx, ""); err != nil {
			b.Fatalf("clean %s: %v", ns, err)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	tmp, _ := filepath.Glob(filepath.Join(os.TempDir(), "BenchmarkDensity*")) // b.TempDir's
	for _, d := range append(dirs, tmp...) {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		b.Logf("removing %s of a killed run", d)
		if err := agenttest.RemoveDirs(d); err != nil {
			b.Fatal(err)
		}
	}
}

// removeNode kills every process in the network namespace node
// ("net:[inode]") and removes the namespace's pins under /run/netns.
func removeNode(node string) error {
	links, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	for _, l := range links {
		if t, err := os.Readlink(l); err == nil && t == node {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(l)))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	pins, _ := filepath.Glob("/run/netns/*")
	var errs []error
	for _, p := range pins {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || fmt.Sprintf("net:[%d]", st.Ino) != node {
			continue
		}
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// startAgent runs esb-agent in the node (nsenter --net only, so the
// namespaces it pins stay visible to containerd): containerd, pool off,
// the NAT rules, room for every held worker and a pair, and waits until
// it serves.
func (e *env) startAgent() *agenttest.Proc {
	e.b.Helper()
	if err := os.Remove(e.Socket()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.b.Fatal(err)
	}
	args := append([]string{"-containerd-address", e.stack.ContainerdSock, "-containerd-namespace", e.ctrd.NS,
		"-snapshotter", e.stack.Snapshotter}, e.Flags(e.pluginDir)...)
	args = append(args, "-metrics-listen", "", "-max-workers", strconv.Itoa(e.maxWorkers), "-nat-rules", e.natRules,
		"-shim-group-size", strconv.Itoa(e.shimGroup))
	if e.ctrd.RuncBinary != "" {
		args = append(args, "-runc-binary", e.ctrd.RuncBinary)
	}
	p, start, err := agenttest.Start(filepath.Join(e.Base, "agent.log"), e.node.NS.Path(), e.agentBin, args)
	if err != nil {
		e.b.Fatal(err)
	}
	e.agent = p
	if _, _, err := p.WaitReady(e.Socket(), start, agentStartTimeout); err != nil {
		e.b.Fatalf("%v\n%s", err, p.Log())
	}
	return p
}

// stopAgent stops the agent with SIGTERM (a graceful stop, exit 0) and
// returns its warnings and errors.
func (e *env) stopAgent() ([]string, error) {
	p := e.agent
	if p == nil {
		return nil, nil
	}
	e.agent = nil
	if _, err := p.Stop(syscall.SIGTERM, agentStopTimeout); err != nil {
		return nil, err
	}
	var issues []string
	for _, r := range p.Records(func(r map[string]any) bool { return r["level"] == "WARN" || r["level"] == "ERROR" }) {
		issues = append(issues, fmt.Sprintf("%v %v", r["level"], r["msg"]))
	}
	return issues, p.ExitErr(syscall.SIGTERM)
}

// newProfiler builds the in-process agents whose cold pairs time CNI ADD
// and DEL, on the node's network with their own containerd namespace,
// libcni cache and pins.
func (e *env) newProfiler() *agenttest.Profiler {
	e.b.Helper()
	return agenttest.NewProfiler(e.b, e.prof.ProfilerOptions(e.profCtrd, e.pluginDir, e.node.NS, e.image))
}

// leakNodes are the agent's and the profiler's worlds as leakcheck sees
// them: one node, two sets of containers, pins, libcni caches and shims
// (with shim-group, one shim that outlived its group's last worker once
// stayed after a run).
func (e *env) leakNodes() []leakcheck.Node {
	var out []leakcheck.Node
	for _, w := range []struct {
		d agenttest.Dirs
		c *agenttest.Containerd
	}{{e.Dirs, e.ctrd}, {e.prof, e.profCtrd}} {
		n := leakcheck.Node{NetNS: e.node.NS.Path(), IPAMDir: e.IPAMDir(), Network: conf.NetworkName,
			PinDir: w.d.NetnsDir(), CNICacheDir: w.d.CacheDir(), Containers: w.c.Containers, Snapshots: w.c.Snapshots, Cgroups: w.c.Cgroups,
			ShimNamespace: w.c.NS}
		if w.d == e.Dirs { // the agent's world; the profiler writes no /etc files
			n.EtcDir = w.d.EtcDir()
		}
		out = append(out, n)
	}
	return out
}

// leaks runs the leak check on both worlds with no live worker.
func (e *env) leaks() ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*settleTimeout)
	defer cancel()
	var traces []string
	var errs []error
	for _, n := range e.leakNodes() {
		rep, err := leakcheck.Wait(ctx, n, nil, settleTimeout)
		errs = append(errs, err)
		if !rep.Clean() {
			traces = append(traces, strings.Split(rep.String(), "\n")...)
		}
	}
	return traces, errors.Join(errs...)
}

// teardown stops the agent, then removes whatever is left in the three
// containerd namespaces (so a failed run leaves the machine clean too).
func (e *env) teardown() {
	b := e.b
	if e.agent != nil {
		logPath := e.agent.LogPath
		if _, err := e.stopAgent(); err != nil {
			b.Error(err)
		}
		if b.Failed() {
			if p, err := os.ReadFile(logPath); err == nil {
				lines := strings.Split(strings.TrimRight(string(p), "\n"), "\n")
				b.Logf("agent.log (tail):\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanTimeout)
	defer cancel()
	if err := errors.Join(e.ctrd.Clean(ctx, e.NetnsDir()), e.profCtrd.Clean(ctx, e.prof.NetnsDir()), e.baseCtrd.Clean(ctx, "")); err != nil {
		b.Errorf("clean up: %v", err)
	}
}
