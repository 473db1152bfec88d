package e2e

import (
	"os"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) {
	nstest.Main(m, func() { printWaits(os.Stdout) }, built.Remove)
}
