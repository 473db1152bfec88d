package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	cnitypes "github.com/containernetworking/cni/pkg/types"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

// TestReadinessEndsWhenWorkerDies: a worker whose port never opens is not
// waited for until the ready timeout once its process has ended or its
// runtime stopped answering. An exit of the worker's own is the image's
// fault: FailedPrecondition with its status and the last lines of its
// log. A process the runtime was told to stop (dockerd, shutting down,
// kills its containers and still answers for a while) and a runtime that
// stopped answering are Unavailable. Either way the creation is undone
// and the exit watch ends. Both runtime styles.
func TestReadinessEndsWhenWorkerDies(t *testing.T) {
	cases := []struct {
		name string
		exit shim.Exit
		code Code
		grpc codes.Code
		want []string
	}{
		{"exited", shim.Exit{Code: 3, Log: "esb-worker: starting\npanic: no handler"}, Exited, codes.FailedPrecondition,
			[]string{"exited with status 3 before its port opened", "panic: no handler"}},
		{"exited, empty log", shim.Exit{Code: 1}, Exited, codes.FailedPrecondition,
			[]string{"exited with status 1 before its port opened (its log is empty)"}},
		// A worker that handles SIGTERM exits 0 when dockerd stops it.
		{"stopped by the runtime", shim.Exit{Code: 0, Stopped: true, Signal: "15"}, Unavailable, codes.Unavailable,
			[]string{"stopped by its runtime (signal 15) before its port opened"}},
		{"runtime gone", shim.Exit{Err: fmt.Errorf("wait for worker: %w", shim.ErrUnavailable)}, Unavailable, codes.Unavailable,
			[]string{"the runtime does not answer"}},
	}
	for _, owns := range []bool{false, true} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("owns-netns=%v/%s", owns, c.name), func(t *testing.T) {
				rt := shimfake.New(shimfake.Options{OwnsNetNS: owns, ManualEvents: true})
				nw, nses := newFakeNetwork(), newFakeNetNSes()
				rt.SetExit(&c.exit)
				// A ready timeout far longer than any test run: only the
				// exit can end this wait.
				a := New(Options{Runtime: rt, Network: nw, NetNSes: nses,
					Config: Config{LogDir: t.TempDir(), ReadyTimeout: time.Hour},
					Probe:  func(context.Context, string) error { return errors.New("connection refused") }})
				t.Cleanup(a.Wait)
				_, err := a.Acquire(context.Background(), req("o1"))
				if CodeOf(err) != c.code {
					t.Fatalf("acquire of a dying worker: %v (class %d), want class %d", err, CodeOf(err), c.code)
				}
				if st, _ := status.FromError(toStatus(err)); st.Code() != c.grpc {
					t.Errorf("gRPC code %s, want %s", st.Code(), c.grpc)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				r := &rig{a: a, rt: rt, net: nw, nses: nses}
				r.assertEmpty(t)
				if ws := a.List(""); len(ws) != 0 {
					t.Errorf("workers after the failed acquire: %v", ws)
				}
			})
		}
	}
}

// TestReadinessWatchEnds: the exit watch of a worker that became ready
// ends with its creation (no watch per live worker is left running).
func TestReadinessWatchEnds(t *testing.T) {
	r := newRig(t, Config{})
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	// The watch's context is cancelled as the creation returns (the
	// fake reports it from its own goroutine: a hang here is the bug).
	if id := <-r.rt.WaitsEnded(); id != w.ID {
		t.Errorf("the watch that ended is %s's, want %s's", id, w.ID)
	}
}

// TestAttachFailsOnAnExitedWorker: where the runtime makes the namespace
// (Docker), a worker that exits at once takes its namespace with it and the
// attach after the start fails; that is the worker's exit, FailedPrecondition
// with its status, not an internal error. An exhausted network stays
// ResourceExhausted.
func TestAttachFailsOnAnExitedWorker(t *testing.T) {
	for _, c := range []struct {
		name      string
		attachErr error
		code      Code
		want      string
	}{
		{"namespace gone", errors.New(`CNI_NETNS "/proc/1/ns/net" is not a network namespace`), Exited, "exited with status 3 before its port opened"},
		{"network exhausted", &cnitypes.Error{Code: 100, Msg: "no address left"}, Exhausted, "no address left"},
		{"bridge full", bridgeFullErr(), Exhausted, "at most 1023 ports"},
		// Earlier still: the worker ended before the runtime said where its
		// namespace was, so Start itself fails.
		{"start finds no namespace", nil, Exited, "exited with status 3 before its port opened"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rt := shimfake.New(shimfake.Options{OwnsNetNS: true, ManualEvents: true})
			nw, nses := newFakeNetwork(), newFakeNetNSes()
			nw.attachErr = c.attachErr
			if c.attachErr == nil {
				rt.FailStart(errors.New("start container: it has no network namespace (state exited, exit code 3)"))
			}
			rt.SetExit(&shim.Exit{Code: 3, Log: "esb-worker: exit 3 as asked"})
			a := New(Options{Runtime: rt, Network: nw, NetNSes: nses,
				Config: Config{LogDir: t.TempDir(), ReadyTimeout: time.Hour}})
			t.Cleanup(a.Wait)
			_, err := a.Acquire(context.Background(), req("o1"))
			if CodeOf(err) != c.code || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("acquire: %v (class %d), want class %d saying %q", err, CodeOf(err), c.code, c.want)
			}
			if ws := a.List(""); len(ws) != 0 {
				t.Errorf("workers after the failed acquire: %v", ws)
			}
		})
	}
}

// TestDockerStyleAttachesAfterStart: where the runtime makes the namespace
// with the process (Docker), the agent pins it after Start and attaches
// the network to the pin; the release removes both.
func TestDockerStyleAttachesAfterStart(t *testing.T) {
	r := newRig(t, Config{}, func(r *rig) { r.rt.SetOwnsNetNS(true) })
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	// The namespace the runtime made with the process is pinned, and the
	// network attached to the pin.
	from := r.nses.from(w.ID)
	if !strings.HasPrefix(from, "/proc/") || !r.nses.Exists(w.ID) {
		t.Errorf("the runtime's namespace was not pinned: pinned from %q", from)
	}
	if w.NetNS != r.nses.Path(w.ID) || r.net.attached[w.ID] == nil {
		t.Errorf("not attached to the pinned namespace: %q", w.NetNS)
	}
	if err := r.a.Release(context.Background(), w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	r.assertEmpty(t)
}
