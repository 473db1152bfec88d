package containerdtest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/tests/stacktest"
)

// TestWorkerConfinement starts a worker through the containerd adapter
// with a writable and with a read-only root file system and reads the
// kernel's view of each worker process: no-new-privileges, a seccomp
// filter, shim.WorkerCapabilities, and a root that refuses writes only
// when asked to (while /tmp takes them).
func TestWorkerConfinement(t *testing.T) {
	st := stacktest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt, ns := newRuntime(t, st, []string{st.Registry})
	if err := rt.EnsureImage(ctx, st.WorkerImage); err != nil {
		t.Fatal(err)
	}
	for _, readOnly := range []bool{false, true} {
		t.Run("read-only="+strconv.FormatBool(readOnly), func(t *testing.T) {
			id := randomHex(t, 8)
			spec := shim.WorkerSpec{ID: id, Image: st.WorkerImage, Labels: map[string]string{conf.LabelWorker: "1"},
				ReadOnlyRootfs: readOnly}
			if err := rt.Create(ctx, spec); err != nil {
				t.Fatalf("create: %v", err)
			}
			t.Cleanup(func() { _ = rt.Stop(ctx, id, 0); _ = rt.Delete(ctx, id) })
			if _, err := rt.Start(ctx, id); err != nil {
				t.Fatalf("start: %v", err)
			}
			stacktest.CheckWorkerConfinement(t, taskPID(ctx, t, st, ns, id), readOnly)
		})
	}
}

// taskPID returns the host PID of worker id's task.
func taskPID(ctx context.Context, t *testing.T, st stacktest.Stack, ns, id string) int {
	t.Helper()
	out, err := st.Ctr(ctx, ns, "tasks", "list").Output()
	if err != nil {
		t.Fatalf("ctr tasks list: %v", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil || pid <= 0 {
				t.Fatalf("task %s has PID %q", id, f[1])
			}
			return pid
		}
	}
	t.Fatalf("no task %s in:\n%s", id, out)
	return 0
}
