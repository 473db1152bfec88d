package benchbridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
	benchipam "github.com/edge-serverless-box/esbnet/tests/bench/ipam"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// plugin is one side of the comparison: a plugin binary, its
// configuration, the node namespace it runs in and its worker namespaces
// (one node and its own workers per plugin, so neither sees the other's
// links, addresses or rules).
type plugin struct {
	label   string
	esb     bool // esb-bridge: also checks port isolation and the anti-spoof guards
	tag     byte // high nibble of its container IDs' first byte
	bin     string
	cniPath string
	conf    []byte
	bridge  string
	subnet  netip.Prefix
	gateway netip.Addr
	node    ns.NetNS
	workers []worker
	exec    *invoke.RawExec
	// stored counts the addresses the plugin's IPAM store holds.
	stored func() (int, error)
}

type worker struct {
	ns   ns.NetNS
	path string
}

func newESB(b *testing.B, dataDir string) *plugin {
	b.Helper()
	cfg := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"esb","type":"esb-bridge","bridge":"esb-cni0",`+
		`"ipam":{"type":"esb-ipam","subnet":"10.88.0.0/16","gateway":"10.88.0.1","routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}`, dataDir)
	nc, err := conf.ParseBridgeNetConf(cfg)
	if err != nil {
		b.Fatalf("parse esb config: %v", err)
	}
	if nc.IPAM == nil || !nc.Isolation || !nc.AntiSpoof {
		b.Fatalf("esb config %s should have in-process IPAM, isolation and anti-spoofing", cfg)
	}
	dir := nstest.PluginDir(b)
	return &plugin{
		label:   esbLabel,
		esb:     true,
		tag:     0xe0,
		bin:     filepath.Join(dir, "esb-bridge"),
		cniPath: dir,
		conf:    cfg,
		bridge:  "esb-cni0",
		subnet:  netip.MustParsePrefix("10.88.0.0/16"),
		gateway: netip.MustParseAddr("10.88.0.1"),
		node:    nstest.NewNS(b),
		exec:    &invoke.RawExec{Stderr: os.Stderr},
		stored: func() (int, error) {
			as, err := ipam.List(nc.IPAM, "")
			return len(as), err
		},
	}
}

func newRef(b *testing.B, dataDir string) *plugin {
	b.Helper()
	bin := nstest.Tool(b, "bridge")
	nstest.Tool(b, "host-local")
	cfg := fmt.Appendf(nil, `{"cniVersion":"1.1.0","name":"ref","type":"bridge","bridge":"ref-cni0","isGateway":true,"ipMasq":false,`+
		`"ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/16","gateway":"10.89.0.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}`, dataDir)
	return &plugin{
		label:   refLabel,
		tag:     0xa0,
		bin:     bin,
		cniPath: filepath.Dir(bin),
		conf:    cfg,
		bridge:  "ref-cni0",
		subnet:  netip.MustParsePrefix("10.89.0.0/16"),
		gateway: netip.MustParseAddr("10.89.0.1"),
		node:    nstest.NewNS(b),
		exec:    &invoke.RawExec{Stderr: os.Stderr},
		stored:  func() (int, error) { return benchipam.HostLocalUsage(dataDir, "ref") },
	}
}

func (p *plugin) env(command, id, netns string) []string {
	return (&invoke.Args{Command: command, ContainerID: id, NetNS: netns, IfName: ifName, Path: p.cniPath}).AsEnv()
}

// run executes the plugin once, as libcni does, from the calling thread,
// which must be in the node namespace; it returns stdout and how long the
// execution took.
func (p *plugin) run(ctx context.Context, command, id, netns string) ([]byte, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	env := p.env(command, id, netns)
	t0 := time.Now()
	out, err := p.exec.ExecPlugin(ctx, p.bin, p.conf, env)
	d := time.Since(t0)
	if err != nil {
		return nil, d, fmt.Errorf("%s %s %s: %w", p.label, command, id, err)
	}
	return out, d, nil
}

// execution is the outcome of one plugin execution.
type execution struct {
	took time.Duration
	out  []byte
	err  error
}

// phase runs command for every worker, parallel executions at a time,
// each started from its own thread in the node namespace, and returns
// each execution's outcome and the phase's wall time. With stopOnError the
// first failure stops the phase (executions under way finish, no new one
// starts); without it every worker gets its execution.
func (p *plugin) phase(command string, workers []worker, ids []string, parallel int, stopOnError bool) ([]execution, time.Duration, error) {
	var failed atomic.Bool
	res := make([]execution, len(ids))
	queue := make(chan int, len(ids))
	for i := range ids {
		queue <- i
	}
	close(queue)
	errs := make([]error, parallel)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range parallel {
		wg.Go(func() {
			errs[g] = p.node.Do(func(ns.NetNS) error {
				for i := range queue {
					if stopOnError && failed.Load() {
						return nil
					}
					out, d, err := p.run(context.Background(), command, ids[i], workers[i].path)
					res[i] = execution{took: d, out: out, err: err}
					if err != nil && stopOnError {
						failed.Store(true)
						return err
					}
				}
				return nil
			})
		})
	}
	wg.Wait()
	return res, time.Since(start), errors.Join(errs...)
}

// afterDel retries the failed DELs once, checks every attachment is gone
// and returns how many anti-spoof guards were left, which it removes with
// the plugin's GC.
func (p *plugin) afterDel(ids []string, failed []int) (int, error) {
	if len(failed) > 0 {
		ws := make([]worker, len(failed))
		rids := make([]string, len(failed))
		for j, i := range failed {
			ws[j], rids[j] = p.workers[i], ids[i]
		}
		if _, _, err := p.phase("DEL", ws, rids, 1, true); err != nil {
			return 0, fmt.Errorf("retry of a failed DEL: %w", err)
		}
	}
	left, err := p.checkDeleted(p.workers)
	if err != nil || left == 0 {
		return 0, err
	}
	if err := p.gc(); err != nil {
		return left, err
	}
	if err := p.checkGone(p.workers); err != nil {
		return left, fmt.Errorf("after DEL and GC: %w", err)
	}
	return left, nil
}

// gc runs the plugin's GC with no valid attachments, from the node
// namespace: esb-bridge's removes every anti-spoof guard whose port is
// gone.
func (p *plugin) gc() error {
	cfg := bytes.Replace(p.conf, []byte(`"name":`), []byte(`"cni.dev/valid-attachments":[],"name":`), 1)
	return p.node.Do(func(ns.NetNS) error {
		ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
		defer cancel()
		env := (&invoke.Args{Command: "GC", Path: p.cniPath}).AsEnv()
		if _, err := p.exec.ExecPlugin(ctx, p.bin, cfg, env); err != nil {
			return fmt.Errorf("%s GC: %w", p.label, err)
		}
		return nil
	})
}

// warmUp runs one ADD+DEL, which creates the bridge, and proves the plugin
// ran in the node namespace: the bridge is there and not in this
// process's namespace (when it was not there before).
func (p *plugin) warmUp() error {
	host, err := netlinksafe.NewHandle()
	if err != nil {
		return fmt.Errorf("netlink in the test's namespace: %w", err)
	}
	defer host.Close()
	_, lerr := host.LinkByName(p.bridge)
	hostHad := lerr == nil

	id := containerID(tagWarm, int(p.tag))
	ws := p.workers[:1]
	add, _, err := p.phase("ADD", ws, []string{id}, 1, true)
	if err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := p.checkAdded(ws, [][]byte{add[0].out}); err != nil {
		return fmt.Errorf("%s warm-up ADD: %w", p.label, err)
	}
	if _, err := host.LinkByName(p.bridge); err == nil && !hostHad {
		return fmt.Errorf("%s created %s in the test's own namespace, not in the node namespace", p.label, p.bridge)
	}
	if _, _, err := p.phase("DEL", ws, []string{id}, 1, true); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	if err := p.checkGone(ws); err != nil {
		return fmt.Errorf("%s warm-up DEL: %w", p.label, err)
	}
	return nil
}

// checkAdded checks every ADD result (one IPv4 address of the subnet via
// the gateway, no two alike), that each worker's eth0 holds its address,
// that the node's bridge has one port per worker (with esb: each isolated
// and guarded), and that the store holds one address per worker.
func (p *plugin) checkAdded(workers []worker, outs [][]byte) error {
	seen := map[netip.Addr]bool{}
	for i, out := range outs {
		r, err := current.NewResult(out)
		if err != nil {
			return fmt.Errorf("result %q: %w", out, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return fmt.Errorf("convert result: %w", err)
		}
		if len(res.IPs) != 1 {
			return fmt.Errorf("result has %d addresses, want 1: %s", len(res.IPs), out)
		}
		a, _ := netip.AddrFromSlice(res.IPs[0].Address.IP)
		a = a.Unmap()
		gw, _ := netip.AddrFromSlice(res.IPs[0].Gateway)
		if !p.subnet.Contains(a) || gw.Unmap() != p.gateway {
			return fmt.Errorf("result gives %s via %s, want an address of %s via %s", a, gw, p.subnet, p.gateway)
		}
		if seen[a] {
			return fmt.Errorf("%s handed out twice", a)
		}
		seen[a] = true
		if err := checkWorker(workers[i], a); err != nil {
			return err
		}
	}
	if err := p.checkNode(len(outs)); err != nil {
		return err
	}
	if p.esb {
		total, active, err := p.guards()
		if err != nil {
			return err
		}
		if total != len(outs) || active != len(outs) {
			return fmt.Errorf("%d anti-spoof guards (%d active), want %d", total, active, len(outs))
		}
	}
	return p.checkStored(len(outs))
}

// checkDeleted checks that no worker has eth0 left, the bridge has no
// ports and the store is empty, and returns how many anti-spoof guards
// (esb) are left.
func (p *plugin) checkDeleted(workers []worker) (int, error) {
	for _, w := range workers {
		if err := checkWorker(w, netip.Addr{}); err != nil {
			return 0, err
		}
	}
	if err := p.checkNode(0); err != nil {
		return 0, err
	}
	if err := p.checkStored(0); err != nil {
		return 0, err
	}
	if !p.esb {
		return 0, nil
	}
	total, _, err := p.guards()
	return total, err
}

// checkGone is checkDeleted with a guard left over an error too.
func (p *plugin) checkGone(workers []worker) error {
	left, err := p.checkDeleted(workers)
	if err != nil {
		return err
	}
	if left > 0 {
		return fmt.Errorf("%d anti-spoof guards left", left)
	}
	return nil
}

func (p *plugin) checkStored(want int) error {
	n, err := p.stored()
	if err != nil {
		return fmt.Errorf("read IPAM store: %w", err)
	}
	if n != want {
		return fmt.Errorf("IPAM store holds %d addresses, want %d", n, want)
	}
	return nil
}

// checkWorker checks that w's eth0 holds addr or, for the zero addr, that
// w has no eth0.
func checkWorker(w worker, addr netip.Addr) error {
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(int(w.ns.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", w.path, err)
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if !addr.IsValid() {
		if err == nil {
			return fmt.Errorf("%s still has %s", w.path, ifName)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s in %s: %w", ifName, w.path, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s in %s: %w", ifName, w.path, err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == addr {
			return nil
		}
	}
	return fmt.Errorf("%s in %s lacks %s (has %v)", ifName, w.path, addr, addrs)
}

// checkNode checks the node namespace: the bridge exists with the gateway
// and has ports bridge ports; for esb each port is isolated.
func (p *plugin) checkNode(ports int) error {
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(int(p.node.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in the node namespace: %w", err)
	}
	defer h.Close()
	br, err := h.LinkByName(p.bridge)
	if err != nil {
		return fmt.Errorf("bridge %s in the node namespace: %w", p.bridge, err)
	}
	addrs, err := h.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", p.bridge, err)
	}
	hasGW := false
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == p.gateway {
			hasGW = true
		}
	}
	if !hasGW {
		return fmt.Errorf("bridge %s lacks the gateway %s", p.bridge, p.gateway)
	}
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links of the node namespace: %w", err)
	}
	n := 0
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		n++
		if !p.esb {
			continue
		}
		pi, err := h.LinkGetProtinfo(l)
		if err != nil {
			return fmt.Errorf("bridge port flags of %s: %w", l.Attrs().Name, err)
		}
		if !pi.Isolated {
			return fmt.Errorf("bridge port %s is not isolated", l.Attrs().Name)
		}
	}
	if n != ports {
		return fmt.Errorf("bridge %s has %d ports, want %d", p.bridge, n, ports)
	}
	return nil
}

// guards returns how many anti-spoof guards the node's bridge esb table
// holds and how many of them are active.
func (p *plugin) guards() (total, active int, err error) {
	gs, err := nat.NewManager(p.node).ListGuards(context.Background())
	if err != nil {
		return 0, 0, fmt.Errorf("list anti-spoof guards: %w", err)
	}
	for _, g := range gs {
		if g.Active {
			active++
		}
	}
	return len(gs), active, nil
}
