package agentconf

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

func TestServicesSettings(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(file, []byte("nat-rules: /etc/esb/nat.yaml\nservices: {s3-storage: 9000, database: 8000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	none := func(string) string { return "" }
	c, err := Load([]string{"--config", file}, none, io.Discard)
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
		if _, err := Load(tc.args, none, io.Discard); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.err)
		}
	}
}

func TestCheckServicesAgainstNAT(t *testing.T) {
	rules, err := conf.DecodeNATRules([]byte(`{"forwards":[{"proto":"tcp","port":9000,"to":"127.0.0.1:9000"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c := Config{NATRules: "nat.yaml", DNSPort: conf.DefaultResolverPort, Services: "s3-storage=9000,database=8000"}
	if _, err := c.CheckServices(rules); err == nil || !strings.Contains(err.Error(), `invalid services.database "8000": unknown port`) {
		t.Errorf("a service on a port without a forward: %v", err)
	}
	c = Config{NATRules: "nat.yaml", DNSPort: conf.DefaultResolverPort, Services: "s3-storage=9000", DNSUpstream: "192.0.2.53:53"}
	if _, err := c.CheckServices(rules); err == nil || !strings.Contains(err.Error(), "invalid dns-upstream") {
		t.Errorf("an upstream under proxy-only: %v", err)
	}
}
