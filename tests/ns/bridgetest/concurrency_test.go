package bridgetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// TestConcurrentAddDel attaches 32 workers at once to a node that has no
// bridge yet, so the first ADDs race to create it: all succeed with
// distinct addresses that match the store, veths and guards, the bridge
// holds the gateway once and every CHECK passes. Then 32 concurrent DELs
// leave no veth, no allocation and empty anti-spoof sets.
func TestConcurrentAddDel(t *testing.T) {
	const workers = 32
	n := newNode(t, nil, nil)
	if n.hasLink(bridgeName) {
		t.Fatalf("bridge %s exists before the first ADD", bridgeName)
	}
	ws := make([]*worker, workers)
	for i := range ws {
		ws[i] = n.newWorker(fmt.Sprintf("conc-%02d", i))
	}
	list := n.list("1.1.0")

	start := time.Now()
	errs := runAll(n, ws, func(ctx context.Context, w *worker) error {
		res, err := n.cni.AddNetworkList(ctx, list, w.rt())
		if err != nil {
			return err
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			return err
		}
		if len(r.IPs) != 1 {
			return fmt.Errorf("result has %d IPs, want 1", len(r.IPs))
		}
		w.ip, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
		return nil
	})
	t.Logf("%d concurrent ADDs took %s", workers, time.Since(start).Round(time.Millisecond))
	failOn(t, "ADD", ws, errs)

	byIP := map[netip.Addr]string{}
	allocs := nodetest.Allocs(n.t, n.dataDir, netName)
	guards := n.guards()
	for _, w := range ws {
		if other, dup := byIP[w.ip]; dup || !w.ip.IsValid() {
			t.Errorf("%s got %s, as did %q", w.id, w.ip, other)
		}
		byIP[w.ip] = w.id
		if a := allocs[w.attachment()]; len(a) != 1 || a[0].Addr() != w.ip {
			t.Errorf("%s: ADD returned %s, the store holds %v", w.id, w.ip, a)
		}
		if g, ok := guards[w.veth()]; !ok || len(g.IPs) != 1 || g.IPs[0] != w.ip || g.MAC.String() != macFor(w.ip) {
			t.Errorf("%s: guard %+v, want %s with %s", w.id, g, macFor(w.ip), w.ip)
		}
	}
	n.assertClean("after the concurrent ADDs", ws...)
	brAddrs := mustInNS(t, n.name, "ip", "-4", "-o", "addr", "show", "dev", bridgeName)
	if c := strings.Count(brAddrs, "inet "); c != 1 || !strings.Contains(brAddrs, gatewayIP+"/16") {
		t.Errorf("bridge addresses %q, want only %s/16", brAddrs, gatewayIP)
	}
	for _, w := range ws {
		if err := n.check(w); err != nil {
			t.Errorf("CHECK %s: %v", w.id, err)
		}
	}
	if !pingWorks(ws[workers-1].name, netip.Addr{}, gateway) {
		t.Errorf("%s cannot ping the gateway", ws[workers-1].id)
	}

	start = time.Now()
	errs = runAll(n, ws, func(ctx context.Context, w *worker) error {
		return n.cni.DelNetworkList(ctx, list, w.rt())
	})
	t.Logf("%d concurrent DELs took %s", workers, time.Since(start).Round(time.Millisecond))
	failOn(t, "DEL", ws, errs)
	n.assertClean("after the concurrent DELs")
}

// runAll runs fn for every worker at once, each in its own goroutine on a
// thread in the node namespace, and returns their errors by index.
func runAll(n *node, ws []*worker, fn func(ctx context.Context, w *worker) error) []error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	release := make(chan struct{})
	for i, w := range ws {
		wg.Go(func() {
			<-release
			errs[i] = n.ns.Do(func(ns.NetNS) error { return fn(ctx, w) })
		})
	}
	close(release)
	wg.Wait()
	return errs
}

func failOn(t *testing.T, verb string, ws []*worker, errs []error) {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			code := ""
			if te, ok := asCNI(err); ok {
				code = fmt.Sprintf(" (code %d)", te.Code)
			}
			t.Errorf("%s %s%s: %v", verb, ws[i].id, code, err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d concurrent %ss failed", failed, len(ws), verb)
	}
}

func asCNI(err error) (*types.Error, bool) {
	var te *types.Error
	ok := errors.As(err, &te)
	return te, ok
}

// TestGCDuringAdd runs GC while a worker is being attached, as a runtime's
// periodic GC may. The GC has stale attachments to remove (four veths
// whose deletion keeps it busy) and lists the new worker as valid. Every
// round the new worker must end up whole: CHECK passes and its anti-spoof
// guard is installed, so it cannot spoof.
func TestGCDuringAdd(t *testing.T) {
	const rounds, staleCount = 6, 4
	n := newNode(t, nil, map[string]any{"gcGrace": "0s"})
	stale := make([]*worker, staleCount)
	for i := range stale {
		stale[i] = n.newWorker(fmt.Sprintf("stale-%d", i))
	}
	list := n.list("1.1.0")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	lost := 0
	for round := range rounds {
		for i, w := range stale {
			w.id = fmt.Sprintf("stale-%d-%d", round, i)
		}
		failOn(t, "stale ADD", stale, runAll(n, stale, func(ctx context.Context, w *worker) error {
			_, err := n.cni.AddNetworkList(ctx, list, w.rt())
			return err
		}))
		fresh := n.newWorker(fmt.Sprintf("fresh-%d", round))
		gcRuntime := n.runtime()
		args := &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: fresh.id, IfName: ifName}}}
		stagger := time.Duration(rng.IntN(6)) * time.Millisecond
		var addErr, gcErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			addErr = n.inNode(func(ctx context.Context) error {
				_, err := n.cni.AddNetworkList(ctx, list, fresh.rt())
				return err
			})
		})
		wg.Go(func() {
			time.Sleep(stagger)
			gcErr = n.inNode(func(ctx context.Context) error { return gcRuntime.GCNetworkList(ctx, list, args) })
		})
		wg.Wait()
		if addErr != nil || gcErr != nil {
			t.Fatalf("round %d: ADD: %v; GC: %v", round, addErr, gcErr)
		}
		if _, ok := n.guards()[fresh.veth()]; !ok {
			lost++
			t.Errorf("round %d (GC %s after ADD): the new worker has no anti-spoof guard; CHECK says: %v", round, stagger, n.check(fresh))
		} else if err := n.check(fresh); err != nil {
			t.Errorf("round %d (GC %s after ADD): CHECK of the new worker: %v", round, stagger, err)
		}
		n.assertClean(fmt.Sprintf("round %d, after GC", round), fresh)
		n.mustDel(fresh)
		if t.Failed() && len(n.leftovers()) > 0 {
			t.FailNow()
		}
	}
	t.Logf("%d rounds, the new worker lost its guard in %d", rounds, lost)
}
