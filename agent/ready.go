package agent

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
)

// waitReady polls the worker's port until it accepts TCP.
func (a *Agent) waitReady(ctx context.Context, w *Worker) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ReadyTimeout)
	defer cancel()
	addr := net.JoinHostPort(w.IP.String(), strconv.Itoa(w.Port))
	delay := 2 * time.Millisecond
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
		case <-time.After(delay):
		}
		delay = min(delay*2, 50*time.Millisecond)
	}
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
