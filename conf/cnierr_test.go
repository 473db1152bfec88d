package conf

import (
	"fmt"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestCNICodeHelpers(t *testing.T) {
	wrap := func(code uint) error { return fmt.Errorf("attach: %w", types.NewError(code, "msg", "")) }
	for _, tc := range []struct {
		err                             error
		code                            uint
		ok, exhausted, again, dft, full bool
	}{
		{nil, 0, false, false, false, false, false},
		{fmt.Errorf("plain"), 0, false, false, false, false, false},
		{wrap(CodeExhausted), CodeExhausted, true, true, false, false, false},
		{wrap(types.ErrPluginNotAvailable), 50, true, true, false, false, false},
		{wrap(types.ErrTryAgainLater), 11, true, false, true, false, false},
		{wrap(CodeDrift), CodeDrift, true, false, false, true, false},
		{wrap(CodeBridgeFull), CodeBridgeFull, true, false, false, false, true},
		{wrap(CodeLinkConflict), CodeLinkConflict, true, false, false, false, false},
	} {
		code, ok := CNICode(tc.err)
		if code != tc.code || ok != tc.ok || IsExhausted(tc.err) != tc.exhausted || IsTryAgain(tc.err) != tc.again ||
			IsDrift(tc.err) != tc.dft || IsBridgeFull(tc.err) != tc.full {
			t.Errorf("%v: CNICode %d %v, IsExhausted %v, IsTryAgain %v, IsDrift %v, IsBridgeFull %v",
				tc.err, code, ok, IsExhausted(tc.err), IsTryAgain(tc.err), IsDrift(tc.err), IsBridgeFull(tc.err))
		}
	}
}
