package agenttest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/agent"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
)

// Phase names, in the order of an acquire, a release, a warm acquire and
// a reconcile: the rows of the profiler's tables.
const (
	PhaseImage   = "image present? (EnsureImage)"
	PhaseNetNS   = "netns create + pin"
	PhaseAdd     = "CNI ADD (libcni → esb-bridge + esb-ipam)"
	PhaseCreate  = "container create (snapshot + OCI spec)"
	PhaseStart   = "task create + start (shim, runc)"
	PhaseReady   = "readiness: first probe → port accepts TCP"
	PhaseTask    = "task create (shim, runc create), beside CNI ADD"
	PhaseBeside  = "netns + CNI ADD ∥ (image + container create + task create): the longer"
	PhaseRest    = "rest of Acquire (bookkeeping, log dir)"
	PhaseAcquire = "Acquire total, cold"
	PhaseShare   = "agent's own share (Acquire − task create + start)"
	PhaseStop    = "stop (SIGTERM, exit, task delete)"
	PhaseDel     = "CNI DEL"
	PhaseDelete  = "container delete (+ snapshot)"
	PhaseUnpin   = "netns unpin"
	PhaseRelease = "Release total"
	PhaseLabels  = "warm: SetLabels (owner recorded on the container)"
	PhaseWarmRst = "warm: rest (pick the idle worker, metrics)"
	PhaseWarm    = "Acquire total, warm"
	PhaseList    = "reconcile: runtime List (containers, tasks, specs)"
	PhaseNSCheck = "reconcile: pinned netns checks"
	PhaseCached  = "reconcile: libcni cached results"
	PhaseIntact  = "reconcile: interface checks (netlink)"
	PhaseGC      = "reconcile: CNI GC with the live set"
	PhaseRecRest = "reconcile: rest"
	PhaseRecon   = "Reconcile total"
)

// phaseClock adds up the time spent in each phase of the current sample.
type phaseClock struct {
	mu         sync.Mutex
	d          map[string]time.Duration
	probeStart time.Time
	probeEnd   time.Time
}

func (p *phaseClock) since(name string, start time.Time) {
	d := time.Since(start)
	p.mu.Lock()
	p.d[name] += d
	p.mu.Unlock()
}

// take returns the sample's phases and starts a new sample.
func (p *phaseClock) take() map[string]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.d
	if !p.probeStart.IsZero() && !p.probeEnd.IsZero() {
		d[PhaseReady] = p.probeEnd.Sub(p.probeStart)
	}
	p.d, p.probeStart, p.probeEnd = map[string]time.Duration{}, time.Time{}, time.Time{}
	return d
}

// timedRuntime times the runtime calls of the agent.
type timedRuntime struct {
	shim.Runtime
	p *phaseClock
}

func (r timedRuntime) EnsureImage(ctx context.Context, ref string) error {
	defer r.p.since(PhaseImage, time.Now())
	return r.Runtime.EnsureImage(ctx, ref)
}

func (r timedRuntime) Create(ctx context.Context, s shim.WorkerSpec) error {
	defer r.p.since(PhaseCreate, time.Now())
	return r.Runtime.Create(ctx, s)
}

func (r timedRuntime) Start(ctx context.Context, id string) (string, error) {
	defer r.p.since(PhaseStart, time.Now())
	return r.Runtime.Start(ctx, id)
}

// CreateTask is the first half of the start where the runtime splits it
// (shim.TaskCreator); it counts in PhaseStart too, which stays the task's
// whole create + start.
func (r timedRuntime) CreateTask(ctx context.Context, id string) error {
	tc, ok := r.Runtime.(shim.TaskCreator)
	if !ok {
		return nil
	}
	start := time.Now()
	defer func() {
		r.p.since(PhaseTask, start)
		r.p.since(PhaseStart, start)
	}()
	return tc.CreateTask(ctx, id)
}

func (r timedRuntime) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.p.since(PhaseStop, time.Now())
	return r.Runtime.Stop(ctx, id, grace)
}

func (r timedRuntime) Delete(ctx context.Context, id string) error {
	defer r.p.since(PhaseDelete, time.Now())
	return r.Runtime.Delete(ctx, id)
}

func (r timedRuntime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	defer r.p.since(PhaseLabels, time.Now())
	return r.Runtime.SetLabels(ctx, id, labels)
}

func (r timedRuntime) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	defer r.p.since(PhaseList, time.Now())
	return r.Runtime.List(ctx)
}

// timedNetwork runs the plugins from a thread in the node, as the agent
// process (which lives there) does, and times them.
type timedNetwork struct {
	shim.Network
	node ns.NetNS
	p    *phaseClock
}

func (n timedNetwork) Attach(ctx context.Context, a shim.Attachment) (res *current.Result, err error) {
	defer n.p.since(PhaseAdd, time.Now())
	err = n.node.Do(func(ns.NetNS) error {
		res, err = n.Network.Attach(ctx, a)
		return err
	})
	return res, err
}

func (n timedNetwork) Detach(ctx context.Context, a shim.Attachment) error {
	defer n.p.since(PhaseDel, time.Now())
	return n.node.Do(func(ns.NetNS) error { return n.Network.Detach(ctx, a) })
}

func (n timedNetwork) GC(ctx context.Context, live []shim.Attachment) error {
	defer n.p.since(PhaseGC, time.Now())
	return n.node.Do(func(ns.NetNS) error { return n.Network.GC(ctx, live) })
}

func (n timedNetwork) Cached(ctx context.Context, a shim.Attachment) (*current.Result, error) {
	defer n.p.since(PhaseCached, time.Now())
	return n.Network.Cached(ctx, a)
}

func (n timedNetwork) Intact(ctx context.Context, a shim.Attachment, ip netip.Addr) error {
	defer n.p.since(PhaseIntact, time.Now())
	return n.Network.Intact(ctx, a, ip)
}

// timedNetNSes times pinning, unpinning and the checks of reconcile.
type timedNetNSes struct {
	shim.NetNSes
	p *phaseClock
}

func (n timedNetNSes) Create(id string) (string, error) {
	defer n.p.since(PhaseNetNS, time.Now())
	return n.NetNSes.Create(id)
}

func (n timedNetNSes) Remove(id string) error {
	defer n.p.since(PhaseUnpin, time.Now())
	return n.NetNSes.Remove(id)
}

func (n timedNetNSes) List() ([]string, error) {
	defer n.p.since(PhaseNSCheck, time.Now())
	return n.NetNSes.List()
}

func (n timedNetNSes) Exists(id string) bool {
	defer n.p.since(PhaseNSCheck, time.Now())
	return n.NetNSes.Exists(id)
}

var _ agent.NetNSes = timedNetNSes{}

// ProfilerOptions are the parts of the in-process agents: where their
// containerd namespace, libcni cache, pins and worker logs are, and the
// node whose plugins they run.
type ProfilerOptions struct {
	Containerd  string // containerd's socket
	Namespace   string // containerd namespace of the profiler's workers
	Registry    string // pulled from over plain HTTP
	Snapshotter string
	ConfDir     string // the esb network's conflist
	PluginDir   string
	CacheDir    string // libcni's result cache
	NetNSDir    string // netns pins
	LogDir      string // worker logs
	Node        ns.NetNS
	Image       string // of every acquire
	RuncBinary  string // the shim's runc ("": containerd's PATH)
}

// Profiler takes the agent's work apart: agent.Agent values built in this
// process from the same parts as esb-agent's (the containerd adapter,
// libcni with the run's plugins and conflist, pins in the run's
// directory), whose runtime, network and pins are wrapped in clocks. The
// plugins run and the probes dial from a thread in the node, where the
// agent process would be.
type Profiler struct {
	o     ProfilerOptions
	clock *phaseClock
	rt    *containerd.Runtime
	cni   *shim.CNI
}

// ProfilerOptions are the options of a profiler with d's conflist,
// libcni cache, pins and worker logs, in c's containerd namespace, whose
// plugins (from pluginDir) run in node and whose acquires take image.
func (d Dirs) ProfilerOptions(c *Containerd, pluginDir string, node ns.NetNS, image string) ProfilerOptions {
	return ProfilerOptions{Containerd: c.Stack.ContainerdSock, Namespace: c.NS, Registry: c.Stack.Registry,
		Snapshotter: c.Stack.Snapshotter, ConfDir: d.ConfDir(), PluginDir: pluginDir, CacheDir: d.CacheDir(),
		NetNSDir: d.NetnsDir(), LogDir: d.LogDir(), Node: node, Image: image, RuncBinary: c.RuncBinary}
}

// NewProfiler connects to containerd and loads the conflist; the
// connection is closed when the test ends.
func NewProfiler(tb testing.TB, o ProfilerOptions) *Profiler {
	tb.Helper()
	rt, err := containerd.New(containerd.Options{Address: o.Containerd, Namespace: o.Namespace,
		PlainHTTP: []string{o.Registry}, Snapshotter: o.Snapshotter, RuncBinary: o.RuncBinary})
	if err != nil {
		tb.Fatalf("profiler: %v", err)
	}
	tb.Cleanup(func() { _ = rt.Close() })
	cni, err := shim.NewCNI(shim.CNIOptions{ConfDir: o.ConfDir, Network: conf.NetworkName,
		BinDirs: []string{o.PluginDir}, CacheDir: o.CacheDir})
	if err != nil {
		tb.Fatalf("profiler: %v", err)
	}
	return &Profiler{o: o, clock: &phaseClock{d: map[string]time.Duration{}}, rt: rt, cni: cni}
}

func (p *Profiler) network() timedNetwork {
	return timedNetwork{Network: p.cni, node: p.o.Node, p: p.clock}
}

func (p *Profiler) netnses() timedNetNSes {
	return timedNetNSes{NetNSes: shim.NetNSes{Dir: p.o.NetNSDir}, p: p.clock}
}

// agent returns an in-process agent keeping poolMinIdle idle workers.
func (p *Profiler) agent(poolMinIdle int) *agent.Agent {
	clock := p.clock
	probe := func(ctx context.Context, addr string) error {
		clock.mu.Lock()
		if clock.probeStart.IsZero() {
			clock.probeStart = time.Now()
		}
		clock.mu.Unlock()
		err := p.o.Node.Do(func(ns.NetNS) error { return DialTCP(ctx, addr) })
		if err == nil {
			clock.mu.Lock()
			clock.probeEnd = time.Now()
			clock.mu.Unlock()
		}
		return err
	}
	return agent.New(agent.Options{
		Runtime: timedRuntime{Runtime: p.rt, p: clock},
		Network: p.network(),
		NetNSes: p.netnses(),
		Config: agent.Config{LogDir: p.o.LogDir, MaxWorkers: 1000,
			PoolMinIdle: poolMinIdle},
		Probe: probe,
	})
}

// rows turns samples into table rows in the order of names.
func rows(samples map[string]benchstat.Samples, names ...string) []benchstat.Row {
	out := make([]benchstat.Row, 0, len(names))
	for _, n := range names {
		r := benchstat.Row{Name: n, Samples: samples[n]}
		if strings.Contains(n, "total") {
			r.Name = "**" + n + "**"
		}
		out = append(out, r)
	}
	return out
}

// The phases of a cold acquire and of a release, in order.
var (
	acquirePhases = []string{PhaseImage, PhaseNetNS, PhaseAdd, PhaseCreate, PhaseStart, PhaseReady}
	releasePhases = []string{PhaseStop, PhaseDel, PhaseDelete, PhaseUnpin}
)

// ColdProfile is an in-process agent without a pool whose cold acquires
// and releases are taken apart, one pair at a time.
type ColdProfile struct {
	p       *Profiler
	a       *agent.Agent
	samples map[string]benchstat.Samples
}

// NewCold returns an in-process agent for cold acquire+release pairs.
func (p *Profiler) NewCold() *ColdProfile {
	a := p.agent(0)
	p.clock.take()
	return &ColdProfile{p: p, a: a, samples: map[string]benchstat.Samples{}}
}

// Pair takes one cold acquire and its release apart.
func (c *ColdProfile) Pair() error {
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	start := time.Now()
	w, err := c.a.Acquire(ctx, agent.AcquireRequest{Function: "profile", Image: c.p.o.Image, Owner: "profiler"})
	total := time.Since(start)
	if err != nil {
		return fmt.Errorf("in-process acquire: %w", err)
	}
	d := c.p.clock.take()
	for _, ph := range acquirePhases {
		c.samples[ph] = append(c.samples[ph], d[ph])
	}
	// The namespace and its network are made beside the image check and
	// the container's creation: the acquire waits for the longer of the
	// two.
	beside := max(d[PhaseNetNS]+d[PhaseAdd], d[PhaseImage]+d[PhaseCreate]+d[PhaseTask])
	c.samples[PhaseTask] = append(c.samples[PhaseTask], d[PhaseTask])
	c.samples[PhaseBeside] = append(c.samples[PhaseBeside], beside)
	c.samples[PhaseRest] = append(c.samples[PhaseRest], total-beside-(d[PhaseStart]-d[PhaseTask])-d[PhaseReady])
	c.samples[PhaseAcquire] = append(c.samples[PhaseAcquire], total)
	c.samples[PhaseShare] = append(c.samples[PhaseShare], total-d[PhaseStart])

	start = time.Now()
	err = c.a.Release(ctx, w.ID, w.Owner)
	total = time.Since(start)
	if err != nil {
		return fmt.Errorf("in-process release of %s: %w", w.ID, err)
	}
	d = c.p.clock.take()
	for _, ph := range releasePhases {
		c.samples[ph] = append(c.samples[ph], d[ph])
	}
	c.samples[PhaseRelease] = append(c.samples[PhaseRelease], total)
	return nil
}

// Reset forgets the pairs so far (a warm-up).
func (c *ColdProfile) Reset() { c.samples = map[string]benchstat.Samples{} }

// Samples returns the samples of one phase so far.
func (c *ColdProfile) Samples(phase string) benchstat.Samples { return c.samples[phase] }

// Rows returns every phase of the pairs so far as table rows.
func (c *ColdProfile) Rows() []benchstat.Row {
	return rows(c.samples, append(append(slices.Clone(acquirePhases), PhaseTask, PhaseBeside, PhaseRest, PhaseAcquire, PhaseShare), append(slices.Clone(releasePhases), PhaseRelease)...)...)
}

// Cold takes n cold acquires and their releases apart.
func (p *Profiler) Cold(n int) ([]benchstat.Row, error) {
	c := p.NewCold()
	for i := range n {
		if err := c.Pair(); err != nil {
			return nil, fmt.Errorf("pair %d: %w", i, err)
		}
	}
	return c.Rows(), nil
}

// Warm takes n warm acquires apart, with an in-process agent keeping one
// idle worker; each waits until the pool has refilled. The idle worker
// left at the end is torn down as the agent would.
func (p *Profiler) Warm(n int) (out []benchstat.Row, err error) {
	a := p.agent(1)
	const fn = "profile-warm"
	req := agent.AcquireRequest{Function: fn, Image: p.o.Image, Owner: "profiler"}
	defer func() {
		a.Wait()
		for _, w := range a.List("") {
			err = errors.Join(err, p.teardown(w))
		}
	}()
	acquireRelease := func() (*agent.Worker, time.Duration, map[string]time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
		defer cancel()
		p.clock.take()
		start := time.Now()
		w, err := a.Acquire(ctx, req)
		total := time.Since(start)
		d := p.clock.take() // the refill may have begun: only SetLabels is read
		if err != nil {
			return nil, 0, nil, err
		}
		return w, total, d, a.Release(ctx, w.ID, w.Owner)
	}
	if _, _, _, err := acquireRelease(); err != nil { // cold: fills the pool
		return nil, err
	}
	samples := map[string]benchstat.Samples{}
	for i := range n {
		if err := waitIdleInProcess(a, fn, time.Minute); err != nil {
			return nil, err
		}
		w, total, d, err := acquireRelease()
		if err != nil {
			return nil, fmt.Errorf("in-process warm acquire %d: %w", i, err)
		}
		if !w.Warm {
			return nil, fmt.Errorf("in-process acquire %d with an idle worker was not warm", i)
		}
		samples[PhaseLabels] = append(samples[PhaseLabels], d[PhaseLabels])
		samples[PhaseWarmRst] = append(samples[PhaseWarmRst], total-d[PhaseLabels])
		samples[PhaseWarm] = append(samples[PhaseWarm], total)
	}
	if err := waitIdleInProcess(a, fn, time.Minute); err != nil {
		return nil, err
	}
	return rows(samples, PhaseLabels, PhaseWarmRst, PhaseWarm), nil
}

func waitIdleInProcess(a *agent.Agent, function string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		for _, w := range a.List("") {
			if w.Function == function && w.State == agent.StateIdle {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no idle worker of %s within %s", function, limit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// teardown removes a worker the API cannot release (an idle pooled one),
// in the agent's order: stop, detach, delete, unpin.
func (p *Profiler) teardown(w agent.Worker) error {
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	return errors.Join(
		p.rt.Stop(ctx, w.ID, 0),
		p.network().Detach(ctx, shim.Attachment{ContainerID: w.ID, NetNS: w.NetNS}),
		p.rt.Delete(ctx, w.ID),
		p.netnses().Remove(w.ID),
	)
}

// Reconcile runs n reconciles of the node as it is (a fresh in-process
// agent each time, as a restarted agent would) and takes them apart; each
// must adopt want workers and remove nothing.
func (p *Profiler) Reconcile(n, want int) ([]benchstat.Row, error) {
	phases := []string{PhaseList, PhaseNSCheck, PhaseCached, PhaseIntact, PhaseGC}
	samples := map[string]benchstat.Samples{}
	for i := range n {
		a := p.agent(0)
		ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
		p.clock.take()
		start := time.Now()
		rep, err := a.Reconcile(ctx)
		total := time.Since(start)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("in-process reconcile %d: %w", i, err)
		}
		if rep.Adopted != want || rep.Removed != 0 || rep.OrphanNetNSes != 0 {
			return nil, fmt.Errorf("in-process reconcile %d: %+v, want %d adopted and nothing removed", i, rep, want)
		}
		d := p.clock.take()
		var sum time.Duration
		for _, ph := range phases {
			samples[ph] = append(samples[ph], d[ph])
			sum += d[ph]
		}
		samples[PhaseRecRest] = append(samples[PhaseRecRest], total-sum)
		samples[PhaseRecon] = append(samples[PhaseRecon], total)
	}
	r := rows(samples, append(phases, PhaseRecRest, PhaseRecon)...)
	r[len(r)-1].Note = fmt.Sprintf("%d workers adopted", want)
	return r, nil
}
