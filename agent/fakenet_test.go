package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/edge-serverless-box/esbnet/shim"
)

// fakeNetwork hands out 10.88.0.x and keeps the "cache" of results.
type fakeNetwork struct {
	mu        sync.Mutex
	next      int
	attached  map[string]*current.Result
	attachErr error
	gcLive    []string
	detached  []string
	broken    map[string]bool // attachments whose interface vanished
	note      func(string)    // records Detach in the runtime's call log
}

var _ shim.Network = (*fakeNetwork)(nil)

func newFakeNetwork() *fakeNetwork {
	return &fakeNetwork{next: 2, attached: map[string]*current.Result{}, broken: map[string]bool{}}
}

func (n *fakeNetwork) Attach(_ context.Context, a shim.Attachment) (*current.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attachErr != nil {
		return nil, n.attachErr
	}
	if a.NetNS == "" {
		return nil, fmt.Errorf("attach %s without a netns", a.ContainerID)
	}
	ip := net.IPv4(10, 88, 0, byte(n.next))
	n.next++
	res := &current.Result{CNIVersion: "1.1.0", IPs: []*current.IPConfig{{Address: net.IPNet{IP: ip, Mask: net.CIDRMask(16, 32)}}}}
	n.attached[a.ContainerID] = res
	if n.note != nil {
		n.note("attach " + a.ContainerID)
	}
	return res, nil
}

func (n *fakeNetwork) Detach(_ context.Context, a shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.attached, a.ContainerID)
	n.detached = append(n.detached, a.ContainerID)
	if n.note != nil {
		n.note("detach " + a.ContainerID)
	}
	return nil
}

func (n *fakeNetwork) Check(_ context.Context, a shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.attached[a.ContainerID] == nil {
		return fmt.Errorf("not attached")
	}
	return nil
}

func (n *fakeNetwork) GC(_ context.Context, live []shim.Attachment) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	keep := map[string]bool{}
	n.gcLive = nil
	for _, a := range live {
		keep[a.ContainerID] = true
		n.gcLive = append(n.gcLive, a.ContainerID)
	}
	for id := range n.attached {
		if !keep[id] {
			delete(n.attached, id)
		}
	}
	return nil
}

func (n *fakeNetwork) Status(context.Context) error { return nil }

func (n *fakeNetwork) Cached(_ context.Context, a shim.Attachment) (*current.Result, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.attached[a.ContainerID], nil
}

func (n *fakeNetwork) Intact(_ context.Context, a shim.Attachment, ip netip.Addr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	res := n.attached[a.ContainerID]
	if res == nil || n.broken[a.ContainerID] {
		return fmt.Errorf("no interface")
	}
	if got, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4()); got != ip {
		return fmt.Errorf("address %s, not %s", got, ip)
	}
	return nil
}

func (n *fakeNetwork) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.attached)
}

func exhaustedErr() error {
	return fmt.Errorf("attach: %w", types.NewError(100, "address range exhausted", ""))
}

// bridgeFullErr is esb-bridge's ADD on a bridge that holds 1,023 ports.
func bridgeFullErr() error {
	return fmt.Errorf("attach: %w", types.NewError(103, "bridge esb-cni0 is full: a Linux bridge holds at most 1023 ports", ""))
}

// fakeNetNSes pins nothing; it remembers paths.
type fakeNetNSes struct {
	mu  sync.Mutex
	ids map[string]bool
	// pinnedFrom is the runtime's namespace each Pin was given.
	pinnedFrom map[string]string
}

func newFakeNetNSes() *fakeNetNSes {
	return &fakeNetNSes{ids: map[string]bool{}, pinnedFrom: map[string]string{}}
}

func (f *fakeNetNSes) Create(id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ids[id] {
		return "", shim.ErrNetNSExists
	}
	f.ids[id] = true
	return f.Path(id), nil
}

// Pin pins the runtime's namespace: in the fake, any path the runtime
// gave (shimfake's Start reports /proc/4242/ns/net-<id>).
func (f *fakeNetNSes) Pin(id, from string) (string, error) {
	if from == "" {
		return "", fmt.Errorf("pin %s: no namespace", id)
	}
	path, err := f.Create(id)
	if err == nil {
		f.mu.Lock()
		f.pinnedFrom[id] = from
		f.mu.Unlock()
	}
	return path, err
}

func (f *fakeNetNSes) Remove(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, id)
	delete(f.pinnedFrom, id)
	return nil
}

// from is the runtime's namespace the pin of id was made from, "" when
// it was not made by Pin.
func (f *fakeNetNSes) from(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pinnedFrom[id]
}

func (f *fakeNetNSes) Path(id string) string { return "/run/netns/esb-" + id }

func (f *fakeNetNSes) List() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.ids {
		out = append(out, id)
	}
	return out, nil
}

func (f *fakeNetNSes) Exists(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id]
}

func (f *fakeNetNSes) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}
