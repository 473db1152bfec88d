package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

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
