package doctor

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/agent/resolver"
	"github.com/edge-serverless-box/esbnet/conf"
)

// The DNS check passes while the agent's resolver answers the gateway for
// the first service and fails, naming the address, once it is gone. The
// "gateway" is 127.0.0.1 here so the test needs no namespace.
func TestDNSCheck(t *testing.T) {
	gw := netip.MustParseAddr("127.0.0.1")
	svcs, err := conf.ParseServices("services", "s3-storage=9000")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := resolver.Start(resolver.Config{Listen: netip.AddrPortFrom(gw, 0), Gateway: gw,
		Subnet: netip.MustParsePrefix("127.0.0.0/8"), Services: svcs})
	if err != nil {
		t.Fatal(err)
	}
	check := func() Finding {
		d := &doctor{o: Options{DNSPort: int(srv.Addr().Port()), Services: "s3-storage=9000", Timeout: 500 * time.Millisecond},
			nat: natState{rules: &conf.NATRules{Gateway: gw}}}
		d.dns(context.Background())
		if len(d.findings) != 1 {
			t.Fatalf("findings %+v, want one", d.findings)
		}
		return d.findings[0]
	}
	if f := check(); f.Check != "dns" || f.Status != OK || !strings.Contains(f.Message, "s3-storage. = 127.0.0.1") {
		t.Errorf("resolver up: %+v", f)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if f := check(); f.Status != Fail || !strings.Contains(f.Message, "does not answer") || f.Fix == "" {
		t.Errorf("resolver down: %+v", f)
	}
}
