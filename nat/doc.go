// Package nat is esbnet's nftables manager. It owns two tables and touches
// nothing outside them:
//
//   - "ip esb": DNAT of the bridge gateway's ports (10.88.0.1:<port>) to the
//     local proxy and resolver, what workers may send to the node, and the
//     egress policy (proxy-only drops the rest, open masquerades it). The
//     agent applies it from a rule file and keeps it (Watch repairs a
//     flushed or edited table); esbctl nat applies, shows and deletes it.
//   - "bridge esb": anti-spoofing. Frames that enter a guarded port of the
//     esb bridge must carry the MAC and IP address assigned to that
//     attachment; everything else from the port is dropped. esb-bridge adds
//     one guard per attachment on ADD and removes it on DEL and GC.
//
// Both tables have one API shape: a [Manager] bound to a network namespace,
// a context on each method, and the small interfaces [DNAT] and [AntiSpoof]
// that the agent, esbctl and esb-bridge hold. [Fake] implements them in
// memory for unit tests of other packages, and [Render] prints the ruleset
// a rule set and guards should produce as `nft -f` input, in the kernel's
// own listing syntax, so whole rulesets are compared without root.
//
// Every change is one netlink transaction (one Conn.Flush).
package nat
