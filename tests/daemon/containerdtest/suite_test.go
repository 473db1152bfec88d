package containerdtest

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// TestConformance runs shim.Runtime's conformance suite against the
// containerd adapter and the stack's containerd.
func TestConformance(t *testing.T) {
	st := stacktest.Require(t)
	h := st.Harness()
	h.New = func(t *testing.T) runtimetest.Instance {
		rt, ns := newRuntime(t, st, containerd.Options{PlainHTTP: []string{st.Registry}})
		return runtimetest.Instance{Runtime: rt,
			Kill: func(ctx context.Context, id string) error {
				if out, err := st.Ctr(ctx, ns, "tasks", "kill", "--signal", "SIGKILL", id).CombinedOutput(); err != nil {
					return fmt.Errorf("ctr tasks kill %s: %w: %s", id, err, strings.TrimSpace(string(out)))
				}
				return nil
			},
			PID: func(ctx context.Context, id string) (int, error) { return taskPID(ctx, st, ns, id) },
		}
	}
	h.Unavailable = map[string]func(t *testing.T) (shim.Runtime, error){"no socket": func(t *testing.T) (shim.Runtime, error) {
		rt, err := containerd.New(containerd.Options{Address: filepath.Join(t.TempDir(), "nothing.sock")})
		if err != nil {
			return nil, err
		}
		t.Cleanup(func() { _ = rt.Close() })
		return rt, nil
	}}
	h.Capabilities = runtimetest.Capabilities{MutableLabels: true, Confinement: true, Cgroups: true}
	runtimetest.RuntimeSuite(t, "containerd", h)
}

// taskPID returns the host PID of worker id's task.
func taskPID(ctx context.Context, st stacktest.Stack, ns, id string) (int, error) {
	out, err := st.Ctr(ctx, ns, "tasks", "list").Output()
	if err != nil {
		return 0, fmt.Errorf("ctr tasks list: %w", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil || pid <= 0 {
				return 0, fmt.Errorf("task %s has PID %q", id, f[1])
			}
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no task %s in:\n%s", id, out)
}
