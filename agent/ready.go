package agent

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/shim"
)

// waitReady polls the worker's port until it accepts TCP. It ends early
// when exited reports the end of the worker's process or of the runtime's
// answer (see notReady), so a worker that is already dead is not waited
// for until the ready timeout.
func (a *Agent) waitReady(ctx context.Context, w *Worker, exited <-chan shim.Exit) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ReadyTimeout)
	defer cancel()
	addr := net.JoinHostPort(w.IP.String(), strconv.Itoa(w.Port))
	start, delay := time.Now(), readyPoll
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := a.probe(pctx, addr)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			// A runtime that went away (and took the worker with it) is
			// Unavailable, not a slow worker.
			if perr := a.rt.Ping(context.WithoutCancel(ctx)); perr != nil {
				return a.runtimeErr(perr, "worker %s did not accept TCP on %s: the runtime does not answer", w.ID, addr)
			}
			return errf(NotReady, err, "worker %s did not accept TCP on %s within %s", w.ID, addr, a.cfg.ReadyTimeout)
		case ex := <-exited:
			return notReady(w, addr, ex)
		case <-time.After(delay):
		}
		if time.Since(start) > readyFastFor {
			delay = min(delay*2, readyPollMax)
		}
	}
}

// The readiness probe's pace. A refused connect to a worker on the bridge
// costs tens of microseconds, so the probe tries every millisecond while a
// worker usually comes up (a cold acquire sees its port within a
// millisecond of its opening: issue 17), then backs off to readyPollMax
// for a slow starter.
const (
	readyPoll    = time.Millisecond
	readyFastFor = time.Second
	readyPollMax = 50 * time.Millisecond
)

// notReady classifies the end of a worker's process, or of its runtime's
// answer, before its port opened. A runtime that stopped answering is
// Unavailable; so is a process the runtime was told to end (dockerd kills
// its containers as it shuts down, and keeps answering for a while after:
// a kill event precedes their exit, which tells it from an exit of the
// worker's own without betting on when the daemon stops answering). Any
// other end is the image's doing: Exited (FailedPrecondition) with the
// status and the last lines of the worker's log.
func notReady(w *Worker, addr string, ex shim.Exit) error {
	switch {
	case ex.Err != nil:
		return errf(Unavailable, ex.Err, "worker %s did not accept TCP on %s: the runtime does not answer", w.ID, addr)
	case ex.Stopped:
		return errf(Unavailable, nil, "worker %s was stopped by its runtime (signal %s) before its port opened, with status %d",
			w.ID, ex.Signal, ex.Code)
	case ex.Log == "":
		return errf(Exited, nil, "worker %s exited with status %d before its port opened (its log is empty)", w.ID, ex.Code)
	}
	return errf(Exited, nil, "worker %s exited with status %d before its port opened; the last lines of its log:\n%s",
		w.ID, ex.Code, ex.Log)
}

func dialProbe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func ipv4Of(res *current.Result) (netip.Addr, error) {
	if res != nil {
		for _, ip := range res.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok && a.Unmap().Is4() {
				return a.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errf(Internal, nil, "the network gave the worker no IPv4 address")
}

// exitReportWait bounds how long a failed attach after the start waits
// for the report of the worker's exit, which follows the exit closely.
const exitReportWait = 2 * time.Second

// attachAfterStartErr classifies a failed start or attach where the
// runtime makes the namespace (Docker): a worker whose process already
// ended takes its namespace with it (reading it or attaching fails); that
// is the worker's exit (Exited, or Unavailable when the runtime stopped
// it), not an internal error. An exhausted network is said at once.
func (c *creation) attachAfterStartErr(err error) error {
	var ae *Error
	if errors.As(err, &ae) && ae.Code == Exhausted {
		return err
	}
	t := time.NewTimer(exitReportWait)
	defer t.Stop()
	select {
	case ex := <-c.exited:
		return notReady(c.w, "its port", ex)
	case <-t.C:
		return err
	}
}
