package agent

import (
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// create makes a new worker and registers it, returning a copy. owner ""
// makes an idle pooled worker.
func (a *Agent) create(ctx context.Context, r AcquireRequest, key, owner string) (*Worker, error) {
	w := &Worker{ID: newID(), Function: r.Function, Owner: owner, Image: r.Image, Port: a.cfg.Port,
		State: StateIdle, Created: time.Now(), poolKey: key, request: r.RequestID, spec: r}
	if owner != "" {
		w.State = StateBusy
	}
	// The worker holds a place against MaxWorkers while it is made.
	if !a.table.reserve(w, a.cfg.MaxWorkers) {
		return nil, errf(Exhausted, nil, "the agent runs its maximum of %d workers", a.cfg.MaxWorkers)
	}

	if a.cfg.ShimGroupSize > 0 && !a.rt.OwnsNetNS() {
		a.table.joinShimGroup(w, a.cfg.ShimGroupSize)
	}

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
	c := a.table.settle(w, time.Now())
	a.setStates()
	a.log.Info("worker ready", "worker", c.ID, "function", c.Function, "ip", c.IP, "owner", owner, "took", time.Since(c.Created))
	return &c, nil
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

// forget drops a worker from the table and its record.
func (a *Agent) forget(id string) {
	a.table.forget(id)
	a.invokers.drop(id)
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
	c := &creation{a: a, w: w, r: r, att: shim.Attachment{ContainerID: w.ID}}
	defer func() { c.finish(err) }()
	// The watch of the worker's exit lives as long as its creation.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	c.watchCtx = wctx
	if a.rt.OwnsNetNS() {
		// Docker makes the namespace as it starts the container: the
		// network follows the start. Its create wants the files it mounts.
		if err := c.writeEtc(); err != nil {
			return err
		}
		if err := c.createWithImage(ctx); err != nil {
			return err
		}
		if err := c.startTask(ctx); err != nil {
			return err
		}
		if err := c.attach(ctx); err != nil {
			return c.attachAfterStartErr(err)
		}
	} else if err := c.prepare(ctx); err != nil {
		return err
	}
	return a.waitReady(ctx, w, c.exited)
}

// prepare makes what the worker's start needs where the agent owns the
// namespace (containerd): the pinned namespace and its network (CNI ADD)
// beside the image check, the container's creation (snapshot, spec) and,
// where the runtime splits it from the start, its task's (shim, runc
// create). The container's spec needs only the paths of the namespace and
// the worker's /etc files; the task's creation, where runc joins the one
// and mounts the others, waits for them.
// Together they take the longer of the two instead of their sum (issue
// 17: the agent's share of a cold acquire); then the task starts: the
// worker's process runs with its network up.
func (c *creation) prepare(ctx context.Context) error {
	c.att.NetNS = c.a.nses.Path(c.w.ID)
	pinned := make(chan error, 1)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := c.pin()
		if err == nil {
			err = c.writeEtc() // mounted by the task's creation too
		}
		pinned <- err
		if err != nil {
			return err
		}
		return c.attach(gctx)
	})
	// A failed ADD does not cut the container's creation short: containerd
	// goes on with a call whose client gave up (a snapshot prepared after
	// the rollback's delete looked for it stayed behind), so the creation
	// runs to its end, each runtime call bounded by the runtime timeout,
	// and the rollback then removes all of it.
	cctx := context.WithoutCancel(ctx)
	g.Go(func() error {
		if err := c.createWithImage(cctx); err != nil {
			return err
		}
		if err := <-pinned; err != nil {
			return err
		}
		// The container's delete, registered by create, deletes the task.
		if br, ok := c.a.rt.(boundedRuntime); ok {
			if err := br.createTask(cctx, c.w.ID); err != nil {
				return c.a.runtimeErr(err, "create task")
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	return c.startTask(ctx)
}

// creation is one worker being made: the steps it took so far, undone in
// reverse order when a later one fails.
type creation struct {
	a   *Agent
	w   *Worker
	r   AcquireRequest
	att shim.Attachment
	// mu guards undo: the network and the container are made side by side.
	mu   sync.Mutex
	undo []func() error
	// watchCtx bounds the watch of the worker's exit, which run starts
	// right after the process does; exited is where it reports.
	watchCtx context.Context
	exited   <-chan shim.Exit
	since    time.Time // when the container was created: its events replay from here
}

// cleanup registers the undo of a step; it runs with a fresh context,
// since the caller's may be what failed.
func (c *creation) cleanup(what string, fn func(context.Context) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.undo = append(c.undo, func() error {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := fn(cctx)
		if err != nil {
			c.a.log.Error("rollback of a failed acquire", "worker", c.w.ID, "step", what, "err", err)
		}
		return err
	})
}

// finish ends the journal entry of a creation that succeeded, or undoes a
// failed one; what could not be undone stays journalled: the sweep
// finishes it.
func (c *creation) finish(err error) {
	failed := false
	if err != nil {
		for i := len(c.undo) - 1; i >= 0; i-- {
			failed = c.undo[i]() != nil || failed
		}
	}
	if !failed {
		if jerr := c.a.journal.end(c.w.ID); jerr != nil {
			c.a.log.Warn("journal", "err", jerr)
		}
	}
}

// pin makes the worker's namespace at c.att.NetNS, where the agent pins
// it (containerd).
func (c *creation) pin() error {
	if _, err := c.a.nses.Create(c.w.ID); err != nil {
		return errf(Internal, err, "create network namespace")
	}
	c.cleanup("remove netns", func(context.Context) error { return c.a.nses.Remove(c.w.ID) })
	return nil
}

// attach runs the network's ADD for the worker's namespace. The DEL is
// registered before the ADD, as the container's delete is before its
// create: an ADD cut off half-way (a sibling step failed and cancelled it)
// may hold an address, and DEL of an attachment that never was is a no-op.
func (c *creation) attach(ctx context.Context) error {
	att := c.att
	c.cleanup("detach network", func(ctx context.Context) error { return c.a.detach(ctx, att) })
	res, err := c.a.net.Attach(ctx, att)
	if err != nil {
		return c.a.cniErr(err)
	}
	ip, err := ipv4Of(res)
	if err != nil {
		return err
	}
	// Recorded at once: the resolver answers the worker's own host name
	// from it, perhaps before the creation ends.
	c.a.table.setAddress(c.w, ip, att.NetNS)
	if err := c.a.etc.name(c.w.ID, ip); err != nil {
		return errf(Internal, err, "create worker")
	}
	return nil
}

// create creates the worker's container (its snapshot and spec).
func (c *creation) create(ctx context.Context) error {
	spec, err := c.spec()
	if err != nil {
		return err
	}
	rt, id := c.a.rt, c.w.ID
	// Events of the worker are replayed from here (Docker): its exit is
	// seen even when it comes before the watch is in place.
	c.since = time.Now()
	// The delete is registered before the create: a create cut off half-way
	// (the runtime stopping) can leave a snapshot or a container behind,
	// and Delete removes those too. Where it cannot (the runtime is still
	// away), the journal entry stays and the sweep finishes it.
	c.cleanup("delete container", func(ctx context.Context) error { return rt.Delete(ctx, id) })
	if err := rt.Create(ctx, spec); err != nil {
		return c.a.runtimeErr(err, "create container")
	}
	return nil
}

// startTask starts the created container and watches its exit.
func (c *creation) startTask(ctx context.Context) error {
	rt, id := c.a.rt, c.w.ID
	netns, err := rt.Start(ctx, id)
	if err != nil && !rt.OwnsNetNS() {
		return c.a.runtimeErr(err, "start worker")
	}
	c.cleanup("stop worker", func(ctx context.Context) error { return rt.Stop(ctx, id, 0) })
	c.exited = rt.WaitExit(c.watchCtx, id, c.since)
	if err != nil { // Docker: a worker that ended at once took its namespace
		return c.attachAfterStartErr(c.a.runtimeErr(err, "start worker"))
	}
	if rt.OwnsNetNS() {
		// runc made the namespace with the process; the agent pins it, as it
		// pins its own, so it lasts until the teardown's DEL and reconcile
		// and doctor find it under the same path.
		if _, err := c.a.nses.Pin(id, netns); err != nil {
			return c.attachAfterStartErr(errf(Internal, err, "pin the worker's network namespace"))
		}
		c.cleanup("remove netns", func(context.Context) error { return c.a.nses.Remove(id) })
		c.att.NetNS = c.a.nses.Path(id)
	}
	return nil
}

// spec is the container of the worker: its labels, its environment (the
// caller's, with the keys the agent sets), its limits and its log.
func (c *creation) spec() (shim.WorkerSpec, error) {
	w, r, cfg := c.w, c.r, c.a.cfg
	memory := r.MemoryBytes
	if memory == 0 {
		memory = cfg.DefaultMemoryBytes
	}
	labels := map[string]string{
		conf.LabelWorker: "1", conf.LabelFunction: r.Function, conf.LabelOwner: w.Owner,
		conf.LabelPoolKey: w.poolKey, conf.LabelPort: strconv.Itoa(w.Port), conf.LabelRequest: r.RequestID,
	}
	if w.shimGroup != "" {
		labels[conf.LabelShimGroup] = w.shimGroup
	}
	if cfg.Network != "" {
		labels[conf.LabelNetwork] = cfg.Network
	}
	env := map[string]string{}
	for k, v := range r.Env {
		env[k] = v
	}
	env["ESB_FUNCTION"], env["ESB_WORKER_ID"], env["PORT"] = r.Function, w.ID, strconv.Itoa(w.Port)
	if err := os.MkdirAll(cfg.LogDir, 0o750); err != nil {
		return shim.WorkerSpec{}, errf(Internal, err, "create worker log dir")
	}
	spec := shim.WorkerSpec{ID: w.ID, Image: r.Image, Env: env, Labels: labels, MemoryBytes: memory,
		CPUMillis: r.CPUMillis, NetNS: c.att.NetNS, LogPath: c.a.logPath(w.ID),
		ReadOnlyRootfs: cfg.ReadOnlyRootfs, ResolvConf: cfg.ResolvConf, ShimGroup: w.shimGroup}
	spec.Hosts, spec.HostnameFile = c.a.etc.files(w.ID)
	return spec, nil
}
