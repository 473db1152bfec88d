package agent

import (
	"context"
	"errors"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// Acquire returns a worker for r: a retried request ID gets the same
// worker, an idle pooled worker is taken when there is one, and otherwise
// a new worker is created and returned once its port accepts TCP.
func (a *Agent) Acquire(ctx context.Context, r AcquireRequest) (w *Worker, err error) {
	start := time.Now()
	defer func() { a.metrics.observeAcquire(start, w, err) }()
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if r.RequestID == "" {
		return a.acquire(ctx, r)
	}
	key := requestKey(r.Owner, r.RequestID)
	if w, err := a.table.joinRequest(ctx, key); w != nil || err != nil {
		if err != nil {
			return nil, errf(NotReady, err, "acquire with request_id %s", r.RequestID)
		}
		return w, nil
	}
	defer func() { a.table.leaveRequest(key, w) }()
	return a.acquire(ctx, r)
}

// acquire takes an idle worker of r's pool or creates one, and tops the
// pool up.
func (a *Agent) acquire(ctx context.Context, r AcquireRequest) (*Worker, error) {
	key := poolKey(r)
	if w, err := a.takeIdle(ctx, key, r.Owner, r.RequestID); w != nil || err != nil {
		a.afterAnswer(ctx, func() { a.refill(key, r) })
		return w, err
	}
	w, err := a.create(ctx, r, key, r.Owner)
	if err != nil {
		return nil, err
	}
	a.afterAnswer(ctx, func() { a.refill(key, r) })
	return w, nil
}

// takeIdle hands an idle pooled worker of key to owner, or returns nil.
func (a *Agent) takeIdle(ctx context.Context, key, owner, request string) (*Worker, error) {
	w, c := a.table.handIdle(key, owner, request, time.Now())
	if w == nil {
		return nil, nil
	}
	// The record is what says whose the worker is after a restart: without
	// it the worker goes back to the pool and the caller gets a new one
	// (whose labels name its owner from the start). It is written before
	// the answer, without a disk sync (see BoltRecords): it outlives a
	// SIGKILL of the agent.
	if err := a.recs.Put(w.ID, Record{Owner: owner, Request: request, PoolKey: key}); err != nil {
		a.log.Error("record the owner of a pooled worker; creating a new worker instead", "worker", w.ID, "err", err)
		a.table.unhand(w)
		return nil, nil
	}
	a.setStates()
	a.labelOwner(ctx, w.ID, owner, request)
	return &c, nil
}

// labelOwner writes the owner of a worker taken from the pool on its
// container, after the answer: the record already says whose it is (a
// restarted agent reads the record first), the label is for the operator
// (ctr containers ls) and costs a runtime round trip (about 3 ms, most of a
// warm acquire) that the caller does not wait for.
func (a *Agent) labelOwner(ctx context.Context, id, owner, request string) {
	if a.immutable.Load() {
		return
	}
	a.afterAnswer(ctx, func() { a.writeOwner(ctx, id, owner, request) })
}

// writeOwner labels worker id with its owner (see labelOwner).
func (a *Agent) writeOwner(ctx context.Context, id, owner, request string) {
	err := a.rt.SetLabels(context.WithoutCancel(ctx), id, map[string]string{conf.LabelOwner: owner, conf.LabelRequest: request})
	switch {
	case errors.Is(err, shim.ErrImmutable):
		a.immutable.Store(true)
	case errors.Is(err, shim.ErrNotFound):
		// Released (or lost) before its label was written.
	case err != nil:
		a.log.Warn("record owner on worker", "worker", id, "err", err)
	}
}
