package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// ReconcileReport says what Reconcile found.
type ReconcileReport struct {
	Adopted       int
	Removed       int // worker containers without a network, torn down
	OrphanNetNSes int // pinned namespaces without a container, removed
	Interrupted   int // creations in the journal that made no live worker, undone in the background
	Took          time.Duration
}

// Reconcile makes the node consistent before the agent serves: running
// worker containers whose network is intact are adopted (with their
// address from the runtime's CNI result cache, no plugin is run, and their
// owner from the agent's records, else their labels), records of workers
// not adopted are deleted, worker containers without a network are torn
// down, pinned namespaces without a container are detached and removed,
// the /etc files of workers gone are deleted, creations the journal
// recorded that made no live worker (the last agent died during them) are
// undone, and a CNI GC with the live set releases every address, veth and
// rule that belongs to nothing (and lets the plugins re-register a live
// worker's address that their store lost).
func (a *Agent) Reconcile(ctx context.Context) (ReconcileReport, error) {
	start := time.Now()
	var rep ReconcileReport
	infos, err := a.rt.List(ctx)
	if err != nil {
		return rep, a.runtimeErr(err, "list worker containers")
	}
	var errs []error
	recs, err := a.recs.All()
	if err != nil {
		errs = append(errs, err) // labels speak for the workers
	}
	// A journalled creation never reached its caller: its worker is undone
	// even when its container runs (it may not have passed readiness).
	journalled, err := a.journal.list()
	if err != nil {
		errs = append(errs, err)
	}
	interrupted := map[string]bool{}
	for _, id := range journalled {
		interrupted[id] = true
	}
	live, attachments, err := a.adoptListed(ctx, infos, recs, interrupted, &rep)
	errs = append(errs, err)
	// They are undone in the background, so the agent serves at once.
	rep.Interrupted = len(journalled)
	a.undoInBackground(ctx, journalled)
	errs = append(errs, a.removeOrphanPins(ctx, live, interrupted, &rep))
	errs = append(errs, a.removeOrphanEtc(live, interrupted))
	for id := range recs {
		if !live[id] {
			if err := a.recs.Delete(id); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := a.net.GC(ctx, attachments); err != nil {
		errs = append(errs, err)
	}
	rep.Took = time.Since(start)
	a.setStates()
	a.log.Info("reconciled", "adopted", rep.Adopted, "removed", rep.Removed, "orphan_netns", rep.OrphanNetNSes,
		"interrupted", rep.Interrupted, "took", rep.Took)
	if errors.Join(errs...) != nil {
		return rep, errf(Internal, errors.Join(errs...), "reconcile")
	}
	return rep, nil
}

// adoptListed adopts the listed workers that are adoptable and not
// interrupted creations, and tears the others down; it returns the
// adopted IDs and their attachments.
func (a *Agent) adoptListed(ctx context.Context, infos []shim.WorkerInfo, recs map[string]Record,
	interrupted map[string]bool, rep *ReconcileReport) (map[string]bool, []shim.Attachment, error) {
	live := map[string]bool{}
	var attachments []shim.Attachment
	var errs []error
	for _, info := range infos {
		if interrupted[info.ID] {
			continue
		}
		w, ok := a.adoptable(ctx, info, recs)
		if !ok {
			rep.Removed++
			if err := a.teardown(ctx, info.ID, info.NetNS, 0); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		a.table.adopt(w)
		live[w.ID] = true
		attachments = append(attachments, shim.Attachment{ContainerID: w.ID, NetNS: w.NetNS})
		rep.Adopted++
	}
	return live, attachments, errors.Join(errs...)
}

// undoInBackground undoes the journalled creations a killed agent left.
func (a *Agent) undoInBackground(ctx context.Context, journalled []string) {
	if len(journalled) == 0 {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pullFactor*a.cfg.RuntimeTimeout)
		defer cancel()
		start := time.Now()
		if err := a.undoCreations(uctx, journalled); err != nil {
			a.log.Error("undo creations a killed agent left", "err", err)
			return
		}
		a.log.Info("undid creations a killed agent left", "count", len(journalled), "took", time.Since(start))
	}()
}

// removeOrphanPins detaches and removes the pinned namespaces this agent
// attached that belong to no live worker nor interrupted creation.
func (a *Agent) removeOrphanPins(ctx context.Context, live, interrupted map[string]bool, rep *ReconcileReport) error {
	var errs []error
	ids, err := a.nses.List()
	if err != nil {
		errs = append(errs, fmt.Errorf("list pinned namespaces: %w", err))
	}
	for _, id := range ids {
		if live[id] || interrupted[id] {
			continue
		}
		att := shim.Attachment{ContainerID: id, NetNS: a.nses.Path(id)}
		// Only pins this agent attached (its CNI cache knows them) are
		// its orphans; another agent sharing the directory keeps its own.
		if res, err := a.net.Cached(ctx, att); err != nil || res == nil {
			a.log.Warn("pinned namespace without a container or an attachment of this agent's; left alone", "netns", att.NetNS)
			continue
		}
		rep.OrphanNetNSes++
		if err := a.detach(ctx, att); err != nil {
			errs = append(errs, err)
		}
		if err := a.nses.Remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeOrphanEtc removes the /etc files of workers that are neither live
// nor interrupted creations (those go with their undo): workers that ended
// while no agent ran.
func (a *Agent) removeOrphanEtc(live, interrupted map[string]bool) error {
	ids, err := a.etc.list()
	errs := []error{err}
	for _, id := range ids {
		if !live[id] && !interrupted[id] {
			errs = append(errs, a.etc.remove(id))
		}
	}
	return errors.Join(errs...)
}

// pinListed pins the namespace of a listed worker whose runtime made it
// (Docker) and no pin holds: a worker of an agent that did not pin them, or
// whose pin was removed. It reports whether the worker now has its pin.
func (a *Agent) pinListed(info shim.WorkerInfo) bool {
	if !a.rt.OwnsNetNS() || info.NetNS == "" {
		return false
	}
	if _, err := a.nses.Pin(info.ID, info.NetNS); err != nil {
		a.log.Warn("reconcile: cannot pin a running worker's namespace; not adopted", "worker", info.ID, "err", err)
		return false
	}
	return true
}

// adoptable turns a listed container into a worker when it runs (or is
// paused) and its network is there. Its owner, request and pool come from
// the agent's record of it, or from its labels when there is none.
func (a *Agent) adoptable(ctx context.Context, info shim.WorkerInfo, recs map[string]Record) (*Worker, bool) {
	if info.State != shim.StateRunning && info.State != shim.StatePaused {
		return nil, false
	}
	if !a.nses.Exists(info.ID) && !a.pinListed(info) {
		return nil, false
	}
	netns := a.nses.Path(info.ID)
	res, err := a.net.Cached(ctx, shim.Attachment{ContainerID: info.ID, NetNS: netns})
	if err != nil || res == nil {
		return nil, false
	}
	ip, err := ipv4Of(res)
	if err != nil {
		return nil, false
	}
	if err := a.net.Intact(ctx, shim.Attachment{ContainerID: info.ID, NetNS: netns}, ip); err != nil {
		a.log.Warn("worker lost its network", "worker", info.ID, "err", err)
		return nil, false
	}
	port, err := strconv.Atoi(info.Labels[conf.LabelPort])
	if err != nil {
		port = a.cfg.Port
	}
	w := &Worker{
		ID: info.ID, Function: info.Labels[conf.LabelFunction], Owner: info.Labels[conf.LabelOwner],
		Image: info.Image, IP: ip, Port: port, Created: info.Created, NetNS: netns,
		poolKey: info.Labels[conf.LabelPoolKey], State: StateBusy, request: info.Labels[conf.LabelRequest],
	}
	if rec, ok := recs[info.ID]; ok {
		w.Owner, w.request, w.poolKey = rec.Owner, rec.Request, rec.PoolKey
	}
	switch {
	case info.State == shim.StatePaused:
		w.State = StatePaused
	case w.Owner == "":
		w.State = StateIdle
	}
	return w, true
}
