package nat

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestGuardKeyLayout(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:58:00:02")
	k := guardKey("esbabc", mac, netip.MustParseAddr("10.88.0.2"))
	want := append(append(append(ifKey("esbabc"), mac...), 0, 0), 10, 88, 0, 2)
	if !bytes.Equal(k, want) {
		t.Fatalf("key %x, want %x", k, want)
	}
	if got := setIPv4.KeyType.Bytes; int(got) != len(k) {
		t.Errorf("set key is %d bytes, element key %d", got, len(k))
	}
	if portOf(k) != "esbabc" {
		t.Errorf("portOf = %q", portOf(k))
	}
	k6 := guardKey("esbabc", mac, netip.MustParseAddr("fd00::2"))
	if got := setIPv6.KeyType.Bytes; int(got) != len(k6) {
		t.Errorf("IPv6 set key is %d bytes, element key %d", got, len(k6))
	}
}

func TestLinkLocalIsEUI64(t *testing.T) {
	mac, _ := net.ParseMAC("0a:58:0a:58:00:02")
	if got := linkLocal(mac).String(); got != "fe80::858:aff:fe58:2" {
		t.Errorf("linkLocal = %s, want the kernel's fe80::858:aff:fe58:2", got)
	}
}
