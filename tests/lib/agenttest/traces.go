package agenttest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/ipam"
)

// Veths returns the esb veths in netns (the node): name -> alias; with
// a bridge, only those on it or on none (another stack's are not listed).
func Veths(netns ns.NetNS, bridge string) (map[string]string, error) {
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(netns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("netlink handle in the node: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links of the node: %w", err)
	}
	own := -1
	for _, l := range links {
		if l.Attrs().Name == bridge {
			own = l.Attrs().Index
		}
	}
	out := map[string]string{}
	for _, l := range links {
		if m := l.Attrs().MasterIndex; bridge != "" && m != 0 && m != own {
			continue // another stack's
		}
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "esb") {
			out[l.Attrs().Name] = l.Attrs().Alias
		}
	}
	return out, nil
}

// Allocations returns the allocations of network's IPAM store in the
// world's IPAM directory: attachment -> its addresses, comma-separated.
// No store holds none.
func (d Dirs) Allocations(network string) (map[string]string, error) {
	if _, err := os.Stat(ipam.DBPath(d.IPAMDir(), network)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	s, err := ipam.OpenBolt(d.IPAMDir(), network, ipam.BoltOptions{LockWait: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the IPAM store: %w", err)
	}
	out := map[string]string{}
	err = s.View(func(tx ipam.Txn) error {
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			var ips []string
			for _, p := range a.IPs {
				ips = append(ips, p.Addr().String())
			}
			out[a.ID.String()] = strings.Join(ips, ",")
			return nil
		})
	})
	return out, errors.Join(err, s.Close())
}
