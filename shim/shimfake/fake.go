// Package shimfake is an in-memory shim.Runtime for unit tests that need
// no root and no daemon. It keeps the contract of shim.Runtime as the
// containerd and Docker adapters do (shim/runtimetest proves it against
// the same suite), records the calls made to it, and lets a test play
// what a daemon does behind the agent's back: a killed worker, a stray
// container, a broken event stream, a daemon that is down.
package shimfake

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Options of a fake runtime.
type Options struct {
	// OwnsNetNS: the runtime makes the worker's namespace at Start
	// (Docker's way) instead of joining spec.NetNS (containerd's).
	OwnsNetNS bool
	// ImmutableLabels: SetLabels answers shim.ErrImmutable (Docker).
	ImmutableLabels bool
	// ManualEvents: the stream carries only what Emit sends, not the exits
	// and removals the fake's own Stop, Delete and Kill make, for tests
	// that drive the event stream by hand.
	ManualEvents bool
}

// Runtime is the fake. The zero value is not usable: call New.
type Runtime struct {
	mu         sync.Mutex
	opts       Options
	down       bool
	containers map[string]*shim.WorkerInfo
	specs      map[string]shim.WorkerSpec // as created
	calls      []string
	failCreate error
	cutCreate  bool             // a failing Create leaves a snapshot behind
	cutDown    bool             // and the runtime is down after it
	snapshots  map[string]bool  // snapshots of creations cut off half-way
	leftovers  map[string]int   // Deletes that fail on a leftover cgroup
	imageErrs  map[string]error // what EnsureImage of a ref answers
	removed    map[string]bool  // images RemoveImage took out of the store
	failPull   error
	digest     string          // what PullImage resolves to
	noLocal    bool            // HasImage answers false
	pulls      int             // PullImage calls
	pullGate   chan struct{}   // when set, PullImage answers once it is closed
	listed     chan struct{}   // with listGate: List closes it once it has read the containers
	listGate   chan struct{}   // when set, List answers once it is closed
	hand       chan shim.Event // Emit's hand-over to a subscriber
	streams    map[*stream]struct{}
	subs       int         // subscriptions so far
	exit       *shim.Exit  // what WaitExit reports at once (SetExit)
	failStart  error       // what Start answers after the process ended (FailStart)
	waitEnded  chan string // IDs of the WaitExit watches that ended
}

var (
	_ shim.Runtime = (*Runtime)(nil)
	_ shim.Puller  = (*Runtime)(nil)
)

// New returns an empty fake runtime.
func New(o Options) *Runtime {
	return &Runtime{opts: o, containers: map[string]*shim.WorkerInfo{}, specs: map[string]shim.WorkerSpec{},
		leftovers: map[string]int{}, snapshots: map[string]bool{}, imageErrs: map[string]error{}, removed: map[string]bool{}, hand: make(chan shim.Event), streams: map[*stream]struct{}{},
		waitEnded: make(chan string, 64)}
}

func (f *Runtime) record(c string) { f.calls = append(f.calls, c) }

// Note records a call made elsewhere (the network, say), so that Calls
// shows the order of both.
func (f *Runtime) Note(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(c)
}

// Calls returns the calls so far: "pull <ref>", "resolve <ref>",
// "create <id>", "create-task <id>", "start <id>", "stop <id>", "delete <id>" and what Note
// recorded.
func (f *Runtime) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// SetOwnsNetNS switches between Docker's and containerd's namespace
// handling; set it before the runtime is used.
func (f *Runtime) SetOwnsNetNS(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opts.OwnsNetNS = v
}

// SetImmutableLabels makes SetLabels answer shim.ErrImmutable (or not).
func (f *Runtime) SetImmutableLabels(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opts.ImmutableLabels = v
}

// SetDown makes every call that reaches the daemon answer
// shim.ErrUnavailable, as a stopped daemon does (or ends that).
func (f *Runtime) SetDown(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = v
}

// FailStart makes Start answer err with the process already ended, as
// dockerd's inspect finds no namespace for a worker that exited at once
// (nil: succeed again).
func (f *Runtime) FailStart(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failStart = err
}

// FailCreate makes Create answer err (nil: succeed again).
func (f *Runtime) FailCreate(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCreate = err
}

// CutCreate makes Create fail with err after it made the container's
// snapshot, as containerd's does when it stops between the two: the
// snapshot stays until a Delete of the ID removes it (nil: succeed again).
// With thenDown the runtime is down from that failure on (SetDown).
func (f *Runtime) CutCreate(err error, thenDown bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failCreate, f.cutCreate, f.cutDown = err, err != nil, thenDown
}

// Snapshots returns the IDs whose cut-off creation left a snapshot.
func (f *Runtime) Snapshots() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.snapshots))
}

// FailPull makes EnsureImage and PullImage answer err (nil: succeed).
func (f *Runtime) FailPull(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failPull = err
}

// SetImageError makes EnsureImage of ref answer err, for an image the
// registry lacks (shim.ErrImageNotFound) or a registry that does not
// answer (shim.ErrRegistryUnavailable).
func (f *Runtime) SetImageError(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.imageErrs[ref] = err
}

// RemoveImage takes ref out of the store, as `ctr image rm` or `docker
// rmi` would: Create of it fails with shim.ErrImageAbsent until
// EnsureImage brings it back.
func (f *Runtime) RemoveImage(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed[ref] = true
}

// SetDigest sets what PullImage resolves every ref to (a tag pushed anew).
func (f *Runtime) SetDigest(d string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.digest = d
}

// SetLocal says whether HasImage finds images locally (it does at first).
func (f *Runtime) SetLocal(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noLocal = !v
}

// Pulls counts the PullImage calls.
func (f *Runtime) Pulls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pulls
}

// SetLeftovers makes the next n Deletes of id fail on a leftover cgroup
// (EBUSY) after removing the container, as runc's cgroups can.
func (f *Runtime) SetLeftovers(id string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.leftovers[id] = n
}

// Leftovers returns how many failing Deletes of id are still to come.
func (f *Runtime) Leftovers(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leftovers[id]
}

// Put adds a container the runtime did not create through this client (a
// stray of an earlier agent, an operator's container).
func (f *Runtime) Put(w shim.WorkerInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w.Labels = maps.Clone(w.Labels)
	f.containers[w.ID] = &w
}

// Kill ends a worker's process behind the client's back, as docker kill
// or ctr task kill does; the stream reports its exit unless ManualEvents.
func (f *Runtime) Kill(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok && c.State != shim.StateStopped {
		c.State = shim.StateStopped
		f.report(shim.Event{ID: id, Kind: shim.EventExit})
	}
}

// Labels returns a copy of a container's labels (nil when it is missing).
func (f *Runtime) Labels(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		return maps.Clone(c.Labels)
	}
	return nil
}

// Spec returns the spec a container was created with.
func (f *Runtime) Spec(id string) (shim.WorkerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.specs[id]
	return s, ok
}

// IDs returns the IDs of the containers there are, sorted.
func (f *Runtime) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Sorted(maps.Keys(f.containers))
}

// Name implements shim.Runtime.
func (f *Runtime) Name() string { return "fake" }

// OwnsNetNS implements shim.Runtime.
func (f *Runtime) OwnsNetNS() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opts.OwnsNetNS
}

// EnsureImage implements shim.Runtime: every image is there but those
// given an error with SetImageError.
func (f *Runtime) EnsureImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("pull " + ref)
	if f.down {
		return fmt.Errorf("pull %s: %w", ref, shim.ErrUnavailable)
	}
	if err := f.imageErrs[ref]; err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if f.failPull == nil {
		delete(f.removed, ref)
	}
	return f.failPull
}

// GatePulls makes PullImage wait until gate is closed (nil: no wait), so
// a test can hold resolves in flight.
func (f *Runtime) GatePulls(gate chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pullGate = gate
}

// GateList makes the next List read the containers, close listed, and
// answer what it read once gate is closed: a test can change the
// containers while a listing is on its way.
func (f *Runtime) GateList(listed, gate chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listed, f.listGate = listed, gate
}

// PullImage implements shim.Puller.
func (f *Runtime) PullImage(_ context.Context, ref string) (string, error) {
	f.mu.Lock()
	f.record("resolve " + ref)
	f.pulls++
	gate := f.pullGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return "", fmt.Errorf("pull %s: %w", ref, shim.ErrUnavailable)
	}
	if f.failPull != nil {
		return "", f.failPull
	}
	return f.digest, nil
}

// HasImage implements shim.Puller.
func (f *Runtime) HasImage(context.Context, string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.noLocal
}

// Create implements shim.Runtime.
func (f *Runtime) Create(_ context.Context, s shim.WorkerSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create " + s.ID)
	switch {
	case f.down:
		return fmt.Errorf("create container %s: %w", s.ID, shim.ErrUnavailable)
	case f.failCreate != nil:
		if f.cutCreate {
			f.snapshots[s.ID] = true
			f.down = f.down || f.cutDown
		}
		return f.failCreate
	case f.containers[s.ID] != nil:
		return fmt.Errorf("create container %s: it exists", s.ID)
	case f.removed[s.Image] || f.imageErrs[s.Image] != nil:
		return fmt.Errorf("create container %s: image %s: %w", s.ID, s.Image, shim.ErrImageAbsent)
	}
	f.specs[s.ID] = s
	f.containers[s.ID] = &shim.WorkerInfo{ID: s.ID, Labels: maps.Clone(s.Labels), Image: s.Image, State: shim.StateCreated,
		Created: time.Now(), NetNS: s.NetNS}
	return nil
}

// lookup returns a container, or why not, under f.mu.
func (f *Runtime) lookup(verb, id string) (*shim.WorkerInfo, error) {
	if f.down {
		return nil, fmt.Errorf("%s %s: %w", verb, id, shim.ErrUnavailable)
	}
	c, ok := f.containers[id]
	if !ok {
		return nil, fmt.Errorf("%s %s: %w", verb, id, shim.ErrNotFound)
	}
	return c, nil
}

// CreateTask implements shim.TaskCreator: it checks the container is
// there to run; Start then runs it.
func (f *Runtime) CreateTask(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create-task " + id)
	if f.down {
		return fmt.Errorf("create task of %s: %w", id, shim.ErrUnavailable)
	}
	_, err := f.lookup("create task", id)
	return err
}

// Start implements shim.Runtime.
func (f *Runtime) Start(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start " + id)
	c, err := f.lookup("start", id)
	if err != nil {
		return "", err
	}
	if c.State == shim.StateRunning || c.State == shim.StatePaused {
		return "", fmt.Errorf("start %s: it is %s", id, c.State)
	}
	if f.failStart != nil {
		c.State = shim.StateStopped
		return "", f.failStart
	}
	c.State = shim.StateRunning
	if f.opts.OwnsNetNS {
		c.NetNS = "/proc/4242/ns/net-" + id // a dockerd-made namespace, by its process
	}
	return c.NetNS, nil
}

// Stop implements shim.Runtime; the fake's process obeys at once.
func (f *Runtime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop " + id)
	if f.down {
		return fmt.Errorf("stop %s: %w", id, shim.ErrUnavailable)
	}
	if c, ok := f.containers[id]; ok && (c.State == shim.StateRunning || c.State == shim.StatePaused) {
		c.State = shim.StateStopped
		if f.opts.OwnsNetNS {
			c.NetNS = ""
		}
		f.report(shim.Event{ID: id, Kind: shim.EventExit})
	}
	return nil
}

// Delete implements shim.Runtime.
func (f *Runtime) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete " + id)
	if f.down {
		return fmt.Errorf("delete %s: %w", id, shim.ErrUnavailable)
	}
	delete(f.snapshots, id)
	if c, ok := f.containers[id]; ok {
		delete(f.containers, id)
		if c.State == shim.StateRunning || c.State == shim.StatePaused {
			f.report(shim.Event{ID: id, Kind: shim.EventExit})
		}
		f.report(shim.Event{ID: id, Kind: shim.EventDelete})
	}
	if f.leftovers[id] > 0 {
		f.leftovers[id]--
		return fmt.Errorf("remove cgroup /esb/%s: %w", id, syscall.EBUSY)
	}
	return nil
}

func (f *Runtime) setState(verb, id string, want, from shim.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup(verb, id)
	if err != nil {
		return err
	}
	if c.State != from {
		return fmt.Errorf("%s %s: it is %s, not %s", verb, id, c.State, from)
	}
	c.State = want
	return nil
}

// Pause implements shim.Runtime.
func (f *Runtime) Pause(_ context.Context, id string) error {
	return f.setState("pause", id, shim.StatePaused, shim.StateRunning)
}

// Resume implements shim.Runtime.
func (f *Runtime) Resume(_ context.Context, id string) error {
	return f.setState("resume", id, shim.StateRunning, shim.StatePaused)
}

// Metrics implements shim.Runtime with fixed figures (no cgroup): 1 MiB
// used, the spec's limit, one process, 1 ms of CPU.
func (f *Runtime) Metrics(_ context.Context, id string) (shim.Metrics, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup("metrics of", id); err != nil {
		return shim.Metrics{}, err
	}
	return shim.Metrics{MemoryUsageBytes: 1 << 20, MemoryLimitBytes: uint64(f.specs[id].MemoryBytes), Pids: 1,
		CPUUsageNanos: uint64(time.Millisecond)}, nil
}

// SetLabels implements shim.Runtime.
func (f *Runtime) SetLabels(_ context.Context, id string, labels map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.lookup("set labels of", id)
	if err != nil {
		return err
	}
	if f.opts.ImmutableLabels {
		return fmt.Errorf("set labels of %s: %w", id, shim.ErrImmutable)
	}
	maps.Copy(c.Labels, labels)
	return nil
}

// List implements shim.Runtime.
func (f *Runtime) List(context.Context) ([]shim.WorkerInfo, error) {
	f.mu.Lock()
	if f.down {
		f.mu.Unlock()
		return nil, fmt.Errorf("list containers: %w", shim.ErrUnavailable)
	}
	out := []shim.WorkerInfo{}
	for _, c := range f.containers {
		if c.Labels[conf.LabelWorker] != "1" {
			continue
		}
		w := *c
		w.Labels = maps.Clone(c.Labels)
		out = append(out, w)
	}
	listed, gate := f.listed, f.listGate
	f.listed, f.listGate = nil, nil
	f.mu.Unlock()
	if gate != nil {
		close(listed)
		<-gate
	}
	return out, nil
}

// Ping implements shim.Runtime.
func (f *Runtime) Ping(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return fmt.Errorf("ping: %w", shim.ErrUnavailable)
	}
	return nil
}
