package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"google.golang.org/grpc/backoff"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

const (
	// invokePath is the worker's Lambda invoke endpoint (tests/images/worker).
	invokePath = "/2015-03-31/functions/function/invocations"
	gatewayIP  = "10.88.0.1"
	netName    = "esb"
	// metricsAddr is the agent's /metrics, on the node's loopback.
	metricsAddr = "127.0.0.1:9464"

	// Bounds of every wait.
	agentStartTimeout = 2 * time.Minute  // start to the socket answering (29.5 s seen at load 20-40)
	agentStopTimeout  = 30 * time.Second // signal to exit
	rpcTimeout        = 90 * time.Second // one API call (an acquire creates a container)
	cmdTimeout        = 60 * time.Second // one command (ctr, esbctl)
	invokeTimeout     = 30 * time.Second // one invoke that should answer (5.1 s seen at load 20-40)
	settleTimeout     = 10 * time.Second // the kernel's asynchronous cleanup
	// daemonStartTimeout bounds a test's own containerd or dockerd from
	// start to answering; the wait also ends when the process exits.
	// dockerd took 30-40 s at load average 30-40 once.
	daemonStartTimeout = 2 * time.Minute
	imageBuildTimeout  = 10 * time.Minute // go build and push of a test image
	pollInterval       = 50 * time.Millisecond
)

var esbSubnet = netip.MustParsePrefix("10.88.0.0/16")

// --- binaries --------------------------------------------------------------

var built nstest.Build

// binaries builds esb-agent and esbctl once per test binary; TestMain
// removes them.
func binaries(t testing.TB) (agentBin, esbctlBin string) {
	t.Helper()
	args := []string{"./agent/cmd/esb-agent", "./cmd/esbctl"}
	if os.Getenv("ESB_AGENT_RACE") != "" {
		// The agent under the race detector; with GORACE=log_path=…
		// its reports land in files the run can be checked for.
		args = append([]string{"-race"}, args...)
	}
	dir := built.Dir(t, "esbe2e-bin-", nil, args...)
	return filepath.Join(dir, "esb-agent"), filepath.Join(dir, "esbctl")
}

// --- the test's node ---------------------------------------------------------

// env is one test's world: a node namespace, a containerd namespace with
// the worker image, a directory with the agent's conflist, IPAM store,
// libcni cache, worker logs, netns pins and socket, and at most one running
// agent.
type env struct {
	agenttest.Dirs // every file of the test, below Base
	t              *testing.T
	rt             string         // stacktest.Containerd or stacktest.Docker
	dc             *client.Client // dockerd's client (stacktest.Docker)
	stack          stacktest.Stack
	node           ns.NetNS
	// nodeUse is held (read) by every switch into the node and taken
	// (write) before the node is closed: an HTTP dial can finish on its
	// own goroutine after its request gave up, and closing the node under
	// it was a data race.
	nodeUse    sync.RWMutex
	nodeClosed bool
	ctrNS      string // containerd namespace, or Docker esb.namespace label, of the test's workers
	image      string

	agent *agentProc // nil while no agent runs
	runs  int        // agents started so far (names their logs)
	seen  *idSet     // every worker ID an acquire returned (acquires run from many goroutines)
	// dockerImages are images the test made the shared dockerd pull
	// (keepDockerImage), removed after the containers.
	dockerImages []string
}

// idSet is a set of IDs safe for concurrent use.
type idSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id] = true
}

// list returns the IDs added so far.
func (s *idSet) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.ids))
	for id := range s.ids {
		out = append(out, id)
	}
	return out
}

// newEnv makes the test's node and containerd namespace and pre-pulls the
// worker image there (the agent, in the node, cannot reach the registry on
// the host's loopback). Everything is removed when the test ends, after a
// check that nothing of a worker is left.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvFor(t, stacktest.Containerd)
}

// newEnvFor is newEnv for the runtime rt. With Docker, dockerd (in the
// host's network namespace) pulls the image itself; nothing is pre-pulled
// and the shared image is left in place at the end.
func newEnvFor(t *testing.T, rt string) *env {
	t.Helper()
	s := stacktest.RequireRuntime(t, rt)
	var dc *client.Client
	if rt == stacktest.Docker {
		dc = dockerClient(t, s)
	}
	runDir := os.Getenv("ESB_RUN_DIR")
	if runDir == "" {
		runDir = stacktest.DefaultRunDir
	}
	if _, err := os.Stat(filepath.Join(runDir, "stack.env")); err != nil {
		nstest.Unavailable(t, "the stack's settings are missing (run scripts/stack.sh up): %v", err)
	}
	nstest.RequirePrograms(t, "nsenter")
	binaries(t)
	nstest.PluginDir(t)

	e := &env{t: t, rt: rt, dc: dc, stack: s, Dirs: agenttest.NewDirs(t, "esbe2e-"), ctrNS: "esbe2e-" + nstest.RandomHex(4), image: s.WorkerImage, seen: &idSet{ids: map[string]bool{}}}
	e.node = nstest.NewNS(t)
	t.Cleanup(func() { e.nodeUse.Lock(); e.nodeClosed = true; e.nodeUse.Unlock() }) // before the node's close
	if err := nodetest.LoUp(e.node); err != nil {
		t.Fatalf("set lo up in the node: %v", err)
	}
	e.WriteConflist(t)
	t.Cleanup(e.teardown)
	if rt == stacktest.Containerd {
		e.ctr("images", "pull", "--plain-http", "--snapshotter", s.Snapshotter, s.WorkerImage)
	}
	return e
}

// pinPath is where the agent pins the namespace of worker id.
func (e *env) pinPath(id string) string { return filepath.Join(e.NetnsDir(), e.Names().NetNSPrefix+id) }

// inNode runs fn on a thread in the node namespace.
func (e *env) inNode(fn func() error) error {
	e.nodeUse.RLock()
	defer e.nodeUse.RUnlock()
	if e.nodeClosed {
		return errors.New("the test's node is gone")
	}
	return e.node.Do(func(ns.NetNS) error { return fn() })
}

// handle returns a netlink handle bound to the node.
func (e *env) handle() (*netlink.Handle, error) {
	return netlink.NewHandleAt(vnetns.NsHandle(int(e.node.Fd())))
}

// --- commands ----------------------------------------------------------------

// ctrOut runs ctr in the test's containerd namespace.
func (e *env) ctrOut(args ...string) (string, error) {
	defer since("cmd (ctr)", cmdTimeout, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := e.stack.Ctr(ctx, e.ctrNS, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ctr runs ctr in the test's containerd namespace, failing the test when
// it fails.
func (e *env) ctr(args ...string) string {
	e.t.Helper()
	out, err := e.ctrOut(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// containers lists the IDs of the containers in the test's namespace.
func (e *env) containers() ([]string, error) {
	if e.rt == stacktest.Docker {
		return e.dockerWorkers()
	}
	out, err := e.ctrOut("containers", "list", "-q")
	if err != nil {
		return nil, err
	}
	ids := strings.Fields(out)
	slices.Sort(ids)
	return ids, nil
}

// taskStatus returns the STATUS column of ctr tasks list for id ("" when
// it has no task).
func (e *env) taskStatus(id string) string {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		return dockerStatus(e.dockerInspect(id))
	}
	sc := bufio.NewScanner(strings.NewReader(e.ctr("tasks", "list")))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// containerLabels returns the labels of container id.
func (e *env) containerLabels(id string) map[string]string {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		return e.dockerLabels(id)
	}
	var info struct{ Labels map[string]string }
	if err := json.Unmarshal([]byte(e.ctr("containers", "info", id)), &info); err != nil {
		e.t.Fatalf("decode ctr containers info %s: %v", id, err)
	}
	return info.Labels
}

// removeContainer kills and deletes a worker container behind the agent's
// back, as an operator's ctr would.
func (e *env) removeContainer(id string) {
	e.t.Helper()
	if err := removeContainer(e, id); err != nil {
		e.t.Fatal(err)
	}
}

func removeContainer(e *env, id string) error {
	if e.rt == stacktest.Docker {
		return e.removeDockerWorker(id)
	}
	var errs []error
	if out, err := e.ctrOut("tasks", "kill", "--signal", "SIGKILL", id); err != nil && !strings.Contains(out, "not found") {
		errs = append(errs, err)
	}
	start := time.Now()
	defer since("settle (task delete)", settleTimeout, start)
	deadline := start.Add(settleTimeout)
	for {
		out, err := e.ctrOut("tasks", "delete", "--force", id)
		if err == nil || strings.Contains(out, "not found") {
			break
		}
		if time.Now().After(deadline) {
			errs = append(errs, err)
			break
		}
		time.Sleep(pollInterval)
	}
	if out, err := e.ctrOut("containers", "delete", id); err != nil && !strings.Contains(out, "not found") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// --- the agent process -----------------------------------------------------

// agentProc is one run of esb-agent in the node.
type agentProc struct {
	*agenttest.Proc
	// ready is the time from the process start to the socket answering
	// health checks with SERVING: reconcile (adoption) included.
	ready time.Duration
}

// startAgent runs esb-agent in the node with the test's settings and
// extra flags, and waits until its socket answers. The agent is entered
// into the node's network namespace only (nsenter --net), so the
// namespaces it pins stay visible to containerd.
func (e *env) startAgent(extra ...string) *agentProc {
	e.t.Helper()
	if e.agent != nil {
		e.t.Fatal("an agent already runs")
	}
	agentBin, _ := binaries(e.t)
	e.runs++
	args := append(e.runtimeFlags(), e.Flags(nstest.PluginDir(e.t))...)
	args = append(args,
		"-metrics-listen", metricsAddr,
		"-log-level", "debug",
	)
	args = append(args, extra...)
	proc, start, err := agenttest.Start(filepath.Join(e.Base, fmt.Sprintf("agent-%d.log", e.runs)), e.node.Path(), agentBin, args)
	if err != nil {
		e.t.Fatal(err)
	}
	p := &agentProc{Proc: proc}
	e.agent = p

	// A short reconnect backoff, so the wait measures the agent and not
	// gRPC's default one-second backoff after the first refused dial.
	if err := p.Dial(e.Socket(), backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.2, MaxDelay: 100 * time.Millisecond}); err != nil {
		e.t.Fatalf("grpc client: %v", err)
	}
	health := healthpb.NewHealthClient(p.Conn)
	deadline := start.Add(agentStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: agentv1.AgentService_ServiceDesc.ServiceName})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			p.ready = time.Since(start)
			noteWait("agent start", agentStartTimeout, p.ready)
			return p
		}
		select {
		case <-p.Exited:
			e.t.Fatalf("esb-agent exited at start (%v):\n%s", p.WaitErr, p.log())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("esb-agent does not answer on %s within %s (last: %v):\n%s", e.Socket(), agentStartTimeout, err, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// log returns what the agent wrote so far.
func (p *agentProc) log() string { return p.Log() }

// stopAgent signals the agent and waits for it to exit. After SIGTERM the
// agent must exit 0 (a graceful stop that keeps the workers).
func (e *env) stopAgent(sig syscall.Signal) {
	e.t.Helper()
	if err := e.stopAgentErr(sig); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stopAgentErr(sig syscall.Signal) error {
	p := e.agent
	if p == nil {
		return nil
	}
	e.agent = nil
	took, err := p.Stop(sig, agentStopTimeout)
	if err != nil {
		return err
	}
	noteWait("agent stop", agentStopTimeout, took)
	return p.ExitErr(sig)
}
