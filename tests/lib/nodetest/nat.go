package nodetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
)

// NATShape counts what table ip esb holds: rules over all its chains, and
// the elements of its forwards map and targets set. The manager replaces
// the table in one transaction, so equal counts mean a whole table.
type NATShape struct{ Rules, Forwards, Targets int }

// HasTable reports whether table ip name is there, through c.
func HasTable(c *nftables.Conn, name string) (bool, error) {
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == name }), nil
}

// ReadNATShape reads the shape of table ip esb through c; a missing set,
// or table, counts as empty.
func ReadNATShape(c *nftables.Conn) (NATShape, error) {
	esb := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nat.TableName}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return NATShape{}, err
	}
	var s NATShape
	for _, ch := range chains {
		if ch.Table.Name != nat.TableName {
			continue
		}
		rs, err := c.GetRules(esb, ch)
		if err != nil {
			return NATShape{}, err
		}
		s.Rules += len(rs)
	}
	for name, count := range map[string]*int{"forwards": &s.Forwards, "targets": &s.Targets} {
		set, err := c.GetSetByName(esb, name)
		if err != nil {
			continue // no such set: not whole
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			return NATShape{}, err
		}
		*count = len(els)
	}
	return s, nil
}

// Watch runs m.Watch for r in the background and returns its reports (buf
// of them wait; Watch never blocks on a full buffer, the report is
// dropped) and a function that stops it and checks that Watch returns
// context.Canceled within 10 seconds. The test's end stops it too.
func Watch(tb testing.TB, m *nat.Manager, r *conf.NATRules, interval time.Duration, buf int) (<-chan nat.Event, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan nat.Event, buf)
	done := make(chan error, 1)
	go func() {
		done <- m.Watch(ctx, r, interval, func(e nat.Event) {
			select {
			case events <- e:
			default: // the test stopped reading; never block Watch
			}
		})
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					tb.Errorf("Watch returned %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				tb.Errorf("Watch did not return within 10s of cancel")
			}
		})
	}
	tb.Cleanup(stop)
	return events, stop
}
