package nat

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"

	"github.com/edge-serverless-box/esbnet/conf"
)

// tables are the kernel objects of one stack's two tables, table ip <name>
// and table bridge <name>: a Manager holds the ones of its stack, bound at
// construction, so two stacks' managers never touch each other's tables.
type tables struct {
	name string

	nat                                     *nftables.Table
	forwards, targets                       *nftables.Set
	prerouting, input, forward, postrouting *nftables.Chain

	guard             *nftables.Table
	ports, ipv4, ipv6 *nftables.Set
	guardChain        *nftables.Chain
}

// newTables returns the objects of the tables named name.
func newTables(name string) *tables {
	t := &tables{name: name,
		nat:   &nftables.Table{Family: nftables.TableFamilyIPv4, Name: name},
		guard: &nftables.Table{Family: nftables.TableFamilyBridge, Name: name}}
	t.forwards = &nftables.Set{Table: t.nat, Name: "forwards", IsMap: true, Concatenation: true, Counter: true,
		KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
		DataType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	t.targets = &nftables.Set{Table: t.nat, Name: "targets", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService)}
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio int32) *nftables.Chain {
		accept := nftables.ChainPolicyAccept
		return &nftables.Chain{Table: t.nat, Name: name, Type: typ, Hooknum: hook,
			Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &accept}
	}
	t.prerouting = chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, PriorityDNAT)
	t.input = chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, PriorityFilter)
	t.forward = chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, PriorityFilter)
	t.postrouting = chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, PrioritySNAT)

	t.ports = &nftables.Set{Table: t.guard, Name: "ports", KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, Comment: "guarded bridge ports"}
	t.ipv4 = &nftables.Set{Table: t.guard, Name: "ipv4", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIPAddr),
		Comment: "port . MAC . IPv4 each guarded port may use"}
	t.ipv6 = &nftables.Set{Table: t.guard, Name: "ipv6", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeEtherAddr, nftables.TypeIP6Addr),
		Comment: "port . MAC . IPv6 each guarded port may use"}
	t.guardChain = &nftables.Chain{
		Table:   t.guard,
		Name:    "prerouting",
		Type:    nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting,
		// The bridge family's "filter" priority, ahead of anything a
		// bridge-family firewall of Docker or Podman hooks at 0.
		Priority: nftables.ChainPriorityRef(-200),
	}
	return t
}

// defaultTables are the default network's: what Render describes and
// what the names of the sets are taken from.
var defaultTables = newTables(TableName)

// The default tables' sets, whose names, key types and comments every
// stack's share.
var (
	setForwards = defaultTables.forwards
	setTargets  = defaultTables.targets
	setPorts    = defaultTables.ports
	setIPv4     = defaultTables.ipv4
	setIPv6     = defaultTables.ipv6
)

// build renders r as the default network's table ip esb.
func build(r *conf.NATRules) *desired { return defaultTables.build(r) }
