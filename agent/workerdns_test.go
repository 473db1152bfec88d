package agent

import (
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"

	"github.com/edge-serverless-box/esbnet/conf"
)

// TestStartWorkerDNS starts the resolver on a loopback "gateway" (the real
// one is bound in the node namespaces of tests/e2e) and checks the rules
// and resolv.conf it hands back.
func TestStartWorkerDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	rules := &conf.NATRules{Egress: conf.EgressProxyOnly, Gateway: netip.MustParseAddr("127.0.0.1"),
		Subnet:   netip.MustParsePrefix("127.0.0.0/8"),
		Forwards: []conf.Forward{{Proto: "tcp", Port: 9000, To: netip.MustParseAddrPort("127.0.0.1:9000")}}}
	dir := t.TempDir()
	c := DaemonConfig{NATRules: "nat.yaml", DNSPort: port, Services: "s3-storage=9000", StateFile: filepath.Join(dir, "state.db")}
	own := func(a netip.Addr) string {
		if a == rules.Gateway { // the test's queries come from the "gateway"
			return "esb-0123456789ab"
		}
		return ""
	}
	w, got, err := startWorkerDNS(c, rules, own, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.srv.Close() })
	if len(got.Forwards) != 3 || got.Forwards[1].Port != 53 || got.Forwards[2].Proto != "tcp" || got.Forwards[2].To.Port() != uint16(port) {
		t.Errorf("rules with the resolver: %+v", got.Forwards)
	}
	b, err := os.ReadFile(w.resolvConfPath())
	if err != nil || string(b) != "nameserver 127.0.0.1\noptions ndots:0 attempts:2 timeout:1\n" || filepath.Dir(w.resolvConfPath()) != dir {
		t.Errorf("resolv.conf %s: %q, %v", w.resolvConfPath(), b, err)
	}
	r, err := dns.Exchange(new(dns.Msg).SetQuestion("s3-storage.", dns.TypeA), w.srv.Addr().String())
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("s3-storage: %v, %v", r, err)
	}
	r, err = dns.Exchange(new(dns.Msg).SetQuestion("esb-0123456789ab.", dns.TypeA), w.srv.Addr().String())
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
		t.Errorf("the asking worker's own host name: %v, %v", r, err)
	}
	c.DNSPort = 0
	if w, same, err := startWorkerDNS(c, rules, own, slog.New(slog.DiscardHandler)); w != nil || same != rules || err != nil {
		t.Errorf("dns-port 0: %v, %v, %v; want no resolver, the rules unchanged", w, same, err)
	}
}

// TestWriteWorkerHosts: the workers' hosts file goes beside the state
// file, with the loopback names; without a state file there is none.
func TestWriteWorkerHosts(t *testing.T) {
	dir := t.TempDir()
	path, err := writeWorkerHosts(DaemonConfig{StateFile: filepath.Join(dir, "state", "state.db")})
	if err != nil || path != filepath.Join(dir, "state", "hosts") {
		t.Fatalf("writeWorkerHosts = %q, %v", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" {
		t.Errorf("hosts: %q, %v", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("hosts mode: %v, %v; want 0644 (read by every worker's user)", fi, err)
	}
	if path, err := writeWorkerHosts(DaemonConfig{}); path != "" || err != nil {
		t.Errorf("no state file: %q, %v; want none", path, err)
	}
}
