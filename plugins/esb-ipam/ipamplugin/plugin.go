// Package ipamplugin serves esb-ipam's CNI verbs over package ipam's
// allocator: it parses the network configuration, turns allocations into
// CNI results and package ipam's errors into CNI errors with the codes of
// conf. esb-bridge, which allocates in-process, uses the same mapping. The
// plugin's main only wires Plugin to skel.
package ipamplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
)

// Plugin serves esb-ipam's CNI verbs. The zero value is ready to use.
type Plugin struct {
	// Stdout receives results; nil means os.Stdout.
	Stdout io.Writer
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// BootID overrides the kernel's boot ID (tests only need it).
	BootID string
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

func (p *Plugin) now() time.Time {
	if p.Now == nil {
		return time.Now()
	}
	return p.Now()
}

func parse(stdin []byte) (*conf.IPAMNetConf, error) {
	nc, err := conf.ParseIPAMNetConf(stdin)
	if err != nil {
		return nil, CNIError(err)
	}
	return nc, nil
}

// Add allocates the attachment's addresses and prints the result.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	a, _, err := ipam.Add(nc.IPAM, p.BootID, ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}, p.now)
	if err != nil {
		return CNIError(err)
	}
	res, err := Result(nc.IPAM, a).GetAsVersion(nc.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "convert result", err.Error())
	}
	return res.PrintTo(p.stdout())
}

// Del releases the attachment's addresses; an unknown attachment is success.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	return CNIError(ipam.Del(nc.IPAM, p.BootID, ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}))
}

// Check fails when the attachment holds no address or holds other addresses
// than the previous result says.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	id := ipam.AttachmentID{ContainerID: args.ContainerID, IfName: args.IfName}
	a, err := ipam.Get(nc.IPAM, p.BootID, id)
	if err != nil {
		return CNIError(err)
	}
	if a == nil {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("attachment %s holds no address in network %q", id, nc.Name), "")
	}
	prev, err := PrevResult(nc.Raw)
	if err != nil || prev == nil {
		return err
	}
	for _, ip := range a.IPs {
		found := false
		for _, pip := range prev.IPs {
			if pip.Address.IP.Equal(ip.Addr().AsSlice()) {
				found = true
			}
		}
		if !found {
			return types.NewError(conf.CodeDrift, fmt.Sprintf("attachment %s holds %s, which prevResult does not list", id, ip), "")
		}
	}
	return nil
}

// GC releases every allocation not in cni.dev/valid-attachments that is
// older than the configured grace period.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	valid := make(map[ipam.AttachmentID]bool, len(nc.ValidAttachments))
	for _, v := range nc.ValidAttachments {
		valid[ipam.AttachmentID{ContainerID: v.ContainerID, IfName: v.IfName}] = true
	}
	_, err = ipam.Collect(nc.IPAM, p.BootID, valid, p.now)
	return CNIError(err)
}

// Status fails with code 50 when no ADD can succeed: a range is exhausted or
// the store cannot be opened or read.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	nc, err := parse(args.StdinData)
	if err != nil {
		return err
	}
	err = ipam.Ready(nc.IPAM, p.BootID)
	switch {
	case err == nil:
		return nil
	case ipam.IsTryAgain(err):
		return CNIError(err)
	default:
		return types.NewError(types.ErrPluginNotAvailable, "esb-ipam cannot allocate", err.Error())
	}
}

// PrevResult returns the prevResult of a network configuration as the
// current result type, or nil when there is none. Errors are CNI errors
// with code 6.
func PrevResult(raw []byte) (*current.Result, error) {
	var pc types.PluginConf
	if err := json.Unmarshal(raw, &pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	if err := version.ParsePrevResult(&pc); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "decode prevResult", err.Error())
	}
	if pc.PrevResult == nil {
		return nil, nil
	}
	prev, err := current.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "convert prevResult", err.Error())
	}
	return prev, nil
}

// Result renders an allocation as a CNI result for cfg.
func Result(cfg *conf.IPAM, a *ipam.Allocation) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	for _, p := range a.IPs {
		ipc := &current.IPConfig{Address: ipNet(p)}
		for _, r := range cfg.Ranges() {
			if r.Subnet.Contains(p.Addr()) {
				ipc.Gateway = r.Gateway.AsSlice()
			}
		}
		res.IPs = append(res.IPs, ipc)
	}
	for _, r := range cfg.Routes {
		route := &types.Route{Dst: ipNet(r.Dst)}
		if r.GW.IsValid() {
			route.GW = r.GW.AsSlice()
		}
		res.Routes = append(res.Routes, route)
	}
	return res
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// CNIError maps an error of package ipam or of conf to a CNI error with
// the spec's code; nil stays nil and a *types.Error passes through.
func CNIError(err error) error {
	var te *types.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return te
	case conf.IsDecodeError(err):
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	case conf.IsFieldError(err):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case ipam.IsTryAgain(err):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case ipam.IsExhausted(err):
		return types.NewError(conf.CodeExhausted, err.Error(), "")
	case errors.Is(err, ipam.ErrCorrupt):
		return types.NewError(conf.CodeCorrupt, err.Error(), "")
	default:
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
}
