package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

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
	failPull   error
	digest     string          // what PullImage resolves to
	noLocal    bool            // HasImage answers false
	pulls      int             // PullImage calls
	events     chan shim.Event // what emit sends to the current subscriber
	brk        chan struct{}   // closed by breakEvents
	subs       int             // subscriptions so far
}

var _ shim.Runtime = (*fakeRuntime)(nil)

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{containers: map[string]*shim.WorkerInfo{}, specs: map[string]shim.WorkerSpec{}, events: make(chan shim.Event)}
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

// fakeNetwork hands out 10.88.0.x and keeps the "cache" of results.
type fakeNetwork struct {
	mu        sync.Mutex
	next      int
	attached  map[string]*current.Result
	attachErr error
	gcLive    []string
	detached  []string
	broken    map[string]bool // attachments whose interface vanished
	note      func(string)    // records Detach in the runtime's call log
}

var _ shim.Network = (*fakeNetwork)(nil)

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{next: 2, attached: map[string]*current.Result{}, broken: map[string]bool{}}
}

func (n *fakeNetwork) Attach(_ context.Context, a shim.Attachment) (*current.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attachErr != nil {
		return nil, n.attachErr
	}
	if a.NetNS == "" {
		return nil, fmt.Errorf("attach %s without a netns", a.ContainerID)
	}
	ip := net.IPv4(10, 88, 0, byte(n.next))
	n.next++
	res := &current.Result{CNIVersion: "1.1.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: ip, Mask: net.CIDRMask(16, 32)}}}}
	n.attached[a.ContainerID] = res
	return res, nil
}

func (n *fakeNetwork) Detach(_ context.Context, a shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.attached, a.ContainerID)
	n.detached = append(n.detached, a.ContainerID)
	if n.note != nil {
		n.note("detach " + a.ContainerID)
	}
	return nil
}

func (n *fakeNetwork) Check(_ context.Context, a shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attached[a.ContainerID] == nil {
		return fmt.Errorf("not attached")
	}
	return nil
}

func (n *fakeNetwork) GC(_ context.Context, live []shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	keep := map[string]bool{}
	n.gcLive = nil
	for _, a := range live {
		keep[a.ContainerID] = true
		n.gcLive = append(n.gcLive, a.ContainerID)
	}
	for id := range n.attached {
		if !keep[id] {
			delete(n.attached, id)
		}
	}
	return nil
}

func (n *fakeNetwork) Status(context.Context) error { return nil }

func (n *fakeNetwork) Cached(_ context.Context, a shim.Attachment) (*current.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attached[a.ContainerID], nil
}

func (n *fakeNetwork) Intact(_ context.Context, a shim.Attachment, ip netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	res := n.attached[a.ContainerID]
	if res == nil || n.broken[a.ContainerID] {
		return fmt.Errorf("no interface")
	}
	if got, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4()); got != ip {
		return fmt.Errorf("address %s, not %s", got, ip)
	}
	return nil
}

func (n *fakeNetwork) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.attached)
}

func exhaustedErr() error {
	return fmt.Errorf("attach: %w", types.NewError(100, "address range exhausted", ""))
}

// fakeNetNSes pins nothing; it remembers paths.
type fakeNetNSes struct {
	mu  sync.Mutex
	ids map[string]bool
}

func newFakeNetNSes() *fakeNetNSes { return &fakeNetNSes{ids: map[string]bool{}} }

func (f *fakeNetNSes) Create(id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids[id] {
		return "", shim.ErrNetNSExists
	}
	f.ids[id] = true
	return f.Path(id), nil
}

func (f *fakeNetNSes) Remove(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, id)
	return nil
}

func (f *fakeNetNSes) Path(id string) string { return "/run/netns/esb-" + id }

func (f *fakeNetNSes) List() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.ids {
		out = append(out, id)
	}
	return out, nil
}

func (f *fakeNetNSes) Exists(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id]
}

func (f *fakeNetNSes) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}
