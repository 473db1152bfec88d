package e2e

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

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
	// cutsCreations marks a test that cuts creations off (the agent or
	// containerd killed mid-create): containerd 1.6 then leaves the
	// creation's shim running with no task, so its leak checks skip
	// shims and the teardown kills them (killStrayShims). Checked
	// without the mark: TestFaultRuntimeStopped/containerd left six
	// shims, TestFaultAgentKilledDuringAcquires/containerd one in one
	// run of four (its bundle deleted); a client's deadline alone never
	// left one.
	cutsCreations bool
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

// nodeCmd runs a command in the node's network namespace (nsenter --net)
// within cmdTimeout, with stdin when not nil, and returns its combined
// output; the error names the command and holds its output.
func (e *env) nodeCmd(stdin []byte, args ...string) (string, error) {
	return netnsCmd(e.node.Path(), stdin, args...)
}

// netnsCmd is nodeCmd for the network namespace at path.
func netnsCmd(path string, stdin []byte, args ...string) (string, error) {
	return nodetest.Run(cmdTimeout, stdin, "nsenter", append([]string{"--net=" + path}, args...)...)
}

// handle returns a netlink handle bound to the node.
func (e *env) handle() (*netlink.Handle, error) {
	return netlink.NewHandleAt(vnetns.NsHandle(int(e.node.Fd())))
}
