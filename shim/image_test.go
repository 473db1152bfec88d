package shim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

// The errors are the ones containerd's client and dockerd give (seen with
// ctr and docker pull against the stack's registry and a closed port).
func TestPullError(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("connect: %w", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"containerd: tag not found", fmt.Errorf("failed to resolve reference %q: %w", "r/x:y", fmt.Errorf("r/x:y: %w", errdefs.ErrNotFound)), ErrImageNotFound},
		{"containerd: registry refuses", fmt.Errorf("failed to resolve reference: failed to do request: %w", refused), ErrRegistryUnavailable},
		{"containerd: unknown host", &net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}, ErrRegistryUnavailable},
		{"containerd: slow registry", fmt.Errorf("fetch: %w", context.DeadlineExceeded), ErrRegistryUnavailable},
		{"dockerd: manifest unknown", errors.New("manifest for 127.0.0.1:5000/esb/nope:missing not found: manifest unknown: manifest unknown"), ErrImageNotFound},
		{"dockerd: registry refuses", errors.New(`Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused`), ErrRegistryUnavailable},
		{"dockerd: no such host", errors.New(`Get "https://nope.invalid/v2/": dial tcp: lookup nope.invalid: no such host`), ErrRegistryUnavailable},
		{"something else", errors.New("no space left on device"), nil},
	} {
		err := PullError("r/x:y", tc.err)
		for _, e := range []error{ErrImageNotFound, ErrRegistryUnavailable} {
			if errors.Is(err, e) != errors.Is(tc.want, e) {
				t.Errorf("%s: %v: errors.Is(%v) = %v", tc.name, err, e, errors.Is(err, e))
			}
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v lost the cause", tc.name, err)
		}
	}
}
