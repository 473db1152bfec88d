package nattest

import (
	"context"
	"testing"

	"github.com/edge-serverless-box/esbnet/nat"
)

// TestForwardThroughHAProxy sends a worker's requests to the gateway's
// forwarded ports through the real local proxy: Debian's HAProxy in the
// node, in front of a Go HTTP backend, first bound on the node's other
// address, then on loopback (which needs route_localnet on the bridge);
// and a UDP forward to echo servers on both.
func TestForwardThroughHAProxy(t *testing.T) {
	n := newNode(t)
	w := n.attach()
	n.startProxyStack()

	// Forwards to the node address: no loopback target, so route_localnet
	// stays off.
	n.mustApply(rules(t, rulesNode), nat.Rebuilt)
	if got := n.localnet(); got != "0" {
		t.Errorf("route_localnet of %s with no loopback forward = %s, want 0", bridgeName, got)
	}
	w.mustGet(fwdURL, backendBody(viaNode))
	flow := w.udpConn(fwdUDP) // one UDP flow, kept across the changes below
	if got, err := udpRoundTrip(flow, "one", dialTimeout); err != nil || got != udpEchoReply(udpNode, "one") {
		t.Fatalf("udp %s = %q, %v; want the echo of %s", fwdUDP, got, err, udpNode)
	}

	// The same gateway ports moved to loopback targets: elements updated
	// in place, route_localnet on.
	n.mustApply(rules(t, rulesLo), nat.ElementsUpdated)
	if got := n.localnet(); got != "1" {
		t.Errorf("route_localnet of %s with a loopback forward = %s, want 1", bridgeName, got)
	}
	w.mustGet(fwdURL, backendBody(viaLo))
	// The UDP flow's conntrack entry still says "to the node address":
	// Apply must clear it so the same flow moves to the new target.
	if got, err := udpRoundTrip(flow, "two", dialTimeout); err != nil || got != udpEchoReply(udpLo, "two") {
		t.Errorf("udp flow after its forward moved = %q, %v; want the echo of %s", got, err, udpLo)
	}
	fresh := w.udpConn(fwdUDP)
	if got, err := udpRoundTrip(fresh, "three", dialTimeout); err != nil || got != udpEchoReply(udpLo, "three") {
		t.Errorf("new udp flow = %q, %v; want the echo of %s", got, err, udpLo)
	}

	// A rebuild (egress changed) moves the flow back to the node address,
	// which open egress lets workers reach directly too.
	open := "egress: open\n" + rulesNode
	n.mustApply(rules(t, open), nat.Rebuilt)
	if got, err := udpRoundTrip(fresh, "four", dialTimeout); err != nil || got != udpEchoReply(udpNode, "four") {
		t.Errorf("udp flow after a rebuild = %q, %v; want the echo of %s", got, err, udpNode)
	}
	if got := n.localnet(); got != "0" {
		t.Errorf("route_localnet of %s with the loopback forwards gone = %s, want 0", bridgeName, got)
	}
	// The UDP forward removed: its flow must stop reaching the old target.
	// Under open egress nothing else would stop a stale conntrack entry
	// (under proxy-only the filter would), so only the clearing does.
	n.mustApply(rules(t, "egress: open\nforwards:\n  - {proto: tcp, port: 9000, to: \""+feNode+"\"}\n"), nat.ElementsUpdated)
	if got, err := udpRoundTrip(fresh, "five", blockedTimeout); err == nil {
		t.Errorf("udp flow of a removed forward still answered: %q", got)
	}
	w.mustGet(fwdURL, backendBody(viaNode))

	// Back to loopback targets, then Delete: route_localnet goes off.
	n.mustApply(rules(t, rulesLo), nat.Rebuilt)
	if got := n.localnet(); got != "1" {
		t.Errorf("route_localnet of %s with a loopback forward = %s, want 1", bridgeName, got)
	}
	w.mustGet(fwdURL, backendBody(viaLo))
	if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got := n.localnet(); got != "0" {
		t.Errorf("route_localnet of %s after Delete = %s, want 0", bridgeName, got)
	}
	// No DNAT any more: nothing listens on the gateway's port 9000.
	if body, err := w.httpGet(fwdURL); err == nil {
		t.Errorf("GET %s after Delete answered %q", fwdURL, body)
	}
}
