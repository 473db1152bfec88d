package nat

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Chain priorities of table ip esb. The NAT chain runs 5 before the
// standard dstnat (-100), so our DNAT of the gateway's forwarded ports comes
// ahead of Docker's and iptables-nft's PREROUTING chains; the filter chains
// run 5 before the standard filter priority (0) for the same reason.
const (
	PriorityDNAT   = -105 // dstnat - 5
	PriorityFilter = -5   // filter - 5
	PrioritySNAT   = 95   // srcnat - 5
)

// desired is the whole of table ip esb for a rule set.
type desired struct {
	chains   []*nftables.Chain
	rules    []*nftables.Rule // in order; each carries a comment naming it
	forwards []nftables.SetElement
	targets  []nftables.SetElement
}

func protoNum(p string) byte {
	if p == "udp" {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

func port2(p uint16) []byte { return []byte{byte(p >> 8), byte(p)} }

func forwardKey(f conf.Forward) []byte {
	return append([]byte{protoNum(f.Proto), 0, 0, 0}, append(port2(f.Port), 0, 0)...)
}

func forwardVal(f conf.Forward) []byte {
	a := f.To.Addr().As4()
	return append(a[:], append(port2(f.To.Port()), 0, 0)...)
}

func targetKey(proto string, to netip.AddrPort) []byte {
	a := to.Addr().As4()
	k := []byte{protoNum(proto), 0, 0, 0}
	k = append(k, a[:]...)
	return append(k, append(port2(to.Port()), 0, 0)...)
}

// tcpNoSYNComment names the input rule that lets TCP segments without SYN
// reach the node (see build).
const tcpNoSYNComment = "tcp without syn: the node's connections conntrack lost"

// build renders a rule set as the table it should produce.
func (t *tables) build(r *conf.NATRules) *desired {
	d := &desired{chains: []*nftables.Chain{t.prerouting, t.input, t.forward}}
	seenTarget := map[string]bool{}
	for _, f := range r.Forwards {
		d.forwards = append(d.forwards, nftables.SetElement{Key: forwardKey(f), Val: forwardVal(f)})
		k := string(targetKey(f.Proto, f.To))
		if !seenTarget[k] {
			seenTarget[k] = true
			d.targets = append(d.targets, nftables.SetElement{Key: []byte(k)})
		}
	}
	br := ifKey(r.Bridge)
	gw := r.Gateway.As4()
	rule := func(c *nftables.Chain, comment string, exprs ...expr.Any) {
		d.rules = append(d.rules, &nftables.Rule{Table: t.nat, Chain: c, Exprs: exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, "esb: "+comment)})
	}
	iifIs := func(op expr.CmpOp) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: br}}
	}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	drop := []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
	established := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: hostU32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: hostU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: hostU32(0)},
	}
	// ct status dnat, and proto . daddr . dport (after DNAT) is a target.
	toTarget := []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: hostU32(0x20 /* IPS_DST_NAT */), Xor: hostU32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: hostU32(0)},
		// Register 1 is the 32-bit register 8 (NFT_REG32_00) the kernel
		// reports it as; a concatenation continues in 9 and 10.
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Payload{DestRegister: 10, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: t.targets.Name},
	}
	cat := func(parts ...[]expr.Any) []expr.Any {
		var out []expr.Any
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	one := func(e ...expr.Any) []expr.Any { return e }

	// prerouting: the one DNAT rule, one map lookup whatever the number of
	// forwards.
	rule(t.prerouting, fmt.Sprintf("dnat %s %s via @forwards", r.Bridge, r.Gateway), cat(iifIs(expr.CmpOpEq), one(
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: gw[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: t.forwards.Name},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 9, RegProtoMax: 9, Specified: true},
	))...)

	// Other stacks' subnets, first in input and forward: no traffic between
	// this stack's workers and another stack's workers, gateway or proxy,
	// in either direction and under either egress policy.
	isolate := func(c *nftables.Chain) {
		for _, o := range r.Others {
			rule(c, "not to stack "+o.String(), cat(prefixIs(12, r.Subnet), prefixIs(16, o), drop)...)
			rule(c, "not from stack "+o.String(), cat(prefixIs(12, o), prefixIs(16, r.Subnet), drop)...)
		}
	}

	// input: what workers may send to the node itself.
	isolate(t.input)
	rule(t.input, "not from "+r.Bridge, cat(iifIs(expr.CmpOpNeq), one(ret))...)
	rule(t.input, "replies to the node's connections", cat(established, one(accept))...)
	rule(t.input, "forwarded to the proxy", cat(toTarget, one(accept))...)
	rule(t.input, "loopback guard: 127.0.0.0/8 only through a forward", cat(one(
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127}},
	), drop)...)
	rule(t.input, "ping the gateway", cat(one(
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: gw[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8 /* echo-request */}},
		accept,
	))...)

	// forward: what workers may send elsewhere through the node.
	isolate(t.forward)
	rule(t.forward, "not from "+r.Bridge, cat(iifIs(expr.CmpOpNeq), one(ret))...)
	rule(t.forward, "bridged between ports: the bridge decides", one(
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: br},
		accept)...)
	rule(t.forward, "replies to the node's connections", cat(established, one(accept))...)
	rule(t.forward, "forwarded to the proxy", cat(toTarget, one(accept))...)

	if r.Egress == conf.EgressProxyOnly {
		// A connection the node opened while its ruleset was flushed (no
		// table here, so conntrack tracked nothing) is picked up mid-stream
		// by conntrack as new once the table is back: without this rule
		// the worker's answers are dropped until its retransmissions give
		// up (about 26 s). A segment without SYN cannot open a connection
		// to the node; kept out of forward, where it could carry data out.
		rule(t.input, tcpNoSYNComment, one(
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02 /* SYN */}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0}},
			accept,
		)...)
		rule(t.input, "egress proxy-only", drop...)
		rule(t.forward, "egress proxy-only", drop...)
		return d
	}
	d.chains = append(d.chains, t.postrouting)
	sub := r.Subnet.Addr().As4()
	mask := netipMask(r.Subnet)
	rule(t.postrouting, fmt.Sprintf("egress open: masquerade %s leaving %s", r.Subnet, r.Bridge), cat(one(
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: sub[:]},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: br},
		&expr.Masq{},
	))...)
	return d
}

// prefixIs matches the IPv4 address at offset off of the network header
// (12: source, 16: destination) against p.
func prefixIs(off uint32, p netip.Prefix) []expr.Any {
	a := p.Masked().Addr().As4()
	if p.Bits() == 32 {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
		}
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: netipMask(p), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]},
	}
}

func netipMask(p netip.Prefix) []byte {
	m := make([]byte, 4)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// hostU32 encodes a ct state or status mask in host byte order, as the
// kernel keeps them.
func hostU32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// comment returns a rule's comment, "" when it has none.
func comment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}
