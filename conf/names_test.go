package conf

import (
	"strings"
	"testing"
)

func TestValidateNetworkName(t *testing.T) {
	for _, ok := range []string{"esb", "a", "esb-2", "Net_1.x", "0", strings.Repeat("n", 128)} {
		if err := ValidateNetworkName("name", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-esb", ".esb", "_esb", "../etc", "a/b", "es b", "é", "a\x00", strings.Repeat("n", 129)} {
		err := ValidateNetworkName("name", bad)
		if err == nil || !IsFieldError(err) || !strings.HasPrefix(err.Error(), "invalid name") {
			t.Errorf("%q: got %v, want a field error naming \"name\"", bad, err)
		}
	}
}
