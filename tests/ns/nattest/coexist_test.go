package nattest

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/nat"
)

// dockerRules are the tables Docker makes with iptables (Debian 12's
// iptables is iptables-nft): a DOCKER chain reached from PREROUTING and
// OUTPUT for local addresses, with a published port 9000 (the same port as
// our forward), the masquerade of its bridge, the FORWARD chain with
// DOCKER-USER and the isolation stages, and FORWARD's policy drop.
var dockerRules = [][]string{
	{"-t", "nat", "-N", "DOCKER"},
	{"-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
	{"-t", "nat", "-A", "OUTPUT", "!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"},
	{"-t", "nat", "-A", "POSTROUTING", "-s", "172.17.0.0/16", "!", "-o", "docker0", "-j", "MASQUERADE"},
	{"-t", "nat", "-A", "DOCKER", "-i", "docker0", "-j", "RETURN"},
	{"-t", "nat", "-A", "DOCKER", "!", "-i", "docker0", "-p", "tcp", "-m", "tcp", "--dport", "9000", "-j", "DNAT", "--to-destination", "172.17.0.2:80"},
	{"-t", "filter", "-N", "DOCKER"},
	{"-t", "filter", "-N", "DOCKER-USER"},
	{"-t", "filter", "-N", "DOCKER-ISOLATION-STAGE-1"},
	{"-t", "filter", "-N", "DOCKER-ISOLATION-STAGE-2"},
	{"-t", "filter", "-P", "FORWARD", "DROP"},
	{"-t", "filter", "-A", "FORWARD", "-j", "DOCKER-USER"},
	{"-t", "filter", "-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
	{"-t", "filter", "-A", "FORWARD", "-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	{"-t", "filter", "-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"},
	{"-t", "filter", "-A", "FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"},
	{"-t", "filter", "-A", "DOCKER-ISOLATION-STAGE-1", "-i", "docker0", "!", "-o", "docker0", "-j", "DOCKER-ISOLATION-STAGE-2"},
	{"-t", "filter", "-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"},
	{"-t", "filter", "-A", "DOCKER-ISOLATION-STAGE-2", "-o", "docker0", "-j", "DROP"},
	{"-t", "filter", "-A", "DOCKER-ISOLATION-STAGE-2", "-j", "RETURN"},
	{"-t", "filter", "-A", "DOCKER-USER", "-j", "RETURN"},
}

// foreign renders Docker's tables as nft prints them (standard output only:
// nft warns on standard error that iptables-nft manages them).
func (n *node) foreign() string {
	n.t.Helper()
	var b strings.Builder
	for _, table := range []string{"nat", "filter"} {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.Name, "nft", "list", "table", "ip", table).Output()
		cancel()
		if err != nil {
			n.t.Fatalf("nft list table ip %s: %v", table, err)
		}
		b.Write(out)
	}
	return b.String()
}

// TestCoexistsWithDocker checks that applying, repairing and deleting
// table ip esb leaves Docker's iptables-nft tables byte for byte as they
// were, and that our DNAT (priority dstnat - 5) wins over Docker's DNAT of
// the same port on local addresses.
func TestCoexistsWithDocker(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatalf("iptables is not installed (run scripts/deps.sh): %v", err)
	}
	n := newNode(t)
	w := n.attach()
	const target = nodeAddr + ":19000"
	listenTCP(t, n.NS, target)
	for _, args := range dockerRules {
		n.inNS(append([]string{"iptables"}, args...)...)
	}
	want := n.foreign()
	if !strings.Contains(want, "dnat to 172.17.0.2:80") || !strings.Contains(want, "policy drop") {
		t.Fatalf("Docker's tables are not what the test made:\n%s", want)
	}
	same := func(step string) {
		t.Helper()
		if got := n.foreign(); got != want {
			t.Errorf("%s changed Docker's tables:\n--- got\n%s\n--- want\n%s", step, got, want)
		}
	}
	r := rules(t, "forwards:\n  - {proto: tcp, port: 9000, to: \""+target+"\"}\n")

	n.mustApply(r, nat.Rebuilt)
	same("Apply")
	if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
		t.Fatalf("delete: %v", err)
	}
	same("Delete")

	_, stop := n.watch(r, 5*time.Second)
	same("Watch's start pass")
	full, err := n.shape()
	if err != nil || full.Rules == 0 {
		t.Fatalf("table ip esb after Watch's start pass: %+v, %v", full, err)
	}
	n.inNS("nft", "delete", "table", "ip", nat.TableName)
	if _, err := n.waitShape(full, 3*time.Second); err != nil {
		t.Fatalf("drift repair: %v", err)
	}
	same("drift repair")
	stop()
	if err := n.mgr.Delete(context.Background(), bridgeName); err != nil {
		t.Fatalf("delete: %v", err)
	}
	same("Delete after Watch")
	if n.hasESBTable() {
		t.Error("table ip esb remains after Delete")
	}

	// Traffic last (it moves the counters): Docker publishes port 9000 on
	// every local address, 10.88.0.1 included. Without our table Docker's
	// DNAT takes the worker's connection (to nowhere); with it, our DNAT
	// comes first, and a connection NAT-ed once is not NAT-ed again, so
	// the worker reaches our target and Docker's rule never sees it.
	if g, err := w.greeting(gatewayIP+":9000", blockedTimeout); err == nil {
		t.Errorf("without table ip esb the worker reached %q", g)
	}
	dockerDNAT := n.dockerDNATs()
	if dockerDNAT == 0 {
		t.Errorf("Docker's DNAT did not see the connection made without our table:\n%s", n.foreign())
	}
	n.mustApply(r, nat.Rebuilt)
	w.expectReach("forward with Docker's DNAT of the same port", gatewayIP+":9000", w.IP)
	if got := n.dockerDNATs(); got != dockerDNAT {
		t.Errorf("Docker's DNAT counted %d packets with our table, want still %d", got, dockerDNAT)
	}
}

var dockerDNATCounter = regexp.MustCompile(`counter packets (\d+) bytes \d+ dnat to 172\.17\.0\.2:80`)

// dockerDNATs returns the packets Docker's DNAT of port 9000 counted.
func (n *node) dockerDNATs() uint64 {
	n.t.Helper()
	m := dockerDNATCounter.FindStringSubmatch(n.foreign())
	if m == nil {
		n.t.Fatal("no DNAT rule of Docker in table ip nat")
	}
	v, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		n.t.Fatal(err)
	}
	return v
}
