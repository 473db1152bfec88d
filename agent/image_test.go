package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

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
			r.rt.failPull = tc.err
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
