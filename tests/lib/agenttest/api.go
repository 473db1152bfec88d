package agenttest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// RPCTimeout bounds one API call of the helpers below.
const RPCTimeout = 2 * time.Minute

// FastBackoff reconnects to the agent's socket every millisecond or so, so
// that a wait for the agent measures the agent and not gRPC's backoff.
var FastBackoff = backoff.Config{BaseDelay: time.Millisecond, Multiplier: 1.5, MaxDelay: 20 * time.Millisecond}

// WaitReady waits until the agent started at start serves: its socket
// appears (once reconcile is done), then ListWorkers answers, polling
// every millisecond, all within limit of start. It dials the API client
// and returns the time from start to the first answer and how many
// workers that answer listed. An agent that exits meanwhile is an error.
func (p *Proc) WaitReady(socket string, start time.Time, limit time.Duration) (ready time.Duration, first int, err error) {
	deadline := start.Add(limit)
	exited := func() error {
		select {
		case <-p.Exited:
			if p.WaitErr == nil {
				return errors.New("esb-agent exited at start, status 0")
			}
			return fmt.Errorf("esb-agent exited at start: %w", p.WaitErr)
		default:
			return nil
		}
	}
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		if err := exited(); err != nil {
			return 0, 0, err
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("esb-agent: no socket %s within %s", socket, limit)
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.Dial(socket, FastBackoff); err != nil {
		return 0, 0, fmt.Errorf("esb-agent: grpc client: %w", err)
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := p.API.ListWorkers(ctx, &agentv1.ListWorkersRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return time.Since(start), len(r.GetWorkers()), nil
		}
		if err := exited(); err != nil {
			return 0, 0, err
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("esb-agent: ListWorkers does not answer within %s: %w", limit, err)
		}
	}
}

// DialTCP opens a TCP connection to addr and closes it: one readiness
// probe, as the agent's.
func DialTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// Acquire calls AcquireWorker for owner and function and times it from
// the client.
func (p *Proc) Acquire(image, owner, function string) (*agentv1.Worker, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	start := time.Now()
	r, err := p.API.AcquireWorker(ctx, &agentv1.AcquireWorkerRequest{Function: function, Image: image, OwnerId: owner})
	took := time.Since(start)
	if err != nil {
		return nil, took, fmt.Errorf("acquire %s for %s: %w", function, owner, err)
	}
	return r.GetWorker(), took, nil
}

// Release calls ReleaseWorker and times it.
func (p *Proc) Release(w *agentv1.Worker) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	start := time.Now()
	_, err := p.API.ReleaseWorker(ctx, &agentv1.ReleaseWorkerRequest{WorkerId: w.GetId(), OwnerId: w.GetOwnerId()})
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("release %s: %w", w.GetId(), err)
	}
	return took, nil
}

// List returns every worker of the agent.
func (p *Proc) List() ([]*agentv1.Worker, error) {
	ctx, cancel := context.WithTimeout(context.Background(), RPCTimeout)
	defer cancel()
	r, err := p.API.ListWorkers(ctx, &agentv1.ListWorkersRequest{})
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	return r.GetWorkers(), nil
}

// Memory of a process, from /proc/<pid>/status.
type Memory struct {
	RSS, HWM uint64 // bytes: resident now, and the peak
}

// pid returns the agent's pid, after checking that the process is
// esb-agent (nsenter exec'd it) and not nsenter.
func (p *Proc) pid() (int, error) {
	pid := p.Cmd.Process.Pid
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return 0, err
	}
	if c := strings.TrimSpace(string(comm)); c != "esb-agent" {
		return 0, fmt.Errorf("process %d is %q, not esb-agent", pid, c)
	}
	return pid, nil
}

// Memory reads the agent's VmRSS and VmHWM.
func (p *Proc) Memory() (Memory, error) {
	pid, err := p.pid()
	if err != nil {
		return Memory{}, err
	}
	kb, err := KB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS", "VmHWM")
	return Memory{RSS: kb["VmRSS"] << 10, HWM: kb["VmHWM"] << 10}, err
}

// KB reads the "key: N kB" lines of a /proc file (status, meminfo,
// smaps_rollup) for keys, in kB; a key that is missing is an error.
func KB(path string, keys ...string) (map[string]uint64, error) {
	f, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(keys))
	for _, line := range strings.Split(string(f), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !slices.Contains(keys, k) {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			return out, fmt.Errorf("%s: unexpected %s line %q", path, k, line)
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		out[k] = n
	}
	for _, k := range keys {
		if _, ok := out[k]; !ok {
			return out, fmt.Errorf("%s has no %s line", path, k)
		}
	}
	return out, nil
}

// FDs counts the agent's open descriptors.
func (p *Proc) FDs() (int, error) {
	pid, err := p.pid()
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// ShimOf returns the PID of the containerd shim serving the container
// process pid: its parent (the runc v2 shim is the subreaper of its
// containers' processes), which must be a containerd shim.
func ShimOf(pid int) (int, error) {
	ppid, err := StatusInt(pid, "PPid")
	if err != nil {
		return 0, err
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(string(comm), "containerd-shim") {
		return 0, fmt.Errorf("the parent %d of process %d is %q, not a containerd shim", ppid, pid, strings.TrimSpace(string(comm)))
	}
	return ppid, nil
}

// StatusInt reads a plain number line (Threads, PPid, ...) of
// /proc/<pid>/status.
func StatusInt(pid int, key string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, key)
}
