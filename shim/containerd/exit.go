package containerd

import (
	"context"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// WaitExit implements shim.Runtime with the task's own wait: the exit
// status containerd's shim keeps until the task is deleted (so since is
// not needed: a task that already ended answers at once), or the error of
// a wait that broke because containerd stopped answering. Exit.Stopped is
// never set: containerd leaves its tasks running when it shuts down (the
// shim outlives it) and reports no kill of a task as an event.
//
// The shim reports the exit as the process ends, while its copy of the
// process's output to the log file may still be writing the last lines
// (seen on a loaded machine: the last line missing). Deleting the task
// waits for that copy (the shim bounds the wait), as containerd's CRI
// deletes a task before it is done with the container's log; so WaitExit
// deletes the ended task before it reads the log. Its callers tear the
// worker down next, and Stop and Delete take a missing task as done.
func (r *Runtime) WaitExit(ctx context.Context, id string, _ time.Time) <-chan shim.Exit {
	out := make(chan shim.Exit, 1)
	send := func(e shim.Exit) {
		if ctx.Err() == nil {
			out <- e
		}
	}
	go func() {
		ctx := r.ctx(ctx)
		c, err := r.c.LoadContainer(ctx, id)
		if err != nil {
			send(shim.Exit{Err: wrap(err, "load container %s", id)})
			return
		}
		info, err := c.Info(ctx)
		if err != nil {
			send(shim.Exit{Err: wrap(err, "container %s", id)})
			return
		}
		task, err := c.Task(ctx, nil)
		if err != nil {
			send(shim.Exit{Err: wrap(err, "task of %s", id)})
			return
		}
		ch, err := task.Wait(ctx)
		if err != nil {
			send(shim.Exit{Err: wrap(err, "wait for %s", id)})
			return
		}
		select {
		case st := <-ch:
			code, _, err := st.Result()
			if err != nil {
				send(shim.Exit{Err: wrap(err, "wait for %s", id)})
				return
			}
			// An error leaves the log as far as it was copied.
			_ = r.deleteTask(ctx, c, task)
			send(shim.Exit{Code: int(code), Log: shim.TailFile(info.Labels[labelLog], shim.ExitLogLines)})
		case <-ctx.Done():
		}
	}()
	return out
}
