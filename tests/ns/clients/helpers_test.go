// Package clients proves that esb-bridge and esb-ipam work with CNI
// clients nobody in this project wrote: cnitool (the CNI project's own
// command-line runtime) and Podman with its CNI network backend. Each test
// makes a "node" namespace that plays the host and runs the client inside
// it, so the machine's own network is never touched.
package clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

const (
	netName = conf.NetworkName    // "esb"
	gateway = conf.DefaultGateway // "10.88.0.1"
	ifName  = "eth0"
	// cmdTimeout bounds one client command (a cnitool verb, a podman call).
	cmdTimeout = 2 * time.Minute
)

var subnet = netip.MustParsePrefix(conf.DefaultSubnet)

func TestMain(m *testing.M) { nstest.Main(m) }

// lookPath finds a binary on PATH; a missing one fails the test under CI
// and skips it elsewhere.
func lookPath(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		nstest.Unavailable(t, "%s is not installed (Debian package %s; run scripts/deps.sh): %v", name, pkg, err)
	}
	return p
}

// run runs a command with cmdTimeout and extra environment variables and
// returns its stdout. The error carries the command line and its stderr.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	// Not t.Context(): that is canceled before the cleanups, which run
	// commands too.
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	// A daemon the command leaves behind (podman's conmon) must not keep
	// the output pipes, and with them Wait, open.
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\nstdout: %s\nstderr: %s",
			name, strings.Join(args, " "), err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// node is a network namespace that plays the host: the clients run in it,
// so esb-cni0, the veths and the nftables tables the plugins make live
// and die with it.
type node struct {
	ns   ns.NetNS
	name string // the name under /run/netns, for ip netns exec
}

func newNode(t *testing.T) *node {
	t.Helper()
	n := nstest.NewNS(t)
	return &node{ns: n, name: nsName(n)}
}

// nsName returns the name of an nstest namespace, which is pinned under
// /run/netns.
func nsName(n ns.NetNS) string { return filepath.Base(n.Path()) }

// links returns the names of the interfaces in a namespace.
func links(n ns.NetNS) ([]string, error) {
	var names []string
	err := n.Do(func(ns.NetNS) error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return nil
	})
	return names, err
}

// hasLink reports whether a namespace holds the named interface.
func hasLink(t *testing.T, n ns.NetNS, name string) bool {
	t.Helper()
	names, err := links(n)
	if err != nil {
		t.Fatalf("list links of %s: %v", n.Path(), err)
	}
	return slices.Contains(names, name)
}

// hostHasLink reports whether the test's own (the machine's) namespace
// holds the named interface.
func hostHasLink(t *testing.T, name string) bool {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatalf("list the machine's links: %v", err)
	}
	return slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Name == name })
}

// guarded reports whether the anti-spoofing table esb-bridge keeps in the
// named namespace (nft "bridge esb") lists the bridge port, as nft renders the
// namespace's ruleset.
func guarded(t *testing.T, netns, port string) bool {
	t.Helper()
	out, err := run(t, nil, "ip", "netns", "exec", netns, "nft", "list", "ruleset")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(out, `"`+port+`"`)
}

// ping sends one ICMP echo from the named namespace and waits a second
// for the reply.
func ping(t *testing.T, netns, addr string) error {
	t.Helper()
	_, err := run(t, nil, "ip", "netns", "exec", netns, "ping", "-c1", "-W1", addr)
	return err
}

// allocations reads every allocation in the esb-ipam store under dataDir,
// through the store's own API (which takes the store's lock).
func allocations(t *testing.T, dataDir string) map[ipam.AttachmentID]*ipam.Allocation {
	t.Helper()
	s, err := ipam.OpenBolt(dataDir, netName, ipam.BoltOptions{LockWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("open IPAM store in %s: %v", dataDir, err)
	}
	out := map[ipam.AttachmentID]*ipam.Allocation{}
	err = s.View(func(tx ipam.Txn) error {
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			out[a.ID] = a
			return nil
		})
	})
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		t.Fatalf("read IPAM store in %s: %v", dataDir, err)
	}
	return out
}

// wantAllocation fails unless the store holds exactly addr for the
// attachment (containerID, eth0).
func wantAllocation(t *testing.T, dataDir, containerID string, addr netip.Prefix) {
	t.Helper()
	id := ipam.AttachmentID{ContainerID: containerID, IfName: ifName}
	a := allocations(t, dataDir)[id]
	if a == nil {
		t.Fatalf("IPAM store holds no address for %s, want %s", id, addr)
	}
	if len(a.IPs) != 1 || a.IPs[0] != addr {
		t.Fatalf("IPAM store holds %v for %s, want [%s]", a.IPs, id, addr)
	}
}

// wantReleased fails when the store still holds an address for the
// attachment (containerID, eth0).
func wantReleased(t *testing.T, dataDir, containerID string) {
	t.Helper()
	id := ipam.AttachmentID{ContainerID: containerID, IfName: ifName}
	if a := allocations(t, dataDir)[id]; a != nil {
		t.Fatalf("IPAM store still holds %v for %s", a.IPs, id)
	}
}

// wantInSubnet parses an address with prefix length and checks it is a
// host address of the esb subnet.
func wantInSubnet(t *testing.T, what, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		t.Fatalf("%s: parse %q: %v", what, s, err)
	}
	if p.Bits() != subnet.Bits() || !subnet.Contains(p.Addr()) || p.Addr() == netip.MustParseAddr(gateway) {
		t.Fatalf("%s: %s is not a host address of %s", what, p, subnet)
	}
	return p
}
