package e2e

import (
	"os"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	printWaits(os.Stdout)
	nstest.CleanupBuilt()
	cleanupBinaries()
	os.Exit(code)
}
