package docker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/edge-serverless-box/esbnet/shim"
)

// WaitExit implements shim.Runtime with dockerd's events for the worker's
// container, replayed from since: "die" carries the exit status, and a
// "kill" before it means dockerd was told to end the process (it sends
// one, SIGTERM first, to each container it stops as it shuts down, and so
// does docker stop or kill), so the exit is Stopped. A self-inflicted end
// (an exit, a crash, the OOM killer) has no kill before its die. The
// stream breaking (dockerd going away) is Exit.Err.
func (r *Runtime) WaitExit(ctx context.Context, id string, since time.Time) <-chan shim.Exit {
	out := make(chan shim.Exit, 1)
	send := func(e shim.Exit) {
		if ctx.Err() == nil {
			out <- e
		}
	}
	name := ContainerName(id)
	msgs, errs := r.c.Events(ctx, events.ListOptions{
		Since: fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
		Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("container", name),
			filters.Arg("event", string(events.ActionKill)),
			filters.Arg("event", string(events.ActionDie)),
		)})
	go func() {
		var ex shim.Exit
		for {
			select {
			case m := <-msgs:
				if m.Actor.Attributes["name"] != name {
					continue
				}
				switch m.Action {
				case events.ActionKill:
					ex.Stopped, ex.Signal = true, m.Actor.Attributes["signal"]
				case events.ActionDie:
					code, err := strconv.Atoi(m.Actor.Attributes["exitCode"])
					if err != nil {
						send(shim.Exit{Err: fmt.Errorf("exit status of %s: %q: %w", id, m.Actor.Attributes["exitCode"], err)})
						return
					}
					ex.Code = code
					if !ex.Stopped {
						ex.Log = r.logTail(ctx, id)
					}
					send(ex)
					return
				}
			case err := <-errs:
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("docker event stream ended: %w", shim.ErrUnavailable)
				}
				send(shim.Exit{Err: wrap(err, "wait for %s", id)})
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// logTail returns the worker's last lines (stdout and stderr), "" when
// dockerd cannot give them.
func (r *Runtime) logTail(ctx context.Context, id string) string {
	rc, err := r.c.ContainerLogs(ctx, ContainerName(id), container.LogsOptions{
		ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(shim.ExitLogLines)})
	if err != nil {
		return ""
	}
	defer func() { _ = rc.Close() }()
	var b strings.Builder
	if _, err := stdcopy.StdCopy(&b, &b, rc); err != nil {
		return strings.TrimSpace(b.String())
	}
	return shim.TailLines([]byte(b.String()), shim.ExitLogLines)
}
