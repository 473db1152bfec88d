package conf

import (
	"strings"
	"testing"
)

func TestParseNATRules(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, r *NATRules)
		wantErr string
	}{
		{name: "yaml with defaults", in: "forwards:\n  - {proto: tcp, port: 9000, to: \"127.0.0.1:9000\"}\n  - proto: UDP\n    port: 514\n    to: 10.0.0.5:5514\n",
			check: func(t *testing.T, r *NATRules) {
				if r.Egress != EgressProxyOnly || r.Bridge != BridgeName || r.Gateway.String() != DefaultGateway || r.Subnet.String() != DefaultSubnet {
					t.Errorf("defaults: %+v", r)
				}
				if len(r.Forwards) != 2 || r.Forwards[1].Proto != "udp" || r.Forwards[1].Port != 514 || r.Forwards[1].To.String() != "10.0.0.5:5514" {
					t.Errorf("forwards: %+v", r.Forwards)
				}
				if !r.Loopback() {
					t.Error("Loopback() false with a 127.0.0.1 target")
				}
			}},
		{name: "json open", in: `{"egress":"open","forwards":[{"proto":"tcp","port":9000,"to":"10.88.0.1:19000"}]}`,
			check: func(t *testing.T, r *NATRules) {
				if r.Egress != EgressOpen || r.Loopback() {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "empty file", in: ``, check: func(t *testing.T, r *NATRules) {
			if len(r.Forwards) != 0 || r.Egress != EgressProxyOnly {
				t.Errorf("got %+v", r)
			}
		}},
		{name: "bad port", in: `forwards: [{proto: tcp, port: 70000, to: "127.0.0.1:1"}]`, wantErr: `invalid forwards[0].port "70000": must be from 1 to 65535`},
		{name: "zero port", in: `forwards: [{proto: tcp, to: "127.0.0.1:1"}]`, wantErr: `invalid forwards[0].port "0"`},
		{name: "unknown proto", in: `forwards: [{proto: sctp, port: 1, to: "127.0.0.1:1"}]`, wantErr: `invalid forwards[0].proto "sctp": must be "tcp" or "udp"`},
		{name: "unparsable address", in: `forwards: [{proto: tcp, port: 1, to: "proxy:1"}]`, wantErr: `invalid forwards[0].to "proxy:1"`},
		{name: "no target port", in: `forwards: [{proto: tcp, port: 1, to: "127.0.0.1"}]`, wantErr: `invalid forwards[0].to "127.0.0.1"`},
		{name: "ipv6 target", in: `forwards: [{proto: tcp, port: 1, to: "[::1]:80"}]`, wantErr: `invalid forwards[0].to "[::1]:80"`},
		{name: "duplicate port", in: `forwards: [{proto: tcp, port: 9000, to: "127.0.0.1:1"}, {proto: udp, port: 9000, to: "127.0.0.1:1"}, {proto: tcp, port: 9000, to: "127.0.0.1:2"}]`, wantErr: `invalid forwards[2].port "9000": duplicates forwards[0] (tcp/9000)`},
		{name: "bad egress", in: `egress: closed`, wantErr: `invalid egress "closed"`},
		{name: "port wrong type", in: `forwards: [{proto: tcp, port: "x", to: "127.0.0.1:1"}]`, wantErr: "invalid forwards[0].port: must be a JSON number"},
		{name: "gateway outside subnet", in: `gateway: 10.99.0.1`, wantErr: `invalid gateway "10.99.0.1"`},
		{name: "bad yaml", in: "forwards: [\n", wantErr: "decode network config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseNATRules([]byte(tc.in))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				tc.check(t, r)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseNATRulesRefusesHugeFiles(t *testing.T) {
	big := "forwards:\n" + strings.Repeat("  - {proto: tcp, port: 1, to: 1.2.3.4:5}\n", MaxFileBytes/40)
	if _, err := ParseNATRules([]byte(big)); !IsDecodeError(err) || !strings.Contains(err.Error(), "at most") {
		t.Errorf("ParseNATRules of %d bytes: %v, want a decode error naming the limit", len(big), err)
	}
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += n + ": &" + n + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ",") + "]\n"
		prev = n
	}
	if _, err := ParseNATRules([]byte(bomb)); !IsDecodeError(err) {
		t.Errorf("ParseNATRules of an alias bomb: %v, want a decode error", err)
	}
}
