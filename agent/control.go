package agent

import (
	"context"

	"github.com/edge-serverless-box/esbnet/shim"
)

// owned returns the worker when owner may act on it.
func (a *Agent) owned(id, owner string) (*Worker, error) {
	if err := validateID("worker_id", id, true); err != nil {
		return nil, err
	}
	if err := validateID("owner_id", owner, true); err != nil {
		return nil, err
	}
	return a.table.owned(id, owner)
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
	state := StateBusy
	if pause {
		state = StatePaused
	}
	c := a.table.setState(w, state)
	a.setStates()
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
	return a.table.list(owner)
}
