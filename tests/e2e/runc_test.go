package e2e

import (
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// TestRuncBinary runs esb-agent with -runc-binary on containerd: the
// worker it gives out was created and started by that runc (a wrapper
// that notes its calls, then runs the stack's runc), serves an invoke,
// and its release goes through the same runc.
func TestRuncBinary(t *testing.T) {
	e := newEnvFor(t, stacktest.Containerd)
	runc := stacktest.NewRecordingRunc(t)
	e.startAgent("-runc-binary", runc.Path)

	w := e.mustAcquire(e.acquireReq("owner-r", "runc"))
	e.mustInvoke(w, `{"runc":1}`)
	e.mustRelease(w)

	missing, calls, err := runc.Missing(w.GetId(), "create", "start", "delete")
	if err != nil {
		t.Fatalf("esb-agent's worker never ran -runc-binary: %v", err)
	}
	if len(missing) > 0 {
		t.Errorf("-runc-binary never ran %q for worker %s; its calls:\n%s", missing, w.GetId(), calls)
	}
}
