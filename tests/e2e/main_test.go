package e2e

import (
	"os"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nstest.CleanupBuilt()
	cleanupBinaries()
	os.Exit(code)
}
