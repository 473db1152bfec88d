package ipamtest

import (
	"os"
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	nstest.CleanupBuilt()
	os.Exit(code)
}
