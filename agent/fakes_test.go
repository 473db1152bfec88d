package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// fakeRuntime is an in-memory shim.Runtime that records calls.
type fakeRuntime struct {
	mu         sync.Mutex
	ownsNetNS  bool
	immutable  bool
	down       bool
	containers map[string]*shim.WorkerInfo
	specs      map[string]shim.WorkerSpec // as created
	calls      []string
	failCreate error
	leftovers  map[string]int // Deletes that fail on a leftover cgroup
	failPull   error
	digest     string          // what PullImage resolves to
	noLocal    bool            // HasImage answers false
	pulls      int             // PullImage calls
	events     chan shim.Event // what emit sends to the current subscriber
	brk        chan struct{}   // closed by breakEvents
	subs       int             // subscriptions so far
	// exit, when set, is what WaitExit reports for every worker at once
	// (a process that ended, one the runtime was told to stop, or a wait
	// the runtime broke).
	exit *shim.Exit
	// waitEnded receives the ID of each WaitExit watch whose context
	// ended (buffered; tests that care read it).
	waitEnded chan string
}

var _ shim.Runtime = (*fakeRuntime)(nil)

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{containers: map[string]*shim.WorkerInfo{}, specs: map[string]shim.WorkerSpec{}, events: make(chan shim.Event),
		waitEnded: make(chan string, 16)}
}

func (f *fakeRuntime) record(c string) { f.calls = append(f.calls, c) }

// note records a call made elsewhere (the network), for the order of calls.
func (f *fakeRuntime) note(c string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(c)
}

// Events streams what emit sends until breakEvents breaks the stream.
func (f *fakeRuntime) Events(ctx context.Context) (<-chan shim.Event, <-chan error) {
	out, errc := make(chan shim.Event), make(chan error, 1)
	f.mu.Lock()
	f.subs++
	brk := make(chan struct{})
	f.brk = brk
	f.mu.Unlock()
	go func() {
		defer close(out)
		for {
			select {
			case ev := <-f.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					errc <- nil
					return
				}
			case <-brk:
				errc <- fmt.Errorf("event stream broke: %w", shim.ErrUnavailable)
				return
			case <-ctx.Done():
				errc <- nil
				return
			}
		}
	}()
	return out, errc
}

// emit hands ev to the subscriber (blocking until it takes it).
func (f *fakeRuntime) emit(ev shim.Event) { f.events <- ev }

// breakEvents ends the current subscription with an error.
func (f *fakeRuntime) breakEvents() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.brk != nil {
		close(f.brk)
		f.brk = nil
	}
}

func (f *fakeRuntime) subscriptions() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs
}

// kill ends a worker's process behind the agent's back, as docker kill
// or ctr task kill would (no event: the caller emits one or not).
func (f *fakeRuntime) kill(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.containers[id]; ok {
		c.State = shim.StateStopped
	}
}

func (f *fakeRuntime) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeRuntime) Name() string    { return "fake" }
func (f *fakeRuntime) OwnsNetNS() bool { return f.ownsNetNS }

func (f *fakeRuntime) EnsureImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("pull " + ref)
	if f.down {
		return shim.ErrUnavailable
	}
	return f.failPull
}

func (f *fakeRuntime) Create(_ context.Context, s shim.WorkerSpec) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("create " + s.ID)
	if f.failCreate != nil {
		return f.failCreate
	}
	labels := map[string]string{}
	for k, v := range s.Labels {
		labels[k] = v
	}
	f.specs[s.ID] = s
	f.containers[s.ID] = &shim.WorkerInfo{ID: s.ID, Labels: labels, Image: s.Image, State: shim.StateCreated, Created: time.Now(), NetNS: s.NetNS}
	return nil
}

func (f *fakeRuntime) Start(_ context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("start " + id)
	c, ok := f.containers[id]
	if !ok {
		return "", shim.ErrNotFound
	}
	c.State = shim.StateRunning
	if f.ownsNetNS {
		c.NetNS = "/proc/4242/ns/net-" + id
	}
	return c.NetNS, nil
}

func (f *fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("stop " + id)
	if c, ok := f.containers[id]; ok {
		c.State = shim.StateStopped
	}
	return nil
}

func (f *fakeRuntime) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete " + id)
	delete(f.containers, id)
	if f.leftovers[id] > 0 {
		f.leftovers[id]--
		return fmt.Errorf("remove cgroup /esb/%s: %w", id, syscall.EBUSY)
	}
	return nil
}

func (f *fakeRuntime) setState(id string, want, from shim.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return shim.ErrNotFound
	}
	if c.State != from {
		return fmt.Errorf("container %s is %s, not %s", id, c.State, from)
	}
	c.State = want
	return nil
}

func (f *fakeRuntime) Pause(_ context.Context, id string) error {
	return f.setState(id, shim.StatePaused, shim.StateRunning)
}

func (f *fakeRuntime) Resume(_ context.Context, id string) error {
	return f.setState(id, shim.StateRunning, shim.StatePaused)
}

func (f *fakeRuntime) Metrics(_ context.Context, id string) (shim.Metrics, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[id]; !ok {
		return shim.Metrics{}, shim.ErrNotFound
	}
	return shim.Metrics{MemoryUsageBytes: 1 << 20, MemoryLimitBytes: uint64(f.specs[id].MemoryBytes), Pids: 1}, nil
}

func (f *fakeRuntime) SetLabels(_ context.Context, id string, labels map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.immutable {
		return shim.ErrImmutable
	}
	c, ok := f.containers[id]
	if !ok {
		return shim.ErrNotFound
	}
	for k, v := range labels {
		c.Labels[k] = v
	}
	return nil
}

func (f *fakeRuntime) List(context.Context) ([]shim.WorkerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, shim.ErrUnavailable
	}
	var out []shim.WorkerInfo
	for _, c := range f.containers {
		out = append(out, *c)
	}
	return out, nil
}

// WaitExit reports f.exit at once, or nothing until ctx ends.
func (f *fakeRuntime) WaitExit(ctx context.Context, id string, _ time.Time) <-chan shim.Exit {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("wait " + id)
	out := make(chan shim.Exit, 1)
	if f.exit != nil {
		out <- *f.exit
	}
	go func() {
		<-ctx.Done()
		select {
		case f.waitEnded <- id:
		default:
		}
	}()
	return out
}

func (f *fakeRuntime) Ping(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return shim.ErrUnavailable
	}
	return nil
}

// labels returns a copy of a container's labels, under the lock.
func (f *fakeRuntime) labels(id string) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	if c, ok := f.containers[id]; ok {
		for k, v := range c.Labels {
			out[k] = v
		}
	}
	return out
}

func (f *fakeRuntime) ids() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.containers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
