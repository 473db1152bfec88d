package nat

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Render prints the ruleset that Apply(r) and AddGuard of each of guards
// make, as `nft -f` input in the kernel's own listing syntax (what
// `nft list table` prints of a fresh table, counters at zero): table ip
// esb for r, then table bridge esb for guards (the default network's
// tables; RenderTable prints another stack's). A nil r leaves table ip esb
// out; nil guards leave table bridge esb out, while an empty non-nil slice
// renders the table with its sets empty (as RemoveGuard of the last guard
// leaves it). Elements come in the order of r's forwards and of guards;
// the kernel lists the elements of a hash set in its own order.
//
// Loading the text into a namespace without the tables makes them;
// loading it over existing tables adds to them.
func Render(r *conf.NATRules, guards []Guard) string { return RenderTable(TableName, r, guards) }

// RenderTable is Render for the tables named table (a stack's
// conf.Stack.Table), as a Manager of NewManagerFor(n, table) makes them.
func RenderTable(table string, r *conf.NATRules, guards []Guard) string {
	var b strings.Builder
	if r != nil {
		renderNAT(&b, table, r)
	}
	if guards != nil {
		var els guardSets
		for _, g := range guards {
			els.add(g)
		}
		renderGuards(&b, table, &els)
	}
	return b.String()
}

// renderElements prints a set's elements line as nft lists it: none when
// the set is empty, else one element a line, aligned after "elements = { ".
func renderElements(b *strings.Builder, els []string) {
	if len(els) == 0 {
		return
	}
	fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(els, ",\n\t\t\t     "))
}

func renderNAT(b *strings.Builder, table string, r *conf.NATRules) {
	var forwards, targets []string
	seen := map[string]bool{}
	for _, f := range r.Forwards {
		forwards = append(forwards, fmt.Sprintf("%s . %d counter packets 0 bytes 0 : %s . %d", f.Proto, f.Port, f.To.Addr(), f.To.Port()))
		t := fmt.Sprintf("%s . %s . %d", f.Proto, f.To.Addr(), f.To.Port())
		if !seen[t] {
			seen[t] = true
			targets = append(targets, t)
		}
	}
	br, gw := quote(r.Bridge), r.Gateway
	fmt.Fprintf(b, "table ip %s {\n", table)
	b.WriteString("\tmap forwards {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n\t\tcounter\n")
	renderElements(b, forwards)
	b.WriteString("\t}\n\n\tset targets {\n\t\ttype inet_proto . ipv4_addr . inet_service\n")
	renderElements(b, targets)
	b.WriteString("\t}\n")

	chain := func(name, hook string, rules ...string) {
		fmt.Fprintf(b, "\n\tchain %s {\n\t\t%s\n", name, hook)
		for _, rule := range rules {
			fmt.Fprintf(b, "\t\t%s\n", rule)
		}
		b.WriteString("\t}\n")
	}
	comment := func(rule, text string) string { return rule + " comment " + quote("esb: "+text) }
	notFrom := comment("iifname != "+br+" return", "not from "+r.Bridge)
	replies := comment("ct state established,related accept", "replies to the node's connections")
	toProxy := comment("ct status dnat meta l4proto . ip daddr . th dport @targets accept", "forwarded to the proxy")
	proxyOnly := comment("counter packets 0 bytes 0 drop", "egress proxy-only")

	chain("prerouting", "type nat hook prerouting priority dstnat - 5; policy accept;",
		comment(fmt.Sprintf("iifname %s ip daddr %s dnat ip to meta l4proto . th dport map @forwards", br, gw),
			fmt.Sprintf("dnat %s %s via @forwards", r.Bridge, gw)))
	var isolate []string
	for _, o := range r.Others {
		mine, other := prefixText(r.Subnet), prefixText(o)
		isolate = append(isolate,
			comment(fmt.Sprintf("ip saddr %s ip daddr %s counter packets 0 bytes 0 drop", mine, other), "not to stack "+o.String()),
			comment(fmt.Sprintf("ip saddr %s ip daddr %s counter packets 0 bytes 0 drop", other, mine), "not from stack "+o.String()))
	}
	input := []string{notFrom, replies, toProxy,
		comment("ip daddr 127.0.0.0/8 counter packets 0 bytes 0 drop", "loopback guard: 127.0.0.0/8 only through a forward"),
		comment(fmt.Sprintf("ip daddr %s icmp type echo-request accept", gw), "ping the gateway")}
	forward := []string{notFrom, comment("oifname "+br+" accept", "bridged between ports: the bridge decides"), replies, toProxy}
	if r.Egress == conf.EgressProxyOnly {
		input = append(input, comment("tcp flags ! syn accept", tcpNoSYNComment), proxyOnly)
		forward = append(forward, proxyOnly)
	}
	input, forward = append(slices.Clone(isolate), input...), append(slices.Clone(isolate), forward...)
	chain("input", "type filter hook input priority filter - 5; policy accept;", input...)
	chain("forward", "type filter hook forward priority filter - 5; policy accept;", forward...)
	if r.Egress != conf.EgressProxyOnly {
		chain("postrouting", "type nat hook postrouting priority srcnat - 5; policy accept;",
			comment(fmt.Sprintf("ip saddr %s oifname != %s masquerade", prefixText(r.Subnet), br),
				fmt.Sprintf("egress open: masquerade %s leaving %s", r.Subnet, r.Bridge)))
	}
	b.WriteString("}\n")
}

// prefixText prints a prefix as nft does: the bare address for a /32.
func prefixText(p netip.Prefix) string {
	p = p.Masked()
	if p.Bits() == 32 {
		return p.Addr().String()
	}
	return p.String()
}

// quote prints a string as nft does: in double quotes.
func quote(s string) string { return `"` + s + `"` }

// guardElement is one element of table bridge esb: the port (in the
// ports set, MAC and IP unset) or port . MAC . IP (in ipv4 or ipv6), with
// its owner as the comment.
type guardElement struct {
	port  string
	mac   string // as net.HardwareAddr prints it; "" in the ports set
	ip    netip.Addr
	owner string
}

// guardSets is the content of table bridge esb's three sets, in order.
type guardSets struct {
	ports, ipv4, ipv6 []guardElement
}

// elementsOf returns the elements of g per set, as AddGuard adds them.
func elementsOf(g Guard) (ports, v4, v6 []guardElement) {
	ports = []guardElement{{port: g.Port, owner: g.Owner}}
	mac := net.HardwareAddr(g.MAC).String()
	for _, ip := range g.IPs {
		e := guardElement{port: g.Port, mac: mac, ip: ip, owner: g.Owner}
		if ip.Is4() {
			v4 = append(v4, e)
		} else {
			v6 = append(v6, e)
		}
	}
	if len(v6) > 0 && len(g.MAC) == 6 {
		v6 = append(v6, guardElement{port: g.Port, mac: mac, ip: linkLocal(g.MAC), owner: g.Owner})
	}
	return ports, v4, v6
}

// sameKey reports whether two elements have the same key (the comment is
// not part of it).
func sameKey(a, b guardElement) bool { return a.port == b.port && a.mac == b.mac && a.ip == b.ip }

// add adds g's elements that are not there yet, as the kernel does: an
// element whose key is there keeps its comment.
func (s *guardSets) add(g Guard) {
	ports, v4, v6 := elementsOf(g)
	for _, op := range []struct {
		set *[]guardElement
		els []guardElement
	}{{&s.ports, ports}, {&s.ipv4, v4}, {&s.ipv6, v6}} {
		for _, e := range op.els {
			if !slices.ContainsFunc(*op.set, func(have guardElement) bool { return sameKey(have, e) }) {
				*op.set = append(*op.set, e)
			}
		}
	}
}

func renderGuards(b *strings.Builder, table string, s *guardSets) {
	els := func(set []guardElement) []string {
		out := make([]string, 0, len(set))
		for _, e := range set {
			text := quote(e.port)
			if e.mac != "" {
				text += " . " + e.mac + " . " + e.ip.String()
			}
			if e.owner != "" {
				text += " comment " + quote(e.owner)
			}
			out = append(out, text)
		}
		return out
	}
	fmt.Fprintf(b, "table bridge %s {\n", table)
	for i, set := range []struct {
		name, typ, comment string
		els                []guardElement
	}{
		{setPorts.Name, "ifname", setPorts.Comment, s.ports},
		{setIPv4.Name, "ifname . ether_addr . ipv4_addr", setIPv4.Comment, s.ipv4},
		{setIPv6.Name, "ifname . ether_addr . ipv6_addr", setIPv6.Comment, s.ipv6},
	} {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n\t\tcomment %s\n", set.name, set.typ, quote(set.comment))
		renderElements(b, els(set.els))
		b.WriteString("\t}\n")
	}
	b.WriteString(`
	chain prerouting {
		type filter hook prerouting priority filter; policy accept;
		iifname != @ports return
		iifname . ether saddr . ip saddr @ipv4 accept
		iifname . ether saddr . arp saddr ip @ipv4 iifname . arp saddr ether . arp saddr ip @ipv4 accept
		iifname . ether saddr . ip6 saddr @ipv6 accept
		counter packets 0 bytes 0 drop
	}
}
`)
}
