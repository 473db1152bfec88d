// Package agenttest builds the world of esbnet's daemon tier around one
// esb-agent: the directory of a test or a benchmark run (the agent's
// conflist, IPAM store, libcni cache, worker logs, netns pins, socket and
// state file), the agent process run in the test's node namespace with
// its API calls and its memory, the run's containerd namespace, and the
// profiler: in-process agents built from esb-agent's parts whose phases
// (CNI ADD, DEL, container create, ...) are timed. The suites keep their
// own runtime flags.
package agenttest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// Dirs is the directory of one agent world: every file of a test or run
// lives below Base.
type Dirs struct {
	Base string
	// Network, when set, is the world's stack other than esb: its agent
	// gets -network and its conflist is that stack's on Subnet.
	Network string
	Subnet  netip.Prefix
	// Conf, when set, is the CNI configuration directory instead of
	// Base/conf: stacks of one node share it, as on a host.
	Conf string
}

// NewDirs makes the directory of an agent world, named pattern* in the
// system's temporary directory (the netns pins must not be on a file
// system a test's t.TempDir could be), and removes it with RemoveDirs
// when the test ends. Call it before the world's other cleanups are
// registered: cleanups run last-registered first, so the directory goes
// after the node, the workers and the runtime's scope.
func NewDirs(tb testing.TB, pattern string) Dirs {
	tb.Helper()
	base, err := os.MkdirTemp("", pattern)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := RemoveDirs(base); err != nil {
			tb.Error(err)
		}
	})
	return Dirs{Base: base}
}

// RemoveDirs removes the directory of an agent world: it unpins what the
// agent and its profiler pinned below base, unmounts their pin directories
// (an agent bind-mounts its own on itself) and removes base. A missing
// base is nothing to do.
func RemoveDirs(base string) error {
	d := Dirs{Base: base}
	var errs []error
	for _, pins := range []string{d.NetnsDir(), d.ProfilerDirs().NetnsDir()} {
		errs = append(errs, Unpin(pins))
		if err := stacktest.UnmountAll(pins); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", pins, err))
		}
	}
	if err := os.RemoveAll(base); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ProfilerDirs are the libcni cache, pins and worker logs of a profiler
// beside d's agent, below Base/prof, on d's conflist: one IPAM store and
// bridge with the agent, as a second agent of the node would share.
func (d Dirs) ProfilerDirs() Dirs {
	return Dirs{Base: filepath.Join(d.Base, "prof"), Network: d.Network, Subnet: d.Subnet, Conf: d.ConfDir()}
}

// Socket is the agent's unix socket.
func (d Dirs) Socket() string { return filepath.Join(d.Base, "agent.sock") }

// ConfDir holds the world's conflist.
func (d Dirs) ConfDir() string {
	if d.Conf != "" {
		return d.Conf
	}
	return filepath.Join(d.Base, "conf")
}

// IPAMDir holds esb-ipam's store.
func (d Dirs) IPAMDir() string { return filepath.Join(d.Base, "ipam") }

// CacheDir is libcni's result cache.
func (d Dirs) CacheDir() string { return filepath.Join(d.Base, "cache") }

// LogDir receives the workers' log files.
func (d Dirs) LogDir() string { return filepath.Join(d.Base, "logs") }

// NetnsDir is where the agent pins worker namespaces.
func (d Dirs) NetnsDir() string { return filepath.Join(d.Base, "netns") }

// StateFile is the agent's records of its workers.
func (d Dirs) StateFile() string { return filepath.Join(d.Base, "state.db") }

// EtcDir holds the agent's per-worker /etc files, beside its state file.
func (d Dirs) EtcDir() string { return filepath.Join(d.Base, "etc") }

// WriteConflist writes the esb network of the world into ConfDir:
// conf.DefaultConflist with esb-ipam's store in IPAMDir.
func (d Dirs) WriteConflist(tb testing.TB) {
	tb.Helper()
	if d.Network != "" {
		nodetest.WriteStackConflist(tb, d.ConfDir(), d.Network, d.Subnet, conf.CNIVersion, d.IPAMDir())
		return
	}
	nodetest.WriteConflist(tb, d.ConfDir(), conf.CNIVersion, d.IPAMDir(), "")
}

// Names is the names of the world's stack (the default network's when
// Network is not set).
func (d Dirs) Names() conf.Stack {
	if d.Network == "" {
		return conf.DefaultStack()
	}
	s, err := conf.StackOf(d.Network)
	if err != nil {
		panic(err) // a test's own constant
	}
	return s
}

// Flags are the agent's flags that put its files in the world, with the
// CNI plugins from pluginDir.
func (d Dirs) Flags(pluginDir string) []string {
	var network []string
	if d.Network != "" {
		network = []string{"-network", d.Network}
	}
	return append(network,
		"-socket", d.Socket(),
		"-cni-conf-dir", d.ConfDir(),
		"-cni-bin-dirs", pluginDir,
		"-cni-cache-dir", d.CacheDir(),
		"-netns-dir", d.NetnsDir(),
		"-log-dir", d.LogDir(),
		"-state-file", d.StateFile(),
	)
}

// Proc is one run of esb-agent in a node namespace. nsenter execs the
// agent, so the process is the agent itself.
type Proc struct {
	Cmd     *exec.Cmd
	LogPath string
	LogFile *os.File
	Exited  chan struct{} // closed when the process is gone; WaitErr is then its status
	WaitErr error
	Conn    *grpc.ClientConn
	API     agentv1.AgentServiceClient
}

// Start runs bin with args in the network namespace at node (nsenter
// --net only, so the namespaces the agent pins stay visible to the
// runtime), its output to logPath, and returns at once with the time it
// started the process.
func Start(logPath, node, bin string, args []string) (*Proc, time.Time, error) {
	p := &Proc{LogPath: logPath, Exited: make(chan struct{})}
	f, err := os.Create(logPath)
	if err != nil {
		return nil, time.Time{}, err
	}
	p.LogFile = f
	p.Cmd = exec.Command("nsenter", append([]string{"--net=" + node, bin}, args...)...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	start := time.Now()
	if err := p.Cmd.Start(); err != nil {
		_ = f.Close()
		return nil, start, fmt.Errorf("start esb-agent: %w", err)
	}
	go func() { p.WaitErr = p.Cmd.Wait(); close(p.Exited) }()
	return p, start, nil
}

// Dial makes the API client on socket, reconnecting after b, so that a
// wait for the agent measures the agent and not gRPC's default backoff.
func (p *Proc) Dial(socket string, b backoff.Config) error {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: time.Second, Backoff: b}))
	if err != nil {
		return err
	}
	p.Conn, p.API = conn, agentv1.NewAgentServiceClient(conn)
	return nil
}

// Log returns what the agent wrote so far.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// Records returns the agent's JSON log records that keep accepts.
func (p *Proc) Records(keep func(map[string]any) bool) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.Log(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// LogRecords returns the agent's JSON log records whose msg is msg.
func (p *Proc) LogRecords(msg string) []map[string]any {
	return p.Records(func(r map[string]any) bool { return r["msg"] == msg })
}

// Stop signals the agent and waits up to limit for it to exit, killing it
// after that (an error); it closes the client and the log file and
// returns how long the exit took.
func (p *Proc) Stop(sig syscall.Signal, limit time.Duration) (time.Duration, error) {
	defer func() { _ = p.Conn.Close(); _ = p.LogFile.Close() }()
	stopped := time.Now()
	if err := p.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return 0, fmt.Errorf("signal esb-agent: %w", err)
	}
	select {
	case <-p.Exited:
		return time.Since(stopped), nil
	case <-time.After(limit):
		_ = p.Cmd.Process.Kill()
		<-p.Exited
		return 0, fmt.Errorf("esb-agent did not exit within %s of %v:\n%s", limit, sig, p.Log())
	}
}

// ExitErr is the error of an agent that did not exit 0 after SIGTERM (a
// graceful stop that keeps the workers); nil after any other signal.
func (p *Proc) ExitErr(sig syscall.Signal) error {
	if sig == syscall.SIGTERM && p.WaitErr != nil {
		return fmt.Errorf("esb-agent exited with %w after SIGTERM, want 0:\n%s", p.WaitErr, p.Log())
	}
	return nil
}
