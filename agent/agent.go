// Package agent is esb-agent's logic: it creates workers through a
// container runtime, attaches them to the esb network through the shim,
// keeps warm pools, and answers acquire/release. The gRPC service in
// server.go is a thin layer over Agent.
//
// The files follow the agent's responsibilities: the worker table that
// owns the lock over the workers (table.go), acquire (acquire.go), a
// worker's creation, start and readiness (create.go, ready.go), the warm
// pools (pool.go), teardown and release (teardown.go), the other calls on
// a worker (control.go), the journal of creations in flight (journal.go),
// each worker's /etc files (etcfiles.go),
// the deadlines on every runtime call (bounded.go), the sweep (sweep.go),
// reconcile (reconcile.go), the event watch (events.go), and the daemon
// that wires them, built by NewDaemon and run by Serve (daemon.go,
// serve.go).
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/edge-serverless-box/esbnet/shim"
)

// NetNSes pins and removes worker namespaces (shim.NetNSes in production).
type NetNSes interface {
	Create(id string) (string, error)
	Pin(id, from string) (string, error)
	Remove(id string) error
	Path(id string) string
	List() ([]string, error)
	Exists(id string) bool
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
	// Dial opens InvokeWorker's connections to workers; nil means a real
	// dial.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Agent owns the workers of one node.
type Agent struct {
	rt       shim.Runtime
	net      shim.Network
	nses     NetNSes
	cfg      Config
	log      *slog.Logger
	metrics  *Metrics
	probe    func(ctx context.Context, addr string) error
	invokers invokers
	img      images
	sem      chan struct{}
	journal  journal
	etc      workerEtc
	recs     Records
	// immutable is set once the runtime said it cannot change labels.
	immutable atomic.Bool

	table *workerTable   // the workers; the only lock over them
	wg    sync.WaitGroup // background refills and undos
	drops inFlight       // teardowns of lost workers
}

// New returns an agent. Call Reconcile before serving.
func New(o Options) *Agent {
	cfg := o.Config.withDefaults()
	a := &Agent{
		rt: boundedRuntime{Runtime: o.Runtime, call: cfg.RuntimeTimeout}, net: o.Network, nses: o.NetNSes, cfg: cfg,
		log: o.Log, metrics: o.Metrics, probe: o.Probe, sem: make(chan struct{}, cfg.MaxParallel), journal: journal{dir: cfg.StateDir},
		etc: workerEtc{dir: cfg.StateDir}, recs: o.Records, table: newWorkerTable(),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.probe == nil {
		a.probe = dialProbe
	}
	a.invokers.dial = o.Dial
	if a.recs == nil {
		a.recs = noRecords{}
	}
	if a.metrics == nil {
		a.metrics = NewMetrics(nil)
	}
	return a
}

func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// Wait blocks until background pool refills end.
func (a *Agent) Wait() { a.wg.Wait() }

// setStates publishes the settled workers by state.
func (a *Agent) setStates() { a.metrics.setStates(a.table.counts()) }
