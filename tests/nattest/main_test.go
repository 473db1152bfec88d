// Package nattest holds the privileged tests of package nat: rules applied
// in a fresh network namespace and compared, as the kernel renders them,
// with golden texts.
package nattest

import (
	"testing"

	"github.com/edge-serverless-box/esbnet/tests/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }
