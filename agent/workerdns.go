package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/libnetwork/resolvconf"

	"github.com/edge-serverless-box/esbnet/agent/resolver"
	"github.com/edge-serverless-box/esbnet/conf"
)

// workerDNS is the running resolver, on the gateway.
type workerDNS struct {
	srv     *resolver.Server
	gateway netip.Addr
}

// startWorkerDNS starts the workers' resolver on the gateway and returns
// the NAT rules with the udp+tcp 53 forwards to the resolver added.
// hostname names the worker at an address, for its queries of its own
// name. With dns-port 0 it returns rules unchanged and no resolver.
func startWorkerDNS(c DaemonConfig, rules *conf.NATRules, hostname func(netip.Addr) string, log *slog.Logger) (*workerDNS, *conf.NATRules, error) {
	if c.DNSPort == 0 {
		return nil, rules, nil
	}
	svcs, err := c.CheckServices(rules)
	if err != nil {
		return nil, nil, err
	}
	listen := netip.AddrPortFrom(rules.Gateway, uint16(c.DNSPort))
	withDNS, err := rules.WithResolver(listen)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", c.NATRules, err)
	}
	var upstream netip.AddrPort
	if c.DNSUpstream != "" {
		upstream = netip.MustParseAddrPort(c.DNSUpstream) // validated
	}
	srv, err := resolver.Start(resolver.Config{Listen: listen, Gateway: rules.Gateway, Subnet: rules.Subnet,
		Services: svcs, Upstream: upstream, Hostname: hostname, Log: log})
	if err != nil {
		return nil, nil, fmt.Errorf("dns-port %d: start the workers' resolver on %s: %w", c.DNSPort, listen, err)
	}
	log.Info("workers' resolver serving", "listen", listen.String(), "services", svcs.String(),
		"egress", rules.Egress, "upstream", c.DNSUpstream)
	return &workerDNS{srv: srv, gateway: rules.Gateway}, withDNS, nil
}

// workerResolvConf writes the workers' resolv.conf beside the state file
// and sets it in cfg: the resolver's where one serves them, else the
// node's (nodeResolv, see nodeResolvConf), returned to be kept current.
// Their /etc/hosts and /etc/hostname are each worker's own (workerEtc).
// Without a state file workers keep their images' own files.
func workerResolvConf(c DaemonConfig, dns *workerDNS, nodeResolvPath string, cfg *Config) (*nodeResolv, error) {
	dir := journalDir(c.StateFile)
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make state directory: %w", err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if dns != nil {
		if err := writeFileAtomic(path, []byte(conf.ResolvConf(dns.gateway)), 0o644); err != nil {
			return nil, fmt.Errorf("write workers' resolv.conf: %w", err)
		}
		cfg.ResolvConf = path
		return nil, nil
	}
	r := &nodeResolv{node: nodeResolvPath, copy: path}
	if wrote, err := r.refresh(); err != nil || !wrote {
		return nil, err // no node file: the images' own
	}
	cfg.ResolvConf = r.copy
	return r, nil
}

// nodeResolv is the workers' copy of the node's resolv.conf. A node whose
// file changes (DHCP, a VPN) gets its new servers to the workers made
// after the change; workers made before keep theirs, as with Docker.
type nodeResolv struct {
	node, copy string
	size       int64     // of the node's file last copied
	mod        time.Time // its modification time
}

// nodeResolvInterval is how often the agent looks at the node's file.
const nodeResolvInterval = 5 * time.Second

// refresh writes the copy again (one rename) when the node's file changed
// since the last copy, and says whether it did. A node file gone keeps the
// last copy.
func (r *nodeResolv) refresh() (bool, error) {
	fi, err := os.Stat(r.node)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("the node's resolv.conf for the workers: %w", err)
	}
	if fi.Size() == r.size && fi.ModTime().Equal(r.mod) {
		return false, nil
	}
	b, err := os.ReadFile(r.node)
	if err != nil {
		return false, fmt.Errorf("read the node's resolv.conf for the workers: %w", err)
	}
	if err := writeFileAtomic(r.copy, nodeResolvConf(b), 0o644); err != nil {
		return false, fmt.Errorf("write workers' resolv.conf: %w", err)
	}
	r.size, r.mod = fi.Size(), fi.ModTime()
	return true, nil
}

// keep refreshes the copy every interval until ctx ends.
func (r *nodeResolv) keep(ctx context.Context, every time.Duration, log *slog.Logger) {
	everyUntil(ctx, every, func() {
		if wrote, err := r.refresh(); err != nil {
			log.Warn("workers' resolv.conf not refreshed", "err", err)
		} else if wrote {
			log.Info("the node's resolv.conf changed; workers made from now on get it", "node", r.node)
		}
	})
}

// nodeResolvConf is the node's resolv.conf as a worker with no resolver
// of the agent's gets it, the way Docker and the kubelet give a container
// the host's: its search list and options, and its nameservers but those on
// loopback, which the worker's namespace cannot reach. No default servers
// are added in their place (Docker adds public ones; an edge box may not
// reach them). Parsing is Docker's (libnetwork/resolvconf).
func nodeResolvConf(node []byte) []byte {
	var b strings.Builder
	for _, s := range resolvconf.GetNameservers(node, resolvconf.IP) {
		if a, err := netip.ParseAddr(s); err == nil && !a.IsLoopback() {
			b.WriteString("nameserver " + s + "\n")
		}
	}
	if search := resolvconf.GetSearchDomains(node); len(search) > 0 {
		b.WriteString("search " + strings.Join(search, " ") + "\n")
	}
	if opts := resolvconf.GetOptions(node); len(opts) > 0 {
		b.WriteString("options " + strings.Join(opts, " ") + "\n")
	}
	return []byte(b.String())
}

// writeFileAtomic replaces path with data in one rename, so a worker
// being created never bind-mounts half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), mode)
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
	}
	return werr
}
