// Package doctortest runs "esbctl doctor" in a test-made node namespace
// (nsenter --net, as an operator would run it on a node): a healthy node
// passes with exit 0, and each problem doctor knows, made for real in the
// node one at a time, is named with its fix.
package doctortest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/internal/doctor"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

const cmdTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	nstest.Main(m, esbctl.Remove)
}

var esbctl nstest.Build

// buildEsbctl builds esbctl once, with the same (default) version as the
// plugins nstest.PluginDir builds.
func buildEsbctl(t *testing.T) string {
	t.Helper()
	return filepath.Join(esbctl.Dir(t, "doctortest-bin-", nil, "./cmd/esbctl"), "esbctl")
}

// node is the test's node: its namespace, CNI files, NAT rules, a proxy
// target and a registry stand-in listening in it, and the workers attached.
type node struct {
	t        *testing.T
	ns       ns.NetNS
	esbctl   string
	base     string
	binDir   string
	confFile string
	natFile  string
	cfgFile  string
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	rules    *conf.NATRules
	proxy    net.Listener
	registry *http.Server
	regAddr  string
	workers  map[string]ns.NetNS
}

// listenInNode opens a TCP listener on the node's loopback.
func (n *node) listenInNode() net.Listener {
	n.t.Helper()
	l, err := nodetest.Listen(n.ns, "tcp", "127.0.0.1:0")
	if err != nil {
		n.t.Fatal(err)
	}
	return l
}

func newNode(t *testing.T) *node {
	s := stacktest.Require(t)
	n := &node{t: t, ns: nstest.NewNS(t), esbctl: buildEsbctl(t), base: t.TempDir(), workers: map[string]ns.NetNS{}}
	n.inNode("ip", "link", "set", "lo", "up")
	// The plugins are copied so that a test can remove one.
	n.binDir = filepath.Join(n.base, "bin")
	if err := os.MkdirAll(n.binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{conf.BridgeType, conf.IPAMType} {
		b, err := os.ReadFile(filepath.Join(nstest.PluginDir(t), p))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.binDir, p), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Two addresses, so a second worker exhausts the range; no GC grace,
	// so an allocation whose veth is gone counts as stale at once.
	confDir := filepath.Join(n.base, "net.d")
	n.confFile = filepath.Join(confDir, "10-esb.conflist")
	list := map[string]any{"cniVersion": "1.1.0", "name": "esb", "plugins": []any{map[string]any{
		"type": "esb-bridge",
		"ipam": map[string]any{"type": "esb-ipam", "dataDir": filepath.Join(n.base, "ipam"),
			"rangeStart": "10.88.0.2", "rangeEnd": "10.88.0.3", "gcGrace": "0s"},
	}}}
	b, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	n.writeFile(n.confFile, string(b))
	if n.list, err = libcni.ConfListFromBytes(b); err != nil {
		t.Fatal(err)
	}
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.binDir}, filepath.Join(n.base, "cache"), nil)

	// The proxy target and the registry stand-in (GET /v2/ → 200, as the
	// Docker registry API root answers) listen on the node's loopback: the
	// shared registry on the host's loopback is out of the node's reach.
	n.proxy = n.listenInNode()
	go acceptLoop(n.proxy)
	reg := n.listenInNode()
	n.regAddr = reg.Addr().String()
	n.registry = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/" {
			http.NotFound(w, r)
		}
	})}
	go func() { _ = n.registry.Serve(reg) }()
	t.Cleanup(func() {
		if n.proxy != nil {
			_ = n.proxy.Close()
		}
		_ = n.registry.Close()
	})

	n.natFile = filepath.Join(n.base, "nat.yaml")
	n.writeFile(n.natFile, fmt.Sprintf("forwards:\n  - {proto: tcp, port: 9000, to: %q}\n", n.proxy.Addr().String()))
	if n.rules, err = natfile.Load(n.natFile); err != nil {
		t.Fatal(err)
	}
	// esb-agent's settings, as make install writes them: doctor reads
	// where everything is from there. No agent runs here, so no workers'
	// resolver either (dns-port 0; internal/doctor tests the DNS check).
	n.cfgFile = filepath.Join(n.base, "agent.yaml")
	n.writeFile(n.cfgFile, fmt.Sprintf("cni-conf-dir: %q\ncni-bin-dirs: %q\nnat-rules: %q\ndns-port: 0\nruntime: containerd\ncontainerd-address: %q\nplain-http-registries: %q\n",
		confDir, n.binDir, n.natFile, s.ContainerdSock, n.regAddr))

	// A healthy node: one worker attached (bridge, gateway, veth, its
	// anti-spoof element, an allocation), the NAT rules applied.
	n.add("w1")
	n.applyNAT()
	return n
}

// with returns the node for subtest t, so that failures and cleanups
// belong to the subtest.
func (n *node) with(t *testing.T) *node {
	m := *n
	m.t = t
	return &m
}

func acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_ = c.Close()
	}
}

func (n *node) writeFile(path, body string) {
	n.t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) rt(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: n.workers[id].Path(), IfName: "eth0"}
}

// add attaches a new worker namespace through libcni, run in the node.
func (n *node) add(id string) {
	n.t.Helper()
	n.workers[id] = nstest.NewNS(n.t)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	err := n.ns.Do(func(ns.NetNS) error {
		_, err := n.cni.AddNetworkList(ctx, n.list, n.rt(id))
		return err
	})
	if err != nil {
		n.t.Fatalf("CNI ADD %s: %v", id, err)
	}
	n.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		if err := n.ns.Do(func(ns.NetNS) error { return n.cni.DelNetworkList(ctx, n.list, n.rt(id)) }); err != nil {
			n.t.Errorf("CNI DEL %s: %v", id, err)
		}
	})
}

func (n *node) applyNAT() {
	n.t.Helper()
	if _, err := nat.NewManager(n.ns).Apply(n.t.Context(), n.rules); err != nil {
		n.t.Fatalf("apply NAT rules: %v", err)
	}
}

// inNode runs a command in the node's network namespace.
func (n *node) inNode(args ...string) {
	n.t.Helper()
	if _, err := nodetest.Run(cmdTimeout, nil, "nsenter", append([]string{"--net=" + n.ns.Path()}, args...)...); err != nil {
		n.t.Fatal(err)
	}
}

// doctor runs esbctl doctor -o json in the node and returns its report and
// exit code.
func (n *node) doctor(extra ...string) (doctor.Report, int) {
	n.t.Helper()
	args := append([]string{"--net=" + n.ns.Path(), n.esbctl, "doctor", "-config", n.cfgFile, "-o", "json"}, extra...)
	stdout, stderr, code := nodetest.RunCode(n.t, cmdTimeout, "nsenter", args...)
	var r doctor.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		n.t.Fatalf("esbctl doctor (exit %d) printed no report: %v\n%s\n%s", code, err, stdout, stderr)
	}
	return r, code
}

func find(r doctor.Report, check string) (doctor.Finding, bool) {
	for _, f := range r.Findings {
		if f.Check == check {
			return f, true
		}
	}
	return doctor.Finding{}, false
}

// expect runs doctor and checks that check has status, that its message
// names every word of want, that it carries a fix when not OK, and that
// the exit code follows: 1 exactly when a finding fails.
func (n *node) expect(what, check string, status doctor.Status, want ...string) {
	n.t.Helper()
	n.expectWith(nil, what, check, status, want...)
}

func (n *node) expectWith(extra []string, what, check string, status doctor.Status, want ...string) {
	n.t.Helper()
	r, code := n.doctor(extra...)
	f, ok := find(r, check)
	if !ok {
		n.t.Errorf("%s: no %s finding in %+v", what, check, r.Findings)
		return
	}
	if f.Status != status {
		n.t.Errorf("%s: %s is %s, want %s: %s", what, check, f.Status, status, f.Message)
	}
	for _, w := range want {
		if !strings.Contains(f.Message, w) {
			n.t.Errorf("%s: %s finding does not name %q: %s", what, check, w, f.Message)
		}
	}
	if status != doctor.OK && f.Fix == "" {
		n.t.Errorf("%s: %s finding has no fix", what, check)
	}
	wantCode := 0
	if !r.OK {
		wantCode = 1
	}
	if code != wantCode || (status == doctor.Fail && code != 1) {
		n.t.Errorf("%s: exit %d with ok=%v", what, code, r.OK)
	}
}

// healthy checks that every check passes and doctor exits 0.
func (n *node) healthy(what string) {
	n.t.Helper()
	r, code := n.doctor()
	if code != 0 || !r.OK {
		n.t.Errorf("%s: exit %d, ok %v", what, code, r.OK)
	}
	for _, c := range []string{"kernel", "conflist", "plugins", "sysctl", "bridge", "subnet", "nftables", "antispoof", "ipam", "runtime", "registry", "proxy"} {
		f, ok := find(r, c)
		if !ok || f.Status != doctor.OK {
			n.t.Errorf("%s: %s: %+v (found %v)", what, c, f, ok)
		}
	}
}

func TestDoctor(t *testing.T) {
	n := newNode(t)
	n.healthy("healthy node")
	gw := "10.88.0.1/16"

	t.Run("kernel", func(t *testing.T) {
		n := n.with(t)
		// A kernel without veth: /sys/module and the kernel config as such
		// a kernel shows them.
		dir := t.TempDir()
		for _, m := range []string{"bridge", "nf_tables", "nf_nat", "nf_conntrack"} {
			if err := os.MkdirAll(filepath.Join(dir, "sys/module", m), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cfg := filepath.Join(dir, "config")
		n.writeFile(cfg, "CONFIG_BRIDGE=y\nCONFIG_NF_TABLES=y\nCONFIG_NF_TABLES_IPV4=y\nCONFIG_NF_TABLES_BRIDGE=y\nCONFIG_NFT_NAT=m\nCONFIG_NF_NAT=y\n# CONFIG_VETH is not set\n")
		n.expectWith([]string{"-sys-root", filepath.Join(dir, "sys"), "-kernel-config", cfg, "-modules-dir", dir},
			"no veth", "kernel", doctor.Fail, "veth (CONFIG_VETH)")
	})
	t.Run("ip_forward", func(t *testing.T) {
		n := n.with(t)
		n.inNode("sysctl", "-qw", "net.ipv4.ip_forward=0")
		// The only forward targets the node's loopback: a warning.
		n.expect("ip_forward off", "sysctl", doctor.Warn, "net.ipv4.ip_forward")
		n.inNode("sysctl", "-qw", "net.ipv4.ip_forward=1")
	})
	t.Run("route_localnet", func(t *testing.T) {
		n := n.with(t)
		n.inNode("sysctl", "-qw", "net.ipv4.conf.esb-cni0.route_localnet=0")
		n.expect("route_localnet off", "sysctl", doctor.Fail, "route_localnet")
		n.inNode("sysctl", "-qw", "net.ipv4.conf.esb-cni0.route_localnet=1")
	})
	t.Run("conflist", func(t *testing.T) {
		n := n.with(t)
		good, err := os.ReadFile(n.confFile)
		if err != nil {
			t.Fatal(err)
		}
		n.writeFile(n.confFile, `{"cniVersion":"1.1.0","name":"esb","plugins":[{"type":"esb-bridge","mtu":12}]}`)
		n.expect("bad mtu", "conflist", doctor.Fail, "mtu")
		n.writeFile(n.confFile, "{not json")
		n.expect("garbage", "conflist", doctor.Fail, `network "esb"`, n.confFile)
		n.writeFile(n.confFile, string(good))
	})
	t.Run("plugins", func(t *testing.T) {
		n := n.with(t)
		ipamBin := filepath.Join(n.binDir, conf.IPAMType)
		if err := os.Rename(ipamBin, ipamBin+".away"); err != nil {
			t.Fatal(err)
		}
		n.expect("esb-ipam missing", "plugins", doctor.Fail, "esb-ipam is not in "+n.binDir)
		if err := os.Rename(ipamBin+".away", ipamBin); err != nil {
			t.Fatal(err)
		}
		// A plugin of another build.
		bridgeBin := filepath.Join(n.binDir, conf.BridgeType)
		if err := os.Rename(bridgeBin, bridgeBin+".away"); err != nil {
			t.Fatal(err)
		}
		n.writeFile(bridgeBin, "#!/bin/sh\necho 'esb-bridge v0.0.1 (esbnet)'\n")
		if err := os.Chmod(bridgeBin, 0o755); err != nil {
			t.Fatal(err)
		}
		n.expect("old esb-bridge", "plugins", doctor.Warn, "esb-bridge v0.0.1")
		if err := os.Rename(bridgeBin+".away", bridgeBin); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("bridge", func(t *testing.T) {
		n := n.with(t)
		n.inNode("ip", "addr", "del", gw, "dev", conf.BridgeName)
		n.expect("gateway address gone", "bridge", doctor.Fail, "lacks the gateway address "+gw)
		n.inNode("ip", "addr", "add", gw, "dev", conf.BridgeName)
		n.inNode("ip", "link", "set", conf.BridgeName, "down")
		n.expect("bridge down", "bridge", doctor.Fail, "is down")
		n.inNode("ip", "link", "set", conf.BridgeName, "up")
	})
	t.Run("subnet", func(t *testing.T) {
		n := n.with(t)
		// containerd's example config: cni0 on 10.88.0.0/16.
		n.inNode("ip", "link", "add", "cni0", "type", "bridge")
		n.inNode("ip", "addr", "add", "10.88.200.1/24", "dev", "cni0")
		n.expect("cni0 on the subnet", "subnet", doctor.Fail, "cni0 has 10.88.200.1/24")
		n.inNode("ip", "link", "del", "cni0")
	})
	t.Run("nftables", func(t *testing.T) {
		n := n.with(t)
		n.inNode("nft", "flush", "chain", "ip", "esb", "prerouting")
		n.expect("NAT chain flushed", "nftables", doctor.Fail, "differs from "+n.natFile)
		n.inNode("nft", "delete", "table", "ip", "esb")
		n.expect("NAT table deleted", "nftables", doctor.Fail, "table ip esb is missing")
		n.applyNAT()
	})
	t.Run("runtime", func(t *testing.T) {
		n := n.with(t)
		// A containerd that died and left its socket behind.
		sock := filepath.Join(t.TempDir(), "containerd.sock")
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		_ = l.Close()
		n.expectWith([]string{"-runtime-address", sock}, "stale containerd socket", "runtime", doctor.Fail, sock)
	})
	parent := n
	t.Run("proxy", func(t *testing.T) {
		n := n.with(t)
		defer func() { parent.proxy = n.proxy }()
		// The proxy stops: its port refuses connections.
		addr := n.proxy.Addr().String()
		_ = n.proxy.Close()
		n.expect("proxy down", "proxy", doctor.Fail, addr)
		err := n.ns.Do(func(ns.NetNS) error {
			var err error
			n.proxy, err = net.Listen("tcp", addr)
			return err
		})
		if err != nil {
			t.Fatalf("listen on %s again: %v", addr, err)
		}
		go acceptLoop(n.proxy)
	})
	// Every problem so far was undone: the node is healthy again.
	n.healthy("after the repairs")
	t.Run("registry", func(t *testing.T) {
		n := n.with(t)
		_ = n.registry.Close()
		n.expect("registry down", "registry", doctor.Fail, n.regAddr)
	})
	// From here on the node is not restored: IPAM and anti-spoofing last.
	t.Run("ipam", func(t *testing.T) {
		n := n.with(t)
		n.add("w2")
		n.expectWith([]string{"-registry", "none"}, "range full", "ipam", doctor.Fail, "exhausted", "2 of 2")
		// w2's veth removed behind esb-bridge's back: its address is stale.
		n.inNode("ip", "link", "del", conf.VethName("w2", "eth0"))
		n.expectWith([]string{"-registry", "none"}, "stale allocation", "ipam", doctor.Fail, "1 stale allocation", "w2/eth0")
	})
	t.Run("antispoof", func(t *testing.T) {
		n := n.with(t)
		n.inNode("nft", "delete", "table", "bridge", "esb")
		n.expectWith([]string{"-registry", "none"}, "anti-spoof table deleted", "antispoof", doctor.Fail, conf.VethName("w1", "eth0"))
	})
}
