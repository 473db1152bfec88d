package conf

import (
	"strings"
	"testing"
)

func TestParseBridgeNetConf(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, c *BridgeNetConf)
		wantErr string
	}{
		{name: "defaults", in: `{"cniVersion":"1.1.0","name":"esb","type":"esb-bridge","ipam":{"type":"esb-ipam"}}`,
			check: func(t *testing.T, c *BridgeNetConf) {
				if c.Bridge != BridgeName || c.MTU != 0 || !c.Isolation || !c.AntiSpoof || c.IPAMType != IPAMType || c.IPAM == nil {
					t.Errorf("got %+v", c)
				}
				if c.IPAM.V4.Gateway.String() != DefaultGateway {
					t.Errorf("gateway %s", c.IPAM.V4.Gateway)
				}
			}},
		{name: "switches off", in: `{"name":"esb","type":"esb-bridge","bridge":"br-x","mtu":9000,"isolation":false,"antiSpoof":false,"ipam":{"type":"esb-ipam"}}`,
			check: func(t *testing.T, c *BridgeNetConf) {
				if c.Bridge != "br-x" || c.MTU != 9000 || c.Isolation || c.AntiSpoof {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "delegated ipam is not validated here", in: `{"name":"esb","type":"esb-bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/16"}]]}}`,
			check: func(t *testing.T, c *BridgeNetConf) {
				if c.IPAMType != "host-local" || c.IPAM != nil {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "mtu too small", in: `{"name":"esb","mtu":10,"ipam":{"type":"esb-ipam"}}`, wantErr: `invalid mtu "10": must be 0 (the bridge's MTU) or from 68 to 65535`},
		{name: "mtu wrong type", in: `{"name":"esb","mtu":"big","ipam":{"type":"esb-ipam"}}`, wantErr: "invalid mtu: must be a JSON number"},
		{name: "isolation wrong type", in: `{"name":"esb","isolation":"yes","ipam":{"type":"esb-ipam"}}`, wantErr: "invalid isolation: must be a JSON boolean"},
		{name: "bridge name too long", in: `{"name":"esb","bridge":"a-very-long-bridge","ipam":{"type":"esb-ipam"}}`, wantErr: `invalid bridge "a-very-long-bridge": is 18 characters long`},
		{name: "bridge name with slash", in: `{"name":"esb","bridge":"a/b","ipam":{"type":"esb-ipam"}}`, wantErr: `invalid bridge "a/b"`},
		{name: "missing ipam", in: `{"name":"esb"}`, wantErr: "invalid ipam: is required"},
		{name: "missing ipam type", in: `{"name":"esb","ipam":{}}`, wantErr: "invalid ipam.type: is required"},
		{name: "ipam type is a path", in: `{"name":"esb","ipam":{"type":"../x"}}`, wantErr: `invalid ipam.type "../x"`},
		{name: "subnet gateway mismatch", in: `{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.88.0.0/16","gateway":"10.99.0.1"}}`, wantErr: `invalid ipam.gateway "10.99.0.1": must lie in subnet 10.88.0.0/16`},
		{name: "ipam field wrong type", in: `{"name":"esb","ipam":{"type":"esb-ipam","subnet":true}}`, wantErr: "invalid ipam.subnet: must be a JSON string"},
		{name: "missing name", in: `{"ipam":{"type":"esb-ipam"}}`, wantErr: "invalid name: is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseBridgeNetConf([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tc.check(t, c)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
			if !IsFieldError(err) {
				t.Errorf("error %v is not a *FieldError", err)
			}
		})
	}
}
