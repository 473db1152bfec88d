package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// TestRuncBinary runs esb-agent with -runc-binary on containerd: the
// worker it gives out was created and started by that runc (a wrapper
// that notes its calls, then runs the stack's runc), serves an invoke,
// and its release goes through the same runc.
func TestRuncBinary(t *testing.T) {
	e := newEnvFor(t, stacktest.Containerd)
	calls := filepath.Join(t.TempDir(), "calls")
	wrapper := filepath.Join(filepath.Dir(calls), "runc")
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n", calls, nstest.LookPath(t, "runc"))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	e.startAgent("-runc-binary", wrapper)

	w := e.mustAcquire(e.acquireReq("owner-r", "runc"))
	e.mustInvoke(w, `{"runc":1}`)
	e.mustRelease(w)

	b, err := os.ReadFile(calls)
	if err != nil {
		t.Fatalf("esb-agent's worker never ran -runc-binary: %v", err)
	}
	lines := strings.Split(string(b), "\n")
	for _, verb := range []string{"create", "start", "delete"} {
		if !slices.ContainsFunc(lines, func(l string) bool {
			f := strings.Fields(l)
			return slices.Contains(f, verb) && slices.Contains(f, w.GetId())
		}) {
			t.Errorf("-runc-binary never ran %q for worker %s; its calls:\n%s", verb, w.GetId(), b)
		}
	}
}
