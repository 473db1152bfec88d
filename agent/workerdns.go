package agent

import (
	"errors"
	"io/fs"
	"strings"

	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/docker/docker/libnetwork/resolvconf"

	"github.com/edge-serverless-box/esbnet/agent/resolver"
	"github.com/edge-serverless-box/esbnet/conf"
)

// workerDNS is the running resolver and the resolv.conf workers get.
type workerDNS struct {
	srv        *resolver.Server
	resolvConf string
}

// startWorkerDNS starts the workers' resolver on the gateway, writes the
// workers' resolv.conf beside the state file and returns the NAT rules
// with the udp+tcp 53 forwards to the resolver added. hostname names the
// worker at an address, for its queries of its own name. With dns-port 0
// it returns rules unchanged and no resolver.
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
	dir := journalDir(c.StateFile)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("make state directory: %w", err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := writeFileAtomic(path, []byte(conf.ResolvConf(rules.Gateway)), 0o644); err != nil {
		return nil, nil, fmt.Errorf("write workers' resolv.conf: %w", err)
	}
	srv, err := resolver.Start(resolver.Config{Listen: listen, Gateway: rules.Gateway, Subnet: rules.Subnet,
		Services: svcs, Upstream: upstream, Hostname: hostname, Log: log})
	if err != nil {
		return nil, nil, fmt.Errorf("dns-port %d: start the workers' resolver on %s: %w", c.DNSPort, listen, err)
	}
	log.Info("workers' resolver serving", "listen", listen.String(), "services", svcs.String(),
		"egress", rules.Egress, "upstream", c.DNSUpstream)
	return &workerDNS{srv: srv, resolvConf: path}, withDNS, nil
}

// workerEtcFiles writes the files every worker gets beside the state file
// and sets them in cfg: /etc/hosts (conf.WorkerHosts) and, where no
// resolver serves the workers, /etc/resolv.conf from the node's (nodeResolv,
// see nodeResolvConf). Without a state file workers keep their images'
// own files.
func workerEtcFiles(c DaemonConfig, dns *workerDNS, nodeResolv string, cfg *Config) error {
	dir := journalDir(c.StateFile)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make state directory: %w", err)
	}
	cfg.Hosts = filepath.Join(dir, "hosts")
	if err := writeFileAtomic(cfg.Hosts, []byte(conf.WorkerHosts), 0o644); err != nil {
		return fmt.Errorf("write workers' hosts file: %w", err)
	}
	if cfg.ResolvConf = dns.resolvConfPath(); cfg.ResolvConf != "" {
		return nil
	}
	b, err := os.ReadFile(nodeResolv)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the node's resolv.conf for the workers: %w", err)
	}
	cfg.ResolvConf = filepath.Join(dir, "resolv.conf")
	if err := writeFileAtomic(cfg.ResolvConf, nodeResolvConf(b), 0o644); err != nil {
		return fmt.Errorf("write workers' resolv.conf: %w", err)
	}
	return nil
}

// nodeResolvConf is the node's resolv.conf as a worker with no resolver
// of the agent's gets it, the way Docker and the kubelet give a container
// the host's: its search list and options, and its nameservers but those on
// loopback, which the worker's namespace cannot reach. No default servers
// are added in their place (Docker adds public ones; an edge box may not
// reach them). Parsing is Docker's (libnetwork/resolvconf).
func nodeResolvConf(node []byte) []byte {
	var ns []string
	for _, s := range resolvconf.GetNameservers(node, resolvconf.IP) {
		if a, err := netip.ParseAddr(s); err == nil && !a.IsLoopback() {
			ns = append(ns, s)
		}
	}
	var b strings.Builder
	for _, s := range ns {
		b.WriteString("nameserver " + s + "\n")
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

func (w *workerDNS) resolvConfPath() string {
	if w == nil {
		return ""
	}
	return w.resolvConf
}
