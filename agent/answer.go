package agent

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/stats"
)

// Work an answer does not wait for (the owner label of a pooled worker,
// topping the pool up) starts a moment after the answer has gone. Started
// before, or right as the answer is handed to the transport, it competes
// with the answer for this machine's two cores (a netns, a plugin's exec,
// containerd's snapshot and shim): a warm acquire took 1.37 ms over the
// socket against 0.15 ms in the handler, and 0.54 ms with the work held
// back (docs/performance.md). The caller's next step, calling the worker,
// gains the same way; the pool's refill, which takes about 240 ms, does not
// notice the wait.
//
// The gRPC servers carry answerStats, whose End event comes after the
// answer and its status were queued to the transport; answerGrace more lets
// the transport write them and the caller read them. A call made inside
// the process (tests, the profiler) has no queue: its work starts at once.
const answerGrace = 2 * time.Millisecond

type answerKey struct{}

// answerQueue holds what starts after one call's answer.
type answerQueue struct {
	mu    sync.Mutex
	done  bool
	start []func()
}

// add queues start, or reports false when the answer has gone already.
func (q *answerQueue) add(start func()) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.done {
		return false
	}
	q.start = append(q.start, start)
	return true
}

func (q *answerQueue) run() {
	q.mu.Lock()
	start := q.start
	q.start, q.done = nil, true
	q.mu.Unlock()
	for _, s := range start {
		s()
	}
}

// afterAnswer runs fn in a goroutine the agent's Wait joins, once the
// answer of ctx's call has gone (or at once outside a gRPC call).
func (a *Agent) afterAnswer(ctx context.Context, fn func()) {
	a.wg.Add(1)
	start := func() {
		go func() {
			defer a.wg.Done()
			fn()
		}()
	}
	if q, ok := ctx.Value(answerKey{}).(*answerQueue); ok && q.add(start) {
		return
	}
	start()
}

// answerStats is the gRPC stats handler that gives each call its queue and
// starts what it holds answerGrace after the call's end.
type answerStats struct{}

func (answerStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, answerKey{}, &answerQueue{})
}

func (answerStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, end := s.(*stats.End); !end {
		return
	}
	if q, ok := ctx.Value(answerKey{}).(*answerQueue); ok {
		time.AfterFunc(answerGrace, q.run)
	}
}

func (answerStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (answerStats) HandleConn(context.Context, stats.ConnStats) {}
