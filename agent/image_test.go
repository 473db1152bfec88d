package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/shim"
)

// TestPullErrorsAreClassified: a wrong image is NotFound naming it and a
// silent registry Unavailable, in both APIs, also for many acquires at
// once; nothing is left behind.
func TestPullErrorsAreClassified(t *testing.T) {
	const image = "127.0.0.1:5000/esb/nope:missing"
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
		text string
	}{
		{"not found", shim.PullError(image, fmt.Errorf("resolve: %w", shim.ErrImageNotFound)), codes.NotFound, "image " + image + " not found"},
		{"registry down", shim.PullError(image, fmt.Errorf("dial: %w", shim.ErrRegistryUnavailable)), codes.Unavailable, "registry does not answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Config{})
			r.rt.FailPull(tc.err)
			s := NewServer(r.a)
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make([]error, 24)
			for i := range errs {
				wg.Go(func() {
					if i%2 == 0 {
						_, errs[i] = s.AcquireWorker(ctx, &agentv1.AcquireWorkerRequest{Function: "f", Image: image, OwnerId: "o"})
					} else {
						_, errs[i] = s.EnsureContainer(ctx, &agentv1.EnsureContainerRequest{FunctionName: "f", Image: image, OwnerId: "o"})
					}
				})
			}
			wg.Wait()
			for i, err := range errs {
				if st, _ := status.FromError(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.text) {
					t.Errorf("call %d: %v, want %s naming %q", i, err, tc.code, tc.text)
				}
			}
			r.assertEmpty(t)
		})
	}
}

func TestPullPolicyAlways(t *testing.T) {
	ctx := context.Background()
	t.Run("if-not-present never resolves", func(t *testing.T) {
		r := newRig(t, Config{})
		if _, err := r.a.Acquire(ctx, req("o")); err != nil {
			t.Fatal(err)
		}
		if n := r.rt.Pulls(); n != 0 {
			t.Errorf("%d resolves under if-not-present", n)
		}
	})
	t.Run("a new digest drains idle workers", func(t *testing.T) {
		r := newRig(t, Config{PoolMinIdle: 1, ImagePullPolicy: PullAlways})
		r.rt.SetDigest("sha256:aaa")
		if _, err := r.a.Acquire(ctx, req("o")); err != nil {
			t.Fatal(err)
		}
		r.a.Wait()
		var old string
		for _, w := range r.a.List("") {
			if w.State == StateIdle {
				old = w.ID
			}
		}
		if old == "" || r.rt.Pulls() != 2 {
			t.Fatalf("no idle worker, or %d resolves (want one per cold start and refill: 2)", r.rt.Pulls())
		}
		r.rt.SetDigest("sha256:bbb") // pushed anew under the same tag
		q := req("o")
		q.Function = "other" // a cold start of the same image
		if _, err := r.a.Acquire(ctx, q); err != nil {
			t.Fatal(err)
		}
		r.a.Wait()
		for _, w := range r.a.List("") {
			if w.ID == old {
				t.Errorf("idle worker %s of the old digest still pooled", old)
			}
		}
	})
	t.Run("registry down: local fallback, counted", func(t *testing.T) {
		r := newRig(t, Config{ImagePullPolicy: PullAlways})
		r.rt.FailPull(shim.PullError("x", fmt.Errorf("dial: %w", shim.ErrRegistryUnavailable)))
		if _, err := r.a.Acquire(ctx, req("o")); err != nil {
			t.Fatalf("acquire with a local image: %v", err)
		}
		var m dto.Metric
		if err := r.a.metrics.pullFB.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
			v := m.GetCounter().GetValue()
			t.Errorf("esb_agent_image_pull_fallbacks_total = %v, want 1", v)
		}
		r.rt.SetLocal(false)
		if _, err := r.a.Acquire(ctx, req("o")); CodeOf(err) != Unavailable {
			t.Errorf("acquire with no local image: %v, want Unavailable", err)
		}
	})
}

// TestPullAlwaysSharesOneResolve: under always, concurrent cold starts of
// one reference share one resolve, and a warm acquire resolves nothing
// (only the refill after it does). synctest.Wait returns once every
// acquire is blocked, that is, waiting on the one resolve in flight.
func TestPullAlwaysSharesOneResolve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r := newRig(t, Config{ImagePullPolicy: PullAlways})
		gate := make(chan struct{})
		r.rt.GatePulls(gate)
		r.rt.SetDigest("sha256:aaa")
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				q := req("o")
				q.Function = fmt.Sprintf("f%d", i) // n cold starts: no pool to share
				_, errs[i] = r.a.Acquire(ctx, q)
			})
		}
		synctest.Wait()
		if got := r.rt.Pulls(); got != 1 {
			t.Errorf("%d resolves in flight for %d concurrent cold starts of one image, want 1", got, n)
		}
		close(gate)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("acquire %d: %v", i, err)
			}
		}
		if got := len(r.rt.IDs()); got != n {
			t.Errorf("%d workers, want %d", got, n)
		}
		if got := r.rt.Pulls(); got != 1 {
			t.Errorf("%d resolves, want 1", got)
		}
	})
}

// TestPullAlwaysWarmAcquireAsksNothing: with a pool, a cold start and its
// refill resolve once each; a warm acquire adds only its refill's.
func TestPullAlwaysWarmAcquireAsksNothing(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Config{PoolMinIdle: 1, ImagePullPolicy: PullAlways})
	r.rt.SetDigest("sha256:aaa")
	if _, err := r.a.Acquire(ctx, req("o")); err != nil {
		t.Fatal(err)
	}
	r.a.Wait()
	if got := r.rt.Pulls(); got != 2 {
		t.Fatalf("%d resolves after a cold start and its refill, want 2", got)
	}
	w, err := r.a.Acquire(ctx, req("o"))
	if err != nil || !w.Warm {
		t.Fatalf("second acquire = %+v, %v: want a warm worker", w, err)
	}
	r.a.Wait()
	if got := r.rt.Pulls(); got != 3 {
		t.Errorf("%d resolves after a warm acquire and its refill, want 3 (the refill's only)", got)
	}
}

// TestImageCheckedOnce: under if-not-present the image is checked on the
// first cold start only; when it is removed from the store afterwards, the
// next cold start ensures it and creates again, with both runtime shapes.
func TestImageCheckedOnce(t *testing.T) {
	for _, docker := range []bool{false, true} {
		t.Run(fmt.Sprintf("owns netns %v", docker), func(t *testing.T) {
			r := newRig(t, Config{}, func(r *rig) { r.rt.SetOwnsNetNS(docker) })
			ctx := context.Background()
			ensures := func() int {
				n := 0
				for _, c := range r.rt.Calls() {
					if strings.HasPrefix(c, "pull ") {
						n++
					}
				}
				return n
			}
			acquireRelease := func() {
				t.Helper()
				w, err := r.a.Acquire(ctx, req("o"))
				if err != nil {
					t.Fatal(err)
				}
				if err := r.a.Release(ctx, w.ID, "o"); err != nil {
					t.Fatal(err)
				}
			}
			acquireRelease()
			acquireRelease()
			if n := ensures(); n != 1 {
				t.Errorf("two cold starts of one image checked it %d times, want once", n)
			}
			r.rt.RemoveImage(req("o").Image)
			acquireRelease()
			if n := ensures(); n != 2 {
				t.Errorf("after the image was removed, the cold start checked it %d times in all, want 2", n)
			}
			r.assertEmpty(t)
		})
	}
}
