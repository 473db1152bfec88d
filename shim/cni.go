package shim

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/edge-serverless-box/esbnet/conf"
)

// DefaultIfName is the worker's interface.
const DefaultIfName = "eth0"

// Attachment is one worker's attachment to the network.
type Attachment struct {
	// ContainerID is the runtime's container ID (the CNI container ID).
	ContainerID string
	// NetNS is the path of the worker's network namespace. DEL and GC do
	// not need it to exist.
	NetNS string
	// IfName is the interface inside the namespace; "" means eth0.
	IfName string
}

func (a Attachment) ifName() string {
	if a.IfName == "" {
		return DefaultIfName
	}
	return a.IfName
}

// Network attaches workers to the esb network. Implementations run the
// CNI plugins; tests of code built on it use a fake.
type Network interface {
	// Attach runs ADD and returns the result. Attaching an attachment that
	// is already attached returns its addresses again.
	Attach(ctx context.Context, a Attachment) (*current.Result, error)
	// Detach runs DEL. It is idempotent and succeeds when the namespace is gone.
	Detach(ctx context.Context, a Attachment) error
	// Check runs CHECK against the cached result of the ADD.
	Check(ctx context.Context, a Attachment) error
	// GC runs GC with the attachments that are still live: everything
	// else the plugins hold (addresses, veths, rules) is released.
	GC(ctx context.Context, live []Attachment) error
	// Status runs STATUS: nil when an Attach can succeed.
	Status(ctx context.Context) error
	// Cached returns the result of the attachment's last ADD as the runtime
	// cached it, without running a plugin; nil when there is none.
	Cached(ctx context.Context, a Attachment) (*current.Result, error)
	// Intact reports whether the attachment's interface is still in its
	// namespace, up, with address ip: a cheap look through netlink (no
	// plugin runs), for adopting thousands of workers quickly.
	Intact(ctx context.Context, a Attachment, ip netip.Addr) error
}

// CNIOptions says where the network's configuration and plugins are.
type CNIOptions struct {
	// ConfDir holds the conflist (default /etc/cni/net.d).
	ConfDir string
	// Network is the network's name (default esb).
	Network string
	// BinDirs is CNI_PATH (default /opt/cni/bin).
	BinDirs []string
	// CacheDir is libcni's result cache (default /var/lib/cni).
	CacheDir string
}

// CNI runs the plugins of one network through libcni, exactly as a
// container runtime does: the conflist from the configuration directory,
// the plugins from CNI_PATH, results cached for CHECK and DEL.
type CNI struct {
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

var _ Network = (*CNI)(nil)

// NewCNI loads the network's conflist. It fails when the conflist is
// missing or does not parse.
func NewCNI(o CNIOptions) (*CNI, error) {
	if o.ConfDir == "" {
		o.ConfDir = filepath.Dir(conf.ConflistPath)
	}
	if o.Network == "" {
		o.Network = conf.NetworkName
	}
	if len(o.BinDirs) == 0 {
		o.BinDirs = []string{conf.CNIBinDir}
	}
	if o.CacheDir == "" {
		o.CacheDir = "/var/lib/cni"
	}
	list, err := libcni.LoadNetworkConf(o.ConfDir, o.Network)
	if err != nil {
		return nil, fmt.Errorf("load network %q from %s: %w", o.Network, o.ConfDir, err)
	}
	// An explicit exec: libcni sets its default lazily without a lock, a
	// data race when attachments run in parallel.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &CNI{list: list, cni: libcni.NewCNIConfigWithCacheDir(o.BinDirs, o.CacheDir, exec)}, nil
}

// CNIPathFromEnv splits $CNI_PATH, or returns nil when it is unset.
func CNIPathFromEnv() []string {
	p := os.Getenv("CNI_PATH")
	if p == "" {
		return nil
	}
	return strings.Split(p, string(os.PathListSeparator))
}

func (c *CNI) rt(a Attachment) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: a.ContainerID, NetNS: a.NetNS, IfName: a.ifName()}
}

// Attach implements Network.
func (c *CNI) Attach(ctx context.Context, a Attachment) (*current.Result, error) {
	r, err := c.cni.AddNetworkList(ctx, c.list, c.rt(a))
	if err != nil {
		return nil, fmt.Errorf("attach %s to network %s: %w", a.ContainerID, c.list.Name, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("attach %s: convert result: %w", a.ContainerID, err)
	}
	return res, nil
}

// Detach implements Network.
func (c *CNI) Detach(ctx context.Context, a Attachment) error {
	if err := c.cni.DelNetworkList(ctx, c.list, c.rt(a)); err != nil {
		return fmt.Errorf("detach %s from network %s: %w", a.ContainerID, c.list.Name, err)
	}
	return nil
}

// Check implements Network.
func (c *CNI) Check(ctx context.Context, a Attachment) error {
	if err := c.cni.CheckNetworkList(ctx, c.list, c.rt(a)); err != nil {
		return fmt.Errorf("check %s on network %s: %w", a.ContainerID, c.list.Name, err)
	}
	return nil
}

// GC implements Network.
func (c *CNI) GC(ctx context.Context, live []Attachment) error {
	valid := make([]types.GCAttachment, 0, len(live))
	for _, a := range live {
		valid = append(valid, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.ifName()})
	}
	if err := c.cni.GCNetworkList(ctx, c.list, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		return fmt.Errorf("gc network %s: %w", c.list.Name, err)
	}
	return nil
}

// Status implements Network.
func (c *CNI) Status(ctx context.Context) error {
	if err := c.cni.GetStatusNetworkList(ctx, c.list); err != nil {
		return fmt.Errorf("status of network %s: %w", c.list.Name, err)
	}
	return nil
}

// Cached returns the result of the attachment's last ADD from libcni's
// cache, without running a plugin, or nil when there is none.
func (c *CNI) Cached(_ context.Context, a Attachment) (*current.Result, error) {
	r, err := c.cni.GetNetworkListCachedResult(c.list, c.rt(a))
	if err != nil || r == nil {
		return nil, err
	}
	return current.NewResultFromResult(r)
}

// Intact implements Network.
func (c *CNI) Intact(_ context.Context, a Attachment, ip netip.Addr) error {
	target, err := ns.GetNS(a.NetNS)
	if err != nil {
		return fmt.Errorf("open netns of %s: %w", a.ContainerID, err)
	}
	defer func() { _ = target.Close() }()
	h, err := netlinksafe.NewHandleAt(vnetns.NsHandle(int(target.Fd())))
	if err != nil {
		return fmt.Errorf("netlink in netns of %s: %w", a.ContainerID, err)
	}
	defer h.Close()
	link, err := h.LinkByName(a.ifName())
	if err != nil {
		return fmt.Errorf("interface %s of %s: %w", a.ifName(), a.ContainerID, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("interface %s of %s is down", a.ifName(), a.ContainerID)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("addresses of %s: %w", a.ContainerID, err)
	}
	for _, ad := range addrs {
		if got, ok := netip.AddrFromSlice(ad.IP); ok && got.Unmap() == ip {
			return nil
		}
	}
	return fmt.Errorf("interface %s of %s lacks %s", a.ifName(), a.ContainerID, ip)
}
