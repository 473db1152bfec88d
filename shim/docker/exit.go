package docker

import (
	"context"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/edge-serverless-box/esbnet/shim"
)

// WaitExit implements shim.Runtime with dockerd's wait for the container
// to stop running, which breaks (Exit.Err) when dockerd goes away.
func (r *Runtime) WaitExit(ctx context.Context, id string) <-chan shim.Exit {
	out := make(chan shim.Exit, 1)
	send := func(e shim.Exit) {
		if ctx.Err() == nil {
			out <- e
		}
	}
	go func() {
		res, errc := r.c.ContainerWait(ctx, ContainerName(id), container.WaitConditionNotRunning)
		select {
		case w := <-res:
			if w.Error != nil && w.Error.Message != "" {
				send(shim.Exit{Err: wrap(errString(w.Error.Message), "wait for %s", id)})
				return
			}
			send(shim.Exit{Code: int(w.StatusCode), Log: r.logTail(ctx, id)})
		case err := <-errc:
			send(shim.Exit{Err: wrap(err, "wait for %s", id)})
		case <-ctx.Done():
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
	_, _ = stdcopy.StdCopy(&b, &b, rc)
	return shim.TailLines([]byte(b.String()), shim.ExitLogLines)
}

type errString string

func (e errString) Error() string { return string(e) }
