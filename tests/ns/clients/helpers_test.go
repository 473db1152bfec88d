// Package clients proves that esb-bridge and esb-ipam work with CNI
// clients nobody in this project wrote: cnitool (the CNI project's own
// command-line runtime) and Podman with its CNI network backend. Each test
// makes a "node" namespace that plays the host and runs the client inside
// it, so the machine's own network is never touched.
package clients

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
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
