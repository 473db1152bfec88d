package bridge

import "testing"

func TestIsVethName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{VethName("c1", "eth0"), true}, {"esb0123456789ab", true},
		{"esb0123456789aB", false}, {"esb0123456789a", false}, {"esb0123456789abc", false},
		{"esa0123456789ab", false}, {"esb-cni0", false}, {"", false},
	} {
		if got := isVethName(tc.name); got != tc.want {
			t.Errorf("isVethName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}
