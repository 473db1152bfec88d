package bridge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
)

// openTarget opens CNI_NETNS, which must be a network namespace other than
// the plugin's own.
func openTarget(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_NETNS is required", "")
	}
	target, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		var notNS ns.NSPathNotNSErr
		switch {
		case errors.As(err, &notExist):
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %s does not exist", path), "")
		case errors.As(err, &notNS):
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %s is not a network namespace", path), "")
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open CNI_NETNS %s", path), err.Error())
	}
	var own, their unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &own); err != nil {
		return nil, errors.Join(types.NewError(types.ErrInternal, "stat own network namespace", err.Error()), target.Close())
	}
	if err := unix.Fstat(int(target.Fd()), &their); err != nil {
		return nil, errors.Join(types.NewError(types.ErrInvalidNetNS, "stat CNI_NETNS", err.Error()), target.Close())
	}
	if own.Dev == their.Dev && own.Ino == their.Ino {
		return nil, errors.Join(types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %s is the plugin's own network namespace", path), ""), target.Close())
	}
	return target, nil
}

// hostRtnl opens one rtnetlink socket in the plugin's (the node's)
// namespace for all of a verb's link and address calls: netlink's package
// functions open a socket per call.
func hostRtnl() (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return h, types.NewError(types.ErrInternal, "open rtnetlink", err.Error())
	}
	return h, nil
}

// nsRtnl opens an rtnetlink socket in the container's namespace. Only
// NETLINK_ROUTE: a handle opened without families opens a socket for every
// family netlink knows, each with a pair of setns calls.
func nsRtnl(target interface{ Fd() uintptr }) (netlinksafe.Handle, error) {
	h, err := netlinksafe.NewHandleAt(nsHandle(target), unix.NETLINK_ROUTE)
	if err != nil {
		return h, types.NewError(types.ErrInternal, "open netlink in CNI_NETNS", err.Error())
	}
	return h, nil
}

// hostBridge opens the node's rtnetlink (see hostRtnl) and looks up the
// link named name: nil when there is none. The caller closes the handle.
func hostBridge(name string) (netlinksafe.Handle, netlink.Link, error) {
	h, err := hostRtnl()
	if err != nil {
		return h, nil, err
	}
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return h, nil, nil
	}
	if err != nil {
		h.Close()
		return h, nil, types.NewError(types.ErrInternal, "look up bridge "+name, err.Error())
	}
	return h, link, nil
}

// addrList is Handle.AddrList retried while the kernel reports the dump as
// interrupted (as netlinksafe does for the package function).
func addrList(h netlinksafe.Handle, family int) (addrs []netlink.Addr, err error) {
	for range 5 {
		addrs, err = h.AddrList(nil, family)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return addrs, err
}

// checkSubnetFree fails when an interface other than the bridge holds an
// address inside one of the ranges' subnets (Podman's podman0 and
// cni-podman0 default to 10.88.0.0/16 too): routing to the workers would
// then be ambiguous. br is the bridge as looked up (nil when it did not
// exist); a concurrent first ADD may have made it since, so a link that
// overlaps is also compared by name. It returns the addresses br holds.
func checkSubnetFree(h netlinksafe.Handle, bridge string, br netlink.Link, ranges []conf.Range) (map[netip.Prefix]bool, error) {
	family := netlink.FAMILY_ALL
	v4, v6 := false, false
	for _, r := range ranges {
		v4 = v4 || r.Subnet.Addr().Is4()
		v6 = v6 || r.Subnet.Addr().Is6()
	}
	if v4 && !v6 {
		family = netlink.FAMILY_V4
	} else if v6 && !v4 {
		family = netlink.FAMILY_V6
	}
	brIndex := -1
	if br != nil {
		brIndex = br.Attrs().Index
	}
	addrs, err := addrList(h, family)
	if err != nil {
		return nil, types.NewError(types.ErrInternal, "list addresses", err.Error())
	}
	held := map[netip.Prefix]bool{}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		if a.LinkIndex == brIndex {
			held[netip.PrefixFrom(ip.Unmap(), ones)] = true
			continue
		}
		theirs := netip.PrefixFrom(ip.Unmap(), ones).Masked()
		for _, r := range ranges {
			if !theirs.Overlaps(r.Subnet) {
				continue
			}
			name := fmt.Sprintf("interface %d", a.LinkIndex)
			if link, err := h.LinkByIndex(a.LinkIndex); err == nil {
				name = link.Attrs().Name
			}
			if name == bridge {
				break // made by a concurrent first ADD since br was looked up
			}
			return nil, types.NewError(conf.CodeSubnetConflict,
				fmt.Sprintf("subnet %s is already used by %s (%s); remove that network or give esb another subnet", r.Subnet, name, a.IPNet), "")
		}
	}
	return held, nil
}

// ensureBridge returns the bridge, creating it when link is nil (up, with
// a fixed MAC so it does not change as ports come and go), and makes sure
// it is up and holds every gateway address (those in held are known to be
// there). Concurrent first ADDs converge.
func ensureBridge(h netlinksafe.Handle, name string, link netlink.Link, gws []netip.Prefix, held map[netip.Prefix]bool) (netlink.Link, error) {
	if link == nil {
		var mac net.HardwareAddr
		for _, gw := range gws {
			if gw.Addr().Is4() {
				mac = MACFor(gw.Addr())
				break
			}
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac, Flags: net.FlagUp}}
		if err := h.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, types.NewError(types.ErrInternal, "create bridge "+name, err.Error())
		}
		var err error
		if link, err = h.LinkByName(name); err != nil {
			return nil, types.NewError(types.ErrInternal, "look up bridge "+name, err.Error())
		}
		held = nil
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, types.NewError(conf.CodeLinkConflict, fmt.Sprintf("%s exists but is a %s, not a bridge", name, link.Type()), "")
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(link); err != nil {
			return nil, types.NewError(types.ErrInternal, "set bridge "+name+" up", err.Error())
		}
	}
	for _, gw := range gws {
		if held[gw] {
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(gw)}
		if gw.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("add gateway %s to %s", gw, name), err.Error())
		}
	}
	return link, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

type vethSpec struct {
	hostName, ifName string
	mac              net.HardwareAddr
	mtu              int
	bridge           netlink.Link
	target           ns.NetNS
	isolation        bool
	alias            string
}

// addVeth creates the veth pair in one netlink call, the host end up and
// the peer directly in the container's namespace under its final name and
// MAC, and enslaves the host end to the bridge (netlink's second request).
// Then it sets the host end's alias and, with isolation, the bridge port's
// isolated flag. A bridge that takes no more ports is CodeBridgeFull.
func addVeth(h netlinksafe.Handle, s vethSpec) (netlink.Link, error) {
	mtu := s.mtu
	if mtu == 0 {
		mtu = s.bridge.Attrs().MTU
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:        s.hostName,
			MTU:         mtu,
			MasterIndex: s.bridge.Attrs().Index,
			Flags:       net.FlagUp,
		},
		PeerName:         s.ifName,
		PeerHardwareAddr: s.mac,
		PeerMTU:          uint32(mtu),
		PeerNamespace:    netlink.NsFd(int(s.target.Fd())),
	}
	if err := h.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if _, lerr := h.LinkByName(s.hostName); lerr == nil {
				return nil, types.NewError(conf.CodeLinkConflict, fmt.Sprintf("veth %s already exists: the attachment is already set up (DEL it first)", s.hostName), "")
			}
			return nil, types.NewError(conf.CodeLinkConflict, fmt.Sprintf("the container already has an interface named %s", s.ifName), "")
		}
		// netlink creates the pair and then enslaves the host end in a
		// second request; when that one fails (EXFULL: the bridge holds
		// its maximum of ports) the pair exists and is ours: delete it,
		// its peer goes with it.
		cause := types.NewError(types.ErrInternal, "create veth "+s.hostName, err.Error())
		if errors.Is(err, unix.EXFULL) {
			cause = bridgeFull(s.bridge.Attrs().Name)
		}
		return nil, errors.Join(cause, delLink(h, s.hostName))
	}
	// From here on the caller's rollback deletes the veth by name.
	host, err := h.LinkByName(s.hostName)
	if err != nil {
		return nil, errors.Join(types.NewError(types.ErrInternal, "look up veth "+s.hostName, err.Error()), delLink(h, s.hostName))
	}
	if err := h.LinkSetAlias(host, s.alias); err != nil {
		return nil, errors.Join(types.NewError(types.ErrInternal, "set alias of "+s.hostName, err.Error()), delLink(h, s.hostName))
	}
	if s.isolation {
		if err := h.LinkSetIsolated(host, true); err != nil {
			return nil, errors.Join(types.NewError(types.ErrInternal, "isolate bridge port "+s.hostName, err.Error()), delLink(h, s.hostName))
		}
	}
	return host, nil
}

// disablePortIPv6 turns IPv6 off on a bridge port's host end, in the
// plugin's (the node's) namespace. A port only forwards frames to and
// from the bridge, which holds the gateway; it needs no address of its
// own. With IPv6 on, the kernel gives every port a link-local address,
// its routes and multicast memberships, which adding and removing the
// next port then walk: on a node holding 1,000 attachments ADD's veth
// step took 3.4 ms with them and 1.5 ms without, and the whole
// in-process ADD 7.5 ms against 4.8 (BenchmarkBridgeAtScale). The
// worker's end keeps IPv6. A kernel without IPv6 has no such file, and
// nothing to turn off.
func disablePortIPv6(port string) error {
	err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", port, "disable_ipv6"), []byte("1"), 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// bridgeFull is ADD's error when the kernel refuses one more port on the
// bridge (EXFULL from br_add_if): it holds conf.BridgeMaxPorts already.
func bridgeFull(bridge string) *types.Error {
	return types.NewError(conf.CodeBridgeFull,
		fmt.Sprintf("bridge %s is full: a Linux bridge holds at most %d ports (one per worker); detach a worker first", bridge, conf.BridgeMaxPorts), "")
}

// delLink deletes a host link by name; a missing link is success.
func delLink(h netlinksafe.Handle, name string) error {
	link, err := h.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// configureContainer gives the container interface its addresses (no
// duplicate-address wait) and routes, and sets it up, through a netlink
// handle bound to the container's namespace: no thread switching.
func configureContainer(target ns.NetNS, ifName string, res *current.Result) error {
	h, err := nsRtnl(target)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return types.NewError(types.ErrInternal, "look up "+ifName+" in CNI_NETNS", err.Error())
	}
	for _, ip := range res.IPs {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.Address.IP, Mask: ip.Address.Mask}}
		if ip.Address.IP.To4() == nil {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return types.NewError(types.ErrInternal, fmt.Sprintf("add %s to %s", ip.Address.String(), ifName), err.Error())
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return types.NewError(types.ErrInternal, "set "+ifName+" up", err.Error())
	}
	for _, r := range res.Routes {
		gw := r.GW
		if gw == nil {
			gw = gatewayFor(res, r.Dst.IP.To4() != nil)
		}
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}, Gw: gw}
		if err := h.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return types.NewError(types.ErrInternal, fmt.Sprintf("add route %s via %s", r.Dst.String(), gw), err.Error())
		}
	}
	return nil
}

func gatewayFor(res *current.Result, v4 bool) net.IP {
	for _, ip := range res.IPs {
		if (ip.Address.IP.To4() != nil) == v4 && ip.Gateway != nil {
			return ip.Gateway
		}
	}
	return nil
}

// resultAddrs returns the addresses of a result.
func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func (p *Plugin) addGuard(port string, mac net.HardwareAddr, ips []netip.Addr, args *skel.CmdArgs) error {
	g := nat.Guard{Port: port, MAC: mac, IPs: ips, Owner: args.ContainerID + "/" + args.IfName}
	if err := p.guards().AddGuard(context.Background(), g); err != nil {
		return types.NewError(types.ErrInternal, "add anti-spoof guard", err.Error())
	}
	return nil
}

// removeGuardOf removes port's guard: by its known elements when g is
// given (no listing of the sets), else by listing.
func (p *Plugin) removeGuardOf(port string, g *nat.Guard) error {
	if g != nil {
		return p.guards().RemoveGuardKnown(context.Background(), *g)
	}
	return p.guards().RemoveGuard(context.Background(), port)
}

// enableForwarding turns IPv4 forwarding on in the plugin's (the node's)
// namespace when it is off.
func enableForwarding() error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	b, err := os.ReadFile(path)
	if err != nil {
		return types.NewError(types.ErrInternal, "read "+path, err.Error())
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return types.NewError(types.ErrInternal, "enable IPv4 forwarding", err.Error())
	}
	return nil
}

// nsHandle turns an open namespace into the handle netlink binds to.
func nsHandle(n interface{ Fd() uintptr }) vnetns.NsHandle { return vnetns.NsHandle(int(n.Fd())) }
