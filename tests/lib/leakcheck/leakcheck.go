// Package leakcheck is the one check every fault, load and soak test ends
// with: on a test's node, is every trace of a worker (container, pinned
// network namespace, veth, IPAM address, anti-spoof element, libcni cache
// entry, /etc files, containerd shim process) there for exactly the
// workers that should live, and is no address held twice?
//
// It reads the real state: the node namespace's links and nftables through
// netlink, the IPAM store (bbolt, under its lock), the pin directory, the
// libcni cache, /proc (shims) and, through a caller's function, the
// runtime's containers.
package leakcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
)

// Node says where one agent's workers leave their traces.
type Node struct {
	// NetNS is the path of the node namespace (the one that plays the host).
	NetNS string
	// IPAMDir and Network name the IPAM store (<IPAMDir>/<Network>.db).
	IPAMDir, Network string
	// PinDir holds the agent's netns pins (esb-<worker ID>, both
	// runtimes); "" skips them.
	PinDir string
	// CNICacheDir is libcni's cache directory.
	CNICacheDir string
	// EtcDir holds the agent's per-worker /etc files (<state dir>/etc/<worker
	// ID>); "" skips them.
	EtcDir string
	// Containers lists the worker containers the runtime holds.
	Containers func(ctx context.Context) ([]string, error)
	// Snapshots and Cgroups, when set, list the runtime's per-worker
	// snapshots and cgroups by worker ID (a creation cut off half-way can
	// leave them without a container).
	Snapshots func(ctx context.Context) ([]string, error)
	Cgroups   func() ([]string, error)
	// IfName is the workers' interface (default eth0).
	IfName string
	// ShimNamespace is the containerd namespace whose shim processes
	// are checked: one that serves no live worker is an orphan. ""
	// skips them (Docker; a test that cuts creations off, after which
	// containerd 1.6 leaves the shim running).
	ShimNamespace string
}

// Report lists what is wrong; an empty report is a consistent node.
type Report struct {
	// Orphans are traces of workers that should not live.
	Orphans []string
	// Missing are parts a live worker lacks.
	Missing []string
	// Duplicates are addresses held by more than one attachment.
	Duplicates []string
	// Found is how many traces of each kind the check saw.
	Found map[string]int
}

// Clean reports whether nothing is orphaned, missing or doubled.
func (r Report) Clean() bool {
	return len(r.Orphans) == 0 && len(r.Missing) == 0 && len(r.Duplicates) == 0
}

func (r Report) String() string {
	if r.Clean() {
		return "consistent"
	}
	var b strings.Builder
	for _, s := range []struct {
		what string
		l    []string
	}{{"orphaned", r.Orphans}, {"missing", r.Missing}, {"held twice", r.Duplicates}} {
		if len(s.l) > 0 {
			fmt.Fprintf(&b, "%s:\n  %s\n", s.what, strings.Join(s.l, "\n  "))
		}
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// Check compares the node with live, the workers that should exist (ID →
// the address the agent reported), and says what is orphaned, missing or
// held twice. Errors are failures to read the state, not findings.
func Check(ctx context.Context, n Node, live map[string]netip.Addr) (Report, error) {
	if n.IfName == "" {
		n.IfName = "eth0"
	}
	c := &checker{n: n, live: live, seen: map[string]map[string]bool{}, rep: Report{Found: map[string]int{}}}
	errs := []error{c.containers(ctx), c.pins(), c.etcFiles(), c.cache(), c.runtimeExtras(ctx), c.shims()}
	h, err := c.nodeHandles()
	if err != nil {
		errs = append(errs, err)
	} else {
		defer h.close()
		errs = append(errs, c.veths(h), c.guards(h))
	}
	errs = append(errs, c.addresses())
	c.missing()
	for _, l := range [][]string{c.rep.Orphans, c.rep.Missing, c.rep.Duplicates} {
		slices.Sort(l)
	}
	return c.rep, errors.Join(errs...)
}

// Wait runs Check until the node is consistent or limit passes (the kernel
// removes a dead namespace's veths asynchronously, a shim exits a moment
// after its last task's delete), and returns the last report.
func Wait(ctx context.Context, n Node, live map[string]netip.Addr, limit time.Duration) (Report, error) {
	deadline := time.Now().Add(limit)
	for {
		rep, err := Check(ctx, n, live)
		if (err == nil && rep.Clean()) || time.Now().After(deadline) || ctx.Err() != nil {
			return rep, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type checker struct {
	n    Node
	live map[string]netip.Addr
	// seen[kind][worker ID] marks the parts found of live workers.
	seen map[string]map[string]bool
	rep  Report
}

// kinds every live worker must have; pins and /etc files only when the
// node has them.
func (c *checker) kinds() []string {
	k := []string{"container", "veth", "address", "anti-spoof guard", "libcni cache entry"}
	if c.n.PinDir != "" {
		k = append(k, "netns pin")
	}
	if c.n.EtcDir != "" {
		k = append(k, "/etc files")
	}
	return k
}

// found records one trace of kind for worker id with a description.
func (c *checker) found(kind, id, what string) {
	c.rep.Found[kind]++
	if _, ok := c.live[id]; !ok {
		c.rep.Orphans = append(c.rep.Orphans, kind+" "+what)
		return
	}
	if c.seen[kind] == nil {
		c.seen[kind] = map[string]bool{}
	}
	if c.seen[kind][id] {
		c.rep.Duplicates = append(c.rep.Duplicates, fmt.Sprintf("worker %s has a second %s: %s", id, kind, what))
	}
	c.seen[kind][id] = true
}

func (c *checker) missing() {
	for id, ip := range c.live {
		for _, k := range c.kinds() {
			if !c.seen[k][id] {
				c.rep.Missing = append(c.rep.Missing, fmt.Sprintf("worker %s (%s) has no %s", id, ip, k))
			}
		}
	}
}

func (c *checker) containers(ctx context.Context) error {
	if c.n.Containers == nil {
		return errors.New("leakcheck: Node.Containers is not set")
	}
	ids, err := c.n.Containers(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, id := range ids {
		c.found("container", id, id)
	}
	return nil
}

// runtimeExtras records snapshots and cgroups; they are not required of a
// live worker (a runtime may keep none), only forbidden for others.
func (c *checker) runtimeExtras(ctx context.Context) error {
	var errs []error
	for kind, list := range map[string]func() ([]string, error){
		"snapshot": func() ([]string, error) {
			if c.n.Snapshots == nil {
				return nil, nil
			}
			return c.n.Snapshots(ctx)
		},
		"cgroup": func() ([]string, error) {
			if c.n.Cgroups == nil {
				return nil, nil
			}
			return c.n.Cgroups()
		},
	} {
		ids, err := list()
		if err != nil {
			errs = append(errs, fmt.Errorf("list %ss: %w", kind, err))
		}
		for _, id := range ids {
			c.rep.Found[kind]++
			if _, ok := c.live[id]; !ok {
				c.rep.Orphans = append(c.rep.Orphans, kind+" "+id)
			}
		}
	}
	return errors.Join(errs...)
}

func (c *checker) pins() error {
	if c.n.PinDir == "" {
		return nil
	}
	pins, err := filepath.Glob(filepath.Join(c.n.PinDir, conf.NetNSPrefix+"*"))
	if err != nil {
		return err
	}
	for _, p := range pins {
		c.found("netns pin", strings.TrimPrefix(filepath.Base(p), conf.NetNSPrefix), p)
	}
	return nil
}

// etcFiles reads the agent's per-worker /etc directories.
func (c *checker) etcFiles() error {
	if c.n.EtcDir == "" {
		return nil
	}
	entries, err := os.ReadDir(c.n.EtcDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the workers' /etc files: %w", err)
	}
	for _, e := range entries {
		c.found("/etc files", e.Name(), filepath.Join(c.n.EtcDir, e.Name()))
	}
	return nil
}

// cache reads libcni's result cache: results/<network>-<id>-<ifname>.
func (c *checker) cache() error {
	dir := filepath.Join(c.n.CNICacheDir, "results")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read libcni cache: %w", err)
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), c.n.Network+"-")
		if !ok {
			continue
		}
		id, _ := strings.CutSuffix(rest, "-"+c.n.IfName)
		c.found("libcni cache entry", id, filepath.Join(dir, e.Name()))
	}
	return nil
}

type handles struct {
	nsh vnetns.NsHandle
	nl  *netlink.Handle
	ns  ns.NetNS
}

func (h *handles) close() {
	h.nl.Close()
	_ = h.ns.Close()
	_ = h.nsh.Close()
}

func (c *checker) nodeHandles() (*handles, error) {
	nsh, err := vnetns.GetFromPath(c.n.NetNS)
	if err != nil {
		return nil, fmt.Errorf("open node netns %s: %w", c.n.NetNS, err)
	}
	nl, err := netlink.NewHandleAt(nsh)
	if err != nil {
		_ = nsh.Close()
		return nil, fmt.Errorf("netlink in the node: %w", err)
	}
	n, err := ns.GetNS(c.n.NetNS)
	if err != nil {
		nl.Close()
		_ = nsh.Close()
		return nil, fmt.Errorf("open node netns %s: %w", c.n.NetNS, err)
	}
	return &handles{nsh: nsh, nl: nl, ns: n}, nil
}

// veths finds the node's esb veths; their alias (conf.VethAlias) names the
// attachment. A veth without one (an
// ADD killed before labelling it) belongs to no worker.
func (c *checker) veths(h *handles) error {
	links, err := h.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list links of the node: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if l.Type() != "veth" || !strings.HasPrefix(a.Name, "esb") {
			continue
		}
		rec, ok := conf.ParseVethAlias(a.Alias)
		if !ok {
			c.found("veth", "", fmt.Sprintf("%s (unlabelled)", a.Name))
			continue
		}
		c.found("veth", rec.ContainerID, fmt.Sprintf("%s (%s)", a.Name, a.Alias))
	}
	return nil
}

// guards reads the anti-spoof elements of the node's bridge table: one
// guard per port, owned by "<id>/<ifname>", with the worker's address.
func (c *checker) guards(h *handles) error {
	gs, err := nat.NewManager(h.ns).ListGuards(context.Background())
	if err != nil {
		return fmt.Errorf("list anti-spoof guards: %w", err)
	}
	for _, g := range gs {
		id, _, _ := strings.Cut(g.Owner, "/")
		c.found("anti-spoof guard", id, fmt.Sprintf("port %s of %q %v", g.Port, g.Owner, g.IPs))
		if want, ok := c.live[id]; ok && (!slices.Contains(g.IPs, want) || !g.Active) {
			c.rep.Missing = append(c.rep.Missing, fmt.Sprintf("worker %s: anti-spoof guard on %s allows %v (active %v), want %s",
				id, g.Port, g.IPs, g.Active, want))
		}
	}
	return nil
}

// addresses reads the IPAM store: allocations by attachment, an address
// in two allocations, and bitmap bits that no allocation explains.
func (c *checker) addresses() error {
	if _, err := os.Stat(ipam.DBPath(c.n.IPAMDir, c.n.Network)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s, err := ipam.OpenBolt(c.n.IPAMDir, c.n.Network, ipam.BoltOptions{LockWait: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("open the IPAM store: %w", err)
	}
	icfg := conf.DefaultIPAMConfig()
	cfg, err := icfg.Validate(c.n.Network, "ipam")
	if err != nil {
		return errors.Join(err, s.Close())
	}
	holders := map[netip.Addr][]string{}
	allocs := 0
	err = s.View(func(tx ipam.Txn) error {
		if err := tx.ForEachAllocation(func(a *ipam.Allocation) error {
			allocs++
			for _, p := range a.IPs {
				holders[p.Addr()] = append(holders[p.Addr()], a.ID.String())
				c.found("address", a.ID.ContainerID, fmt.Sprintf("%s of %s", p.Addr(), a.ID))
				if want, ok := c.live[a.ID.ContainerID]; ok && want != p.Addr() {
					c.rep.Missing = append(c.rep.Missing, fmt.Sprintf("worker %s holds %s in IPAM, the agent reported %s", a.ID.ContainerID, p.Addr(), want))
				}
			}
			return nil
		}); err != nil {
			return err
		}
		for _, r := range cfg.Ranges() {
			used, _, err := ipam.Usage(tx, r)
			if err != nil {
				return err
			}
			if int(used) != len(holders) {
				c.rep.Orphans = append(c.rep.Orphans, fmt.Sprintf("address bitmap of %s marks %d addresses in use, the allocations hold %d", r, used, len(holders)))
			}
		}
		return nil
	})
	for ip, hs := range holders {
		if len(hs) > 1 {
			c.rep.Duplicates = append(c.rep.Duplicates, fmt.Sprintf("%s held by %s", ip, strings.Join(hs, " and ")))
		}
	}
	// Two live workers reported with one address is a duplicate too.
	byIP := map[netip.Addr][]string{}
	for id, ip := range c.live {
		byIP[ip] = append(byIP[ip], id)
	}
	for ip, ids := range byIP {
		if len(ids) > 1 {
			slices.Sort(ids)
			c.rep.Duplicates = append(c.rep.Duplicates, fmt.Sprintf("%s reported for workers %s", ip, strings.Join(ids, " and ")))
		}
	}
	return errors.Join(err, s.Close())
}
