package agent

import "sync"

// Shim groups (the agent's ShimGroupSize): containerd's runc v2 shim
// serves every container whose OCI spec carries the same group annotation
// from one process, as it serves a pod's containers under CRI. Workers of
// one function share a shim, a bounded number at a time; a killed shim
// takes all of its workers with it.

// shimGroup is the shim group new workers of a function join.
type shimGroup struct {
	name     string
	assigned int // workers ever put in it: it is sealed at the group size
}

// joinShimGroup puts w, reserved, in the open shim group of its function
// and returns the group's name. A group takes at most size workers over
// its life, and a new member only while one of its members stays (is not
// being torn down): the shim of a group whose last member is being
// deleted shuts down, and a create joining it then would race that. A
// new group is named after its first worker.
func (t *workerTable) joinShimGroup(w *Worker, size int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.groups[w.Function]
	if g == nil || g.assigned >= size || !t.staysIn(g.name, w.ID) {
		g = &shimGroup{name: w.ID}
		t.groups[w.Function] = g
	}
	g.assigned++
	w.shimGroup = g.name
	return g.name
}

// staysIn reports whether a worker other than except is in the shim
// group name and not leaving. The caller holds the lock.
func (t *workerTable) staysIn(name, except string) bool {
	for id, w := range t.workers {
		if id != except && w.shimGroup == name && !w.leaving {
			return true
		}
	}
	return false
}

// shimStarts serialises the task creations of each shim group. The task
// creation of a grouped container runs the shim's start command, which
// finds the group's shim by its socket; when it cannot connect within
// its dial timeout (containerd 1.6's runc v2 shim: 100 ms, missed on a
// loaded node while other members start), it removes the socket and
// starts a second shim for the group, whose socket replaces the first's.
// A member whose start found the first shim and whose connection came
// after the replacement then goes to the second: a first shim whose
// members all did so serves nothing and is never told to shut down,
// a leaked process with no task. One creation at a time per group keeps
// every shim a start makes the one its own container connects to, so
// each ends with its last task. The shim creates a group's tasks one at
// a time anyway, so this costs the group little; groups still create
// side by side.
type shimStarts struct {
	mu    sync.Mutex
	locks map[string]*groupLock
}

type groupLock struct {
	sync.Mutex
	users int
}

// lock waits until no other task creation of group runs, and returns the
// unlock. The group "" (no group) is never held.
func (s *shimStarts) lock(group string) (unlock func()) {
	if group == "" {
		return func() {}
	}
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]*groupLock{}
	}
	l := s.locks[group]
	if l == nil {
		l = &groupLock{}
		s.locks[group] = l
	}
	l.users++
	s.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		s.mu.Lock()
		if l.users--; l.users == 0 {
			delete(s.locks, group)
		}
		s.mu.Unlock()
	}
}
