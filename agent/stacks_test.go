package agent

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edge-serverless-box/esbnet/conf"
)

// A metrics address another agent holds stops this one at start, naming
// the setting.
func TestMetricsListenClashNamesTheSetting(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	d := &Daemon{cfg: DaemonConfig{MetricsListen: l.Addr().String()}, reg: prometheus.NewRegistry()}
	stop, err := d.serveMetrics(make(chan error, 1))
	if err == nil {
		stop()
		t.Fatal("serveMetrics on a taken address succeeded")
	}
	if !strings.HasPrefix(err.Error(), "metrics-listen "+l.Addr().String()) {
		t.Errorf("error %q does not name metrics-listen", err)
	}
}

// Another stack must bring its own conflist; the default network gets the
// default one written.
func TestEnsureConflistOfAnotherStack(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s2, _ := conf.StackOf("esb2")
	err := ensureConflist(DaemonConfig{CNIConfDir: dir, Network: "esb2"}, s2, log)
	if err == nil || !strings.Contains(err.Error(), "esbctl conflist -network esb2") {
		t.Errorf("esb2 without a conflist: %v", err)
	}
	if err := ensureConflist(DaemonConfig{CNIConfDir: dir, Network: "esb"}, conf.DefaultStack(), log); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "10-esb.conflist")); err != nil {
		t.Error(err)
	}
}

// otherStacks returns the other stacks' subnets, and a conflict names both
// networks.
func TestOtherStacks(t *testing.T) {
	dir := t.TempDir()
	write := func(network, subnet string) {
		s, _ := conf.StackOf(network)
		b, err := conf.StackConflist(s, mustPrefix(t, subnet)).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, s.Conflist), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("esb", "10.88.0.0/16")
	write("esb2", "10.89.0.0/16")
	others, err := otherStacks(DaemonConfig{CNIConfDir: dir, Network: "esb2"})
	if err != nil || len(others) != 1 || others[0].String() != "10.88.0.0/16" {
		t.Errorf("otherStacks(esb2) = %v, %v", others, err)
	}
	write("esb3", "10.88.128.0/17")
	_, err = otherStacks(DaemonConfig{CNIConfDir: dir, Network: "esb3"})
	if err == nil || !strings.Contains(err.Error(), "network esb3 (") || !strings.Contains(err.Error(), "network esb (") {
		t.Errorf("otherStacks(esb3) = %v, want a conflict naming esb3 and esb", err)
	}
}

func mustPrefix(t *testing.T, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
