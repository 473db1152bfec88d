package shim

import (
	"context"
	"errors"
	"time"
)

// WorkerCapabilities is the capability set of every worker's process
// (bounding, effective and permitted), in both runtimes: what a function
// that starts as root and drops to its own user needs, and nothing that
// reaches the network below the socket layer (no NET_RAW: no raw or
// packet sockets, so no forged frames; no NET_ADMIN), makes devices
// (MKNOD), changes file capabilities (SETFCAP, SETPCAP), chroots or
// writes the audit log. Workers also run with no-new-privileges and the
// runtime's default seccomp profile.
var WorkerCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SETGID", "CAP_SETUID",
}

// WorkerTmpfs is the writable /tmp a worker with a read-only root file
// system gets (AWS Lambda's functions may write only there); it counts
// against the worker's memory limit.
const (
	WorkerTmpfsPath    = "/tmp"
	WorkerTmpfsOptions = "nosuid,nodev,mode=1777,size=64m"
)

// WorkerHostname is the host name of worker id, in both runtimes.
func WorkerHostname(id string) string { return "esb-" + id[:min(len(id), 12)] }

// WorkerSpec is what a runtime needs to create a worker.
type WorkerSpec struct {
	// ID names the container (and its network namespace, esb-<ID>).
	ID    string
	Image string
	Env   map[string]string
	// Labels go on the container; they include the esb.* labels.
	Labels map[string]string
	// MemoryBytes and CPUMillis limit the worker; 0 means no limit.
	MemoryBytes int64
	CPUMillis   int64
	// NetNS is the pinned namespace to join, for runtimes whose
	// OwnsNetNS is false.
	NetNS string
	// LogPath receives the worker's stdout and stderr.
	LogPath string
	// ReadOnlyRootfs mounts the image's root file system read-only, with a
	// tmpfs on WorkerTmpfsPath.
	ReadOnlyRootfs bool
	// ResolvConf, when set, is a host file bind-mounted read-only on
	// /etc/resolv.conf (the agent's: nameserver <gateway>).
	ResolvConf string
	// Hosts, when set, is a host file bind-mounted read-only on
	// /etc/hosts (the agent's: the loopback names, conf.WorkerHosts, and
	// the worker's own, conf.WorkerHostsLine).
	Hosts string
	// HostnameFile, when set, is a host file bind-mounted read-only on
	// /etc/hostname (the agent's: WorkerHostname).
	HostnameFile string
	// ShimGroup, when set, names the shim process the worker shares with
	// the other workers of the group (containerd's runc v2 shim groups
	// containers by the OCI annotation io.containerd.runc.v2.group);
	// runtimes without shims ignore it.
	ShimGroup string
}

// EtcFile is a file of the worker's /etc the agent provides: Source, a
// host file, is bind-mounted read-only on Path.
type EtcFile struct{ Path, Source string }

// EtcFiles are the files of the worker's /etc the agent provides; the
// others are the image's own.
func (s WorkerSpec) EtcFiles() []EtcFile {
	var fs []EtcFile
	for _, f := range []EtcFile{{"/etc/resolv.conf", s.ResolvConf}, {"/etc/hosts", s.Hosts}, {"/etc/hostname", s.HostnameFile}} {
		if f.Source != "" {
			fs = append(fs, f)
		}
	}
	return fs
}

// WorkerInfo is what a runtime reports of a worker container.
type WorkerInfo struct {
	ID      string
	Labels  map[string]string
	Image   string
	State   State
	Created time.Time
	// NetNS is the worker's network namespace path when it has one.
	NetNS string
}

// State of a worker container.
type State int

// Container states.
const (
	StateUnknown State = iota
	StateCreated
	StateRunning
	StatePaused
	StateStopped
)

func (s State) String() string {
	return [...]string{"unknown", "created", "running", "paused", "stopped"}[s]
}

// Metrics of a running worker.
type Metrics struct {
	MemoryUsageBytes uint64
	MemoryLimitBytes uint64
	CPUUsageNanos    uint64
	OOMEvents        uint64
	Pids             uint64
}

// Runtime creates and runs worker containers. containerd and Docker
// implement it (shim/containerd, shim/docker), and shim/shimfake in memory
// for unit tests; the agent's lifecycle is the same for all and differs
// only in OwnsNetNS. shim/runtimetest.RuntimeSuite checks this contract
// against each of them.
//
// Every call that reaches a daemon which does not answer returns an error
// wrapping ErrUnavailable; a call about a worker that does not exist
// returns one wrapping ErrNotFound, but Stop and Delete, for which it is
// success.
type Runtime interface {
	// Name is "containerd" or "docker".
	Name() string
	// OwnsNetNS is false when the runtime joins a namespace the shim pinned
	// and attached before the worker starts (containerd), true when it makes
	// the namespace itself, returns it from Start, and the network is
	// attached after Start (Docker); the agent pins it then (NetNSes.Pin).
	OwnsNetNS() bool
	// EnsureImage pulls the image when it is not present.
	EnsureImage(ctx context.Context, ref string) error
	// Create makes the container (not started: List reports it created).
	// An ID in use is an error; an image the runtime's store lacks (never
	// pulled, or removed since) is ErrImageAbsent, which EnsureImage mends.
	Create(ctx context.Context, spec WorkerSpec) error
	// Start starts the worker's process and returns its network namespace.
	Start(ctx context.Context, id string) (netns string, err error)
	// Stop stops the process, killing it after grace. Stopping a stopped or
	// missing worker is not an error. Afterwards List reports the worker
	// stopped (or created, where the runtime deleted its task), without a
	// namespace when the runtime owns it.
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Delete removes the container; a missing one is not an error.
	Delete(ctx context.Context, id string) error
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Metrics(ctx context.Context, id string) (Metrics, error)
	// SetLabels updates labels of an existing container, where the runtime
	// allows it (containerd); runtimes that cannot return ErrImmutable.
	SetLabels(ctx context.Context, id string, labels map[string]string) error
	// List returns every container labelled esb.worker=1.
	List(ctx context.Context) ([]WorkerInfo, error)
	// WaitExit reports once, on the returned channel, how id's process
	// ended: its status, whether the runtime was told to end it first
	// (Exit.Stopped: dockerd kills its containers as it shuts down;
	// containerd leaves them running), and the last lines of its log; or
	// Exit.Err when the runtime stopped answering first. since is a time
	// before the process started: a runtime that reports ends as events
	// replays them from there, so a process that ended before the call is
	// reported at once. Nothing is sent once ctx ends.
	WaitExit(ctx context.Context, id string, since time.Time) <-chan Exit
	// Ping fails when the runtime's daemon does not answer.
	Ping(ctx context.Context) error
	// Events streams the exits and removals of this runtime's worker
	// containers until ctx ends (it may report other containers of the
	// runtime's scope too: callers ignore IDs they do not know). The event channel
	// closes when the stream ends; the error channel then holds why (nil
	// when ctx ended). Events lost while no stream runs are not replayed:
	// a caller that resubscribes catches up with List.
	Events(ctx context.Context) (<-chan Event, <-chan error)
}

// EventKind says what happened to a worker container.
type EventKind int

// Event kinds.
const (
	// EventExit: the worker's process ended (killed, crashed, or stopped).
	EventExit EventKind = iota + 1
	// EventDelete: the container is gone.
	EventDelete
)

func (k EventKind) String() string {
	switch k {
	case EventExit:
		return "exit"
	case EventDelete:
		return "delete"
	}
	return "unknown"
}

// Event is a change of a worker container the agent did not necessarily
// make itself (its own stops and removals are reported too).
type Event struct {
	ID   string // the worker ID
	Kind EventKind
}

// Errors runtimes return for callers to act on.
var (
	ErrNotFound    = errors.New("worker container not found")
	ErrUnavailable = errors.New("container runtime unavailable")
	ErrImmutable   = errors.New("this runtime cannot change a container's labels")
	ErrImageAbsent = errors.New("image not in the runtime's store")
)
