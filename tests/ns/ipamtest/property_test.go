package ipamtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	stressWorkers   = 5
	stressOpsEach   = 2100
	pluginOpsMax    = 1500 // bound on the test's own plugin calls
	pluginLiveMax   = 8
	propertyTimeout = 3 * time.Minute
)

// TestProperty runs five stress processes, each doing 2,100 random ADD,
// repeated ADD, DEL and GC operations through package ipam on the real
// store (GC with a valid list read up to 200ms earlier and a 2s grace;
// some attachments are orphaned for GC to find), while the test itself
// drives the esb-ipam binary through libcni (ADD, repeated ADD, CHECK,
// DEL). All allocate from one /24, so every address is reused many times.
// Replaying the merged logs in lock order then proves: no address was held
// by two attachments at once, every DEL and repeated ADD saw the address
// its attachment was given, GC released exactly the orphans older than the
// grace and nothing live, an ADD found the range exhausted only when the
// store held exactly the live attachments and they filled it, and the
// store ends up holding exactly the attachments the logs say are live.
func TestProperty(t *testing.T) {
	n := newIPAMNet(t, map[string]any{"gcGrace": "2s", "lockWait": "30s"})
	cfg := n.parsed()
	bin := buildStress(t)
	dir := t.TempDir()
	confPath := filepath.Join(dir, "net.json")
	if err := os.WriteFile(confPath, n.confBytes("1.1.0", nil), 0o600); err != nil {
		t.Fatal(err)
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)

	ctx, cancel := context.WithTimeout(t.Context(), propertyTimeout)
	defer cancel()
	started := time.Now()
	var (
		wg      sync.WaitGroup
		werrs   = make([]error, stressWorkers)
		logs    = make([]string, stressWorkers)
		allDone = make(chan struct{})
	)
	for i := range stressWorkers {
		logs[i] = filepath.Join(dir, fmt.Sprintf("w%d.json", i))
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin,
			"-conf", confPath, "-log", logs[i], "-worker", fmt.Sprintf("w%d", i),
			"-ops", fmt.Sprint(stressOpsEach), "-seed", fmt.Sprint(seed+int64(i)),
			"-max-live", "48", "-gc-rate", "0.03", "-orphan-rate", "0.05", "-gc-sleep", "200ms")
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start stress %d: %v", i, err)
		}
		wg.Go(func() {
			if err := cmd.Wait(); err != nil {
				werrs[i] = fmt.Errorf("stress w%d: %w: %s", i, err, stderr.Bytes())
			}
		})
	}
	go func() { wg.Wait(); close(allDone) }()

	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	plugEvents, plugOps, plugErr := n.pluginOps(rng, allDone)
	if plugErr != nil {
		cancel()
	}
	<-allDone
	took := time.Since(started)
	if plugErr != nil {
		t.Fatalf("plugin operations: %v", plugErr)
	}
	for _, err := range werrs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	events := plugEvents
	stressOps := 0
	for _, p := range logs {
		var l StressLog
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &l)
		}
		if err != nil {
			t.Fatalf("read log %s: %v", p, err)
		}
		stressOps += len(l.Events)
		for _, ev := range l.Events {
			events = append(events, event{StressEvent: ev, src: l.Worker})
		}
	}
	st := n.state()
	c := newChecker(cfg.V4, cfg.GCGrace.Nanoseconds(), st.capacity)
	c.run(events)
	addrs, most := c.maxReuse()
	t.Logf("%d operations in %s: %d by %d stress processes, %d through the esb-ipam binary; "+
		"%d attachments over %d addresses (the busiest went to %d); %d orphans released by GC, "+
		"%d GCs ran with a valid list missing a live attachment; %d exhausted ADDs",
		stressOps+plugOps, took.Round(time.Millisecond), stressOps, stressWorkers, plugOps,
		len(c.all), addrs, most, c.gcReleased, c.staleGCs, len(c.exhausted))
	if total := stressOps + plugOps; total < 10000 {
		t.Errorf("only %d operations ran, want at least 10,000", total)
	}
	if c.gcReleased == 0 || c.staleGCs == 0 {
		t.Errorf("GC released %d orphans and ran %d times with a stale list; want both above 0", c.gcReleased, c.staleGCs)
	}

	// The store holds exactly what the logs say is live.
	for id, h := range c.holds {
		if got, ok := st.allocs[id]; !ok || got.Addr().String() != h.ip {
			c.fail("lost: the logs say %s holds %s, the store holds %v", id, h.ip, got)
		}
	}
	for id, p := range st.allocs {
		if c.holds[id] == nil {
			c.fail("leaked: the store holds %s for %s, which the logs say was released", p, id)
		}
	}
	if err := st.consistent(cfg); err != nil {
		c.fail("store: %v", err)
	}
	if len(c.errs) > 0 {
		if len(c.errs) > 30 {
			c.errs = append(c.errs[:30], fmt.Sprintf("... and %d more", len(c.errs)-30))
		}
		t.Fatalf("%d violations:\n%s", len(c.errs), strings.Join(c.errs, "\n"))
	}

	// A final GC through the plugin, with the live attachments as the valid
	// list and no grace, leaves exactly those.
	var valid []string
	for id := range c.holds {
		if !strings.HasPrefix(id, OrphanPrefix) {
			valid = append(valid, id)
		}
	}
	if err := n.gc(n.runtime(), map[string]any{"gcGrace": "0s"}, valid...); err != nil {
		t.Fatalf("final GC: %v", err)
	}
	end := n.state()
	if len(end.allocs) != len(valid) || end.used != uint64(len(valid)) {
		t.Fatalf("after the final GC the store holds %d allocations (%d used), want the %d live ones",
			len(end.allocs), end.used, len(valid))
	}
	for _, id := range valid {
		if end.allocs[id] != st.allocs[id] {
			t.Errorf("final GC changed %s: %v -> %v", id, st.allocs[id], end.allocs[id])
		}
	}
}

// buildStress builds the stress helper into a temporary directory.
func buildStress(t *testing.T) string {
	return nstest.GoBuild(t, t.TempDir(), "./tests/ns/ipamtest/stress")
}

// pluginOps drives the esb-ipam binary through libcni until stop is
// closed (or pluginOpsMax calls): ADD of new attachments, repeated ADD,
// CHECK and DEL of live ones. It logs ADDs and DELs with the span of the
// exec (see event).
func (n *ipamNet) pluginOps(rng *rand.Rand, stop <-chan struct{}) ([]event, int, error) {
	var (
		events []event
		live   = map[string]netip.Prefix{}
		ids    []string
		next   int
	)
	for ops := 0; ops < pluginOpsMax; ops++ {
		select {
		case <-stop:
			return events, ops, nil
		default:
		}
		p := rng.Float64()
		switch {
		case len(ids) < pluginLiveMax && (len(ids) == 0 || p < 0.4):
			next++
			cid := fmt.Sprintf("plug-%d", next)
			start := time.Now().UnixNano()
			ip, err := n.add(n.cni, cid)
			if code, ok := conf.CNICode(err); ok && code == conf.CodeExhausted {
				continue // the checker cannot time it; the stress processes cover exhaustion
			}
			if err != nil {
				return nil, ops, fmt.Errorf("ADD %s: %w", cid, err)
			}
			events = append(events, event{
				StressEvent: StressEvent{Op: OpAdd, Time: time.Now().UnixNano(), ID: cid, IP: ip.Addr().String()},
				src:         "plugin", startMin: start,
			})
			live[cid] = ip
			ids = append(ids, cid)
		case p < 0.7:
			i := rng.IntN(len(ids))
			cid := ids[i]
			start := time.Now().UnixNano()
			if err := n.del(n.cni, cid); err != nil {
				return nil, ops, fmt.Errorf("DEL %s: %w", cid, err)
			}
			events = append(events, event{
				StressEvent: StressEvent{Op: OpDel, Time: start, ID: cid, IP: live[cid].Addr().String()},
				src:         "plugin", endMax: time.Now().UnixNano(),
			})
			delete(live, cid)
			ids = append(ids[:i], ids[i+1:]...)
		case p < 0.85:
			cid := ids[rng.IntN(len(ids))]
			if err := n.check(n.cni, cid); err != nil {
				return nil, ops, fmt.Errorf("CHECK %s: %w", cid, err)
			}
		default:
			cid := ids[rng.IntN(len(ids))]
			ip, err := n.add(n.cni, cid)
			if err != nil {
				return nil, ops, fmt.Errorf("repeated ADD %s: %w", cid, err)
			}
			if ip != live[cid] {
				return nil, ops, fmt.Errorf("repeated ADD %s returned %s, first ADD %s", cid, ip, live[cid])
			}
		}
	}
	return events, pluginOpsMax, nil
}
