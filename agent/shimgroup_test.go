package agent

import (
	"context"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
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
