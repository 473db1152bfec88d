// Package agent is esb-agent's logic: it creates workers through a
// container runtime, attaches them to the esb network through the shim,
// keeps warm pools, and answers acquire/release. The gRPC service in
// server.go is a thin layer over Agent.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/agentconf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// NetNSes pins and removes worker namespaces (shim.NetNSes in production).
type NetNSes interface {
	Create(id string) (string, error)
	Remove(id string) error
	Path(id string) string
	List() ([]string, error)
	Exists(id string) bool
}

// Config tunes the agent; zero fields take the defaults of DefaultConfig.
type Config struct {
	// Port is the port every worker serves (the Lambda invoke endpoint).
	Port int
	// ReadyTimeout bounds the wait for a new worker's port to accept TCP.
	ReadyTimeout time.Duration
	// StopGrace is how long a worker gets to stop before it is killed.
	StopGrace time.Duration
	// MaxWorkers bounds the live workers (busy, idle and paused).
	MaxWorkers int
	// MaxParallel bounds the worker creations running at once.
	MaxParallel int
	// PoolMinIdle is the number of idle workers kept warm for every
	// function (image, env and limits) acquired so far.
	PoolMinIdle int
	// DefaultMemoryBytes applies when a request sets no memory limit.
	DefaultMemoryBytes int64
	// LogDir receives one log file per worker.
	LogDir string
	// RuntimeTimeout bounds every call into the runtime (a pull gets ten
	// times as long, a stop the grace on top), so a hung daemon makes
	// calls fail with Unavailable instead of hanging.
	RuntimeTimeout time.Duration
	// StateDir holds the journal of worker creations in flight, which
	// tells a restarted agent which half-made workers were its own; ""
	// keeps no journal.
	StateDir string
	// ReadOnlyRootfs gives every worker a read-only root file system with
	// a writable tmpfs on /tmp. It is the node operator's policy, not a
	// request field: a Gateway cannot weaken it per call.
	ReadOnlyRootfs bool
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Port:               agentconf.DefaultPort,
		ReadyTimeout:       agentconf.DefaultReadyTimeout,
		StopGrace:          agentconf.DefaultStopGrace,
		MaxWorkers:         agentconf.DefaultMaxWorkers,
		MaxParallel:        agentconf.DefaultMaxParallel,
		PoolMinIdle:        0,
		DefaultMemoryBytes: agentconf.DefaultMemoryBytes,
		LogDir:             agentconf.DefaultLogDir,
		RuntimeTimeout:     agentconf.DefaultRuntimeWait,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Port == 0 {
		c.Port = d.Port
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = d.ReadyTimeout
	}
	if c.StopGrace == 0 {
		c.StopGrace = d.StopGrace
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = d.MaxWorkers
	}
	if c.MaxParallel == 0 {
		c.MaxParallel = d.MaxParallel
	}
	if c.DefaultMemoryBytes == 0 {
		c.DefaultMemoryBytes = d.DefaultMemoryBytes
	}
	if c.LogDir == "" {
		c.LogDir = d.LogDir
	}
	if c.RuntimeTimeout == 0 {
		c.RuntimeTimeout = d.RuntimeTimeout
	}
	return c
}

// State of a worker as the agent sees it.
type State int

// Worker states.
const (
	StateIdle State = iota + 1
	StateBusy
	StatePaused
)

func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateBusy:
		return "busy"
	case StatePaused:
		return "paused"
	}
	return "unknown"
}

// Worker is a live worker.
type Worker struct {
	ID       string
	Function string
	Owner    string
	Image    string
	IP       netip.Addr
	Port     int
	State    State
	Warm     bool
	Created  time.Time
	NetNS    string
	poolKey  string
	request  string
	spec     AcquireRequest
	creating bool
}

// Options wires an Agent.
type Options struct {
	Runtime shim.Runtime
	Network shim.Network
	NetNSes NetNSes
	Config  Config
	Log     *slog.Logger
	Metrics *Metrics
	// Records keeps each worker's owner, request and pool outside the
	// runtime's labels, for reconcile after a restart; nil keeps nothing
	// (labels alone then say whose a worker is).
	Records Records
	// Probe reports whether addr accepts TCP; nil means a real dial.
	Probe func(ctx context.Context, addr string) error
}

// Agent owns the workers of one node.
type Agent struct {
	rt      shim.Runtime
	net     shim.Network
	nses    NetNSes
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	probe   func(ctx context.Context, addr string) error
	sem     chan struct{}
	journal journal
	recs    Records
	// immutable is set once the runtime said it cannot change labels.
	immutable atomic.Bool

	mu       sync.Mutex
	workers  map[string]*Worker
	requests map[string]string        // owner \x00 request ID -> worker ID
	inflight map[string]chan struct{} // request keys being served
	refills  map[string]bool          // pool keys being refilled
	undoing  map[string]bool          // interrupted creations being undone
	wg       sync.WaitGroup           // background refills
	drops    inFlight                 // teardowns of lost workers
}

// New returns an agent. Call Reconcile before serving.
func New(o Options) *Agent {
	cfg := o.Config.withDefaults()
	a := &Agent{
		rt: boundedRuntime{Runtime: o.Runtime, call: cfg.RuntimeTimeout}, net: o.Network, nses: o.NetNSes, cfg: cfg,
		log: o.Log, metrics: o.Metrics, probe: o.Probe, sem: make(chan struct{}, cfg.MaxParallel), journal: journal{dir: cfg.StateDir},
		recs:    o.Records,
		workers: map[string]*Worker{}, requests: map[string]string{},
		inflight: map[string]chan struct{}{}, refills: map[string]bool{}, undoing: map[string]bool{},
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.probe == nil {
		a.probe = dialProbe
	}
	if a.recs == nil {
		a.recs = noRecords{}
	}
	if a.metrics == nil {
		a.metrics = NewMetrics(nil)
	}
	return a
}

func dialProbe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// poolKey identifies interchangeable workers: same function, image, env
// and limits.
func poolKey(r AcquireRequest) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", r.Function, r.Image, r.MemoryBytes, r.CPUMillis)
	keys := make([]string, 0, len(r.Env))
	for k := range r.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\x00", k, r.Env[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Acquire returns a worker for r: a retried request ID gets the same
// worker, an idle pooled worker is taken when there is one, and otherwise
// a new worker is created and returned once its port accepts TCP.
func (a *Agent) Acquire(ctx context.Context, r AcquireRequest) (w *Worker, err error) {
	start := time.Now()
	defer func() { a.metrics.observeAcquire(start, w, err) }()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	reqKey := ""
	if r.RequestID != "" {
		reqKey = r.Owner + "\x00" + r.RequestID
		for {
			a.mu.Lock()
			if id, ok := a.requests[reqKey]; ok {
				if w, ok := a.workers[id]; ok && !w.creating {
					c := *w
					a.mu.Unlock()
					return &c, nil
				}
				delete(a.requests, reqKey) // its worker is gone: acquire anew
			}
			wait, busy := a.inflight[reqKey]
			if !busy {
				a.inflight[reqKey] = make(chan struct{})
				a.mu.Unlock()
				break
			}
			a.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return nil, errf(NotReady, ctx.Err(), "acquire with request_id %s", r.RequestID)
			}
		}
		defer func() {
			a.mu.Lock()
			if w != nil {
				a.requests[reqKey] = w.ID
			}
			if ch, ok := a.inflight[reqKey]; ok {
				close(ch)
				delete(a.inflight, reqKey)
			}
			a.mu.Unlock()
		}()
	}
	key := poolKey(r)
	if w, err := a.takeIdle(ctx, key, r.Owner, r.RequestID); w != nil || err != nil {
		a.refill(key, r)
		return w, err
	}
	w, err = a.create(ctx, r, key, r.Owner)
	if err != nil {
		return nil, err
	}
	w.request = r.RequestID
	a.refill(key, r)
	c := *w
	return &c, nil
}

// takeIdle hands an idle pooled worker of key to owner, or returns nil.
func (a *Agent) takeIdle(ctx context.Context, key, owner, request string) (*Worker, error) {
	a.mu.Lock()
	var w *Worker
	for _, c := range a.workers {
		if c.poolKey == key && c.State == StateIdle && !c.creating && (w == nil || c.Created.Before(w.Created)) {
			w = c
		}
	}
	if w == nil {
		a.mu.Unlock()
		return nil, nil
	}
	w.State, w.Owner, w.Warm, w.request = StateBusy, owner, true, request
	c := *w
	a.mu.Unlock()
	// The record is what says whose the worker is after a restart: without
	// it the worker goes back to the pool and the caller gets a new one
	// (whose labels name its owner from the start).
	if err := a.recs.Put(w.ID, Record{Owner: owner, Request: request, PoolKey: key}); err != nil {
		a.log.Error("record the owner of a pooled worker; creating a new worker instead", "worker", w.ID, "err", err)
		a.mu.Lock()
		w.State, w.Owner, w.Warm, w.request = StateIdle, "", false, ""
		a.mu.Unlock()
		return nil, nil
	}
	if !a.immutable.Load() {
		err := a.rt.SetLabels(ctx, w.ID, map[string]string{conf.LabelOwner: owner, conf.LabelRequest: request})
		switch {
		case errors.Is(err, shim.ErrImmutable):
			a.immutable.Store(true)
		case err != nil:
			a.log.Warn("record owner on worker", "worker", w.ID, "err", err)
		}
	}
	a.metrics.setStates(a.counts())
	return &c, nil
}

// create makes a new worker and registers it. owner "" makes an idle
// pooled worker.
func (a *Agent) create(ctx context.Context, r AcquireRequest, key, owner string) (*Worker, error) {
	a.mu.Lock()
	if len(a.workers) >= a.cfg.MaxWorkers {
		a.mu.Unlock()
		return nil, errf(Exhausted, nil, "the agent runs its maximum of %d workers", a.cfg.MaxWorkers)
	}
	w := &Worker{ID: newID(), Function: r.Function, Owner: owner, Image: r.Image, Port: a.cfg.Port,
		State: StateIdle, Created: time.Now(), poolKey: key, spec: r, creating: true}
	if owner != "" {
		w.State = StateBusy
	}
	a.workers[w.ID] = w // holds a place against MaxWorkers while it is made
	a.mu.Unlock()

	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		a.forget(w.ID)
		return nil, errf(NotReady, ctx.Err(), "wait for a free creation slot")
	}
	err := a.start(ctx, w, r)
	<-a.sem
	if err != nil {
		a.forget(w.ID)
		// A step that failed oddly while the runtime went away (a container
		// that exited as dockerd shut down) is the runtime's unavailability.
		if CodeOf(err) == Internal {
			if perr := a.runtimeGoing(context.WithoutCancel(ctx)); perr != nil {
				return nil, a.runtimeErr(errors.Join(perr, err), "create worker: the runtime does not answer")
			}
		}
		return nil, err
	}
	if err := a.recs.Put(w.ID, Record{Owner: owner, Request: r.RequestID, PoolKey: key}); err != nil {
		a.log.Warn("record worker (its labels still name its owner)", "worker", w.ID, "err", err)
	}
	a.mu.Lock()
	w.creating = false
	a.mu.Unlock()
	a.metrics.setStates(a.counts())
	a.log.Info("worker ready", "worker", w.ID, "function", w.Function, "ip", w.IP, "owner", owner, "took", time.Since(w.Created))
	return w, nil
}

// runtimeGoingWindow is how long runtimeGoing watches the runtime after a
// creation failed oddly.
const runtimeGoingWindow = 2 * time.Second

// runtimeGoing reports the runtime's unavailability seen within
// runtimeGoingWindow of an odd failure: a daemon that shuts down stops its
// containers first (a worker just started exits) and closes its API only
// after, so a single ping right after the failure may still succeed.
func (a *Agent) runtimeGoing(ctx context.Context) error {
	deadline := time.Now().Add(runtimeGoingWindow)
	for {
		if err := a.rt.Ping(ctx); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (a *Agent) forget(id string) {
	a.mu.Lock()
	delete(a.workers, id)
	a.mu.Unlock()
	if err := a.recs.Delete(id); err != nil {
		a.log.Warn("forget worker record", "worker", id, "err", err)
	}
}

// start runs the lifecycle of a new worker; on any failure it undoes what
// it did, in reverse order, so nothing is left behind.
func (a *Agent) start(ctx context.Context, w *Worker, r AcquireRequest) (err error) {
	if err := a.journal.begin(w.ID); err != nil {
		return errf(Internal, err, "create worker")
	}
	var undo []func() error
	defer func() {
		if err == nil {
			if jerr := a.journal.end(w.ID); jerr != nil {
				a.log.Warn("journal", "err", jerr)
			}
			return
		}
		// Tear down with a fresh context: the caller's may be what failed.
		failed := false
		for i := len(undo) - 1; i >= 0; i-- {
			failed = undo[i]() != nil || failed
		}
		// What could not be undone stays journalled: the sweep finishes it.
		if !failed {
			if jerr := a.journal.end(w.ID); jerr != nil {
				a.log.Warn("journal", "err", jerr)
			}
		}
	}()
	cleanup := func(what string, fn func(context.Context) error) {
		undo = append(undo, func() error {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := fn(cctx)
			if err != nil {
				a.log.Error("rollback of a failed acquire", "worker", w.ID, "step", what, "err", err)
			}
			return err
		})
	}
	if err := a.rt.EnsureImage(ctx, r.Image); err != nil {
		return a.runtimeErr(err, "pull image %s", r.Image)
	}
	att := shim.Attachment{ContainerID: w.ID}
	var res *current.Result
	if !a.rt.OwnsNetNS() {
		path, err := a.nses.Create(w.ID)
		if err != nil {
			return errf(Internal, err, "create network namespace")
		}
		cleanup("remove netns", func(context.Context) error { return a.nses.Remove(w.ID) })
		att.NetNS = path
		res, err = a.net.Attach(ctx, att)
		if err != nil {
			return a.cniErr(err)
		}
		cleanup("detach network", func(c context.Context) error { return a.detach(c, att) })
	}
	memory := r.MemoryBytes
	if memory == 0 {
		memory = a.cfg.DefaultMemoryBytes
	}
	labels := map[string]string{
		conf.LabelWorker: "1", conf.LabelFunction: r.Function, conf.LabelOwner: w.Owner,
		conf.LabelPoolKey: w.poolKey, conf.LabelPort: strconv.Itoa(w.Port), conf.LabelRequest: r.RequestID,
	}
	env := map[string]string{}
	for k, v := range r.Env {
		env[k] = v
	}
	env["ESB_FUNCTION"], env["ESB_WORKER_ID"], env["PORT"] = r.Function, w.ID, strconv.Itoa(w.Port)
	if err := os.MkdirAll(a.cfg.LogDir, 0o750); err != nil {
		return errf(Internal, err, "create worker log dir")
	}
	spec := shim.WorkerSpec{ID: w.ID, Image: r.Image, Env: env, Labels: labels, MemoryBytes: memory,
		CPUMillis: r.CPUMillis, NetNS: att.NetNS, LogPath: filepath.Join(a.cfg.LogDir, w.ID+".log"),
		ReadOnlyRootfs: a.cfg.ReadOnlyRootfs}
	if err := a.rt.Create(ctx, spec); err != nil {
		return a.runtimeErr(err, "create container")
	}
	cleanup("delete container", func(c context.Context) error { return a.rt.Delete(c, w.ID) })
	netns, err := a.rt.Start(ctx, w.ID)
	if err != nil {
		return a.runtimeErr(err, "start worker")
	}
	cleanup("stop worker", func(c context.Context) error { return a.rt.Stop(c, w.ID, 0) })
	if a.rt.OwnsNetNS() {
		att.NetNS = netns
		res, err = a.net.Attach(ctx, att)
		if err != nil {
			return a.cniErr(err)
		}
		cleanup("detach network", func(c context.Context) error { return a.detach(c, att) })
	}
	ip, err := ipv4Of(res)
	if err != nil {
		return err
	}
	a.mu.Lock()
	w.IP, w.NetNS = ip, att.NetNS
	a.mu.Unlock()
	if err := a.waitReady(ctx, w); err != nil {
		return err
	}
	return nil
}

func ipv4Of(res *current.Result) (netip.Addr, error) {
	if res != nil {
		for _, ip := range res.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
				return a.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errf(Internal, nil, "the network gave the worker no IPv4 address")
}

// waitReady polls the worker's port until it accepts TCP.
func (a *Agent) waitReady(ctx context.Context, w *Worker) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ReadyTimeout)
	defer cancel()
	addr := net.JoinHostPort(w.IP.String(), strconv.Itoa(w.Port))
	delay := 2 * time.Millisecond
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := a.probe(pctx, addr)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			// A runtime that went away (and took the worker with it) is
			// Unavailable, not a slow worker.
			if perr := a.rt.Ping(context.WithoutCancel(ctx)); perr != nil {
				return a.runtimeErr(perr, "worker %s did not accept TCP on %s: the runtime does not answer", w.ID, addr)
			}
			return errf(NotReady, err, "worker %s did not accept TCP on %s within %s", w.ID, addr, a.cfg.ReadyTimeout)
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// runtimeErr classifies a runtime failure.
func (a *Agent) runtimeErr(err error, format string, args ...any) error {
	if errors.Is(err, shim.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		return errf(Unavailable, err, format, args...)
	}
	return errf(Internal, err, format, args...)
}

// cniErr classifies a network failure: an exhausted range (esb-ipam's
// code 100, or STATUS's 50) is ResourceExhausted.
func (a *Agent) cniErr(err error) error {
	if conf.IsExhausted(err) {
		return errf(Exhausted, err, "no address left on the esb network")
	}
	return errf(Internal, err, "attach the worker to the esb network")
}

// refill tops the pool of key up to PoolMinIdle in the background.
func (a *Agent) refill(key string, r AcquireRequest) {
	if a.cfg.PoolMinIdle <= 0 {
		return
	}
	a.mu.Lock()
	if a.refills[key] {
		a.mu.Unlock()
		return
	}
	a.refills[key] = true
	a.mu.Unlock()
	spec := r
	spec.Owner, spec.RequestID = "", ""
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() { a.mu.Lock(); delete(a.refills, key); a.mu.Unlock() }()
		for a.idle(key) < a.cfg.PoolMinIdle {
			ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ReadyTimeout+time.Minute)
			_, err := a.create(ctx, spec, key, "")
			cancel()
			if err != nil {
				a.log.Warn("refill warm pool", "function", spec.Function, "err", err)
				return
			}
		}
	}()
}

func (a *Agent) idle(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, w := range a.workers {
		if w.poolKey == key && w.State == StateIdle {
			n++
		}
	}
	return n
}

func (a *Agent) counts() map[State]int {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := map[State]int{}
	for _, w := range a.workers {
		if !w.creating {
			m[w.State]++
		}
	}
	return m
}

// Wait blocks until background pool refills end.
func (a *Agent) Wait() { a.wg.Wait() }

// owned returns the worker when owner may act on it.
func (a *Agent) owned(id, owner string) (*Worker, error) {
	if err := validateID("worker_id", id, true); err != nil {
		return nil, err
	}
	if err := validateID("owner_id", owner, true); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	w, ok := a.workers[id]
	if !ok || w.creating {
		return nil, errf(NotFound, nil, "no worker %s", id)
	}
	if w.Owner != owner {
		return nil, errf(Permission, nil, "worker %s does not belong to owner %s", id, owner)
	}
	return w, nil
}

// Release tears the worker down (see teardown).
func (a *Agent) Release(ctx context.Context, id, owner string) error {
	w, err := a.owned(id, owner)
	if err != nil {
		return err
	}
	if !a.claim(w.ID) { // a concurrent Release (or the event watch) got here first
		return errf(NotFound, nil, "no worker %s", id)
	}
	return a.remove(ctx, w.ID)
}

// remove tears down a claimed worker and forgets it with its request IDs.
func (a *Agent) remove(ctx context.Context, id string) error {
	a.mu.Lock()
	netns := ""
	if w, ok := a.workers[id]; ok {
		netns = w.NetNS
	}
	a.mu.Unlock()
	err := a.teardown(ctx, id, netns, a.cfg.StopGrace)
	a.forget(id)
	a.mu.Lock()
	for k, v := range a.requests {
		if v == id {
			delete(a.requests, k)
		}
	}
	a.mu.Unlock()
	a.metrics.setStates(a.counts())
	return err
}

// teardown removes every trace of a worker, giving its process grace to
// stop; each step runs even when an earlier one failed, and "already
// gone" is success. The order is stop, detach, delete, unpin where the
// agent pins the namespace (containerd); where the runtime owns it
// (Docker), detach comes first, while the namespace still exists, since
// stopping the container removes it.
func (a *Agent) teardown(ctx context.Context, id, netns string, grace time.Duration) error {
	var errs []error
	detach := func() {
		if err := a.detach(ctx, shim.Attachment{ContainerID: id, NetNS: netns}); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	if a.rt.OwnsNetNS() {
		detach()
	}
	if err := a.rt.Stop(ctx, id, grace); err != nil {
		errs = append(errs, fmt.Errorf("stop: %w", err))
	}
	if !a.rt.OwnsNetNS() {
		detach()
	}
	if err := a.rt.Delete(ctx, id); err != nil {
		errs = append(errs, fmt.Errorf("delete: %w", err))
	}
	if !a.rt.OwnsNetNS() {
		if err := a.nses.Remove(id); err != nil {
			errs = append(errs, fmt.Errorf("remove netns: %w", err))
		}
	}
	// The log goes with the worker (a failed acquire's stays, for the
	// operator to read why).
	if err := os.Remove(filepath.Join(a.cfg.LogDir, id+".log")); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove log: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, shim.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return errf(Unavailable, err, "tear down worker %s (the sweep finishes it when the runtime is back)", id)
		}
		return errf(Internal, err, "tear down worker %s", id)
	}
	return nil
}

// Pause freezes the worker's processes.
func (a *Agent) Pause(ctx context.Context, id, owner string) (*Worker, error) {
	return a.setPaused(ctx, id, owner, true)
}

// Resume thaws a paused worker.
func (a *Agent) Resume(ctx context.Context, id, owner string) (*Worker, error) {
	return a.setPaused(ctx, id, owner, false)
}

func (a *Agent) setPaused(ctx context.Context, id, owner string, pause bool) (*Worker, error) {
	w, err := a.owned(id, owner)
	if err != nil {
		return nil, err
	}
	if pause {
		err = a.rt.Pause(ctx, id)
	} else {
		err = a.rt.Resume(ctx, id)
	}
	if err != nil {
		return nil, a.runtimeErr(err, "pause/resume worker %s", id)
	}
	a.mu.Lock()
	w.State = StateBusy
	if pause {
		w.State = StatePaused
	}
	c := *w
	a.mu.Unlock()
	a.metrics.setStates(a.counts())
	return &c, nil
}

// WorkerMetrics returns the runtime's figures for the worker.
func (a *Agent) WorkerMetrics(ctx context.Context, id, owner string) (shim.Metrics, error) {
	if _, err := a.owned(id, owner); err != nil {
		return shim.Metrics{}, err
	}
	m, err := a.rt.Metrics(ctx, id)
	if err != nil {
		return m, a.runtimeErr(err, "metrics of worker %s", id)
	}
	return m, nil
}

// List returns the owner's workers, or every worker when owner is "".
func (a *Agent) List(owner string) []Worker {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Worker
	for _, w := range a.workers {
		if !w.creating && (owner == "" || w.Owner == owner) {
			out = append(out, *w)
		}
	}
	slices.SortFunc(out, func(x, y Worker) int { return x.Created.Compare(y.Created) })
	return out
}
