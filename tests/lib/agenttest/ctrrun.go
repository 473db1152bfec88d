package agenttest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// The readiness poll of agent.waitReady, which the baselines copy so that
// both sides of a comparison see a port open equally soon: a probe every
// millisecond for the first second, then doubling to at most 50 ms.
const (
	readyPoll    = time.Millisecond
	readyFastFor = time.Second
	readyPollMax = 50 * time.Millisecond
)

// PollTCP probes with dial on the agent's schedule until it succeeds or
// ctx ends.
func PollTCP(ctx context.Context, dial func(context.Context) error) error {
	start, delay := time.Now(), readyPoll
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := dial(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("port not accepting TCP: %w", err)
		case <-time.After(delay):
		}
		if time.Since(start) > readyFastFor {
			delay = min(delay*2, readyPollMax)
		}
	}
}

// WaitTCP waits, at most timeout, until addr accepts TCP inside the
// network namespace at netnsPath.
func WaitTCP(ctx context.Context, netnsPath, addr string, timeout time.Duration) error {
	target, err := ns.GetNS(netnsPath)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return target.Do(func(ns.NetNS) error {
		return PollTCP(ctx, func(ctx context.Context) error { return DialTCP(ctx, addr) })
	})
}

// TaskPID returns the pid of container id's process: from its cgroup
// (ctr puts a container of namespace ns in /<ns>/<id>, read in
// microseconds), else from containerd.
func (c *Containerd) TaskPID(ctx context.Context, id string) (int, error) {
	for _, ctrl := range []string{"pids", "memory"} {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, c.NS, id, "cgroup.procs"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			if pid, err := strconv.Atoi(f[0]); err == nil {
				return pid, nil
			}
		}
	}
	x, err := c.Client.LoadContainer(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("load container %s: %w", id, err)
	}
	t, err := x.Task(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("task of %s: %w", id, err)
	}
	return int(t.Pid()), nil
}

// RunDetached runs `ctr run -d IMAGE ID` in the namespace (ctr's default
// network: a new namespace with lo up) and times the command to its
// return, which comes when the task has started; ready is the time from
// the same start until port accepts TCP on the container's loopback,
// polled as the agent polls its workers (at most readyTimeout). Remove
// takes the container away.
func (c *Containerd) RunDetached(ctx context.Context, image, id string, port int, readyTimeout time.Duration) (run, ready time.Duration, err error) {
	start := time.Now()
	args := []string{"run", "-d"}
	if c.RuncBinary != "" {
		args = append(args, "--runc-binary", c.RuncBinary)
	}
	out, err := c.Stack.Ctr(ctx, c.NS, append(args, image, id)...).CombinedOutput()
	run = time.Since(start)
	if err != nil {
		return run, 0, fmt.Errorf("ctr run -d %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	pid, err := c.TaskPID(ctx, id)
	if err != nil {
		return run, 0, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := WaitTCP(ctx, fmt.Sprintf("/proc/%d/ns/net", pid), addr, readyTimeout); err != nil {
		return run, 0, fmt.Errorf("ctr-run container %s: %w", id, err)
	}
	return run, time.Since(start), nil
}
