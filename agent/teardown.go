package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

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
	err := a.teardown(ctx, id, a.table.netnsOf(id), a.cfg.StopGrace)
	a.forget(id)
	a.setStates()
	return err
}

// teardown removes every trace of a worker, giving its process grace to
// stop; each step runs even when an earlier one failed, and "already
// gone" is success. The order is stop, detach, delete, unpin: the pin
// keeps the namespace for the DEL after the process ended, whichever
// made it (the agent with containerd, runc under dockerd).
func (a *Agent) teardown(ctx context.Context, id, netns string, grace time.Duration) error {
	var errs []error
	if err := a.rt.Stop(ctx, id, grace); err != nil {
		errs = append(errs, fmt.Errorf("stop: %w", err))
	}
	if err := a.detach(ctx, shim.Attachment{ContainerID: id, NetNS: netns}); err != nil {
		errs = append(errs, fmt.Errorf("detach: %w", err))
	}
	if err := a.rt.Delete(ctx, id); err != nil {
		errs = append(errs, fmt.Errorf("delete: %w", err))
	}
	if err := a.nses.Remove(id); err != nil {
		errs = append(errs, fmt.Errorf("remove netns: %w", err))
	}
	// The log goes with the worker (a failed acquire's stays, for the
	// operator to read why).
	if err := os.Remove(a.logPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove log: %w", err))
	}
	if err := a.etc.remove(id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		if errors.Is(err, shim.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			return errf(Unavailable, err, "tear down worker %s (the sweep finishes it when the runtime is back)", id)
		}
		return errf(Internal, err, "tear down worker %s", id)
	}
	return nil
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
