package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/plugins/esb-ipam/ipamplugin"
)

// Del detaches the container. It needs neither the namespace nor the veth
// to exist, and it releases the addresses in every case: each step runs
// even when an earlier one failed, and "already gone" is success.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	p = p.forNetwork(nc.Name)
	hostName := conf.VethName(args.ContainerID, args.IfName)
	var errs []error
	var host netlink.Link
	h, err := hostRtnl()
	if err != nil {
		errs = append(errs, err)
	} else {
		defer h.Close()
		var notFound netlink.LinkNotFoundError
		if host, err = h.LinkByName(hostName); err != nil && !errors.As(err, &notFound) {
			errs = append(errs, fmt.Errorf("look up %s: %w", hostName, err))
		}
	}
	// The guard's elements are known from the veth's alias, or else from
	// the in-process IPAM's allocation, and are removed in one batch
	// without listing the sets; failing both, by listing.
	known := guardOf(hostName, host)
	if known == nil && nc.IPAM != nil {
		if a, err := ipam.Get(nc.IPAM, p.BootID, ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}); err == nil && a != nil {
			ips := make([]netip.Addr, len(a.IPs))
			for i, ip := range a.IPs {
				ips[i] = ip.Addr()
			}
			known = knownGuard(hostName, ips)
		}
	}
	if err := p.removeGuardOf(hostName, known); err != nil {
		errs = append(errs, fmt.Errorf("remove anti-spoof guard of %s: %w", hostName, err))
	}
	if host != nil {
		if err := h.LinkDel(host); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete %s: %w", hostName, err))
		}
	}
	if nc.IPAM != nil {
		errs = append(errs, ipam.Del(nc.IPAM, p.BootID, ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}))
	} else {
		errs = append(errs, p.delegateVerb(context.Background(), "DEL", nc.IPAMType, nc.Raw))
	}
	return ipamplugin.CNIError(errors.Join(errs...))
}

// guardOf returns the guard a host veth's alias records (its addresses,
// and the MAC derived from the IPv4 one), or nil.
func guardOf(port string, host netlink.Link) *nat.Guard {
	if host == nil {
		return nil
	}
	rec, ok := conf.ParseVethAlias(host.Attrs().Alias)
	if !ok || len(rec.IPs) == 0 {
		return nil
	}
	return knownGuard(port, rec.IPs)
}

// knownGuard is port's guard for the addresses ips, or nil when none is
// IPv4 (the MAC derives from it).
func knownGuard(port string, ips []netip.Addr) *nat.Guard {
	g := &nat.Guard{Port: port, IPs: ips}
	for _, ip := range ips {
		if ip.Is4() {
			g.MAC = MACFor(ip)
			return g
		}
	}
	return nil
}

func drift(format string, args ...any) error {
	return types.NewError(conf.CodeDrift, fmt.Sprintf(format, args...), "")
}

// Check verifies the attachment against prevResult: the container
// interface, its addresses and routes, the veth's place on the bridge, the
// anti-spoof guard and the IPAM allocation. The error names what drifted.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	p = p.forNetwork(nc.Name)
	prev, err := ipamplugin.PrevResult(nc.Raw)
	if err != nil {
		return err
	}
	if prev == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "invalid prevResult: CHECK needs the result of the ADD", "")
	}
	target, err := openTarget(args.Netns)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()

	mac, err := checkContainer(target, args.IfName, prev)
	if err != nil {
		return err
	}
	hostName := conf.VethName(args.ContainerID, args.IfName)
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		return drift("veth %s of %s/%s is missing", hostName, args.ContainerID, args.IfName)
	}
	br, err := netlinksafe.LinkByName(nc.Bridge)
	if err != nil {
		return drift("bridge %s is missing", nc.Bridge)
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		return drift("veth %s is not a port of bridge %s", hostName, nc.Bridge)
	}
	if nc.Isolation {
		pi, err := netlinksafe.LinkGetProtinfo(host)
		if err != nil {
			return types.NewError(types.ErrInternal, "read bridge port flags of "+hostName, err.Error())
		}
		if !pi.Isolated {
			return drift("bridge port %s is not isolated", hostName)
		}
	}
	if nc.AntiSpoof {
		if err := p.checkGuard(hostName, mac, prev); err != nil {
			return err
		}
	}
	if nc.IPAM == nil {
		return p.delegateVerb(context.Background(), "CHECK", nc.IPAMType, nc.Raw)
	}
	a, err := ipam.Get(nc.IPAM, p.BootID, ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName})
	if err != nil {
		return ipamplugin.CNIError(err)
	}
	if a == nil {
		return drift("IPAM holds no address for %s/%s", args.ContainerID, args.IfName)
	}
	for _, ip := range a.IPs {
		if !resultHas(prev, ip.Addr()) {
			return drift("IPAM holds %s for %s/%s, which prevResult does not list", ip, args.ContainerID, args.IfName)
		}
	}
	return nil
}

func resultHas(res *current.Result, a netip.Addr) bool {
	for _, ip := range res.IPs {
		if ip.Address.IP.Equal(a.AsSlice()) {
			return true
		}
	}
	return false
}

// checkContainer verifies the container interface holds prevResult's
// addresses and routes, and returns its MAC.
func checkContainer(target interface{ Fd() uintptr }, ifName string, prev *current.Result) (net.HardwareAddr, error) {
	h, err := nsRtnl(target)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return nil, drift("container interface %s is missing", ifName)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return nil, drift("container interface %s is down", ifName)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "list addresses of "+ifName, err.Error())
	}
	for _, ip := range prev.IPs {
		found := false
		for _, a := range addrs {
			if a.IP.Equal(ip.Address.IP) && a.Mask.String() == ip.Address.Mask.String() {
				found = true
			}
		}
		if !found {
			return nil, drift("container interface %s lacks address %s", ifName, ip.Address.String())
		}
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "list routes of "+ifName, err.Error())
	}
	for _, want := range prev.Routes {
		found := false
		for _, r := range routes {
			dst := r.Dst
			if dst == nil { // the kernel reports a default route without Dst
				if want.Dst.IP.To4() != nil {
					dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
				} else {
					dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
				}
			}
			if dst.String() == want.Dst.String() && (want.GW == nil || want.GW.Equal(r.Gw)) {
				found = true
			}
		}
		if !found {
			return nil, drift("container interface %s lacks route %s", ifName, want.Dst.String())
		}
	}
	return link.Attrs().HardwareAddr, nil
}

func (p *Plugin) checkGuard(port string, mac net.HardwareAddr, prev *current.Result) error {
	g, err := p.guards().FindGuard(context.Background(), port)
	if nat.IsNotFound(err) {
		return drift("anti-spoof guard of %s is missing", port)
	}
	if err != nil {
		return types.NewError(types.ErrInternal, "read anti-spoof guards", err.Error())
	}
	if !g.Active {
		return drift("anti-spoof guard of %s is inactive: the port is missing from the ports set", port)
	}
	for _, ip := range prev.IPs {
		a, _ := netip.AddrFromSlice(ip.Address.IP)
		if !slices.Contains(g.IPs, a.Unmap()) {
			return drift("anti-spoof guard of %s does not allow %s", port, a.Unmap())
		}
	}
	if g.MAC.String() != mac.String() {
		return drift("anti-spoof guard of %s allows MAC %s, the interface has %s", port, g.MAC, mac)
	}
	return nil
}

// GC forwards to IPAM, then removes the veths of attachments not in
// cni.dev/valid-attachments (older than the grace period, so a concurrent
// ADD is safe) and every anti-spoof guard whose port is gone.
//
// A veth without our alias (an ADD killed between creating the veth and
// labelling it) is removed too when it is on the bridge and no remaining
// allocation maps to its name; an ADD in flight already holds its
// allocation, so it is safe. That needs the in-process IPAM; with a
// delegated IPAM such veths are left for DEL.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	p = p.forNetwork(nc.Name)
	valid := map[ipam.AttachmentID]bool{}
	for _, v := range nc.ValidAttachments {
		valid[ipam.AttachmentID{ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	grace, _ := time.ParseDuration(conf.DefaultGCGrace)
	if nc.IPAM != nil {
		grace = nc.IPAM.GCGrace
		// A valid attachment whose allocation the store lost (its directory
		// wiped while workers run) gets it back from its anti-spoof
		// elements before anything is collected.
		lost, err := p.guardedAllocations(nc.IPAM, p.now(), valid)
		if err != nil {
			return types.NewError(types.ErrInternal, "list anti-spoof guards", err.Error())
		}
		if _, err := ipam.Readopt(nc.IPAM, p.BootID, lost); err != nil {
			return ipamplugin.CNIError(err)
		}
		if _, err := ipam.Collect(nc.IPAM, p.BootID, valid, p.now); err != nil {
			return ipamplugin.CNIError(err)
		}
	} else if err := p.delegateVerb(context.Background(), "GC", nc.IPAMType, nc.Raw); err != nil {
		return err
	}
	// Guards are listed before links: a guard is added only after its veth
	// exists, so a guard whose port is missing from the later link list
	// really lost its veth.
	guards, err := p.guards().ListGuards(context.Background())
	if err != nil {
		return types.NewError(types.ErrInternal, "list anti-spoof guards", err.Error())
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return types.NewError(types.ErrInternal, "list links", err.Error())
	}
	// Veths of the remaining allocations and of valid attachments are
	// protected. The allocations are read after the links: an ADD
	// allocates before it makes its veth, so every veth in the list above
	// that belongs to an ADD in flight has its allocation in this one.
	var protected map[string]bool
	if nc.IPAM != nil {
		remaining, err := ipam.List(nc.IPAM, p.BootID)
		if err != nil {
			return ipamplugin.CNIError(err)
		}
		protected = map[string]bool{}
		for _, a := range remaining {
			protected[conf.VethName(a.ID.ContainerID, a.ID.IfName)] = true
		}
		for id := range valid {
			protected[conf.VethName(id.ContainerID, id.IfName)] = true
		}
	}
	brIndex := -1
	for _, l := range links {
		if l.Attrs().Name == nc.Bridge {
			brIndex = l.Attrs().Index
		}
	}
	cutoff := p.now().Add(-grace)
	present := map[string]bool{}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		rec, ok := conf.ParseVethAlias(l.Attrs().Alias)
		// Only veths on this network's bridge (or on none): another
		// stack's veths are that stack's GC's.
		ours := l.Attrs().MasterIndex == brIndex || l.Attrs().MasterIndex == 0
		stale := ok && ours && !valid[ipam.AttachmentID{ContainerID: rec.ContainerID, IfName: rec.IfName}] && rec.Created.Before(cutoff)
		// The kill may land before the veth is even on the bridge.
		unlabelled := !ok && protected != nil && l.Type() == "veth" && conf.IsVethName(name) &&
			(l.Attrs().MasterIndex == brIndex || l.Attrs().MasterIndex == 0) && !protected[name]
		if !stale && !unlabelled {
			present[name] = true
			continue
		}
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete stale veth %s: %w", name, err))
			present[name] = true
		}
	}
	for _, g := range guards {
		if present[g.Port] {
			continue
		}
		if _, err := netlinksafe.LinkByName(g.Port); err == nil {
			continue // appeared since the listing
		}
		if err := p.guards().RemoveGuard(context.Background(), g.Port); err != nil {
			errs = append(errs, err)
		}
	}
	return ipamplugin.CNIError(errors.Join(errs...))
}

// guardedAllocations returns the allocations the node's anti-spoof
// elements show in use: one per guarded port, owned by the guard's
// attachment, with its addresses inside the configured ranges; only the
// attachments in only when it is not nil.
func (p *Plugin) guardedAllocations(cfg *conf.IPAM, now time.Time, only map[ipam.AttachmentID]bool) ([]*ipam.Allocation, error) {
	guards, err := p.guards().ListGuards(context.Background())
	if err != nil {
		return nil, err
	}
	var out []*ipam.Allocation
	for _, g := range guards {
		cid, ifName, ok := strings.Cut(g.Owner, "/")
		id := ipam.AttachmentID{ContainerID: cid, IfName: ifName}
		if !ok || !g.Active || (only != nil && !only[id]) {
			continue
		}
		a := &ipam.Allocation{ID: id, Created: now}
		for _, ip := range g.IPs {
			for _, r := range cfg.Ranges() {
				if r.Contains(ip) {
					a.IPs = append(a.IPs, netip.PrefixFrom(ip, r.Subnet.Bits()))
				}
			}
		}
		if len(a.IPs) > 0 {
			out = append(out, a)
		}
	}
	return out, nil
}

// Status reports whether an ADD can succeed: no other interface owns the
// subnet, the bridge name is free or a bridge, and IPAM can allocate.
// Failures are code 50 (plugin not available).
func (p *Plugin) Status(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	unavailable := func(err error) error {
		return types.NewError(types.ErrPluginNotAvailable, "esb-bridge cannot attach workers: "+err.Error(), "")
	}
	h, br, err := hostBridge(nc.Bridge)
	if err != nil {
		return err
	}
	defer h.Close()
	if br != nil {
		if _, ok := br.(*netlink.Bridge); !ok {
			return unavailable(fmt.Errorf("%s exists but is a %s, not a bridge", nc.Bridge, br.Type()))
		}
	}
	if nc.IPAM == nil {
		return p.delegateVerb(context.Background(), "STATUS", nc.IPAMType, nc.Raw)
	}
	if _, err := checkSubnetFree(h, nc.Bridge, br, nc.IPAM.Ranges()); err != nil {
		return unavailable(err)
	}
	if err := ipam.Ready(nc.IPAM, p.BootID); err != nil {
		if ipam.IsTryAgain(err) {
			return ipamplugin.CNIError(err)
		}
		return unavailable(err)
	}
	return nil
}
