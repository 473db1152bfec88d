package conf

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseIPAMNetConf(t *testing.T) {
	wrap := func(ipam string) string {
		return `{"cniVersion":"1.1.0","name":"esb","ipam":` + ipam + `}`
	}
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, c *IPAM)
		wantErr string // substring; "" means success
		decode  bool   // a *DecodeError is expected instead of a *FieldError
	}{
		{name: "defaults", in: wrap(`{"type":"esb-ipam"}`), check: func(t *testing.T, c *IPAM) {
			want := Range{
				Subnet:  netip.MustParsePrefix("10.88.0.0/16"),
				Gateway: netip.MustParseAddr("10.88.0.1"),
				Start:   netip.MustParseAddr("10.88.0.1"),
				End:     netip.MustParseAddr("10.88.255.254"),
			}
			if c.V4 != want || c.V6 != nil || c.DataDir != DefaultDataDir || c.Network != "esb" {
				t.Errorf("got %+v", c)
			}
			if c.LockWait != 5*time.Second || c.GCGrace != 30*time.Second {
				t.Errorf("lockWait %s gcGrace %s", c.LockWait, c.GCGrace)
			}
		}},
		{name: "explicit range and routes", in: wrap(`{"type":"esb-ipam","subnet":"10.1.0.0/24","gateway":"10.1.0.254","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","routes":[{"dst":"0.0.0.0/0"},{"dst":"192.168.0.0/16","gw":"10.1.0.1"}],"dataDir":"/var/lib/esb","lockWait":"1s","gcGrace":"0s"}`),
			check: func(t *testing.T, c *IPAM) {
				if c.V4.Gateway.String() != "10.1.0.254" || c.V4.Start.String() != "10.1.0.10" || c.V4.End.String() != "10.1.0.20" {
					t.Errorf("range %+v", c.V4)
				}
				if len(c.Routes) != 2 || c.Routes[1].GW.String() != "10.1.0.1" || c.Routes[0].GW.IsValid() {
					t.Errorf("routes %+v", c.Routes)
				}
				if c.GCGrace != 0 || c.LockWait != time.Second || c.DataDir != "/var/lib/esb" {
					t.Errorf("got %+v", c)
				}
			}},
		{name: "gateway defaults to first host", in: wrap(`{"type":"esb-ipam","subnet":"172.20.0.0/16"}`), check: func(t *testing.T, c *IPAM) {
			if c.V4.Gateway.String() != "172.20.0.1" {
				t.Errorf("gateway %s", c.V4.Gateway)
			}
		}},
		{name: "dual stack", in: wrap(`{"type":"esb-ipam","ipv6":{"subnet":"fd00:88::/64"}}`), check: func(t *testing.T, c *IPAM) {
			if c.V6 == nil || c.V6.Gateway.String() != "fd00:88::1" || c.V6.End.String() != "fd00:88::ffff:ffff:ffff:ffff" {
				t.Errorf("v6 %+v", c.V6)
			}
			if len(c.Ranges()) != 2 {
				t.Errorf("ranges %d", len(c.Ranges()))
			}
		}},
		{name: "malformed json", in: `{"name":`, wantErr: "decode network config", decode: true},
		{name: "missing name", in: `{"cniVersion":"1.1.0","ipam":{"type":"esb-ipam"}}`, wantErr: "invalid name: is required"},
		{name: "name with slash", in: `{"name":"../x","ipam":{"type":"esb-ipam"}}`, wantErr: `invalid name "../x"`},
		{name: "missing type", in: wrap(`{}`), wantErr: "invalid ipam.type: is required"},
		{name: "subnet wrong type", in: wrap(`{"type":"esb-ipam","subnet":5}`), wantErr: "invalid ipam.subnet: must be a JSON string"},
		{name: "routes wrong type", in: wrap(`{"type":"esb-ipam","routes":{}}`), wantErr: "invalid ipam.routes: must be a JSON array"},
		{name: "bad subnet", in: wrap(`{"type":"esb-ipam","subnet":"10.88.0.0/33"}`), wantErr: `invalid ipam.subnet "10.88.0.0/33"`},
		{name: "ipv6 as top-level subnet", in: wrap(`{"type":"esb-ipam","subnet":"fd00::/64"}`), wantErr: "must be an IPv4 CIDR"},
		{name: "subnet too small", in: wrap(`{"type":"esb-ipam","subnet":"10.0.0.0/31"}`), wantErr: "prefix length must be from /8 to /30"},
		{name: "host bits", in: wrap(`{"type":"esb-ipam","subnet":"10.88.1.0/16"}`), wantErr: "the network is 10.88.0.0/16"},
		{name: "gateway outside", in: wrap(`{"type":"esb-ipam","gateway":"10.89.0.1"}`), wantErr: `invalid ipam.gateway "10.89.0.1": must lie in subnet 10.88.0.0/16`},
		{name: "gateway is broadcast", in: wrap(`{"type":"esb-ipam","gateway":"10.88.255.255"}`), wantErr: "invalid ipam.gateway"},
		{name: "gateway is network", in: wrap(`{"type":"esb-ipam","gateway":"10.88.0.0"}`), wantErr: "invalid ipam.gateway"},
		{name: "gateway not an IP", in: wrap(`{"type":"esb-ipam","gateway":"gw"}`), wantErr: `invalid ipam.gateway "gw": must be an IPv4 address`},
		{name: "rangeStart outside", in: wrap(`{"type":"esb-ipam","rangeStart":"10.90.0.1"}`), wantErr: "invalid ipam.rangeStart"},
		{name: "rangeEnd before start", in: wrap(`{"type":"esb-ipam","rangeStart":"10.88.0.20","rangeEnd":"10.88.0.10"}`), wantErr: "invalid ipam.rangeEnd \"10.88.0.10\": must not be before rangeStart"},
		{name: "range only gateway", in: wrap(`{"type":"esb-ipam","rangeStart":"10.88.0.1","rangeEnd":"10.88.0.1"}`), wantErr: "holds no address besides the gateway"},
		{name: "route dst", in: wrap(`{"type":"esb-ipam","routes":[{"dst":"nope"}]}`), wantErr: `invalid ipam.routes[0].dst "nope"`},
		{name: "route gw family", in: wrap(`{"type":"esb-ipam","routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"10.88.0.1"}]}`), wantErr: "invalid ipam.routes[1].gw"},
		{name: "relative dataDir", in: wrap(`{"type":"esb-ipam","dataDir":"run/esb"}`), wantErr: `invalid ipam.dataDir "run/esb": must be a clean absolute path`},
		{name: "bad lockWait", in: wrap(`{"type":"esb-ipam","lockWait":"forever"}`), wantErr: `invalid ipam.lockWait "forever"`},
		{name: "zero lockWait", in: wrap(`{"type":"esb-ipam","lockWait":"0s"}`), wantErr: `invalid ipam.lockWait "0s"`},
		{name: "negative gcGrace", in: wrap(`{"type":"esb-ipam","gcGrace":"-1s"}`), wantErr: `invalid ipam.gcGrace "-1s"`},
		{name: "ipv4 as ipv6 subnet", in: wrap(`{"type":"esb-ipam","ipv6":{"subnet":"10.0.0.0/8"}}`), wantErr: "invalid ipam.ipv6.subnet \"10.0.0.0/8\": must be an IPv6 CIDR"},
		{name: "ipv6 missing subnet", in: wrap(`{"type":"esb-ipam","ipv6":{}}`), wantErr: "invalid ipam.ipv6.subnet: is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := ParseIPAMNetConf([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tc.check(t, nc.IPAM)
				return
			}
			if err == nil {
				t.Fatalf("want error containing %q, got none", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if tc.decode != IsDecodeError(err) || tc.decode == IsFieldError(err) {
				t.Errorf("error %q: decode=%v field=%v, want decode=%v", err, IsDecodeError(err), IsFieldError(err), tc.decode)
			}
		})
	}
}

func TestRangeReserved(t *testing.T) {
	nc, err := ParseIPAMNetConf([]byte(`{"name":"esb","ipam":{"type":"esb-ipam","subnet":"10.0.0.0/30"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := nc.IPAM.V4
	for a, want := range map[string]bool{"10.0.0.0": true, "10.0.0.1": true, "10.0.0.2": false, "10.0.0.3": true} {
		if got := r.Reserved(netip.MustParseAddr(a)); got != want {
			t.Errorf("Reserved(%s) = %v, want %v", a, got, want)
		}
	}
	if r.Contains(netip.MustParseAddr("10.0.0.3")) || !r.Contains(netip.MustParseAddr("10.0.0.2")) {
		t.Errorf("Contains wrong for %s", r)
	}
}

func TestDefaultConflistRoundTrips(t *testing.T) {
	b, err := DefaultConflist().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"name": "esb"`, `"type": "esb-bridge"`, `"bridge": "esb-cni0"`, `"type": "esb-ipam"`, `"subnet": "10.88.0.0/16"`, `"gateway": "10.88.0.1"`, `"dataDir": "/run/esb/ipam"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default conflist lacks %s:\n%s", want, b)
		}
	}
	// The plugin entry, as esb-ipam receives it, must validate.
	cfg := DefaultIPAMConfig()
	got, err := cfg.Validate(NetworkName, "ipam")
	if err != nil {
		t.Fatalf("default IPAM config does not validate: %v", err)
	}
	if got.V4.Subnet.String() != DefaultSubnet || got.V4.Gateway.String() != DefaultGateway {
		t.Errorf("got %+v", got.V4)
	}
}
