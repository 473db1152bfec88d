package agent

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
