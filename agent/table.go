package agent

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// workerTable is the agent's one view of its workers and the only holder
// of the lock over them. Every read or change of a worker record goes
// through its methods, which keep these invariants:
//
//   - a worker is in the table from the start of its creation (it holds a
//     place against MaxWorkers while it is made) until it is forgotten;
//   - a worker marked creating (being made, or claimed by the one
//     operation tearing it down) is hidden from lookups, lists, pools and
//     counts;
//   - a request key names at most one worker, and forgetting a worker
//     forgets the keys that name it;
//   - at most one acquire serves a request key, one refill a pool key and
//     one undo an interrupted creation at a time.
//
// Callers get copies of records, except where the agent itself keeps a
// *Worker it made or found here; such a pointer is changed only through
// the table.
type workerTable struct {
	mu       sync.Mutex
	workers  map[string]*Worker
	requests map[string]string        // owner \x00 request ID -> worker ID
	inflight map[string]chan struct{} // request keys being served
	refills  map[string]bool          // pool keys being refilled
	undoing  map[string]bool          // interrupted creations being undone
	groups   map[string]*shimGroup    // function -> its open shim group
	sweeps   int                      // sweeps under way (see beginSweep)
	gone     map[string]bool          // workers forgotten while one was
}

func newWorkerTable() *workerTable {
	return &workerTable{workers: map[string]*Worker{}, requests: map[string]string{},
		inflight: map[string]chan struct{}{}, refills: map[string]bool{}, undoing: map[string]bool{},
		groups: map[string]*shimGroup{}}
}

// reserve adds w, marked creating, unless the table holds max workers.
func (t *workerTable) reserve(w *Worker, limit int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.workers) >= limit {
		return false
	}
	w.creating = true
	t.workers[w.ID] = w
	return true
}

// adopt adds a settled worker found running (reconcile), with its
// request key when it has an owner and a request.
func (t *workerTable) adopt(w *Worker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.workers[w.ID] = w
	if w.request != "" && w.Owner != "" {
		t.requests[requestKey(w.Owner, w.request)] = w.ID
	}
}

// setAddress records where a worker being made is reachable.
func (t *workerTable) setAddress(w *Worker, ip netip.Addr, netns string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w.IP, w.NetNS = ip, netns
}

// settle makes a worker that was made visible and returns a copy; a
// worker made for an owner is handed to it now.
func (t *workerTable) settle(w *Worker, now time.Time) Worker {
	t.mu.Lock()
	defer t.mu.Unlock()
	w.creating = false
	if w.Owner != "" {
		w.Handed, w.LastUsed = now, now
	}
	return *w
}

// forget removes a worker and the request keys that name it.
func (t *workerTable) forget(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := t.workers[id]
	delete(t.workers, id)
	if t.sweeps > 0 {
		t.gone[id] = true
	}
	if w != nil && w.shimGroup != "" {
		if g := t.groups[w.Function]; g != nil && g.name == w.shimGroup && !t.staysIn(g.name, "") {
			delete(t.groups, w.Function)
		}
	}
	for k, v := range t.requests {
		if v == id {
			delete(t.requests, k)
		}
	}
}

// claim hides a live, settled worker from every lookup so that only the
// caller tears it down; false when the worker is unknown or another
// operation (creation, release, an earlier event) holds it.
func (t *workerTable) claim(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.workers[id]
	if !ok || w.creating {
		return false
	}
	w.creating, w.leaving = true, true
	return true
}

// owned returns the settled worker id when it belongs to owner.
func (t *workerTable) owned(id, owner string) (*Worker, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.workers[id]
	if !ok || w.creating {
		return nil, errf(NotFound, nil, "no worker %s", id)
	}
	if w.Owner != owner {
		return nil, errf(Permission, nil, "worker %s does not belong to owner %s", id, owner)
	}
	return w, nil
}

// netnsOf returns the namespace of worker id ("" when unknown).
func (t *workerTable) netnsOf(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w, ok := t.workers[id]; ok {
		return w.NetNS
	}
	return ""
}

// setState changes a worker's state and returns a copy.
func (t *workerTable) setState(w *Worker, s State) Worker {
	t.mu.Lock()
	defer t.mu.Unlock()
	w.State = s
	return *w
}

// joinRequest returns a copy of the settled worker that request key
// already got, or else marks key in flight for the caller (who must call
// leaveRequest) and returns nil; while another call serves key it waits.
// It returns ctx's error when ctx ends first.
func (t *workerTable) joinRequest(ctx context.Context, key string) (*Worker, error) {
	for {
		t.mu.Lock()
		if id, ok := t.requests[key]; ok {
			if w, ok := t.workers[id]; ok && !w.creating {
				c := *w
				t.mu.Unlock()
				return &c, nil
			}
			delete(t.requests, key) // its worker is gone: acquire anew
		}
		wait, busy := t.inflight[key]
		if !busy {
			t.inflight[key] = make(chan struct{})
			t.mu.Unlock()
			return nil, nil
		}
		t.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// leaveRequest ends the caller's turn on key, recording w (when not nil)
// as the worker the key got.
func (t *workerTable) leaveRequest(key string, w *Worker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if w != nil {
		t.requests[key] = w.ID
	}
	if ch, ok := t.inflight[key]; ok {
		close(ch)
		delete(t.inflight, key)
	}
}

// handIdle hands the oldest idle settled worker of pool key to owner and
// returns it with a copy (nil when there is none).
func (t *workerTable) handIdle(key, owner, request string, now time.Time) (*Worker, Worker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var w *Worker
	for _, c := range t.workers {
		if c.poolKey == key && c.State == StateIdle && !c.creating && (w == nil || c.Created.Before(w.Created)) {
			w = c
		}
	}
	if w == nil {
		return nil, Worker{}
	}
	w.State, w.Owner, w.Warm, w.request = StateBusy, owner, true, request
	w.Handed, w.LastUsed = now, now
	return w, *w
}

// unhand puts a worker handIdle handed out back into its pool.
func (t *workerTable) unhand(w *Worker) {
	t.mu.Lock()
	defer t.mu.Unlock()
	w.State, w.Owner, w.Warm, w.request = StateIdle, "", false, ""
	w.Handed, w.LastUsed = time.Time{}, time.Time{}
}

// idle counts the idle workers of pool key (those being made included).
func (t *workerTable) idle(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, w := range t.workers {
		if w.poolKey == key && w.State == StateIdle {
			n++
		}
	}
	return n
}

// counts returns the settled workers by state.
func (t *workerTable) counts() map[State]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := map[State]int{}
	for _, w := range t.workers {
		if !w.creating {
			m[w.State]++
		}
	}
	return m
}

// list returns copies of owner's settled workers (every one for owner
// ""), oldest first.
func (t *workerTable) list(owner string) []Worker {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Worker
	for _, w := range t.workers {
		if !w.creating && (owner == "" || w.Owner == owner) {
			out = append(out, *w)
		}
	}
	slices.SortFunc(out, func(x, y Worker) int { return x.Created.Compare(y.Created) })
	return out
}

// settledIDs returns the IDs of the settled workers.
func (t *workerTable) settledIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []string
	for id, w := range t.workers {
		if !w.creating {
			ids = append(ids, id)
		}
	}
	return ids
}

// known returns the IDs of every worker, settled or not.
func (t *workerTable) known() map[string]bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	known := make(map[string]bool, len(t.workers)+len(t.gone))
	for id := range t.workers {
		known[id] = true
	}
	for id := range t.gone {
		known[id] = true
	}
	return known
}

// attachments returns the network attachment of every worker.
func (t *workerTable) attachments() []shim.Attachment {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := make([]shim.Attachment, 0, len(t.workers))
	for _, w := range t.workers {
		live = append(live, shim.Attachment{ContainerID: w.ID, NetNS: w.NetNS})
	}
	return live
}

// startRefill marks pool key as being refilled; false when it already is.
func (t *workerTable) startRefill(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refills[key] {
		return false
	}
	t.refills[key] = true
	return true
}

// endRefill clears the mark of startRefill.
func (t *workerTable) endRefill(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.refills, key)
}

// startUndo marks the creation id as being undone; false when it already
// is.
func (t *workerTable) startUndo(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	busy := t.undoing[id]
	t.undoing[id] = true
	return !busy
}

// endUndo clears the mark of startUndo.
func (t *workerTable) endUndo(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.undoing, id)
}

// requestKey is the table's key of an owner's request ID.
func requestKey(owner, request string) string { return owner + "\x00" + request }
