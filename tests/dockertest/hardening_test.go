package dockertest

import (
	"strconv"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/tests/stacktest"
)

// TestWorkerConfinement starts a worker through the Docker adapter with a
// writable and with a read-only root file system and reads the kernel's
// view of each worker process: no-new-privileges, Docker's default
// seccomp filter, shim.WorkerCapabilities, and a root that refuses writes
// only when asked to (while /tmp takes them).
func TestWorkerConfinement(t *testing.T) {
	st := stacktest.RequireDocker(t)
	rt, dc := newRuntime(t, st)
	ctx := testCtx(t)
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
			t.Cleanup(func() { _ = rt.Delete(ctx, id) })
			if _, err := rt.Start(ctx, id); err != nil {
				t.Fatalf("start: %v", err)
			}
			info := inspect(t, dc, id)
			if info.State == nil || info.State.Pid <= 0 {
				t.Fatalf("worker %s has no process: %+v", id, info.State)
			}
			stacktest.CheckWorkerConfinement(t, info.State.Pid, readOnly)
		})
	}
}
