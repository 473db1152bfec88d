package ipamtest

import (
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }
