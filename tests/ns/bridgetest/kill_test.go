package bridgetest

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// killStage is how far an ADD got before the SIGKILL, judged from what it
// left behind.
type killStage string

const (
	stageDone      killStage = "completed (exited before the kill)"
	stageNothing   killStage = "killed, nothing left"
	stageAllocated killStage = "killed, address allocated, no veth"
	stageNoAlias   killStage = "killed, veth without GC alias"
	stageVeth      killStage = "killed, veth, no guard"
	stageGuarded   killStage = "killed, veth and guard"
)

// TestKillDuringAdd starts esb-bridge ADD directly (as a runtime's exec
// would, in the node namespace) 30 times and SIGKILLs it after a random
// delay scaled to the machine's ADD (below). After every round a GC through libcni with an empty valid list
// and "gcGrace": "0s" must leave no veth, no allocation, no anti-spoof
// element and no eth0 in the worker; at the end an ADD still works.
func TestKillDuringAdd(t *testing.T) {
	const rounds = 30
	n := newNode(t, nil, map[string]any{"gcGrace": "0s"})
	w := n.newWorker("kill")
	gcRuntime := n.runtime()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	counts := map[killStage]int{}
	leaks := 0
	var runTimes []time.Duration
	for i := range rounds {
		w.id = fmt.Sprintf("kill-%02d", i)
		// Round 0 runs to its end and measures an ADD; later kills land
		// anywhere in [0, 1.5 × the median ADD so far), so about two in
		// three land mid-run however fast the machine is (a fixed 0–60 ms
		// once let all 30 ADDs of 7–15 ms finish first).
		delay := time.Minute
		if len(runTimes) > 0 {
			sorted := slices.Sorted(slices.Values(runTimes))
			delay = time.Duration(rng.Int64N(int64(sorted[len(sorted)/2]) * 3 / 2))
		}
		end, err := n.killAdd(w, delay)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if end.State.Exited() && end.State.ExitCode() != 0 {
			t.Fatalf("round %d: ADD exited with %d before the kill: %s%s", i, end.State.ExitCode(), end.Stdout, end.Stderr)
		}
		stage := stageDone
		if !end.State.Exited() {
			stage = n.stageOf(w)
		} else {
			runTimes = append(runTimes, end.Ran)
		}
		counts[stage]++

		if err := n.gc(gcRuntime); err != nil {
			t.Fatalf("round %d (%s after %s): GC: %v", i, stage, delay, err)
		}
		left := n.leftovers()
		if out, err := inNS(w.name, "ip", "-o", "link", "show", ifName); err == nil {
			left = append(left, "the worker still has "+strings.TrimSpace(out))
		}
		if len(left) > 0 {
			// Report, then clean up with a DEL so the later rounds still
			// count.
			t.Errorf("round %d (%s after %s): GC left %s", i, stage, delay, strings.Join(left, "; "))
			leaks++
			if err := n.del(w); err != nil {
				t.Fatalf("round %d: DEL after the leaky GC: %v", i, err)
			}
			n.assertClean(fmt.Sprintf("round %d: after DEL", i))
			if t.Failed() && len(n.leftovers()) > 0 {
				t.FailNow()
			}
		}
	}
	mid := rounds - counts[stageDone]
	var report []string
	for _, s := range slices.Sorted(maps.Keys(counts)) {
		report = append(report, fmt.Sprintf("%d %s", counts[s], s))
	}
	t.Logf("%d rounds, %d kills landed mid-run: %s; GC left something behind after %d", rounds, mid, strings.Join(report, "; "), leaks)
	if len(runTimes) > 0 {
		t.Logf("completed ADDs ran %s to %s", slices.Min(runTimes).Round(time.Millisecond), slices.Max(runTimes).Round(time.Millisecond))
	}
	if mid == 0 {
		t.Errorf("no kill landed mid-run: the test exercised nothing")
	}

	w.id = "kill-after"
	n.mustAdd(w)
	if !pingWorks(w.name, netip.Addr{}, gateway) {
		t.Errorf("after the kills, a new worker cannot ping the gateway")
	}
	n.mustDel(w)
	n.assertClean("after the final DEL")
}

// killAdd runs esb-bridge ADD for w, started from a thread in the node
// namespace so that the plugin runs there, and sends it SIGKILL after
// delay unless it has exited by then.
func (n *node) killAdd(w *worker, delay time.Duration) (nodetest.PluginEnd, error) {
	conf := maps.Clone(n.plugin)
	conf["name"], conf["cniVersion"] = netName, "1.1.0"
	stdin, err := json.Marshal(conf)
	if err != nil {
		return nodetest.PluginEnd{}, err
	}
	return nodetest.PluginCall{
		Type: "esb-bridge", Path: n.plugins, Command: "ADD",
		ContainerID: w.id, NetNS: w.path, IfName: ifName,
		Env:  []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
		Conf: stdin,
		In:   func(start func() error) error { return n.ns.Do(func(ns.NetNS) error { return start() }) },
	}.KillAfter(delay)
}

// stageOf tells how far a killed ADD for w got.
func (n *node) stageOf(w *worker) killStage {
	link, hasVeth := n.links()[w.veth()]
	_, hasGuard := n.guards()[w.veth()]
	_, hasAlloc := nodetest.Allocs(n.t, n.dataDir, netName)[w.attachment()]
	switch {
	case hasVeth && !strings.HasPrefix(link.Attrs().Alias, "esb-bridge "):
		return stageNoAlias
	case hasGuard:
		return stageGuarded
	case hasVeth:
		return stageVeth
	case hasAlloc:
		return stageAllocated
	default:
		return stageNothing
	}
}
