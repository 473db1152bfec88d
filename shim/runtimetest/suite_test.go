package runtimetest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/shim/shimfake"
)

// envBroken names the broken runtime TestBrokenRuntimeChild runs the
// suite against.
const envBroken = "RUNTIMETEST_BROKEN"

// Runtimes that each break one clause of the contract.
type (
	// stopMissingFails: Stop of a missing worker is ErrNotFound.
	stopMissingFails struct{ *shimfake.Runtime }
	// deleteNotIdempotent: a second Delete is ErrNotFound.
	deleteNotIdempotent struct{ *shimfake.Runtime }
	// pingLies: Ping answers while the daemon is gone.
	pingLies struct{ *shimfake.Runtime }
	// labelsLost: List drops the labels.
	labelsLost struct{ *shimfake.Runtime }
)

func (r stopMissingFails) Stop(ctx context.Context, id string, grace time.Duration) error {
	if !slices.Contains(r.IDs(), id) {
		return fmt.Errorf("stop %s: %w", id, shim.ErrNotFound)
	}
	return r.Runtime.Stop(ctx, id, grace)
}

func (r deleteNotIdempotent) Delete(ctx context.Context, id string) error {
	if !slices.Contains(r.IDs(), id) {
		return fmt.Errorf("delete %s: %w", id, shim.ErrNotFound)
	}
	return r.Runtime.Delete(ctx, id)
}

func (pingLies) Ping(context.Context) error { return nil }

func (r labelsLost) List(ctx context.Context) ([]shim.WorkerInfo, error) {
	list, err := r.Runtime.List(ctx)
	for i := range list {
		list[i].Labels = nil
	}
	return list, err
}

// broken maps each broken runtime to how it is made and what the suite's
// failure must say.
var broken = map[string]struct {
	wrap func(*shimfake.Runtime) shim.Runtime
	says string
}{
	"stop-missing-fails":    {func(f *shimfake.Runtime) shim.Runtime { return stopMissingFails{f} }, "Stop of missing worker"},
	"delete-not-idempotent": {func(f *shimfake.Runtime) shim.Runtime { return deleteNotIdempotent{f} }, "Delete #2"},
	"ping-lies":             {func(f *shimfake.Runtime) shim.Runtime { return pingLies{f} }, "Ping with the daemon gone"},
	"labels-lost":           {func(f *shimfake.Runtime) shim.Runtime { return labelsLost{f} }, "List after Start"},
	// The control: the fake itself, which the suite passes.
	"intact": {func(f *shimfake.Runtime) shim.Runtime { return f }, ""},
}

// TestBrokenRuntimeChild runs the suite against the broken runtime named
// by $RUNTIMETEST_BROKEN; it is TestSuiteCatchesBrokenRuntimes's child
// process and does nothing in an ordinary run.
func TestBrokenRuntimeChild(t *testing.T) {
	b, ok := broken[os.Getenv(envBroken)]
	if !ok {
		t.Log("runs only as the child of TestSuiteCatchesBrokenRuntimes")
		return
	}
	const (
		image       = "registry.test/esb/worker:latest"
		missing     = "registry.test/esb/missing:latest"
		unreachable = "127.0.0.1:1/esb/worker:latest"
	)
	runtimetest.RuntimeSuite(t, os.Getenv(envBroken), runtimetest.Harness{
		New: func(*testing.T) runtimetest.Instance {
			f := shimfake.New(shimfake.Options{})
			f.SetImageError(missing, shim.ErrImageNotFound)
			f.SetImageError(unreachable, shim.ErrRegistryUnavailable)
			return runtimetest.Instance{Runtime: b.wrap(f),
				Kill: func(_ context.Context, id string) error { f.Kill(id); return nil }}
		},
		Unavailable: map[string]func(*testing.T) (shim.Runtime, error){"down": func(*testing.T) (shim.Runtime, error) {
			f := shimfake.New(shimfake.Options{})
			f.SetDown(true)
			return b.wrap(f), nil
		}},
		Image: image, MissingImages: []string{missing}, UnreachableImage: unreachable,
		Capabilities: runtimetest.Capabilities{MutableLabels: true},
	})
}

// TestSuiteCatchesBrokenRuntimes: the suite fails a runtime that breaks
// one clause of the contract, naming the clause. Each broken runtime runs
// in a child process, so its failure does not fail this test.
func TestSuiteCatchesBrokenRuntimes(t *testing.T) {
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenRuntimeChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), envBroken+"="+name)
			out, err := cmd.CombinedOutput()
			if b.says == "" {
				if err != nil {
					t.Fatalf("the suite failed the intact fake: %v\n%s", err, out)
				}
				return
			}
			if err == nil {
				t.Fatalf("the suite passed a runtime that is broken (%s):\n%s", name, out)
			}
			if !strings.Contains(string(out), b.says) {
				t.Errorf("the suite failed %s without saying %q:\n%s", name, b.says, out)
			}
		})
	}
}
