package doctor

import (
	"context"
	"net/netip"

	"github.com/miekg/dns"

	"github.com/edge-serverless-box/esbnet/conf"
)

// dns asks the agent's resolver for its first service name (or a name
// under .invalid when it has none) over UDP, as a worker would after the
// DNAT: the query leaves from the gateway, which is inside the subnet the
// resolver answers.
func (d *doctor) dns(ctx context.Context) {
	if d.o.DNSPort == 0 || d.nat.rules == nil {
		return
	}
	r := d.nat.rules
	addr := netip.AddrPortFrom(r.Gateway, uint16(d.o.DNSPort)).String()
	fix := "start esb-agent (it serves the workers' resolver on " + addr + "), or set dns-port: 0 to give workers the runtime's resolv.conf"
	name, wantA := "esb-doctor.invalid.", false
	if svcs, err := conf.ParseServices("services", d.o.Services); err == nil && len(svcs) > 0 {
		name, wantA = dns.Fqdn(svcs[0].Name), true
	}
	q := new(dns.Msg).SetQuestion(name, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: d.o.Timeout}
	cctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	resp, _, err := c.ExchangeContext(cctx, q, addr)
	if err != nil {
		d.add("dns", Fail, fix, "the workers' resolver %s does not answer: %v", addr, err)
		return
	}
	if wantA {
		got := ""
		if len(resp.Answer) == 1 {
			if a, ok := resp.Answer[0].(*dns.A); ok {
				got = a.A.String()
			}
		}
		if got != r.Gateway.String() {
			d.add("dns", Fail, fix, "the workers' resolver %s answers %s for %s (%s), not the gateway %s",
				addr, dns.RcodeToString[resp.Rcode], name, got, r.Gateway)
			return
		}
		d.add("dns", OK, "", "the workers' resolver %s answers %s = %s", addr, name, got)
		return
	}
	d.add("dns", OK, "", "the workers' resolver %s answers (%s for %s; no services configured)", addr,
		dns.RcodeToString[resp.Rcode], name)
}
