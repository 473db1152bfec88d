package agent

import (
	"context"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

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

// createTask creates the worker's task ahead of its start where the
// runtime splits the two (shim.TaskCreator); elsewhere Start does it all.
func (b boundedRuntime) createTask(ctx context.Context, id string) error {
	tc, ok := b.Runtime.(shim.TaskCreator)
	if !ok {
		return nil
	}
	ctx, cancel := b.bound(ctx, b.call)
	defer cancel()
	return tc.CreateTask(ctx, id)
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
