package conf

import (
	"net/netip"
	"strings"
	"testing"
)

// TestStackOfDerivesEveryName: the default network keeps today's names
// exactly; another derives each of its own from its name.
func TestStackOfDerivesEveryName(t *testing.T) {
	for _, tc := range []struct {
		want   Stack
		dataDB string // DataDB("/run/esb/ipam")
	}{
		{Stack{Network: "esb", Bridge: "esb-cni0", Table: "esb", NetNSPrefix: "esb-",
			ContainerdNamespace: "esb", DockerNamespace: "esb", Socket: "/run/esb/agent.sock",
			StateFile: "/run/esb/agent/state.db", LogDir: "/var/log/esb/workers", Conflist: "10-esb.conflist"}, "/run/esb/ipam/esb.db"},
		{Stack{Network: "esb2", Bridge: "esb2-cni0", Table: "esb2", NetNSPrefix: "esb2-",
			ContainerdNamespace: "esb2", DockerNamespace: "esb2", Socket: "/run/esb/esb2/agent.sock",
			StateFile: "/run/esb/esb2/state.db", LogDir: "/run/esb/esb2/workers", Conflist: "10-esb2.conflist"}, "/run/esb/ipam/esb2.db"},
	} {
		s, err := StackOf(tc.want.Network)
		if err != nil || s != tc.want {
			t.Errorf("StackOf(%s) = %+v, %v\nwant %+v", tc.want.Network, s, err, tc.want)
		}
		if got := s.DataDB("/run/esb/ipam"); got != tc.dataDB {
			t.Errorf("DataDB of %s = %s, want %s", tc.want.Network, got, tc.dataDB)
		}
	}
	if d, err := StackOf(NetworkName); err != nil || DefaultStack() != d {
		t.Errorf("DefaultStack() = %+v, StackOf(%s) = %+v, %v", DefaultStack(), NetworkName, d, err)
	}
	long, err := StackOf(strings.Repeat("n", MaxStackNameLen))
	if err != nil || len(long.Bridge) != MaxIfNameLen || ValidateIfName("bridge", long.Bridge) != nil {
		t.Errorf("longest name: %+v, %v", long, err)
	}
}

func TestStackOfRejectsNamesThatCannotBeEveryName(t *testing.T) {
	for _, bad := range []string{"", "Esb", "2esb", "esb-2", "esb_2", "esb.2", "a/b", "es b", "é",
		strings.Repeat("n", MaxStackNameLen+1)} {
		_, err := StackOf(bad)
		if err == nil || !IsFieldError(err) || !strings.HasPrefix(err.Error(), "invalid network") {
			t.Errorf("%q: got %v, want a field error naming \"network\"", bad, err)
		}
	}
}

func TestBridgeFor(t *testing.T) {
	for network, want := range map[string]string{"esb": "esb-cni0", "esb2": "esb2-cni0", "Net_1.x": "esb-cni0"} {
		if got := BridgeFor(network); got != want {
			t.Errorf("BridgeFor(%q) = %s, want %s", network, got, want)
		}
	}
}

func TestStackConflist(t *testing.T) {
	def, err := DefaultConflist().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	same, _ := StackConflist(DefaultStack(), netip.MustParsePrefix(DefaultSubnet)).Marshal()
	if string(same) != string(def) {
		t.Errorf("StackConflist(esb, default subnet) differs from DefaultConflist:\n%s\n%s", same, def)
	}
	s, _ := StackOf("esb2")
	b, _ := StackConflist(s, netip.MustParsePrefix("10.89.0.0/16")).Marshal()
	for _, want := range []string{`"name": "esb2"`, `"bridge": "esb2-cni0"`, `"subnet": "10.89.0.0/16"`, `"gateway": "10.89.0.1"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("conflist lacks %s:\n%s", want, b)
		}
	}
}
