package conf

import (
	"net/netip"
	"strings"
	"testing"
)

func TestStackOfDefaultKeepsTodaysNames(t *testing.T) {
	s, err := StackOf(NetworkName)
	if err != nil {
		t.Fatal(err)
	}
	want := Stack{Network: "esb", Bridge: "esb-cni0", Table: "esb", NetNSPrefix: "esb-",
		ContainerdNamespace: "esb", DockerNamespace: "esb", Socket: "/run/esb/agent.sock",
		StateFile: "/run/esb/agent/state.db", LogDir: "/var/log/esb/workers", Conflist: "10-esb.conflist"}
	if s != want {
		t.Errorf("StackOf(esb) = %+v\nwant %+v", s, want)
	}
	if s != DefaultStack() {
		t.Errorf("DefaultStack() = %+v", DefaultStack())
	}
	if got := s.DataDB("/run/esb/ipam"); got != "/run/esb/ipam/esb.db" {
		t.Errorf("DataDB = %s", got)
	}
}

func TestStackOfDerivesEveryName(t *testing.T) {
	s, err := StackOf("esb2")
	if err != nil {
		t.Fatal(err)
	}
	want := Stack{Network: "esb2", Bridge: "esb2-cni0", Table: "esb2", NetNSPrefix: "esb2-",
		ContainerdNamespace: "esb2", DockerNamespace: "esb2", Socket: "/run/esb/esb2/agent.sock",
		StateFile: "/run/esb/esb2/state.db", LogDir: "/run/esb/esb2/workers", Conflist: "10-esb2.conflist"}
	if s != want {
		t.Errorf("StackOf(esb2) = %+v\nwant %+v", s, want)
	}
	if got := s.DataDB("/d"); got != "/d/esb2.db" {
		t.Errorf("DataDB = %s", got)
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
