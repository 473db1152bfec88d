package benchnat

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/benchstat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

// How much the benchmark samples, whatever b.N is (so -benchtime 1x gives
// the whole summary). The traffic rounds are short and alternate between
// the setups compared, so that load from elsewhere on the machine falls on
// both alike; the whole run takes about three minutes.
const (
	applySamples   = 21
	rateRounds     = 16 // rounds, each taking the DNAT and direct in turn
	rateRound      = time.Second
	transferRounds = 24
	transferRound  = 1500 * time.Millisecond
	perConnRounds  = 10 // rounds of each setup, each an HTTP and a handshake round
	perConnRound   = time.Second
	warmup         = 300 * time.Millisecond
	driftRounds    = 30
	watchInterval  = 10 * time.Second // long: the notifications are what repair
	repairWait     = 2 * time.Second  // bound of one repair
	pollEvery      = 250 * time.Microsecond
	betweenFlushes = 100 * time.Millisecond
	// settle is the pause after deleting a table before the next timed
	// install, so that the kernel's deferred release of the old one is
	// not timed with it.
	settle          = 50 * time.Millisecond
	maxErrorPercent = 1.0
)

var applySizes = []int{1, 100, 1000}

// BenchmarkNATSideBySide measures table ip esb as the issue asks and
// prints a markdown summary with the targets to stdout: Manager.Apply for
// 1, 100 and 1000 forwards (and the unchanged and one-forward-changed
// paths at 1000); the time from `nft flush ruleset` to the table restored
// by Manager.Watch; a worker's connection rate and 10 MiB throughput to
// HAProxy through the gateway's DNAT against directly; and the connection
// rate with 1000 forwards in our map against 1000 iptables-nft DNAT rules,
// the used port last. It takes its own samples once, whatever b.N is; run
// it with -benchtime 1x.
func BenchmarkNATSideBySide(b *testing.B) {
	nstest.RequirePrivileged(b)
	nstest.RequirePrograms(b, "haproxy", "iptables-restore", "ip")
	n := newNode(b)
	w := n.Attach()
	n.serveBackend()
	n.startHAProxy()
	loadgen := buildLoadgen(b)
	s := &Summary{
		Title: "NAT: table ip esb side by side",
		Notes: []string{
			fmt.Sprintf("%d CPUs, Go %s; load average at the start %s", runtime.NumCPU(), runtime.Version(), benchstat.LoadAverage()),
			"everything in a node namespace made for the run; one worker attached by esb-bridge through libcni; " +
				"HAProxy (mode http, 1 thread, backend connections reused) on " + frontend + " (the node's lo) in front of a Go backend on " + backend,
			"rule sets under egress open, so the worker may reach HAProxy directly (" + direct + "); the DNAT path goes " + viaDNAT + " → " + frontend +
				" (two frontends alike, so the paths never share a server-side 4-tuple and its TIME_WAIT)",
			"each traffic round: a Go client in the worker makes sequential connections, taking the two paths in turn: HTTP/1.1 GETs with Connection: close, " +
				"or bare TCP handshakes (reset at once); rates are per second of each path's own connection time; the node's conntrack table is emptied before each round",
		},
	}
	b.ResetTimer()

	s.Apply = measureApply(b, n)
	s.ApplyTransactions = countTransactions(b, n, rules(b, 1000, false))
	var note string
	s.Compare, note = compareDNAT(b, n, w, loadgen)
	s.Notes = append(s.Notes, note)
	s.PerConn = perConnection(b, n, w, loadgen)
	for _, count := range []int{1, 1000} {
		s.Drift = append(s.Drift, measureDrift(b, n, rules(b, count, false)))
	}
	b.StopTimer()
	s.Notes[0] += ", at the end " + benchstat.LoadAverage()

	if err := s.Print(os.Stdout); err != nil {
		b.Errorf("print summary: %v", err)
	}
	for _, r := range s.Apply {
		if r.Forwards == 1000 && r.What == applyRebuilt {
			b.ReportMetric(float64(r.Samples.P50())/1e6, "apply1000-p50-ms")
		}
	}
	for _, d := range s.Drift {
		b.ReportMetric(float64(d.Seen.P50())/1e6, fmt.Sprintf("repair%d-p50-ms", d.Forwards))
	}
	for _, c := range s.Compare {
		if med, _, _, _, ok := c.Overhead(); ok {
			b.ReportMetric(med, c.Key+"-overhead-%")
		}
	}
}

const (
	applyRebuilt   = "rebuilt from an empty namespace"
	applyUnchanged = "the same rule set again (unchanged)"
	applyMoved     = "one forward's target moved (elements updated)"
)

// measureApply times Apply: each size rebuilt from a deleted table (the
// delete not timed), the sizes interleaved; then, at 1000, the same rule
// set again and one forward moving back and forth.
func measureApply(b *testing.B, n *node) []ApplyRow {
	b.Helper()
	rows := make([]ApplyRow, 0, len(applySizes)+2)
	sets := map[int]*conf.NATRules{}
	for _, c := range applySizes {
		rows = append(rows, ApplyRow{Forwards: c, What: applyRebuilt})
		sets[c] = rules(b, c, false)
	}
	timed := func(r *conf.NATRules, want nat.Change) time.Duration {
		start := time.Now()
		got, err := n.mgr.Apply(context.Background(), r)
		d := time.Since(start)
		if err != nil {
			b.Fatalf("apply %d forwards: %v", len(r.Forwards), err)
		}
		if got != want {
			b.Fatalf("apply %d forwards: %s, want %s", len(r.Forwards), got, want)
		}
		return d
	}
	for range applySamples {
		for i, c := range applySizes {
			if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
				b.Fatalf("delete: %v", err)
			}
			time.Sleep(settle)
			rows[i].Samples = append(rows[i].Samples, timed(sets[c], nat.Rebuilt))
		}
	}
	full, moved := rules(b, 1000, false), rules(b, 1000, true)
	// The last rule set applied above is full.
	same := ApplyRow{Forwards: 1000, What: applyUnchanged}
	move := ApplyRow{Forwards: 1000, What: applyMoved}
	installed, other := full, moved
	for range applySamples {
		same.Samples = append(same.Samples, timed(installed, nat.Unchanged))
		move.Samples = append(move.Samples, timed(other, nat.ElementsUpdated))
		installed, other = other, installed
	}
	return append(rows, same, move)
}

// countTransactions returns how many nftables generations (committed
// transactions) one Apply of r from nothing makes in the node: the
// ruleset generation ID after it less the one before. (A monitor would
// miss some under load: the notifications of 1000 elements overflow its
// socket.)
func countTransactions(b *testing.B, n *node, r *conf.NATRules) int {
	b.Helper()
	if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
		b.Fatalf("delete: %v", err)
	}
	before, err := n.genID()
	if err != nil {
		b.Fatalf("read the nftables generation: %v", err)
	}
	if _, err := n.mgr.Apply(context.Background(), r); err != nil {
		b.Fatalf("apply: %v", err)
	}
	after, err := n.genID()
	if err != nil {
		b.Fatalf("read the nftables generation: %v", err)
	}
	return int(after - before)
}

// pair runs one round taking the gateway's forward and the direct way in
// turn, the one to go first alternating with i, and returns the two
// results.
func pair(b *testing.B, n *node, w *worker, loadgen, mode, path string, d time.Duration, body int64, i int) (viaGW, viaDirect LoadResult) {
	b.Helper()
	if i%2 == 0 {
		rs := n.load(w, loadgen, mode, []string{viaDNAT, direct}, path, d, body)
		viaGW, viaDirect = rs[0], rs[1]
	} else {
		rs := n.load(w, loadgen, mode, []string{direct, viaDNAT}, path, d, body)
		viaGW, viaDirect = rs[1], rs[0]
	}
	checkErrors(b, mode+" "+path+" through the DNAT", viaGW)
	checkErrors(b, mode+" "+path+" direct", viaDirect)
	return viaGW, viaDirect
}

// compareDNAT measures the worker's connection rate, bare handshakes and
// 10 MiB transfers to HAProxy through the gateway's forward and directly,
// with table ip esb holding the one forward. It returns the comparisons
// and a note on the forward's counter.
func compareDNAT(b *testing.B, n *node, w *worker, loadgen string) ([]Comparison, string) {
	b.Helper()
	if _, err := n.mgr.Apply(context.Background(), rules(b, 1, false)); err != nil {
		b.Fatalf("apply: %v", err)
	}
	before, err := n.mapHits()
	if err != nil {
		b.Fatalf("counters: %v", err)
	}
	dnatConns := 0
	var out []Comparison
	for _, k := range []struct {
		key          string
		metric, unit string
		of           func(LoadResult) float64
		target       bool
		mode, path   string
		body         int64
		rounds       int
		round        time.Duration
	}{
		{"http", "connection rate (HTTP)", "conn/s", LoadResult.Rate, true, ModeHTTP, smallPath, int64(len(smallBody)), rateRounds, rateRound},
		{"handshake", "TCP handshakes", "conn/s", LoadResult.Rate, false, ModeConnect, smallPath, 0, rateRounds, rateRound},
		{"throughput", "throughput, 10 MiB responses", "MB/s", LoadResult.MBps, true, ModeHTTP, bigPath, bigSize, transferRounds, transferRound},
	} {
		c := Comparison{Key: k.key, Metric: k.metric, Unit: k.unit, Of: k.of, Target: k.target,
			DNAT: Series{Name: "through DNAT (" + viaDNAT + ")"}, Direct: Series{Name: "direct (" + direct + ")"}}
		gw, _ := pair(b, n, w, loadgen, k.mode, k.path, warmup, k.body, 0)
		dnatConns += gw.Conns + gw.Errors
		for i := range k.rounds {
			gw, dr := pair(b, n, w, loadgen, k.mode, k.path, k.round, k.body, i)
			c.DNAT.Rounds = append(c.DNAT.Rounds, gw)
			c.Direct.Rounds = append(c.Direct.Rounds, dr)
			dnatConns += gw.Conns + gw.Errors
		}
		out = append(out, c)
	}
	// The forward's counter counts the connections that took the DNAT (its
	// first packets); the direct ones must not be among them.
	after, err := n.mapHits()
	if err != nil {
		b.Fatalf("counters: %v", err)
	}
	got := int(after - before)
	if got < dnatConns {
		b.Errorf("forward tcp/%d counted %d connections, the worker made %d through it", fwdPort, got, dnatConns)
	}
	return out, fmt.Sprintf("forward tcp/%d counted %d connections during the DNAT-against-direct rounds; the worker made %d through it", fwdPort, got, dnatConns)
}

// checkErrors fails the benchmark when more than maxErrorPercent of a
// round's connections failed.
func checkErrors(b *testing.B, what string, r LoadResult) {
	b.Helper()
	if r.Conns == 0 || float64(r.Errors) > float64(r.Conns+r.Errors)*maxErrorPercent/100 {
		b.Fatalf("%s: %d connections, %d failed (first: %s)", what, r.Conns, r.Errors, r.FirstErr)
	}
}

// perConnection compares connections through the gateway's forward with
// our map holding 1000 forwards, with 1000 iptables-nft DNAT rules (the
// used port last) and, for reference, with our map holding 1 forward: one
// setup installed at a time, each installed afresh before each of its
// rounds, the order rotating. Each round takes the forward and the direct
// way in turn, HTTP requests, then bare handshakes.
func perConnection(b *testing.B, n *node, w *worker, loadgen string) []Setup {
	b.Helper()
	c := n.nft()
	reset := func() {
		if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
			b.Fatalf("delete table ip esb: %v", err)
		}
		n.deleteIptables(c)
	}
	only := func(want, gone string) {
		for name, present := range map[string]bool{want: true, gone: false} {
			if ok, err := nodetest.HasTable(c, name); err != nil || ok != present {
				b.Fatalf("table ip %s present = %v (%v), want %v", name, ok, err, present)
			}
		}
	}
	type setup struct {
		name    string
		install func() time.Duration
		hits    func() (uint64, error)
	}
	mapSetup := func(count int) setup {
		r := rules(b, count, false)
		return setup{
			name: fmt.Sprintf("our map, %d forward(s)", count),
			install: func() time.Duration {
				start := time.Now()
				if _, err := n.mgr.Apply(context.Background(), r); err != nil {
					b.Fatalf("apply %d forwards: %v", count, err)
				}
				d := time.Since(start)
				only(nat.TableName, natTable.Name)
				return d
			},
			hits: n.mapHits,
		}
	}
	script := iptablesRules(1000)
	setups := []setup{
		mapSetup(1000),
		{
			name: "iptables-nft, 1000 DNAT rules, used port last",
			install: func() time.Duration {
				start := time.Now()
				if out, err := run(script, "ip", "netns", "exec", n.Name, "iptables-restore"); err != nil {
					b.Fatalf("iptables-restore: %v\n%s", err, out)
				}
				d := time.Since(start)
				only(natTable.Name, nat.TableName)
				return d
			},
			hits: func() (uint64, error) { return iptablesHits(c) },
		},
		mapSetup(1),
	}
	out := make([]Setup, len(setups))
	for i, st := range setups {
		out[i].Name = st.name
		for _, sr := range []*Series{&out[i].HTTP, &out[i].Connect} {
			sr.Name = "through DNAT"
		}
		for _, sr := range []*Series{&out[i].HTTPDirect, &out[i].ConnectDirect} {
			sr.Name = "direct"
		}
		reset()
		st.install()
		pair(b, n, w, loadgen, ModeHTTP, smallPath, warmup, int64(len(smallBody)), 0)
	}
	for i := range perConnRounds {
		for j := range setups {
			k := (i + j) % len(setups)
			st, o := setups[k], &out[k]
			reset()
			time.Sleep(settle)
			o.Install = append(o.Install, st.install())
			h, hd := pair(b, n, w, loadgen, ModeHTTP, smallPath, perConnRound, int64(len(smallBody)), i)
			cn, cd := pair(b, n, w, loadgen, ModeConnect, smallPath, perConnRound, 0, i)
			hits, err := st.hits()
			if err != nil {
				b.Fatalf("%s: read counter: %v", st.name, err)
			}
			if int(hits) < h.Conns+cn.Conns {
				b.Errorf("%s: the used port's DNAT counted %d connections, the worker made %d", st.name, hits, h.Conns+cn.Conns)
			}
			o.HTTP.Rounds, o.HTTPDirect.Rounds = append(o.HTTP.Rounds, h), append(o.HTTPDirect.Rounds, hd)
			o.Connect.Rounds, o.ConnectDirect.Rounds = append(o.Connect.Rounds, cn), append(o.ConnectDirect.Rounds, cd)
		}
	}
	reset()
	return out
}

// measureDrift runs Watch keeping r, flushes the node's whole ruleset
// through the nftables library driftRounds times and times each repair:
// from the flush being sent to the table seen whole (polled every
// pollEvery), and as Watch reports it.
func measureDrift(b *testing.B, n *node, r *conf.NATRules) DriftRow {
	b.Helper()
	row := DriftRow{Forwards: len(r.Forwards)}
	c := n.nft()
	if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
		b.Fatalf("delete: %v", err)
	}
	events, stop := nodetest.Watch(b, n.mgr, r, watchInterval, 64)
	defer stop()
	next := func(what string) nat.Event {
		select {
		case e := <-events:
			if e.Err != nil {
				b.Fatalf("%s: Watch failed: %v", what, e.Err)
			}
			return e
		case <-time.After(repairWait):
			b.Fatalf("%s: Watch reported nothing within %v", what, repairWait)
			return nat.Event{}
		}
	}
	if e := next("start"); e.Trigger != "start" || e.Change != nat.Rebuilt {
		b.Fatalf("Watch's first report: %+v, want the start pass rebuilding", e)
	}
	want, err := nodetest.ReadNATShape(c)
	if err != nil || want.Forwards != len(r.Forwards) {
		b.Fatalf("table ip esb after Watch's start: %+v, %v", want, err)
	}
	// Watch subscribes after its start pass and gives no sign when it
	// listens.
	time.Sleep(betweenFlushes)

	for i := range driftRounds {
		// Timed from before the flush is sent (its commit lies between
		// that and Flush's return): an upper bound.
		flushed := time.Now()
		c.FlushRuleset()
		if err := c.Flush(); err != nil {
			b.Fatalf("flush ruleset: %v", err)
		}
		var seen time.Duration
		for {
			ok, err := nodetest.HasTable(c, nat.TableName)
			at := time.Since(flushed)
			if err != nil {
				b.Fatalf("round %d: list tables: %v", i, err)
			}
			if ok {
				got, err := nodetest.ReadNATShape(c)
				if err == nil && got == want {
					seen = at
					break
				}
			}
			if at > repairWait {
				b.Fatalf("round %d: table ip esb not whole %v after the flush", i, repairWait)
			}
			time.Sleep(pollEvery)
		}
		e := next(fmt.Sprintf("round %d", i))
		if e.Trigger != "notification" || e.Change != nat.Rebuilt {
			b.Errorf("round %d: Watch's report %+v, want a rebuild on notification", i, e)
		}
		row.Seen = append(row.Seen, seen)
		row.Watch = append(row.Watch, e.Took)
		time.Sleep(betweenFlushes)
		for len(events) > 0 {
			b.Errorf("round %d: Watch reported more than one repair: %+v", i, <-events)
		}
	}
	return row
}
