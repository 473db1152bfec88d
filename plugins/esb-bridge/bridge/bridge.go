// Package bridge is the esb-bridge CNI plugin: it attaches a worker's
// network namespace to the bridge esb-cni0 through a veth pair, with an
// address from IPAM (esb-ipam in-process, any other IPAM plugin through
// CNI_PATH), port isolation between workers and nftables anti-spoofing.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/plugins/esb-ipam/ipamplugin"
)

// Plugin serves esb-bridge's CNI verbs. The zero value is ready to use.
type Plugin struct {
	// Stdout receives results and Stderr rollback reports; nil means the
	// process's own.
	Stdout, Stderr io.Writer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// BootID overrides the kernel's boot ID for the in-process IPAM store.
	BootID string
	// Delegate runs delegated IPAM plugins (ipam.type other than
	// esb-ipam); nil means executing them from CNI_PATH.
	Delegate Delegator
	// Guards keeps the anti-spoof guards; nil means the network's table
	// bridge (conf.TableFor: table bridge esb for the default network) of
	// the plugin's own (the node's) namespace.
	Guards nat.AntiSpoof
}

// forNetwork returns the plugin as it serves network: a copy whose nil
// Guards are bound to the network's own table, so a verb of one stack
// never reads or changes another stack's guards.
func (p *Plugin) forNetwork(network string) *Plugin {
	if p.Guards != nil {
		return p
	}
	q := *p
	q.Guards = nat.NewManagerFor(nil, conf.TableFor(network))
	return &q
}

// guards returns the anti-spoof tables the plugin works on.
func (p *Plugin) guards() nat.AntiSpoof {
	if p.Guards == nil {
		return nat.NewManager(nil)
	}
	return p.Guards
}

// Funcs returns the verbs for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

func (p *Plugin) stdout() io.Writer {
	if p.Stdout == nil {
		return os.Stdout
	}
	return p.Stdout
}

func (p *Plugin) stderr() io.Writer {
	if p.Stderr == nil {
		return os.Stderr
	}
	return p.Stderr
}

func (p *Plugin) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

func parse(stdin []byte) (*conf.BridgeNetConf, error) {
	nc, err := conf.ParseBridgeNetConf(stdin)
	if err != nil {
		return nil, ipamplugin.CNIError(err)
	}
	return nc, nil
}

// undoStack collects the inverse of each step of an ADD, run in reverse
// when a later step fails.
type undoStack []undoStep

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoStack) push(what string, fn func() error) { *u = append(*u, undoStep{what, fn}) }

// run undoes everything in reverse order. Failures are reported on w and
// attached to the error's details; the original error keeps its code.
func (u undoStack) run(cause error, w io.Writer) error {
	var failed []string
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i].fn(); err != nil {
			msg := fmt.Sprintf("rollback: %s: %v", u[i].what, err)
			fmt.Fprintln(w, "esb-bridge:", msg)
			failed = append(failed, msg)
		}
	}
	if len(failed) == 0 {
		return cause
	}
	te := asCNIError(cause)
	te.Details = strings.TrimPrefix(te.Details+"; "+strings.Join(failed, "; "), "; ")
	return te
}

func asCNIError(err error) *types.Error {
	var te *types.Error
	if errors.As(ipamplugin.CNIError(err), &te) {
		return te
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Add attaches the container. Everything is validated before anything is
// changed; a failure part-way undoes what was done, in reverse order.
func (p *Plugin) Add(args *skel.CmdArgs) (err error) {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	p = p.forNetwork(nc.Name)
	target, err := openTarget(args.Netns)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	h, br, err := hostBridge(nc.Bridge)
	if err != nil {
		return err
	}
	defer h.Close()
	var held map[netip.Prefix]bool
	if nc.IPAM != nil {
		if held, err = checkSubnetFree(h, nc.Bridge, br, nc.IPAM.Ranges()); err != nil {
			return err
		}
	}

	var undo undoStack
	defer func() {
		if err != nil {
			err = undo.run(err, p.stderr())
		}
	}()

	res, err := p.ipamAdd(nc, args, &undo)
	if err != nil {
		return err
	}
	ipv4, gws, err := addressesOf(res)
	if err != nil {
		return err
	}
	mac := MACFor(ipv4)

	br, err = ensureBridge(h, nc.Bridge, br, gws, held)
	if err != nil {
		return err
	}
	hostName := conf.VethName(args.ContainerID, args.IfName)
	host, err := addVeth(h, vethSpec{
		hostName:  hostName,
		ifName:    args.IfName,
		mac:       mac,
		mtu:       nc.MTU,
		bridge:    br,
		target:    target,
		isolation: nc.Isolation,
		alias:     conf.VethAlias{ContainerID: args.ContainerID, IfName: args.IfName, Created: p.now(), IPs: resultAddrs(res)}.String(),
	})
	if err != nil {
		return err
	}
	undo.push("delete veth "+hostName, func() error { return delLink(h, hostName) })
	// Before configureContainer brings the peer up: the host end has no
	// carrier yet, so the kernel has given it no IPv6 address or route.
	if err := disablePortIPv6(hostName); err != nil {
		fmt.Fprintf(p.stderr(), "esb-bridge: IPv6 stays on bridge port %s: %v\n", hostName, err)
	}

	if err := configureContainer(target, args.IfName, res); err != nil {
		return err
	}
	if nc.AntiSpoof {
		if err := p.addGuard(hostName, mac, resultAddrs(res), args); err != nil {
			return err
		}
		undo.push("remove anti-spoof guard of "+hostName, func() error { return p.removeGuardOf(hostName, nil) })
	}
	if err := enableForwarding(); err != nil {
		return err
	}

	res.Interfaces = []*current.Interface{
		{Name: nc.Bridge, Mac: br.Attrs().HardwareAddr.String()},
		{Name: hostName, Mac: host.Attrs().HardwareAddr.String()},
		{Name: args.IfName, Mac: mac.String(), Sandbox: args.Netns},
	}
	for _, ip := range res.IPs {
		ip.Interface = current.Int(2)
	}
	out, err := res.GetAsVersion(nc.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "convert result", err.Error())
	}
	return out.PrintTo(p.stdout())
}

// ipamAdd gets the attachment's addresses: in-process for esb-ipam,
// otherwise from the delegated plugin. A fresh allocation is undone on a
// later failure; one an earlier ADD made is left alone.
func (p *Plugin) ipamAdd(nc *conf.BridgeNetConf, args *skel.CmdArgs, undo *undoStack) (*current.Result, error) {
	if nc.IPAM != nil {
		id := ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}
		// A store created or reset since it was last seeded (its directory
		// wiped while workers run) first takes in the attachments the
		// anti-spoof elements show in use, so no address is handed out twice.
		a, existed, err := ipam.AddSeeded(nc.IPAM, p.BootID, id, p.now, func() ([]*ipam.Allocation, error) {
			return p.guardedAllocations(nc.IPAM, p.now(), nil)
		})
		if err != nil {
			return nil, ipamplugin.CNIError(err)
		}
		if !existed {
			undo.push("release addresses of "+id.String(), func() error { return ipam.Del(nc.IPAM, p.BootID, id) })
		}
		return ipamplugin.Result(nc.IPAM, a), nil
	}
	ctx := context.Background()
	res, err := p.delegateAdd(ctx, nc.IPAMType, nc.Raw)
	if err != nil {
		return nil, err
	}
	undo.push("delegated IPAM DEL", func() error { return p.delegateVerb(ctx, "DEL", nc.IPAMType, nc.Raw) })
	return res, nil
}

// addressesOf returns the IPv4 address of a result (required: the MAC and
// the anti-spoof element derive from it) and each address's gateway with
// the subnet's prefix length, for the bridge.
func addressesOf(res *current.Result) (netip.Addr, []netip.Prefix, error) {
	var v4 netip.Addr
	var gws []netip.Prefix
	for _, ip := range res.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		if a.Is4() && !v4.IsValid() {
			v4 = a
		}
		if gw, ok := netip.AddrFromSlice(ip.Gateway); ok {
			ones, _ := ip.Address.Mask.Size()
			gws = append(gws, netip.PrefixFrom(gw.Unmap(), ones))
		}
	}
	if !v4.IsValid() {
		return v4, nil, types.NewError(types.ErrInvalidNetworkConfig, "IPAM result has no IPv4 address; esb-bridge needs one", "")
	}
	if len(gws) == 0 {
		return v4, nil, types.NewError(types.ErrInvalidNetworkConfig, "IPAM result has no gateway; esb-bridge puts the gateway on the bridge", "")
	}
	return v4, gws, nil
}
