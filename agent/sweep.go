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

// SweepReport says what one sweep cleaned.
type SweepReport struct {
	Removed     int // worker containers the agent did not know, torn down
	Interrupted int // journalled creations of no live worker, torn down
	OldLogs     int // logs of workers gone for over OrphanLogAge, removed
}

// OrphanLogAge is how long log-dir keeps the log of a worker that is gone
// without a release (a failed acquire's, or one that ended while no agent
// ran: a release removes the log with the worker). It is there for an
// operator to read why; the sweep removes it once it was last written
// this long ago, so that a node losing many workers does not fill the
// disk log-dir is on (/var/log by default), as the kubelet's garbage
// collection bounds the logs of dead containers.
const OrphanLogAge = 24 * time.Hour

// Sweep finishes what failed cleanups left: worker containers the agent
// does not know (a rollback or release that could not reach the runtime),
// creations in the journal with no live worker (an agent killed mid-way),
// and, through a CNI GC with every known worker as valid, any address,
// veth or anti-spoof element of no worker (a plugin killed during DEL, an
// ADD that finished after its agent died); and the logs of workers gone
// for over OrphanLogAge. It returns Unavailable, and changes nothing,
// while the runtime does not answer.
func (a *Agent) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	if err := a.rt.Ping(ctx); err != nil {
		return rep, a.runtimeErr(err, "sweep")
	}
	// A worker is registered before its container is made and forgotten
	// after it is removed; the table also keeps what it forgets from here
	// on, so every container the listing below finds of a worker being
	// made or released is in the known set read after it, even a worker
	// released while the listing ran (a thousand workers take seconds to
	// list: without this, a mass release drew one warning and a second
	// teardown per worker).
	a.table.beginSweep()
	defer a.table.endSweep()
	infos, err := a.rt.List(ctx)
	if err != nil {
		return rep, a.runtimeErr(err, "sweep: list worker containers")
	}
	journalled, jerr := a.journal.list()
	known := a.table.known()
	errs := []error{jerr}
	done, err := a.sweepUnknown(ctx, infos, known)
	rep.Removed = len(done)
	errs = append(errs, err)
	var undo []string
	for _, id := range journalled {
		if !known[id] && !done[id] {
			undo = append(undo, id)
		}
	}
	rep.Interrupted = len(undo)
	errs = append(errs, a.undoCreations(ctx, undo))
	n, err := a.removeOldLogs(known, time.Now())
	rep.OldLogs = n
	errs = append(errs, err)
	if err := a.net.GC(ctx, a.table.attachments()); err != nil {
		errs = append(errs, err)
	}
	if rep.Removed > 0 || rep.Interrupted > 0 || rep.OldLogs > 0 {
		a.log.Info("swept", "removed", rep.Removed, "interrupted", rep.Interrupted, "old_logs", rep.OldLogs)
	}
	if err := errors.Join(errs...); err != nil {
		return rep, errf(Internal, err, "sweep")
	}
	return rep, nil
}

// logExt ends the name of a worker's log file in LogDir, <ID>.log.
const logExt = ".log"

// logPath is where worker id's log goes.
func (a *Agent) logPath(id string) string { return filepath.Join(a.cfg.LogDir, id+logExt) }

// removeOldLogs removes the logs in LogDir of workers not in known that
// were last written over OrphanLogAge before now, and says how many.
func (a *Agent) removeOldLogs(known map[string]bool, now time.Time) (int, error) {
	names, err := entries(a.cfg.LogDir, func(e fs.DirEntry) bool {
		id, ok := strings.CutSuffix(e.Name(), logExt)
		if !ok || !shim.IsWorkerID(id) || known[id] || !e.Type().IsRegular() {
			return false
		}
		fi, err := e.Info()
		return err == nil && now.Sub(fi.ModTime()) > OrphanLogAge
	})
	errs := []error{err}
	for _, name := range names {
		if err := os.Remove(filepath.Join(a.cfg.LogDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return len(names), fmt.Errorf("remove old worker logs: %w", err)
	}
	return len(names), nil
}

// sweepUnknown tears down the listed worker containers the agent does not
// know and ends their journal entries; it returns the IDs it tried.
func (a *Agent) sweepUnknown(ctx context.Context, infos []shim.WorkerInfo, known map[string]bool) (map[string]bool, error) {
	var errs []error
	done := map[string]bool{}
	for _, info := range infos {
		if known[info.ID] {
			continue
		}
		a.log.Warn("sweep: tearing down a worker container the agent does not know", "worker", info.ID)
		done[info.ID] = true
		if err := a.teardown(ctx, info.ID, a.nses.Path(info.ID), 0); err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, a.journal.end(info.ID))
	}
	return done, errors.Join(errs...)
}

// undoCreation removes whatever an interrupted creation of id made (its
// process is killed: no client ever had it) and then its journal entry.
func (a *Agent) undoCreation(ctx context.Context, id string) error {
	if err := a.teardown(ctx, id, a.nses.Path(id), 0); err != nil {
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
		if !a.table.startUndo(id) { // the reconcile's or a sweep's undo has it
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = a.undoCreation(ctx, id)
			a.table.endUndo(id)
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
	everyUntil(ctx, interval, func() {
		sctx, cancel := context.WithTimeout(ctx, interval+pullFactor*a.cfg.RuntimeTimeout)
		defer cancel()
		if _, err := a.Sweep(sctx); err != nil {
			a.log.Warn("sweep", "err", err)
		}
	})
}

// everyUntil calls f every interval until ctx ends.
func everyUntil(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// beginSweep makes forget keep the IDs it drops until endSweep, for known.
func (t *workerTable) beginSweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sweeps == 0 {
		t.gone = map[string]bool{}
	}
	t.sweeps++
}

// endSweep ends what beginSweep began; the last sweep drops the IDs kept.
func (t *workerTable) endSweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweeps--
	if t.sweeps == 0 {
		t.gone = nil
	}
}
