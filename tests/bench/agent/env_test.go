package benchagent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	dockerclient "github.com/docker/docker/client"

	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

const (
	netName    = "esb"
	workerPort = 8080 // the agent's default port, and the worker's without PORT

	// Bounds of every wait.
	agentStartTimeout = time.Minute      // start to the first ListWorkers answer
	agentStopTimeout  = time.Minute      // signal to exit
	cmdTimeout        = time.Minute      // one ctr command
	readyTimeout      = 10 * time.Second // a ctr-run worker's port accepting TCP
	settleTimeout     = 10 * time.Second // the kernel's asynchronous cleanup
)

// env is the run's world: a node namespace, a containerd namespace with
// the worker image, a directory with the agent's conflist, IPAM store,
// libcni cache, worker logs, netns pins and socket, and at most one
// running agent. Everything is removed when the benchmark ends, even when
// it fails.
type env struct {
	agenttest.Dirs // every file of the run, below Base
	b              *testing.B
	rt             string // stacktest.Containerd or stacktest.Docker: the agent's runtime, and the baseline's CLI
	stack          stacktest.Stack
	node           ns.NetNS
	ctrNS          string
	image          string
	agentBin       string
	pluginDir      string
	ctrd           *agenttest.Containerd // the run's own containerd client, in ctrNS (stacktest.Containerd)
	// profCtrd and prof are the cold and warm profiler's own containerd
	// namespace and directories (stacktest.Containerd): the agent's sweep
	// and CNI GC never take the profiler's workers for leftovers.
	profCtrd *agenttest.Containerd
	prof     agenttest.Dirs
	dc       *dockerclient.Client // dockerd's client (stacktest.Docker); ctrNS is then the esb.namespace label
	agent    *agentProc
	runs     int
	// logIssues counts the warnings and errors of the stopped agents'
	// logs, by message.
	logIssues map[string]int
}

func newEnv(b *testing.B) *env {
	b.Helper()
	return newEnvFor(b, stacktest.Containerd)
}

// newEnvFor is newEnv for runtime rt. With Docker the image is pulled by
// dockerd (in the host's namespace) and left there, as it is shared.
func newEnvFor(b *testing.B, rt string) *env {
	b.Helper()
	s := stacktest.RequireRuntime(b, rt)
	nstest.RequirePrograms(b, "nsenter")
	e := &env{b: b, rt: rt, stack: s, Dirs: agenttest.NewDirs(b, "esbbenchagent-"), ctrNS: "esbbenchagent-" + nstest.RandomHex(4), image: s.WorkerImage, logIssues: map[string]int{}}
	e.prof = e.ProfilerDirs()
	e.agentBin = agenttest.BuildAgent(b, filepath.Join(e.Base, "bin"))
	e.pluginDir = nstest.PluginDir(b)
	e.node = nstest.NewNS(b)
	if err := nodetest.LoUp(e.node); err != nil {
		b.Fatalf("set lo up in the node: %v", err)
	}
	e.WriteConflist(b)
	if rt == stacktest.Docker {
		dc, err := dockerclient.NewClientWithOpts(dockerclient.WithHost(s.DockerHost()), dockerclient.WithAPIVersionNegotiation())
		if err != nil {
			b.Fatal(err)
		}
		e.dc = dc
		b.Cleanup(func() { _ = e.dc.Close() })
		b.Cleanup(e.teardown)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if out, err := e.docker(ctx, "pull", "-q", e.image).CombinedOutput(); err != nil {
			b.Fatalf("docker pull %s: %v\n%s", e.image, err, out)
		}
		return e
	}
	e.ctrd = agenttest.NewContainerd(b, s, e.ctrNS)
	e.profCtrd = agenttest.NewContainerd(b, s, e.ctrNS+"-prof")
	b.Cleanup(e.teardown)
	e.ctrd.Pull(b, e.image)
	e.profCtrd.Pull(b, e.image)
	return e
}

// newProfiler builds the in-process agents that reconcile the agent's
// workers, on the run's containerd namespace, conflist, libcni cache and
// pins (the agent process idles meanwhile); their worker logs go apart.
func (e *env) newProfiler() *agenttest.Profiler {
	e.b.Helper()
	o := e.ProfilerOptions(e.ctrd, e.pluginDir, e.node, e.image)
	o.LogDir = filepath.Join(e.Base, "logs-profile")
	return agenttest.NewProfiler(e.b, o)
}

// newOwnProfiler builds the in-process agents that take cold and warm
// acquires apart beside the running agent, in their own containerd
// namespace, libcni cache and pins, on the run's conflist.
func (e *env) newOwnProfiler() *agenttest.Profiler {
	e.b.Helper()
	return agenttest.NewProfiler(e.b, e.prof.ProfilerOptions(e.profCtrd, e.pluginDir, e.node, e.image))
}

// --- the agent process ---------------------------------------------------

// agentProc is one run of esb-agent in the node. nsenter execs the agent,
// so the process is the agent itself.
type agentProc struct {
	*agenttest.Proc
	started time.Time
	// ready is the time from the process start to the first answer of
	// ListWorkers (reconcile, and so adoption, included); first is how
	// many workers that answer listed.
	ready time.Duration
	first int
}

// startAgent runs esb-agent in the node (nsenter --net only, so the
// namespaces it pins stay visible to containerd) with the run's settings
// and extra flags, and waits until it serves (agenttest's WaitReady).
func (e *env) startAgent(extra ...string) *agentProc {
	e.b.Helper()
	if e.agent != nil {
		e.b.Fatal("an agent already runs")
	}
	if err := os.Remove(e.Socket()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		e.b.Fatal(err)
	}
	e.runs++
	var args []string
	if e.rt == stacktest.Docker {
		args = append(args, "-runtime", "docker", "-docker-host", e.stack.DockerHost(), "-docker-namespace", e.ctrNS)
	} else {
		args = append(args, "-containerd-address", e.stack.ContainerdSock,
			"-containerd-namespace", e.ctrNS, "-snapshotter", e.stack.Snapshotter)
	}
	args = append(args, e.Flags(e.pluginDir)...)
	args = append(args,
		"-metrics-listen", "",
		"-max-workers", "1000",
	)
	args = append(args, extra...)
	proc, start, err := agenttest.Start(filepath.Join(e.Base, fmt.Sprintf("agent-%d.log", e.runs)), e.node.Path(), e.agentBin, args)
	if err != nil {
		e.b.Fatal(err)
	}
	p := &agentProc{Proc: proc, started: start}
	e.agent = p

	if p.ready, p.first, err = proc.WaitReady(e.Socket(), start, agentStartTimeout); err != nil {
		e.b.Fatalf("%v\n%s", err, p.log())
	}
	return p
}

func (p *agentProc) log() string { return p.Log() }

// logRecordsAt returns the agent's JSON log records of level.
func (p *agentProc) logRecordsAt(level string) []map[string]any {
	return p.Records(func(r map[string]any) bool { return r["level"] == level })
}

// tookOf reads the "took" attribute of a log record (slog writes a
// duration as nanoseconds).
func tookOf(r map[string]any) (time.Duration, bool) {
	v, ok := r["took"].(float64)
	return time.Duration(v), ok
}

// stopAgent signals the agent and waits for it to exit; after SIGTERM it
// must exit 0 (a graceful stop that keeps the workers).
func (e *env) stopAgent(sig syscall.Signal) error {
	p := e.agent
	if p == nil {
		return nil
	}
	e.agent = nil
	if _, err := p.Stop(sig, agentStopTimeout); err != nil {
		return err
	}
	for _, level := range []string{"WARN", "ERROR"} {
		for _, r := range p.logRecordsAt(level) {
			e.logIssues[fmt.Sprintf("%s %v", level, r["msg"])]++
		}
	}
	return p.ExitErr(sig)
}

// --- ctr, containerd's own CLI --------------------------------------------------

// ctrRun runs `ctr run -d IMAGE ID` in the run's namespace and times it
// (agenttest.Containerd.RunDetached): run to the command's return, which
// comes when the task has started; ready from the same start to the
// worker's port accepting TCP, polled as the agent polls its workers.
func (e *env) ctrRun(id string) (run, ready time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	return e.ctrd.RunDetached(ctx, e.image, id, workerPort, readyTimeout)
}

// baselineRun runs the runtime's own CLI on the same image: ctr run -d,
// or docker run -d --network none (see dockerRun).
func (e *env) baselineRun(id string) (run, ready time.Duration, err error) {
	if e.rt == stacktest.Docker {
		return e.dockerRun(id)
	}
	return e.ctrRun(id)
}

// baselineName names the baseline's command in the tables.
func (e *env) baselineName() string {
	if e.rt == stacktest.Docker {
		return "docker run -d --network none"
	}
	return "ctr run -d"
}

// docker returns a docker CLI command against the stack's dockerd.
func (e *env) docker(ctx context.Context, args ...string) *exec.Cmd {
	return e.stack.Docker(ctx, args...)
}

// dockerRun runs `docker run -d --network none IMAGE` named id (labelled
// with the run's esb.namespace, so cleanup finds it) and times the command
// to its return, which comes when the container has started; ready is the
// time from the same start to the worker's port accepting TCP on the
// container's loopback.
func (e *env) dockerRun(id string) (run, ready time.Duration, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	start := time.Now()
	out, err := e.docker(ctx, "run", "-d", "--network", "none", "--label", dockerNamespaceLabel+"="+e.ctrNS, "--name", id, e.image).CombinedOutput()
	run = time.Since(start)
	if err != nil {
		return run, 0, fmt.Errorf("docker run -d %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	info, err := e.dc.ContainerInspect(ctx, id)
	if err != nil {
		return run, 0, fmt.Errorf("inspect %s: %w", id, err)
	}
	if info.State == nil || info.State.Pid == 0 {
		return run, 0, fmt.Errorf("docker-run container %s has no process", id)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(workerPort))
	if err := agenttest.WaitTCP(ctx, fmt.Sprintf("/proc/%d/ns/net", info.State.Pid), addr, readyTimeout); err != nil {
		return run, 0, fmt.Errorf("docker-run container %s: %w", id, err)
	}
	return run, time.Since(start), nil
}

// dockerNamespaceLabel is shim/docker's LabelNamespace.
const dockerNamespaceLabel = "esb.namespace"

// removeContainer removes a container as agenttest.Containerd.Remove (or,
// with Docker, docker rm -f) would. A missing container is not an error.
func (e *env) removeContainer(ctx context.Context, id string) error {
	if e.rt == stacktest.Docker {
		return e.removeDockerContainer(ctx, id)
	}
	return e.ctrd.Remove(ctx, id)
}

// removeDockerContainer removes, as docker rm -f would, the container
// named id, or the agent's worker id (named esb-<id>).
func (e *env) removeDockerContainer(ctx context.Context, id string) error {
	for _, name := range []string{id, "esb-" + id} {
		err := e.dc.ContainerRemove(ctx, name, container.RemoveOptions{Force: true})
		if err == nil {
			return nil
		}
		if !errdefs.IsNotFound(err) {
			return fmt.Errorf("docker rm -f %s: %w", name, err)
		}
	}
	return nil
}

// containers lists the IDs of every container in the run's namespace
// (with Docker: the names of the containers labelled with it).
func (e *env) containers(ctx context.Context) ([]string, error) {
	if e.rt == stacktest.Docker {
		cs, err := e.dc.ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", dockerNamespaceLabel+"="+e.ctrNS))})
		if err != nil {
			return nil, fmt.Errorf("docker ps: %w", err)
		}
		var names []string
		for _, c := range cs {
			if len(c.Names) > 0 {
				names = append(names, strings.TrimPrefix(c.Names[0], "/"))
			}
		}
		slices.Sort(names)
		return names, nil
	}
	return e.ctrd.Containers(ctx)
}

// --- what workers leave ----------------------------------------------------------

// traces lists what of any worker is on the node: containers in the
// run's namespace, netns pins, esb veths in the node, addresses in the
// IPAM store and results in libcni's cache.
func (e *env) traces() []string {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var out []string
	ids, err := e.containers(ctx)
	if err != nil {
		out = append(out, err.Error())
	}
	for _, id := range ids {
		out = append(out, "container "+id)
	}
	pins, _ := filepath.Glob(filepath.Join(e.NetnsDir(), "esb-*"))
	for _, p := range pins {
		out = append(out, "netns pin "+p)
	}
	veths, err := agenttest.Veths(e.node, "")
	if err != nil {
		out = append(out, err.Error())
	}
	for _, name := range slices.Sorted(maps.Keys(veths)) {
		out = append(out, fmt.Sprintf("veth %s (%s)", name, veths[name]))
	}
	allocs, err := e.Allocations(netName)
	if err != nil {
		out = append(out, err.Error())
	}
	for _, id := range slices.Sorted(maps.Keys(allocs)) {
		out = append(out, "address "+allocs[id]+" of "+id)
	}
	results, _ := filepath.Glob(filepath.Join(e.CacheDir(), "results", "*"))
	for _, r := range results {
		out = append(out, "libcni cache entry "+filepath.Base(r))
	}
	etcs, _ := filepath.Glob(filepath.Join(e.EtcDir(), "*"))
	for _, p := range etcs {
		out = append(out, "/etc files "+filepath.Base(p))
	}
	slices.Sort(out)
	return out
}

// noTraces waits (bounded: the kernel removes the veths of a dead
// namespace asynchronously) until traces reports nothing, and else
// returns what is left.
func (e *env) noTraces() []string {
	deadline := time.Now().Add(settleTimeout)
	for {
		left := e.traces()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// --- teardown ----------------------------------------------------------------------

// teardown stops the agent, then removes whatever is left (so a failed
// run leaves the machine clean too), the image and the containerd
// namespace.
func (e *env) teardown() {
	b := e.b
	if e.agent != nil {
		logPath := e.agent.LogPath
		if err := e.stopAgent(syscall.SIGTERM); err != nil {
			b.Error(err)
		}
		if b.Failed() {
			if p, err := os.ReadFile(logPath); err == nil {
				b.Logf("%s (tail):\n%s", filepath.Base(logPath), tail(string(p), 40))
			}
		}
	}
	if err := e.forceClean(); err != nil {
		b.Errorf("clean up: %v", err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// forceClean removes every container (8 at a time), pin and image of the
// run, its containerd namespace, and runc's cgroups of that namespace
// (agenttest.Containerd.Clean); with Docker, the run's containers and
// the agent's pins.
func (e *env) forceClean() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if e.rt != stacktest.Docker {
		return errors.Join(e.ctrd.Clean(ctx, e.NetnsDir()), e.profCtrd.Clean(ctx, e.prof.NetnsDir()))
	}
	ids, err := e.containers(ctx)
	return errors.Join(err, agenttest.ForEach(ctx, ids, e.removeContainer), agenttest.Unpin(e.NetnsDir())) // the image is dockerd's, shared
}
