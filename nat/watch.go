package nat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Event reports one pass of Watch that changed something or failed.
type Event struct {
	// Trigger is "start", "notification" or "periodic".
	Trigger string
	Change  Change
	// Took is the time from the trigger (the notification's arrival, or the
	// tick) to the table being whole again.
	Took time.Duration
	Err  error
}

// Watch applies r, then keeps table ip esb equal to it until ctx ends.
// nftables change notifications trigger a read-back and repair at once
// (so `nft flush ruleset` or `nft delete table ip esb` is undone within
// milliseconds); a read-back every interval is the backstop for anything a
// notification missed, and also sets route_localnet once the bridge
// exists. A notification socket that fails is reopened on a fresh
// connection. report, when not nil, gets every pass that changed something
// or failed. Watch returns ctx's error.
func (m *Manager) Watch(ctx context.Context, r *conf.NATRules, interval time.Duration, report func(Event)) error {
	if interval <= 0 {
		interval = 5 * time.Second
	}
	pass := func(trigger string, start time.Time) {
		change, err := m.Apply(ctx, r)
		if ctx.Err() != nil {
			return // ending, not failing: the loop returns ctx's error
		}
		if report != nil && (change != Unchanged || err != nil) {
			report(Event{Trigger: trigger, Change: change, Took: time.Since(start), Err: err})
		}
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// A pass runs right after each subscription: at the start, and after
	// the socket failed (a repair of a big table floods it with our own
	// element notifications until it overflows), so nothing changed while
	// it was closed goes unseen.
	passNow, first := true, true
	for {
		// Subscribe before the first pass, so a change made right after
		// it is not left for the periodic read-back.
		events, stop, err := m.subscribe(ctx)
		if ctx.Err() != nil {
			stop()
			return ctx.Err()
		}
		if err != nil {
			if report != nil {
				report(Event{Trigger: "notification", Err: fmt.Errorf("subscribe to nftables changes: %w", err)})
			}
			events = nil // rely on the ticker until the next try
		}
		if passNow {
			trigger := "start"
			if !first {
				trigger = "notification"
			}
			pass(trigger, time.Now())
			passNow, first = false, false
		}
		reopen := false
		for !reopen {
			select {
			case <-ctx.Done():
				stop()
				return ctx.Err()
			case <-ticker.C:
				pass("periodic", time.Now())
				if events == nil {
					reopen = true
				}
			case ev, ok := <-events:
				if !ok || (ev.GeneratedBy != nil && ev.GeneratedBy.Error != nil) {
					reopen, passNow = true, true
					continue
				}
				if touchesUs(ev, m.t.name) {
					pass("notification", time.Now())
				}
			}
		}
		stop()
	}
}

// subscribe opens a fresh connection with a notification socket.
func (m *Manager) subscribe(ctx context.Context) (<-chan *nftables.MonitorEvents, func(), error) {
	c, err := m.conn(ctx)
	if err != nil {
		return nil, func() {}, err
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(64))
	ch, err := c.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, func() {}, errors.Join(err, c.CloseLasting())
	}
	return ch, func() { _ = mon.Close(); _ = c.CloseLasting() }, nil
}

// touchesUs reports whether a transaction may have changed table ip esb.
// Changes whose table cannot be told are counted in.
func touchesUs(ev *nftables.MonitorEvents, table string) bool {
	for _, ch := range ev.Changes {
		var t *nftables.Table
		switch d := ch.Data.(type) {
		case *nftables.Table:
			t = d
		case *nftables.Chain:
			t = d.Table
		case *nftables.Rule:
			t = d.Table
		case *nftables.Set:
			t = d.Table
		default:
			if ch.Type == nftables.MonitorEventTypeNewSetElem || ch.Type == nftables.MonitorEventTypeDelSetElem {
				return true
			}
			continue
		}
		if t == nil || (t.Name == table && t.Family == nftables.TableFamilyIPv4) {
			return true
		}
	}
	return false
}
