package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// This file holds what keeps the node clean when things fail: deadlines on
// every runtime call, a journal of worker creations in flight, and the
// periodic sweep that finishes interrupted cleanups.

// boundedRuntime puts a deadline on every call into the runtime, so a hung
// daemon costs a caller at most that long and the answer is Unavailable,
// whatever deadline (or none) the caller set.
type boundedRuntime struct {
	shim.Runtime
	call time.Duration
}

// pullFactor is how many call timeouts an image pull may take.
const pullFactor = 10

func (b boundedRuntime) bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// EnsureImage first pings with the call deadline (a hung daemon answers
// nothing there either), then allows a pull pullFactor times as long.
func (b boundedRuntime) EnsureImage(ctx context.Context, ref string) error {
	if err := b.Ping(ctx); err != nil {
		return err
	}
	ctx, cancel := b.bound(ctx, pullFactor*b.call)
	defer cancel()
	return b.Runtime.EnsureImage(ctx, ref)
}

func (b boundedRuntime) Create(ctx context.Context, s shim.WorkerSpec) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Create(ctx, s)
}

func (b boundedRuntime) Start(ctx context.Context, id string) (string, error) {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Start(ctx, id)
}

// Stop may take the grace on top of the call deadline.
func (b boundedRuntime) Stop(ctx context.Context, id string, grace time.Duration) error {
	ctx, cancel := b.bound(ctx, b.call+grace)
	defer cancel()
	return b.Runtime.Stop(ctx, id, grace)
}

func (b boundedRuntime) Delete(ctx context.Context, id string) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Delete(ctx, id)
}

func (b boundedRuntime) Pause(ctx context.Context, id string) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Pause(ctx, id)
}

func (b boundedRuntime) Resume(ctx context.Context, id string) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Resume(ctx, id)
}

func (b boundedRuntime) Metrics(ctx context.Context, id string) (shim.Metrics, error) {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Metrics(ctx, id)
}

func (b boundedRuntime) SetLabels(ctx context.Context, id string, labels map[string]string) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.SetLabels(ctx, id, labels)
}

// List may take longer than one call: it walks every worker.
func (b boundedRuntime) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	ctx, cancel := b.bound(ctx, pullFactor*b.call)
	defer cancel()
	return b.Runtime.List(ctx)
}

func (b boundedRuntime) Ping(ctx context.Context) error {
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return b.Runtime.Ping(ctx)
}

// journal records the workers being created, one empty file each in
// <dir>/creating, so that after a crash the next agent knows which
// half-made workers (a pinned namespace not yet attached, a container not
// yet started) were its own. A zero journal (no dir) records nothing.
type journal struct{ dir string }

func (j journal) path(id string) string { return filepath.Join(j.dir, "creating", id) }

// begin records that id is being created.
func (j journal) begin(id string) error {
	if j.dir == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(j.dir, "creating"), 0o700); err != nil {
		return fmt.Errorf("create the agent's state dir: %w", err)
	}
	f, err := os.OpenFile(j.path(id), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("journal the creation of %s: %w", id, err)
	}
	return f.Close()
}

// end forgets id's creation (made, or undone).
func (j journal) end(id string) error {
	if j.dir == "" {
		return nil
	}
	if err := os.Remove(j.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal the end of %s: %w", id, err)
	}
	return nil
}

// list returns the creations recorded.
func (j journal) list() ([]string, error) {
	if j.dir == "" {
		return nil, nil
	}
	ents, err := os.ReadDir(filepath.Join(j.dir, "creating"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the agent's journal: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// detach runs DEL, again when it fails (DEL is idempotent; a plugin that
// was killed or timed out usually succeeds the next time).
func (a *Agent) detach(ctx context.Context, att shim.Attachment) error {
	var err error
	for try := range 3 {
		if try > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(time.Duration(try) * 100 * time.Millisecond):
			}
		}
		if err = a.net.Detach(ctx, att); err == nil {
			return nil
		}
		a.log.Warn("detach failed", "worker", att.ContainerID, "try", try+1, "err", err)
	}
	return err
}

// SweepReport says what one sweep cleaned.
type SweepReport struct {
	Removed     int // worker containers the agent did not know, torn down
	Interrupted int // journalled creations of no live worker, torn down
}

// Sweep finishes what failed cleanups left: worker containers the agent
// does not know (a rollback or release that could not reach the runtime),
// creations in the journal with no live worker (an agent killed mid-way),
// and, through a CNI GC with every known worker as valid, any address,
// veth or anti-spoof element of no worker (a plugin killed during DEL, an
// ADD that finished after its agent died). It returns Unavailable, and
// changes nothing, while the runtime does not answer.
func (a *Agent) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	if err := a.rt.Ping(ctx); err != nil {
		return rep, a.runtimeErr(err, "sweep")
	}
	infos, err := a.rt.List(ctx)
	if err != nil {
		return rep, a.runtimeErr(err, "sweep: list worker containers")
	}
	journalled, jerr := a.journal.list()
	// Known workers are read after the listing: a worker is registered
	// before its container is made and forgotten after it is removed, so
	// every container listed above of a worker being made or released is
	// in this set.
	a.mu.Lock()
	known := make(map[string]bool, len(a.workers))
	for id := range a.workers {
		known[id] = true
	}
	a.mu.Unlock()
	errs := []error{jerr}
	done := map[string]bool{}
	for _, info := range infos {
		if known[info.ID] {
			continue
		}
		a.log.Warn("sweep: tearing down a worker container the agent does not know", "worker", info.ID)
		rep.Removed++
		done[info.ID] = true
		netns := info.NetNS
		if !a.rt.OwnsNetNS() {
			netns = a.nses.Path(info.ID)
		}
		if err := a.teardown(ctx, info.ID, netns, 0); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, a.journal.end(info.ID))
	}
	var undo []string
	for _, id := range journalled {
		if !known[id] && !done[id] {
			undo = append(undo, id)
		}
	}
	rep.Interrupted = len(undo)
	errs = append(errs, a.undoCreations(ctx, undo))
	a.mu.Lock()
	live := make([]shim.Attachment, 0, len(a.workers))
	for _, w := range a.workers {
		live = append(live, shim.Attachment{ContainerID: w.ID, NetNS: w.NetNS})
	}
	a.mu.Unlock()
	if err := a.net.GC(ctx, live); err != nil {
		errs = append(errs, err)
	}
	if rep.Removed > 0 || rep.Interrupted > 0 {
		a.log.Info("swept", "removed", rep.Removed, "interrupted", rep.Interrupted)
	}
	if err := errors.Join(errs...); err != nil {
		return rep, errf(Internal, err, "sweep")
	}
	return rep, nil
}

// undoCreation removes whatever an interrupted creation of id made (its
// process is killed: no client ever had it) and then its journal entry.
func (a *Agent) undoCreation(ctx context.Context, id string) error {
	netns := ""
	if !a.rt.OwnsNetNS() {
		netns = a.nses.Path(id)
	}
	if err := a.teardown(ctx, id, netns, 0); err != nil {
		return err
	}
	return a.journal.end(id)
}

// undoCreations undoes ids, MaxParallel at a time.
func (a *Agent) undoCreations(ctx context.Context, ids []string) error {
	errs := make([]error, len(ids))
	sem := make(chan struct{}, a.cfg.MaxParallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		a.mu.Lock()
		busy := a.undoing[id]
		a.undoing[id] = true
		a.mu.Unlock()
		if busy { // the reconcile's or a sweep's undo has it
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = a.undoCreation(ctx, id)
			a.mu.Lock()
			delete(a.undoing, id)
			a.mu.Unlock()
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Maintain sweeps every interval until ctx ends (interval <= 0: never).
func (a *Agent) Maintain(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, interval+pullFactor*a.cfg.RuntimeTimeout)
		if _, err := a.Sweep(sctx); err != nil {
			a.log.Warn("sweep", "err", err)
		}
		cancel()
	}
}
