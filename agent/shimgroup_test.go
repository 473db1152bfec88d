package agent

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

// Workers of one function fill a shim group up to its size, then open the
// next; other functions get groups of their own; the spec carries the
// group and a label names it.
func TestShimGroupsFillAndSeal(t *testing.T) {
	r := newRig(t, Config{ShimGroupSize: 2})
	ctx := context.Background()
	var groups []string
	for i := range 3 {
		w, err := r.a.Acquire(ctx, req("o"))
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
		s := r.spec(w.ID)
		if s.ShimGroup == "" || s.Labels[conf.LabelShimGroup] != s.ShimGroup {
			t.Fatalf("worker %d: spec group %q, label %q", i, s.ShimGroup, s.Labels[conf.LabelShimGroup])
		}
		groups = append(groups, s.ShimGroup)
	}
	if groups[0] != groups[1] || groups[2] == groups[0] {
		t.Errorf("groups of three workers with size 2 = %v, want [g g h]", groups)
	}
	other := req("o")
	other.Function = "other"
	w, err := r.a.Acquire(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if g := r.spec(w.ID).ShimGroup; g == groups[2] {
		t.Errorf("another function joined group %s of hello", g)
	}
}

// A group whose members all left is not joined again (its shim shuts
// down with its last container); nor is a group sealed by earlier members
// even when one of them stays.
func TestShimGroupNotRejoinedAfterItsMembersLeave(t *testing.T) {
	r := newRig(t, Config{ShimGroupSize: 2})
	ctx := context.Background()
	a, err := r.a.Acquire(ctx, req("o"))
	if err != nil {
		t.Fatal(err)
	}
	first := r.spec(a.ID).ShimGroup
	if err := r.a.Release(ctx, a.ID, "o"); err != nil {
		t.Fatal(err)
	}
	b, err := r.a.Acquire(ctx, req("o"))
	if err != nil {
		t.Fatal(err)
	}
	if g := r.spec(b.ID).ShimGroup; g == first {
		t.Errorf("a worker joined group %s after its only member left", g)
	}
	if err := r.a.Release(ctx, b.ID, "o"); err != nil {
		t.Fatal(err)
	}
	r.assertEmpty(t)
}

// Off (0) and under a runtime that owns the namespace (Docker: no shims),
// workers carry no group.
func TestShimGroupOff(t *testing.T) {
	for name, cfg := range map[string]Config{"off": {}, "docker": {ShimGroupSize: 4}} {
		t.Run(name, func(t *testing.T) {
			r := newRig(t, cfg)
			if name == "docker" {
				r.rt.SetOwnsNetNS(true)
			}
			w, err := r.a.Acquire(context.Background(), req("o"))
			if err != nil {
				t.Fatal(err)
			}
			if s := r.spec(w.ID); s.ShimGroup != "" || s.Labels[conf.LabelShimGroup] != "" {
				t.Errorf("group %q, label %q; want none", s.ShimGroup, s.Labels[conf.LabelShimGroup])
			}
		})
	}
}

// groupTasks is a runtime whose task creations each wait, bounded, for
// another of their shim group to begin, and count those that overlapped.
type groupTasks struct {
	*shimfake.Runtime
	mu       sync.Mutex
	running  map[string]int // shim group -> task creations in flight
	overlaps int
	others   int // creations that overlapped one of another group
}

func (g *groupTasks) inFlight(group string) (same, other int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for k, n := range g.running {
		if k == group {
			same += n
		} else {
			other += n
		}
	}
	return same, other
}

func (g *groupTasks) CreateTask(ctx context.Context, id string) error {
	s, _ := g.Spec(id)
	g.mu.Lock()
	g.running[s.ShimGroup]++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.running[s.ShimGroup]--
		g.mu.Unlock()
	}()
	sawOther := false
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		same, other := g.inFlight(s.ShimGroup)
		sawOther = sawOther || other > 0
		if same > 1 {
			g.mu.Lock()
			g.overlaps++
			g.mu.Unlock()
			break
		}
	}
	if sawOther {
		g.mu.Lock()
		g.others++
		g.mu.Unlock()
	}
	return g.Runtime.CreateTask(ctx, id)
}

// The task creations of one shim group never overlap (a second shim start
// for a group can leave a shim with no task, see shimStarts), while
// those of different groups still do.
func TestShimGroupTaskCreationsOneAtATime(t *testing.T) {
	g := &groupTasks{Runtime: shimfake.New(shimfake.Options{}), running: map[string]int{}}
	a := New(Options{Runtime: g, Network: newFakeNetwork(), NetNSes: newFakeNetNSes(),
		Config: Config{ShimGroupSize: 3, MaxParallel: 8, LogDir: t.TempDir()}, Probe: func(context.Context, string) error { return nil }})
	t.Cleanup(a.Wait)
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Go(func() {
			r := req("o")
			if i%2 == 1 {
				r.Function = "other"
			}
			_, errs[i] = a.Acquire(context.Background(), r)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	if g.overlaps != 0 {
		t.Errorf("%d task creations overlapped another of their shim group", g.overlaps)
	}
	if g.others == 0 {
		t.Errorf("no task creation overlapped one of the other function's group: groups no longer create side by side")
	}
}
