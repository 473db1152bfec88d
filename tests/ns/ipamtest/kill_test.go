package ipamtest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// killOutcome is what a SIGKILL sent during ADD hit.
type killOutcome int

const (
	killLate      killOutcome = iota // the plugin had already exited successfully
	killBeforeTxn                    // killed before its transaction committed: no trace
	killAfterTxn                     // killed after committing, before it exited
)

// TestKillDuringAdd kills esb-ipam with SIGKILL at a random moment of an
// ADD, 50 times, while another ADD runs beside it. After every kill the
// store opens, no address is held twice and the free map matches the
// allocations; the bystander's ADD is unaffected. Then a GC with an empty
// valid list (grace 0s) releases everything, ipam.Usage reports 0 used,
// and a new ADD works.
func TestKillDuringAdd(t *testing.T) {
	const rounds = 50
	n := newIPAMNet(t, map[string]any{"gcGrace": "0s", "lockWait": "10s"})
	cfg := n.parsed()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	t.Logf("seed %d", seed)

	counts := map[killOutcome]int{}
	for i := range rounds {
		victim, bystander := fmt.Sprintf("kill-%02d", i), fmt.Sprintf("live-%02d", i)
		delay := time.Duration(rng.Int64N(int64(40 * time.Millisecond)))
		type addResult struct {
			ip  netip.Prefix
			err error
		}
		done := make(chan addResult, 1)
		go func() {
			ip, err := n.add(n.cni, bystander)
			done <- addResult{ip, err}
		}()
		out, ip, err := n.killAdd(victim, delay)
		by := <-done
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if by.err != nil {
			t.Fatalf("round %d: bystander ADD: %v", i, by.err)
		}

		st := n.state()
		if err := st.consistent(cfg); err != nil {
			t.Fatalf("round %d (kill after %s): %v", i, delay, err)
		}
		if got := st.allocs[bystander]; got != by.ip {
			t.Fatalf("round %d: bystander ADD returned %s, store holds %v", i, by.ip, got)
		}
		held, committed := st.allocs[victim]
		switch {
		case out == killLate && held != ip:
			t.Fatalf("round %d: completed ADD returned %s, store holds %v", i, ip, held)
		case out != killLate && committed:
			out = killAfterTxn
		}
		counts[out]++
	}
	t.Logf("%d kills: %d mid-ADD before the commit, %d mid-ADD after the commit, %d after the plugin had exited",
		rounds, counts[killBeforeTxn], counts[killAfterTxn], counts[killLate])
	if counts[killBeforeTxn]+counts[killAfterTxn] == 0 {
		t.Errorf("no kill landed while the plugin ran; the test proved nothing")
	}

	if err := n.gc(n.runtime(), nil); err != nil {
		t.Fatalf("GC with an empty valid list: %v", err)
	}
	st := n.state()
	if len(st.allocs) != 0 || st.used != 0 {
		t.Fatalf("after GC the store holds %v and marks %d used, want nothing", st.allocs, st.used)
	}
	ip := n.mustAdd("after")
	if !cfg.V4.Contains(ip.Addr()) || cfg.V4.Reserved(ip.Addr()) {
		t.Fatalf("ADD after the kills got %s", ip)
	}
	if st := n.state(); len(st.allocs) != 1 || st.used != 1 || st.allocs["after"] != ip {
		t.Fatalf("store holds %v (%d used), want only after -> %s", st.allocs, st.used, ip)
	}
}

// killAdd starts esb-ipam ADD for cid the way a runtime does (CNI_*
// environment, config on stdin), sends SIGKILL after delay and reports
// whether the kill hit the running plugin; when the plugin had finished,
// it returns the address of its result.
func (n *ipamNet) killAdd(cid string, delay time.Duration) (killOutcome, netip.Prefix, error) {
	end, err := nodetest.PluginCall{
		Type: pluginTy, Path: n.plugins, Command: "ADD",
		ContainerID: cid, NetNS: n.netns, IfName: ifName,
		Conf: n.confBytes("1.1.0", nil),
	}.KillAfter(delay)
	if err != nil {
		return 0, netip.Prefix{}, err
	}
	if end.Killed() {
		return killBeforeTxn, netip.Prefix{}, nil
	}
	if !end.State.Success() {
		return 0, netip.Prefix{}, fmt.Errorf("plugin ADD %s: %s: %s %s", cid, end.State, end.Stdout, end.Stderr)
	}
	res, err := current.NewResult(end.Stdout)
	if err != nil {
		return 0, netip.Prefix{}, fmt.Errorf("decode result %q: %w", end.Stdout, err)
	}
	ip, _, err := firstIP(res)
	return killLate, ip, err
}
