package natfile

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		check   func(t *testing.T, r *conf.NATRules)
		wantErr string
	}{
		{name: "yaml with defaults", in: "forwards:\n  - {proto: tcp, port: 9000, to: \"127.0.0.1:9000\"}\n  - proto: UDP\n    port: 514\n    to: 10.0.0.5:5514\n",
			check: func(t *testing.T, r *conf.NATRules) {
				if r.Egress != conf.EgressProxyOnly || r.Bridge != conf.BridgeName || r.Gateway.String() != conf.DefaultGateway || r.Subnet.String() != conf.DefaultSubnet {
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
			check: func(t *testing.T, r *conf.NATRules) {
				if r.Egress != conf.EgressOpen || r.Loopback() {
					t.Errorf("got %+v", r)
				}
			}},
		{name: "empty file", in: ``, check: func(t *testing.T, r *conf.NATRules) {
			if len(r.Forwards) != 0 || r.Egress != conf.EgressProxyOnly {
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
			r, err := Parse([]byte(tc.in))
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

// FuzzParse: any rule file (YAML or JSON) gives a rule set whose
// forwards are all usable, or a decode or field error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"forwards:\n  - {proto: tcp, port: 9000, to: 127.0.0.1:9000}\n  - {proto: udp, port: 53, to: 10.0.0.2:53}\n",
		"egress: open\nbridge: br0\ngateway: 10.1.0.1\nsubnet: 10.1.0.0/24\nforwards: []\n",
		`{"forwards":[{"proto":"TCP","port":80,"to":"192.0.2.1:8080"}]}`,
		"forwards:\n  - {proto: tcp, port: 9000, to: 127.0.0.1:9000}\n  - {proto: tcp, port: 9000, to: 127.0.0.1:9001}\n",
		"forwards:\n  - {proto: sctp, port: 0, to: '[::1]:9'}\n",
		"forwards:\n  - {proto: tcp, port: 9000, to: 0.0.0.0:1}\n",
		"egress: closed\n", "gateway: 10.9.0.1\n", "subnet: 10.88.0.0/33\n",
		`forwards: [{proto: tcp, port: 70000, to: "x"}]`, "[", "egress: 5",
		"forwards: {a: b}\n", "- a\n- b\n", "&a [*a]\n", "", "null", "{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Parse(data)
		if err != nil {
			checkErrKind(t, err)
			return
		}
		if r.Egress != conf.EgressOpen && r.Egress != conf.EgressProxyOnly {
			t.Fatalf("accepted egress %q", r.Egress)
		}
		if err := conf.ValidateIfName("bridge", r.Bridge); err != nil {
			t.Fatalf("accepted bridge %q: %v", r.Bridge, err)
		}
		if !r.Gateway.Is4() || !r.Subnet.Contains(r.Gateway) {
			t.Fatalf("accepted gateway %s outside subnet %s", r.Gateway, r.Subnet)
		}
		seen := map[string]bool{}
		for _, fw := range r.Forwards {
			key := fmt.Sprintf("%s/%d", fw.Proto, fw.Port)
			if (fw.Proto != "tcp" && fw.Proto != "udp") || fw.Port == 0 || seen[key] {
				t.Fatalf("accepted forward %+v", fw)
			}
			seen[key] = true
			if !fw.To.Addr().Is4() || fw.To.Port() == 0 || fw.To.Addr().IsUnspecified() || fw.To.Addr().IsMulticast() {
				t.Fatalf("accepted target %s", fw.To)
			}
		}
	})
}

// checkErrKind fails unless err is a decode error or a field error that
// names its field.
func checkErrKind(t *testing.T, err error) {
	t.Helper()
	if !conf.IsDecodeError(err) && !conf.IsFieldError(err) {
		t.Fatalf("error of unexpected kind %T: %v", err, err)
	}
	var fe *conf.FieldError
	if errors.As(err, &fe) && (fe.Field == "" || !strings.HasPrefix(err.Error(), "invalid "+fe.Field)) {
		t.Fatalf("field error does not name its field: %v", err)
	}
}

func TestParseRefusesHugeFiles(t *testing.T) {
	big := "forwards:\n" + strings.Repeat("  - {proto: tcp, port: 1, to: 1.2.3.4:5}\n", conf.MaxFileBytes/40)
	if _, err := Parse([]byte(big)); !conf.IsDecodeError(err) || !strings.Contains(err.Error(), "at most") {
		t.Errorf("Parse of %d bytes: %v, want a decode error naming the limit", len(big), err)
	}
	bomb := "a: &a [x,x,x,x,x,x,x,x,x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		bomb += n + ": &" + n + " [" + strings.TrimSuffix(strings.Repeat("*"+prev+",", 9), ",") + "]\n"
		prev = n
	}
	if _, err := Parse([]byte(bomb)); !conf.IsDecodeError(err) {
		t.Errorf("Parse of an alias bomb: %v, want a decode error", err)
	}
}
