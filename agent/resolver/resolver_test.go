package resolver

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/edge-serverless-box/esbnet/conf"
)

var gateway = netip.MustParseAddr("10.88.0.1")

// start runs a resolver on loopback that treats 127.0.0.0/8 as the worker
// subnet.
func start(t *testing.T, subnet string, upstream netip.AddrPort) *Server {
	t.Helper()
	svcs, err := conf.ParseServices("services", "s3-storage=9000,database=8000,victorialogs=9428")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Gateway: gateway,
		Subnet: netip.MustParsePrefix(subnet), Services: svcs, Upstream: upstream})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func query(t *testing.T, s netip.AddrPort, proto, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype), s.String())
	if err != nil {
		t.Fatalf("%s %s %s: %v", proto, name, dns.TypeToString[qtype], err)
	}
	return r
}

func answerA(r *dns.Msg) string {
	if len(r.Answer) != 1 {
		return ""
	}
	if a, ok := r.Answer[0].(*dns.A); ok {
		return a.A.String()
	}
	return ""
}

func TestProxyOnly(t *testing.T) {
	s := start(t, "127.0.0.0/8", netip.AddrPort{})
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			name  string
			qtype uint16
			rcode int
			a     string
			n     int
		}{
			{"s3-storage", dns.TypeA, dns.RcodeSuccess, "10.88.0.1", 1},
			{"Database.", dns.TypeA, dns.RcodeSuccess, "10.88.0.1", 1},
			{"victorialogs", dns.TypeAAAA, dns.RcodeSuccess, "", 0},
			{"victorialogs", dns.TypeTXT, dns.RcodeSuccess, "", 0},
			{"x.s3-storage", dns.TypeA, dns.RcodeNameError, "", 0},
			{"a.b.database", dns.TypeAAAA, dns.RcodeNameError, "", 0},
			{"example.com", dns.TypeA, dns.RcodeNameError, "", 0},
			{"localhost", dns.TypeA, dns.RcodeSuccess, "127.0.0.1", 1},
			{"1.0.88.10.in-addr.arpa", dns.TypePTR, dns.RcodeNameError, "", 0},
		} {
			r := query(t, s.Addr(), proto, tc.name, tc.qtype)
			if r.Rcode != tc.rcode || len(r.Answer) != tc.n || answerA(r) != tc.a {
				t.Errorf("%s %s %s: rcode %s, %d answers (%v), want %s, %d (%q)", proto, tc.name, dns.TypeToString[tc.qtype],
					dns.RcodeToString[r.Rcode], len(r.Answer), r.Answer, dns.RcodeToString[tc.rcode], tc.n, tc.a)
			}
		}
	}
}

// TestLoopbackAndOwnName: localhost and the names under it are the
// loopback (RFC 6761); a worker's own host name is its address, and only
// the worker it names gets that answer.
func TestLoopbackAndOwnName(t *testing.T) {
	up := startUpstream(t)
	names := map[netip.Addr]string{netip.MustParseAddr("127.0.0.1"): "esb-0123456789ab", netip.MustParseAddr("127.0.0.2"): "esb-ba9876543210"}
	s, err := Start(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Gateway: gateway,
		Subnet: netip.MustParsePrefix("127.0.0.0/8"), Upstream: up, Hostname: func(a netip.Addr) string { return names[a] }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			name   string
			qtype  uint16
			rcode  int
			answer string
		}{
			{"localhost", dns.TypeA, dns.RcodeSuccess, "127.0.0.1"},
			{"LocalHost.", dns.TypeAAAA, dns.RcodeSuccess, "::1"},
			{"db.localhost", dns.TypeA, dns.RcodeSuccess, "127.0.0.1"},
			{"localhost", dns.TypeMX, dns.RcodeSuccess, ""},
			{"esb-0123456789AB", dns.TypeA, dns.RcodeSuccess, "127.0.0.1"},
			{"esb-0123456789ab", dns.TypeAAAA, dns.RcodeSuccess, ""},
			// Another worker's name goes where any other name goes: here
			// the upstream, which does not know it.
			{"esb-ba9876543210", dns.TypeA, dns.RcodeNameError, ""},
			{"notlocalhost", dns.TypeA, dns.RcodeNameError, ""},
			{"esb-0123456789ab.example", dns.TypeA, dns.RcodeNameError, ""},
		} {
			r := query(t, s.Addr(), proto, tc.name, tc.qtype)
			var got string
			if len(r.Answer) == 1 {
				switch rr := r.Answer[0].(type) {
				case *dns.A:
					got = rr.A.String()
				case *dns.AAAA:
					got = rr.AAAA.String()
				}
			}
			if r.Rcode != tc.rcode || got != tc.answer || len(r.Answer) > 1 || (tc.answer == "" && len(r.Answer) != 0) {
				t.Errorf("%s %s %s: rcode %s, answers %v; want %s, %q", proto, tc.name, dns.TypeToString[tc.qtype],
					dns.RcodeToString[r.Rcode], r.Answer, dns.RcodeToString[tc.rcode], tc.answer)
			}
		}
	}
}

func TestOnlyTheSubnet(t *testing.T) {
	s := start(t, "10.88.0.0/16", netip.AddrPort{})
	for _, proto := range []string{"udp", "tcp"} {
		if r := query(t, s.Addr(), proto, "s3-storage", dns.TypeA); r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
			t.Errorf("%s from 127.0.0.1: rcode %s, answers %v; want REFUSED, none", proto, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
}

func TestOpenForwardsToUpstream(t *testing.T) {
	up := startUpstream(t)
	s := start(t, "127.0.0.0/8", up)
	for _, proto := range []string{"udp", "tcp"} {
		r := query(t, s.Addr(), proto, "example.com", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || answerA(r) != "192.0.2.80" {
			t.Errorf("%s example.com via upstream: rcode %s, answers %v", proto, dns.RcodeToString[r.Rcode], r.Answer)
		}
		if r := query(t, s.Addr(), proto, "s3-storage", dns.TypeA); answerA(r) != "10.88.0.1" {
			t.Errorf("%s s3-storage with an upstream: %v, want the gateway", proto, r.Answer)
		}
		if r := query(t, s.Addr(), proto, "www.s3-storage", dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s www.s3-storage with an upstream: rcode %s, want NXDOMAIN (not forwarded)", proto, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestUpstreamDownIsServFail(t *testing.T) {
	// A bound UDP socket that never answers, with no TCP listener on its
	// port: the forward over TCP is refused.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	mute := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	s := start(t, "127.0.0.0/8", netip.AddrPortFrom(mute.Addr().Unmap(), mute.Port()))
	if r := query(t, s.Addr(), "tcp", "example.com", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("dead upstream: rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
}

// startUpstream serves example.com. A 192.0.2.80 on loopback, over UDP and
// TCP on one port.
func startUpstream(t *testing.T) netip.AddrPort {
	t.Helper()
	s, err := Start(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Gateway: netip.MustParseAddr("192.0.2.80"),
		Subnet: netip.MustParsePrefix("127.0.0.0/8"), Services: conf.Services{{Name: "example.com", Port: 80}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s.Addr()
}

// Port 0 takes UDP's port for TCP too; when TCP's port space has it taken
// (seen in CI: a parallel test's client connection), the resolver takes
// another port instead of failing.
func TestAnyPortSkipsATakenTCPPort(t *testing.T) {
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = taken.Close() }()
	port := uint16(taken.Addr().(*net.TCPAddr).Port)
	pc, l, err := listen(netip.MustParseAddrPort("127.0.0.1:0"), port)
	if err != nil {
		t.Fatalf("listen on any port with TCP %d taken: %v", port, err)
	}
	defer func() { _ = pc.Close() }()
	defer func() { _ = l.Close() }()
	got := uint16(l.Addr().(*net.TCPAddr).Port)
	if got == port || uint16(pc.LocalAddr().(*net.UDPAddr).Port) != got {
		t.Errorf("listen gave udp %s, tcp %s; want one port, not the taken %d", pc.LocalAddr(), l.Addr(), port)
	}
	// A port given explicitly is not changed: the error names TCP.
	if _, _, err := listen(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), 0); err == nil ||
		!strings.Contains(err.Error(), "listen on tcp") {
		t.Errorf("listen on the taken port %d: %v, want a TCP listen error", port, err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	s := start(t, "127.0.0.0/8", netip.AddrPort{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
