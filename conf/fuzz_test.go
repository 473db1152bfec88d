package conf

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// FuzzParseIPAMNetConf checks that any input either parses into a config
// whose ranges are sane or fails with a decode or field error; it must never
// panic. The seeds run in every normal test run.
func FuzzParseIPAMNetConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"esb","ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","ipv6":{"subnet":"fd00::/120","rangeEnd":"fd00::ff"}}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}]}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.88.0.0/33"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","lockWait":"1h"}}`,
		`{"name":`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := ParseIPAMNetConf(data)
		if err != nil {
			if !IsDecodeError(err) && !IsFieldError(err) {
				t.Fatalf("error of unexpected kind %T: %v", err, err)
			}
			if IsFieldError(err) && !strings.HasPrefix(err.Error(), "invalid ") {
				t.Fatalf("field error does not say what is invalid: %v", err)
			}
			return
		}
		for _, r := range nc.IPAM.Ranges() {
			if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 || !r.Subnet.Contains(r.Gateway) {
				t.Fatalf("accepted an inconsistent range %+v", r)
			}
			if r.Start == r.End && r.Start == r.Gateway {
				t.Fatalf("accepted a range that holds only the gateway: %+v", r)
			}
		}
	})
}

// checkErrKind fails unless err is a decode error or a field error whose
// message starts with "invalid <field>".
func checkErrKind(t *testing.T, err error) {
	t.Helper()
	if !IsDecodeError(err) && !IsFieldError(err) {
		t.Fatalf("error of unexpected kind %T: %v", err, err)
	}
	var fe *FieldError
	if errors.As(err, &fe) && (fe.Field == "" || !strings.HasPrefix(err.Error(), "invalid "+fe.Field)) {
		t.Fatalf("field error does not name its field: %v", err)
	}
}

// checkBridge checks what an accepted esb-bridge configuration promises.
func checkBridge(t *testing.T, nc *BridgeNetConf) {
	t.Helper()
	if err := ValidateIfName("bridge", nc.Bridge); err != nil {
		t.Fatalf("accepted bridge name %q: %v", nc.Bridge, err)
	}
	if nc.MTU != 0 && (nc.MTU < MinMTU || nc.MTU > MaxMTU) {
		t.Fatalf("accepted MTU %d", nc.MTU)
	}
	if nc.IPAMType == "" || strings.ContainsAny(nc.IPAMType, "/\\") {
		t.Fatalf("accepted IPAM type %q", nc.IPAMType)
	}
	if (nc.IPAMType == IPAMType) != (nc.IPAM != nil) {
		t.Fatalf("IPAM type %q with validated IPAM %v", nc.IPAMType, nc.IPAM != nil)
	}
	if nc.IPAM != nil {
		for _, r := range nc.IPAM.Ranges() {
			if !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 {
				t.Fatalf("accepted an inconsistent range %+v", r)
			}
		}
	}
}

// FuzzParseBridgeNetConf: any esb-bridge configuration parses into one
// that keeps its promises, or fails with a decode or field error.
func FuzzParseBridgeNetConf(f *testing.F) {
	def, err := json.Marshal(DefaultConflist().Plugins[0])
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"esb","type":"esb-bridge","ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","bridge":"br0","mtu":1400,"isolation":false,"antiSpoof":false,"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}}`,
		`{"name":"esb","bridge":"../../x","ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","mtu":70000,"ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","ipam":{"type":"/bin/sh"}}`,
		`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.88.0.0/16","rangeStart":"10.88.9.9","rangeEnd":"10.88.0.2"}}`,
		`{"name":"esb","ipam":null}`,
		`{"name":"esb","ipam":{"type":1}}`,
		`{"name":"esb","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"ipam":{"type":"esb-ipam"}}`,
		`{"name":"a/b","ipam":{"type":"esb-ipam"}}`,
		`{"name":"esb","mtu":1,"ipam":{"type":"esb-ipam"}}`, `{`, `1`,
		`{"name":`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Add(append([]byte(`{"name":"esb",`), def[1:]...))
	f.Fuzz(func(t *testing.T, data []byte) {
		nc, err := ParseBridgeNetConf(data)
		if err != nil {
			checkErrKind(t, err)
			return
		}
		checkBridge(t, nc)
	})
}

// FuzzConflist feeds network configuration lists through libcni, as the
// agent and every runtime read them, and each esb-bridge entry through
// ParseBridgeNetConf as the plugin would receive it.
func FuzzConflist(f *testing.F) {
	def, err := DefaultConflist().Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def)
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"esb","plugins":[{"type":"esb-bridge","ipam":{"type":"esb-ipam","subnet":"10.1.0.0/30"}},{"type":"portmap"}]}`,
		`{"cniVersion":"0.4.0","name":"esb","plugins":[{"type":"esb-bridge","bridge":"esb-cni0-too-long","ipam":{"type":"esb-ipam"}}]}`,
		`{"cniVersion":"1.0.0","name":"esb","disableCheck":true,"plugins":[{"type":"esb-bridge","ipam":{"type":"esb-ipam","ipv6":{"subnet":"fd00::/64"}}}]}`,
		`{"name":"esb","plugins":[]}`,
		`{"name":"esb","plugins":[{"type":"esb-bridge","ipam":{}}]}`,
		`{"plugins":[{"type":"esb-bridge"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := libcni.ConfListFromBytes(data)
		if err != nil {
			return
		}
		for _, p := range list.Plugins {
			if p.Network.Type != BridgeType {
				continue
			}
			nc, err := ParseBridgeNetConf(p.Bytes)
			if err != nil {
				checkErrKind(t, err)
				continue
			}
			checkBridge(t, nc)
		}
	})
}
