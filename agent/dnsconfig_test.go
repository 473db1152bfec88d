package agent

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/edge-serverless-box/esbnet/conf"
)

func TestServicesSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte("nat-rules: /etc/esb/nat.yaml\nservices: {s3-storage: 9000, database: 8000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	c, err := LoadDaemonConfig([]string{"--config", file}, none, io.Discard)
	if err != nil || c.Services != "database=8000,s3-storage=9000" || c.DNSPort != conf.DefaultResolverPort {
		t.Fatalf("services as a YAML map: %q, dns-port %d, %v", c.Services, c.DNSPort, err)
	}
	withNAT := []string{"--nat-rules", "/etc/esb/nat.yaml"}
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{append(withNAT, "--services", "s3_storage=9000"), `invalid services "s3_storage": invalid service name`},
		{append(withNAT, "--services", "db=8000,DB=8001"), "invalid services.db: name clash"},
		{append(withNAT, "--services", "db=8000,x.db=8001"), "invalid services.x.db: name clash with db"},
		{append(withNAT, "--services", "db=99999"), `invalid services.db "99999"`},
		{[]string{"--services", "db=8000"}, "invalid services: names need the resolver"},
		{append(withNAT, "--services", "db=8000", "--dns-port", "0"), "invalid services: names need the resolver"},
		{append(withNAT, "--dns-port", "53"), "invalid dns-port 53"},
		{append(withNAT, "--dns-port", "70000"), "invalid dns-port 70000"},
		{append(withNAT, "--dns-upstream", "dns.example:53"), `invalid dns-upstream "dns.example:53"`},
	} {
		if _, err := LoadDaemonConfig(tc.args, none, io.Discard); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.err)
		}
	}
}

func TestCheckServicesAgainstNAT(t *testing.T) {
	rules, err := conf.DecodeNATRules([]byte(`{"forwards":[{"proto":"tcp","port":9000,"to":"127.0.0.1:9000"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := DaemonConfig{NATRules: "nat.yaml", DNSPort: conf.DefaultResolverPort, Services: "s3-storage=9000,database=8000"}
	if _, err := c.checkServices(rules); err == nil || !strings.Contains(err.Error(), `invalid services.database "8000": unknown port`) {
		t.Errorf("a service on a port without a forward: %v", err)
	}
	c = DaemonConfig{NATRules: "nat.yaml", DNSPort: conf.DefaultResolverPort, Services: "s3-storage=9000", DNSUpstream: "192.0.2.53:53"}
	if _, err := c.checkServices(rules); err == nil || !strings.Contains(err.Error(), "invalid dns-upstream") {
		t.Errorf("an upstream under proxy-only: %v", err)
	}
}

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
		Subnet: netip.MustParsePrefix("127.0.0.0/8"),
		Forwards: []conf.Forward{{Proto: "tcp", Port: 9000, To: netip.MustParseAddrPort("127.0.0.1:9000")}}}
	dir := t.TempDir()
	c := DaemonConfig{NATRules: "nat.yaml", DNSPort: port, Services: "s3-storage=9000", StateFile: filepath.Join(dir, "state.db")}
	w, got, err := startWorkerDNS(c, rules, slog.New(slog.DiscardHandler))
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
	c.DNSPort = 0
	if w, same, err := startWorkerDNS(c, rules, slog.New(slog.DiscardHandler)); w != nil || same != rules || err != nil {
		t.Errorf("dns-port 0: %v, %v, %v; want no resolver, the rules unchanged", w, same, err)
	}
}
