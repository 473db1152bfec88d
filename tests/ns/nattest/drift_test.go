package nattest

import (
	"bufio"
	"context"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

const (
	// watchInterval is long next to the repair times measured, so that a
	// repair within repairLimit is the notification path's.
	watchInterval = 5 * time.Second
	repairLimit   = 2 * time.Second
	flushRounds   = 20
)

// nextRepair waits for Watch's report of a repair by notification.
func nextRepair(t *testing.T, events <-chan nat.Event, what string) nat.Event {
	t.Helper()
	select {
	case e := <-events:
		if e.Err != nil {
			t.Errorf("%s: Watch failed: %v", what, e.Err)
		} else if e.Trigger != "notification" {
			t.Errorf("%s: repaired by the %s pass, want the notification path", what, e.Trigger)
		}
		return e
	case <-time.After(repairLimit):
		t.Errorf("%s: Watch reported no repair within %v", what, repairLimit)
		return nat.Event{}
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p)]
}

// TestDriftRepair runs Watch beside HAProxy and a worker, undoes table ip
// esb in several ways and checks each time that Watch restores it from
// the change notification (well before its periodic read-back) and that
// the worker's requests through the proxy work again.
//
// `nft flush ruleset` also removes table bridge esb, esb-bridge's
// anti-spoofing: that table is the plugin's (re-added by its ADD and
// checked by CHECK), not this manager's, so it stays gone here. The
// worker's traffic does not need it: it is only a filter.
func TestDriftRepair(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	n.startProxyStack()
	r := rules(t, rulesLo)
	events, _ := n.watch(r, watchInterval)
	w.mustGet(fwdURL, backendBody(viaLo))
	full, err := n.shape()
	if err != nil || full.Rules == 0 || full.Forwards != 2 || full.Targets != 2 {
		t.Fatalf("table ip esb after Watch's start pass: %+v, %v", full, err)
	}
	if !strings.Contains(n.inNS("nft", "list", "tables"), "table bridge esb") {
		t.Fatal("esb-bridge made no anti-spoof table")
	}

	// nft flush ruleset, flushRounds times: from the command's return to
	// the table whole again, as the test sees it, and as Watch reports it
	// (from the notification's arrival).
	var seen, took []time.Duration
	for i := range flushRounds {
		n.inNS("nft", "flush", "ruleset")
		d, err := n.waitShape(full, repairLimit)
		if err != nil {
			t.Fatalf("flush round %d: %v", i, err)
		}
		seen = append(seen, d)
		took = append(took, nextRepair(t, events, "flush ruleset").Took)
	}
	t.Logf("nft flush ruleset x%d, repair seen after the command returned: p50 %v, max %v; Watch's own timing (notification to table whole): p50 %v, max %v",
		flushRounds, percentile(seen, 0.5), slices.Max(seen), percentile(took, 0.5), slices.Max(took))
	if strings.Contains(n.inNS("nft", "list", "tables"), "table bridge esb") {
		t.Error("table bridge esb survived nft flush ruleset")
	}
	w.mustGet(fwdURL, backendBody(viaLo))
	if got := n.localnet(); got != "1" {
		t.Errorf("route_localnet after the flushes = %s, want 1", got)
	}

	for _, drift := range []struct {
		what string
		args []string
		want nat.Change
	}{
		{"delete table", []string{"delete", "table", "ip", nat.TableName}, nat.Rebuilt},
		{"flush the dnat chain", []string{"flush", "chain", "ip", nat.TableName, "prerouting"}, nat.Rebuilt},
		{"add a rule of our own", []string{"insert", "rule", "ip", nat.TableName, "input", "accept"}, nat.Rebuilt},
		{"delete a forward", []string{"delete", "element", "ip", nat.TableName, "forwards", "{ tcp . 9000 }"}, nat.ElementsUpdated},
		{"flush the targets", []string{"flush", "set", "ip", nat.TableName, "targets"}, nat.ElementsUpdated},
	} {
		n.inNS(append([]string{"nft"}, drift.args...)...)
		d, err := n.waitShape(full, repairLimit)
		if err != nil {
			t.Errorf("%s: %v", drift.what, err)
			continue
		}
		e := nextRepair(t, events, drift.what)
		if e.Change != drift.want {
			t.Errorf("%s: repaired with %s, want %s", drift.what, e.Change, drift.want)
		}
		t.Logf("%s: repaired (%s) %v after the command returned", drift.what, e.Change, d)
		w.mustGet(fwdURL, backendBody(viaLo))
	}
	if extra := drain(events); len(extra) > 0 {
		t.Errorf("Watch reported more than one repair per drift: %+v", extra)
	}
}

// TestWatchRestoresEditedRule edits a rule of table ip esb while Watch
// runs, keeping the rule's comment: the loopback guard becomes an accept.
// Watch must put the guard back like any other drift.
func TestWatchRestoresEditedRule(t *testing.T) {
	n := newNode(t)
	events, _ := n.watch(rules(t, goldenForwards), watchInterval)
	want := n.list("ip", nat.TableName)
	n.inNS(append([]string{"nft"}, guardToAccept(n)...)...)
	select {
	case e := <-events:
		t.Logf("Watch repaired: %+v", e)
	case <-time.After(repairLimit):
	}
	if got := n.list("ip", nat.TableName); got != want {
		t.Errorf("Watch left the edited guard in place for %v:\n%s", repairLimit, got)
	}
}

// TestNodeConnectionAcrossFlush: a connection the node opens to a worker
// while its ruleset is flushed (no table, so conntrack tracks nothing in
// the node) keeps working once the table is back. conntrack then meets the
// worker's answer mid-stream and calls it new; input must let it through
// (the Gateway's call to a worker during a firewall reload), while a
// worker's new connection to the node stays blocked.
func TestNodeConnectionAcrossFlush(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	r := rules(t, rulesLo)
	n.mustApply(r, nat.Rebuilt)
	l, err := nodetest.Listen(w.NS, "tcp4", net.JoinHostPort(w.IP.String(), "8080"))
	if err != nil {
		t.Fatal(err)
	}
	answer, ended := make(chan struct{}), make(chan struct{})
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer func() { _ = c.Close() }()
		select {
		case <-answer:
			_, _ = io.WriteString(c, "answer\n")
		case <-ended:
		}
	}()
	defer func() { close(ended); _ = l.Close(); <-accepted }()

	n.inNS("nft", "flush", "ruleset")
	var c net.Conn
	err = n.InNode(func(ctx context.Context) error {
		var err error
		c, err = (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, "tcp4", net.JoinHostPort(w.IP.String(), "8080"))
		return err
	})
	if err != nil {
		t.Fatalf("dial the worker with the ruleset flushed: %v", err)
	}
	defer func() { _ = c.Close() }()
	n.mustApply(r, nat.Rebuilt)
	close(answer)
	// Dropped, the answer would come through only after the node's side
	// sent something (its keepalive, 15 s) and the worker retransmitted
	// once more (25 s after the first try): 10 s tells the two apart.
	const answerBound = 10 * time.Second
	_ = c.SetReadDeadline(time.Now().Add(answerBound))
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "answer\n" {
		t.Errorf("the worker's answer on a connection the node opened during the flush: %q, %v; want it within %v (input drops it as new)",
			got, err, answerBound)
	}
	nodeSvc := net.JoinHostPort(nodeAddr, "7000")
	listenTCP(t, n.NS, nodeSvc)
	w.expectBlocked("the worker's new connection to the node after the flush", nodeSvc)
}
