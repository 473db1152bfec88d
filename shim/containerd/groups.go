package containerd

import (
	"context"
	"sync"

	client "github.com/containerd/containerd/v2/client"

	"github.com/edge-serverless-box/esbnet/conf"
)

// groupLocks runs the task creations and deletions of one shim group
// (ShimGroupAnnotation) one at a time; groups still go side by side.
// containerd's runc v2 shim races on both when a group's members arrive
// at once:
//
//   - A grouped task's creation runs the shim's start command, which looks
//     for the group's shim at its socket and, when it cannot connect
//     within its dial timeout (100 ms, missed on a loaded node while other
//     members start), removes the socket and starts a second shim whose
//     socket replaces the first's. A member that found the first shim and
//     connected after the replacement lands in the second; a first shim
//     left with no task is never told to shut down and stays, a process
//     with no child and its bundle deleted.
//   - A task's deletion ends with containerd asking the shim to shut down,
//     which it does when it holds no task. Two members deleted at once can
//     both be gone from the shim before either's shutdown: it exits, and
//     the other delete's answer is lost ("ttrpc: closed", an Internal
//     error for a release that did remove the worker).
//
// The shim creates a group's tasks under its own lock anyway, so holding
// a group's creations in turn costs the group little.
type groupLocks struct {
	mu    sync.Mutex
	locks map[string]*groupLock
}

type groupLock struct {
	sync.Mutex
	users int
}

// lock waits until no other task creation or deletion of group runs and
// returns the unlock. The group "" (a shim of its own) is never held.
func (s *groupLocks) lock(group string) (unlock func()) {
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

// lockGroup holds c's shim group (see groupLocks), read from the label
// Create records it in; a container loaded a moment ago is read from the
// record the load fetched, without a call to containerd.
func (r *Runtime) lockGroup(ctx context.Context, c client.Container) (unlock func()) {
	info, err := c.Info(ctx, client.WithoutRefreshedMetadata)
	if err != nil {
		return func() {} // its task calls fail on their own
	}
	return r.groups.lock(info.Labels[conf.LabelShimGroup])
}

// deleteTask deletes task, of container c, holding c's shim group.
func (r *Runtime) deleteTask(ctx context.Context, c client.Container, task client.Task, opts ...client.ProcessDeleteOpts) error {
	defer r.lockGroup(ctx, c)()
	_, err := task.Delete(ctx, opts...)
	return err
}
