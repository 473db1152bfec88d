package bridgetest

// Traffic in the test's namespaces: commands run in them (ip netns exec),
// pings, and a TCP server in a worker with a client for it.

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// cmdTimeout bounds one command run in a namespace (ping, nft, ip).
const cmdTimeout = 15 * time.Second

// inNS runs a command in the named network namespace with ip netns exec.
func inNS(nsName string, args ...string) (string, error) {
	return nodetest.Run(cmdTimeout, nil, "ip", append([]string{"netns", "exec", nsName}, args...)...)
}

func mustInNS(t *testing.T, nsName string, args ...string) string {
	t.Helper()
	out, err := inNS(nsName, args...)
	if err != nil {
		t.Fatalf("in %s: %v", nsName, err)
	}
	return out
}

// pingOnce sends one echo request from the named namespace (from src when
// it is valid) and reports whether a reply came back within a second.
func pingOnce(nsName string, src, dst netip.Addr) bool {
	args := []string{"ping", "-n", "-q", "-c", "1", "-W", "1"}
	if src.IsValid() {
		args = append(args, "-I", src.String())
	}
	_, err := inNS(nsName, append(args, dst.String())...)
	return err == nil
}

// pingWorks allows a few attempts, for the first ARP resolution.
func pingWorks(nsName string, src, dst netip.Addr) bool {
	for range 3 {
		if pingOnce(nsName, src, dst) {
			return true
		}
	}
	return false
}

// pingBlocked sends two single pings and reports whether neither got a reply.
func pingBlocked(nsName string, src, dst netip.Addr) bool {
	for range 2 {
		if pingOnce(nsName, src, dst) {
			return false
		}
	}
	return true
}

// serveTCP listens on a TCP port in w's namespace until the test ends; each
// connection receives a greeting naming w. The socket is made on a thread
// in w's namespace and served from an ordinary goroutine.
func serveTCP(t *testing.T, w *worker) int {
	t.Helper()
	l, err := nodetest.Listen(w.ns, "tcp4", "0.0.0.0:0")
	if err != nil {
		t.Fatalf("listen in %s: %v", w.id, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = fmt.Fprintf(c, "hello from %s\n", w.id)
			_ = c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// dialFrom connects from the namespace n to addr (one second to connect)
// and returns what the server sent.
func dialFrom(n ns.NetNS, addr netip.AddrPort) (string, error) {
	var got string
	err := n.Do(func(ns.NetNS) error {
		c, err := net.DialTimeout("tcp4", addr.String(), time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
			return err
		}
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}
