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

// TestWorkerResolvConf: with no resolver the node's resolv.conf goes
// beside the state file; with one, the resolver's goes there instead;
// without a state file or a node's file there is none.
func TestWorkerResolvConf(t *testing.T) {
	dir := t.TempDir()
	node := filepath.Join(dir, "node-resolv.conf")
	if err := os.WriteFile(node, []byte("# from DHCP\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::53\nsearch corp.example\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := DaemonConfig{StateFile: filepath.Join(dir, "state", "state.db")}
	var cfg Config
	if r, err := workerResolvConf(c, nil, node, &cfg); err != nil || r == nil {
		t.Fatalf("workerResolvConf: %v, %v", r, err)
	}
	path := filepath.Join(dir, "state", "resolv.conf")
	want := "nameserver 192.0.2.53\nnameserver 2001:db8::53\nsearch corp.example\noptions edns0 trust-ad\n"
	if b, err := os.ReadFile(path); err != nil || string(b) != want {
		t.Errorf("%s: %q, %v; want %q", path, b, err, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("%s mode: %v, %v; want 0644 (read by every worker's user)", path, fi, err)
	}
	if cfg.ResolvConf != path {
		t.Errorf("config: resolv.conf %q, want %q", cfg.ResolvConf, path)
	}

	cfg = Config{}
	if r, err := workerResolvConf(c, &workerDNS{gateway: netip.MustParseAddr("10.88.0.1")}, node, &cfg); r != nil || err != nil || cfg.ResolvConf != path {
		t.Errorf("with a resolver: resolv.conf %q, %v, %v; want %s, nothing to keep", cfg.ResolvConf, r, err, path)
	}
	want = "nameserver 10.88.0.1\noptions ndots:0 attempts:2 timeout:1\n"
	if b, err := os.ReadFile(path); err != nil || string(b) != want {
		t.Errorf("with a resolver, %s: %q, %v; want %q", path, b, err, want)
	}
	cfg = Config{}
	if r, err := workerResolvConf(c, nil, filepath.Join(dir, "none"), &cfg); r != nil || err != nil || cfg.ResolvConf != "" {
		t.Errorf("no node resolv.conf: %+v, %v, %v; want none", cfg, r, err)
	}
	cfg = Config{}
	if r, err := workerResolvConf(DaemonConfig{}, nil, node, &cfg); r != nil || err != nil || cfg != (Config{}) {
		t.Errorf("no state file: %+v, %v, %v; want none", cfg, r, err)
	}
}

// TestNodeResolvRefresh: when the node's resolv.conf changes, the
// workers' copy follows on the next refresh.
func TestNodeResolvRefresh(t *testing.T) {
	dir := t.TempDir()
	node := filepath.Join(dir, "node-resolv.conf")
	if err := os.WriteFile(node, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	r, err := workerResolvConf(DaemonConfig{StateFile: filepath.Join(dir, "state.db")}, nil, node, &cfg)
	if err != nil || r == nil {
		t.Fatalf("workerResolvConf: %v, %v", r, err)
	}
	// The node's file changes: the copy follows on the next refresh (a
	// new file: a worker made before keeps the one it has mounted).
	before, err := os.Stat(cfg.ResolvConf)
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := r.refresh(); wrote || err != nil {
		t.Errorf("refresh of an unchanged node file: %v, %v; want nothing written", wrote, err)
	}
	if err := os.WriteFile(node, []byte("nameserver 198.51.100.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := r.refresh(); !wrote || err != nil {
		t.Errorf("refresh of a changed node file: %v, %v; want it written", wrote, err)
	}
	after, err := os.Stat(cfg.ResolvConf)
	if b, _ := os.ReadFile(cfg.ResolvConf); err != nil || string(b) != "nameserver 198.51.100.53\n" || os.SameFile(before, after) {
		t.Errorf("the copy after the change: %q (a new file: %v), %v", b, !os.SameFile(before, after), err)
	}
	if err := os.Remove(node); err != nil {
		t.Fatal(err)
	}
	if wrote, err := r.refresh(); wrote || err != nil {
		t.Errorf("refresh with the node file gone: %v, %v; want the last copy kept", wrote, err)
	}
}
