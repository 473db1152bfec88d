package agent

import (
	"net/netip"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// The table's reads and writes for the Gateway's contract and the pull
// policy: the same lock and invariants as table.go.

// hostnameAt returns the host name of the worker at ip, settled or being
// made, or "" when no worker has it.
func (t *workerTable) hostnameAt(ip netip.Addr) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, w := range t.workers {
		if w.IP == ip {
			return shim.WorkerHostname(w.ID)
		}
	}
	return ""
}

// snapshot returns a copy of w taken under the lock.
func (t *workerTable) snapshot(w *Worker) Worker {
	t.mu.Lock()
	defer t.mu.Unlock()
	return *w
}

// idleOfImage returns the settled idle workers that run image ref.
func (t *workerTable) idleOfImage(ref string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for id, w := range t.workers {
		if w.Image == ref && w.State == StateIdle && !w.creating {
			ids = append(ids, id)
		}
	}
	return ids
}

// touch records a use of worker id (last_used_at) at now.
func (t *workerTable) touch(id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w, ok := t.workers[id]; ok {
		w.LastUsed = now
	}
}

// has says whether id is a worker, settled or not.
func (t *workerTable) has(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.workers[id]
	return ok
}
