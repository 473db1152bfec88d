package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
)

// TestReadinessEndsWhenWorkerDies: a worker whose port never opens is not
// waited for until the ready timeout once its process has exited (the
// image's fault: FailedPrecondition with its exit status and last log
// lines) or the runtime stopped answering (Unavailable); either way the
// creation is undone. Both runtime styles.
func TestReadinessEndsWhenWorkerDies(t *testing.T) {
	for _, owns := range []bool{false, true} {
		for _, c := range []struct {
			name string
			exit shim.Exit
			code Code
			want []string
		}{
			{"exited", shim.Exit{Code: 3, Log: "starting\npanic: no handler"}, Exited,
				[]string{"exited with status 3 before its port opened", "panic: no handler"}},
			{"runtime gone", shim.Exit{Err: fmt.Errorf("wait for worker: %w", shim.ErrUnavailable)}, Unavailable,
				[]string{"the runtime does not answer"}},
		} {
			t.Run(fmt.Sprintf("owns-netns=%v/%s", owns, c.name), func(t *testing.T) {
				rt, nw, nses := newFakeRuntime(), newFakeNetwork(), newFakeNetNSes()
				rt.ownsNetNS = owns
				rt.exit = &c.exit
				// A ready timeout far longer than any test: only the
				// exit can end this wait.
				a := New(Options{Runtime: rt, Network: nw, NetNSes: nses,
					Config: Config{LogDir: t.TempDir(), ReadyTimeout: time.Hour},
					Probe:  func(context.Context, string) error { return errors.New("connection refused") }})
				_, err := a.Acquire(context.Background(), req("o1"))
				if CodeOf(err) != c.code {
					t.Fatalf("acquire of a dying worker: %v (code %d), want code %d", err, CodeOf(err), c.code)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				r := &rig{a: a, rt: rt, net: nw, nses: nses}
				r.assertEmpty(t)
			})
		}
	}
}
