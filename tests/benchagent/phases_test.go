package benchagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/agent"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
)

// Phase names, in the order of an acquire, a release, a warm acquire and
// a reconcile.
const (
	phImage   = "image present? (EnsureImage)"
	phNetNS   = "netns create + pin"
	phAdd     = "CNI ADD (libcni → esb-bridge + esb-ipam)"
	phCreate  = "container create (snapshot + OCI spec)"
	phStart   = "task create + start (shim, runc)"
	phReady   = "readiness: first probe → port accepts TCP"
	phBeside  = "CNI ADD ∥ (image + container create): the longer"
	phRest    = "rest of Acquire (bookkeeping, log dir)"
	phShare   = "agent's own share (Acquire − task create + start)"
	phAcquire = "Acquire total, cold"
	phStop    = "stop (SIGTERM, exit, task delete)"
	phDel     = "CNI DEL"
	phDelete  = "container delete (+ snapshot)"
	phUnpin   = "netns unpin"
	phRelease = "Release total"
	phLabels  = "warm: SetLabels (owner recorded on the container)"
	phWarmRst = "warm: rest (pick the idle worker, metrics)"
	phWarm    = "Acquire total, warm"
	phList    = "reconcile: runtime List (containers, tasks, specs)"
	phNSCheck = "reconcile: pinned netns checks"
	phCached  = "reconcile: libcni cached results"
	phIntact  = "reconcile: interface checks (netlink)"
	phGC      = "reconcile: CNI GC with the live set"
	phRecRest = "reconcile: rest"
	phRecon   = "Reconcile total"
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
		d[phReady] = p.probeEnd.Sub(p.probeStart)
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
	defer r.p.since(phImage, time.Now())
	return r.Runtime.EnsureImage(ctx, ref)
}

func (r timedRuntime) Create(ctx context.Context, s shim.WorkerSpec) error {
	defer r.p.since(phCreate, time.Now())
	return r.Runtime.Create(ctx, s)
}

func (r timedRuntime) Start(ctx context.Context, id string) (string, error) {
	defer r.p.since(phStart, time.Now())
	return r.Runtime.Start(ctx, id)
}

func (r timedRuntime) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer r.p.since(phStop, time.Now())
	return r.Runtime.Stop(ctx, id, grace)
}

func (r timedRuntime) Delete(ctx context.Context, id string) error {
	defer r.p.since(phDelete, time.Now())
	return r.Runtime.Delete(ctx, id)
}

func (r timedRuntime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	defer r.p.since(phLabels, time.Now())
	return r.Runtime.SetLabels(ctx, id, labels)
}

func (r timedRuntime) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	defer r.p.since(phList, time.Now())
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
	defer n.p.since(phAdd, time.Now())
	err = n.node.Do(func(ns.NetNS) error {
		res, err = n.Network.Attach(ctx, a)
		return err
	})
	return res, err
}

func (n timedNetwork) Detach(ctx context.Context, a shim.Attachment) error {
	defer n.p.since(phDel, time.Now())
	return n.node.Do(func(ns.NetNS) error { return n.Network.Detach(ctx, a) })
}

func (n timedNetwork) GC(ctx context.Context, live []shim.Attachment) error {
	defer n.p.since(phGC, time.Now())
	return n.node.Do(func(ns.NetNS) error { return n.Network.GC(ctx, live) })
}

func (n timedNetwork) Cached(ctx context.Context, a shim.Attachment) (*current.Result, error) {
	defer n.p.since(phCached, time.Now())
	return n.Network.Cached(ctx, a)
}

func (n timedNetwork) Intact(ctx context.Context, a shim.Attachment, ip netip.Addr) error {
	defer n.p.since(phIntact, time.Now())
	return n.Network.Intact(ctx, a, ip)
}

// timedNetNSes times pinning, unpinning and the checks of reconcile.
type timedNetNSes struct {
	shim.NetNSes
	p *phaseClock
}

func (n timedNetNSes) Create(id string) (string, error) {
	defer n.p.since(phNetNS, time.Now())
	return n.NetNSes.Create(id)
}

func (n timedNetNSes) Remove(id string) error {
	defer n.p.since(phUnpin, time.Now())
	return n.NetNSes.Remove(id)
}

func (n timedNetNSes) List() ([]string, error) {
	defer n.p.since(phNSCheck, time.Now())
	return n.NetNSes.List()
}

func (n timedNetNSes) Exists(id string) bool {
	defer n.p.since(phNSCheck, time.Now())
	return n.NetNSes.Exists(id)
}

var _ agent.NetNSes = timedNetNSes{}

// profiler takes the agent's work apart: agent.Agent values built in this
// process from the same parts as esb-agent's (the containerd adapter,
// libcni with the run's plugins and conflist, pins in the run's
// directory), whose runtime, network and pins are wrapped in clocks. The
// plugins run and the probes dial from a thread in the node, where the
// agent process would be.
type profiler struct {
	e     *env
	clock *phaseClock
	rt    *containerd.Runtime
	cni   *shim.CNI
}

func (e *env) newProfiler() (*profiler, error) {
	rt, err := containerd.New(containerd.Options{Address: e.stack.ContainerdSock, Namespace: e.ctrNS,
		PlainHTTP: []string{e.stack.Registry}, Snapshotter: e.stack.Snapshotter})
	if err != nil {
		return nil, err
	}
	cni, err := shim.NewCNI(shim.CNIOptions{ConfDir: e.ConfDir(), Network: netName,
		BinDirs: []string{e.pluginDir}, CacheDir: e.CacheDir()})
	if err != nil {
		return nil, errors.Join(err, rt.Close())
	}
	return &profiler{e: e, clock: &phaseClock{d: map[string]time.Duration{}}, rt: rt, cni: cni}, nil
}

func (p *profiler) close() error { return p.rt.Close() }

func (p *profiler) network() timedNetwork {
	return timedNetwork{Network: p.cni, node: p.e.node, p: p.clock}
}

func (p *profiler) netnses() timedNetNSes {
	return timedNetNSes{NetNSes: shim.NetNSes{Dir: p.e.NetnsDir()}, p: p.clock}
}

// agent returns an in-process agent keeping poolMinIdle idle workers.
func (p *profiler) agent(poolMinIdle int) *agent.Agent {
	clock := p.clock
	probe := func(ctx context.Context, addr string) error {
		clock.mu.Lock()
		if clock.probeStart.IsZero() {
			clock.probeStart = time.Now()
		}
		clock.mu.Unlock()
		err := p.e.node.Do(func(ns.NetNS) error { return dialOnce(ctx, addr) })
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
		Config: agent.Config{LogDir: filepath.Join(p.e.Base, "logs-profile"), MaxWorkers: 1000,
			PoolMinIdle: poolMinIdle},
		Probe: probe,
	})
}

// rows turns samples into table rows in the order of names.
func rows(samples map[string]Samples, names ...string) []Row {
	out := make([]Row, 0, len(names))
	for _, n := range names {
		r := Row{Name: n, Samples: samples[n]}
		if strings.Contains(n, "total") {
			r.Name = "**" + n + "**"
		}
		out = append(out, r)
	}
	return out
}

// cold takes n cold acquires and their releases apart.
func (p *profiler) cold(n int) ([]Row, error) {
	a := p.agent(0)
	acquirePhases := []string{phImage, phNetNS, phAdd, phCreate, phStart, phReady}
	releasePhases := []string{phStop, phDel, phDelete, phUnpin}
	samples := map[string]Samples{}
	p.clock.take()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		start := time.Now()
		w, err := a.Acquire(ctx, agent.AcquireRequest{Function: "profile", Image: p.e.image, Owner: "profiler"})
		total := time.Since(start)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("in-process acquire %d: %w", i, err)
		}
		d := p.clock.take()
		for _, ph := range acquirePhases {
			samples[ph] = append(samples[ph], d[ph])
		}
		// The network is made beside the image check and the container's
		// creation: the acquire waits for the longer of the two.
		beside := max(d[phAdd], d[phImage]+d[phCreate])
		samples[phBeside] = append(samples[phBeside], beside)
		samples[phRest] = append(samples[phRest], total-d[phNetNS]-beside-d[phStart]-d[phReady])
		samples[phAcquire] = append(samples[phAcquire], total)
		samples[phShare] = append(samples[phShare], total-d[phStart])

		ctx, cancel = context.WithTimeout(context.Background(), rpcTimeout)
		start = time.Now()
		err = a.Release(ctx, w.ID, w.Owner)
		total = time.Since(start)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("in-process release %d: %w", i, err)
		}
		d = p.clock.take()
		for _, ph := range releasePhases {
			samples[ph] = append(samples[ph], d[ph])
		}
		samples[phRelease] = append(samples[phRelease], total)
	}
	return rows(samples, append(append(acquirePhases, phBeside, phRest, phAcquire, phShare), append(releasePhases, phRelease)...)...), nil
}

// warm takes n warm acquires apart, with an in-process agent keeping one
// idle worker; each waits until the pool has refilled. The idle worker
// left at the end is torn down as the agent would.
func (p *profiler) warm(n int) (out []Row, err error) {
	a := p.agent(1)
	const fn = "profile-warm"
	req := agent.AcquireRequest{Function: fn, Image: p.e.image, Owner: "profiler"}
	defer func() {
		a.Wait()
		for _, w := range a.List("") {
			err = errors.Join(err, p.teardown(w))
		}
	}()
	acquireRelease := func() (*agent.Worker, time.Duration, map[string]time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
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
	samples := map[string]Samples{}
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
		samples[phLabels] = append(samples[phLabels], d[phLabels])
		samples[phWarmRst] = append(samples[phWarmRst], total-d[phLabels])
		samples[phWarm] = append(samples[phWarm], total)
	}
	if err := waitIdleInProcess(a, fn, time.Minute); err != nil {
		return nil, err
	}
	return rows(samples, phLabels, phWarmRst, phWarm), nil
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
func (p *profiler) teardown(w agent.Worker) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return errors.Join(
		p.rt.Stop(ctx, w.ID, 0),
		p.network().Detach(ctx, shim.Attachment{ContainerID: w.ID, NetNS: w.NetNS}),
		p.rt.Delete(ctx, w.ID),
		p.netnses().Remove(w.ID),
	)
}

// reconcile runs n reconciles of the node as it is (a fresh in-process
// agent each time, as a restarted agent would) and takes them apart; each
// must adopt want workers and remove nothing.
func (p *profiler) reconcile(n, want int) ([]Row, error) {
	phases := []string{phList, phNSCheck, phCached, phIntact, phGC}
	samples := map[string]Samples{}
	for i := range n {
		a := p.agent(0)
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
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
		samples[phRecRest] = append(samples[phRecRest], total-sum)
		samples[phRecon] = append(samples[phRecon], total)
	}
	r := rows(samples, append(phases, phRecRest, phRecon)...)
	r[len(r)-1].Note = fmt.Sprintf("%d workers adopted", want)
	return r, nil
}
