package benchdensity

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// functionLive is how many workers of the Lambda function image the
// images' row holds by default (the second row, at 100 live).
const functionLive = 100

// functionCount reads ESB_DENSITY_FUNCTION: how many workers of the
// function image the images' row holds (default functionLive, 0: none).
func functionCount() (int, error) {
	v := os.Getenv("ESB_DENSITY_FUNCTION")
	if v == "" {
		return functionLive, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("ESB_DENSITY_FUNCTION=%q: want how many workers of the function image to hold, 0 for none", v)
	}
	return n, nil
}

// functionImage is the Lambda function image, built once per test binary.
var functionImage stacktest.ScriptImage

// measureFunction holds n workers of the Lambda function image
// (tests/images/function, built and pushed by scripts/function-image.sh, which
// builds nothing when the registry has it), measures their memory as a
// step does, against the host as it is with no worker, and releases them.
// n is 0, nothing is done (nil).
func (e *env) measureFunction(b *testing.B, p *agenttest.Proc, n int) *Step {
	b.Helper()
	if n == 0 {
		return nil
	}
	ref := functionImage.Ref(b, 10*time.Minute, "scripts/function-image.sh", "ESB_REGISTRY="+e.stack.Registry)
	e.ctrd.Pull(b, ref)
	base, err := readHost()
	if err != nil {
		b.Fatal(err)
	}
	st := Step{Live: n, Image: ref}
	start := time.Now()
	held := e.fill(b, p, nil, n, ref, "density-function")
	st.Fill = time.Since(start)
	if ws, err := p.List(); err != nil || len(ws) != len(held) {
		b.Fatalf("the agent lists %d workers (%v), %d of the function are held", len(ws), err, len(held))
	}
	e.measureMemory(b, p, held, base, &st)
	e.releaseAll(b, p, held)
	return &st
}
