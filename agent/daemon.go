package agent

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/containernetworking/cni/libcni"
	"github.com/docker/docker/libnetwork/resolvconf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/confdir"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/shim/docker"
)

// Daemon is esb-agent assembled: NewDaemon builds it, Serve serves the
// API until its context ends, Close releases what NewDaemon opened (the
// NAT watch is stopped and joined there).
type Daemon struct {
	cfg     DaemonConfig
	log     *slog.Logger
	agent   *Agent
	live    atomic.Pointer[Agent] // agent, for the resolver, which starts before it
	rt      shim.Runtime
	reg     *prometheus.Registry
	dns     *workerDNS // the workers' resolver; nil without one
	closers []func()   // run in reverse order by Close
}

// Run is esb-agent: it writes the conflist when the network has none,
// applies and keeps the NAT rules, connects to the runtime, reconciles,
// follows the runtime's events (Agent.Watch), serves the API until ctx
// ends, then stops serving. Workers outlive it: a restarted agent adopts
// them.
func Run(ctx context.Context, c DaemonConfig, log *slog.Logger) error {
	d, err := NewDaemon(ctx, c, log)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Serve(ctx)
}

// NewDaemon writes the conflist when the network has none, applies the
// NAT rules and starts keeping them, connects to the runtime, opens the
// records and reconciles. On error it has released what it opened.
func NewDaemon(ctx context.Context, c DaemonConfig, log *slog.Logger) (_ *Daemon, err error) {
	d := &Daemon{cfg: c, log: log}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	stack, err := conf.StackOf(c.Network)
	if err != nil {
		return nil, err
	}
	if err := ensureConflist(c, stack, log); err != nil {
		return nil, err
	}
	others, err := otherStacks(c)
	if err != nil {
		return nil, err
	}
	warnPrivateMountNS(log)
	natMgr, err := d.startNAT(ctx, stack, others)
	if err != nil {
		return nil, err
	}
	rt, closeRT, err := newRuntime(c)
	if err != nil {
		return nil, err
	}
	d.rt = rt
	d.closers = append(d.closers, closeRT)
	network, err := shim.NewCNI(shim.CNIOptions{ConfDir: c.CNIConfDir, Network: c.Network,
		BinDirs: splitList(c.CNIBinDirs, ":"), CacheDir: c.CNICacheDir})
	if err != nil {
		return nil, err
	}
	recs, err := OpenRecords(c.StateFile)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { _ = recs.Close() })
	d.reg = prometheus.NewRegistry()
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg := agentConfig(c)
	nodeResolv, err := workerResolvConf(c, d.dns, resolvconf.Path(), &cfg)
	if err != nil {
		return nil, err
	}
	if nodeResolv != nil {
		d.goUntilClose(ctx, func(ctx context.Context) { nodeResolv.keep(ctx, nodeResolvInterval, log) })
	}
	d.agent = New(Options{Runtime: rt, Network: network, NetNSes: shim.NetNSes{Dir: c.NetNSDir, Prefix: stack.NetNSPrefix}, Log: log, Records: recs,
		Metrics: NewMetrics(d.reg), Config: cfg})
	d.live.Store(d.agent)
	d.reg.MustRegister(newNodeCollector(d.agent, natMgr, networkCapacity(c)))
	if err := rt.Ping(ctx); err != nil {
		return nil, fmt.Errorf("runtime %s does not answer: %w", rt.Name(), err)
	}
	if _, err := d.agent.Reconcile(ctx); err != nil {
		log.Error("reconcile left errors", "err", err)
	}
	return d, nil
}

// workerHostname is the host name of the worker at ip, for the resolver:
// "" for an address no worker has, or before the agent exists.
func (d *Daemon) workerHostname(ip netip.Addr) string {
	if a := d.live.Load(); a != nil {
		return a.table.hostnameAt(ip)
	}
	return ""
}

// agentConfig is the Agent's part of the daemon's configuration.
func agentConfig(c DaemonConfig) Config {
	return Config{Port: c.Port, Network: c.Network, ReadyTimeout: c.ReadyTimeout, StopGrace: c.StopGrace,
		MaxWorkers: c.MaxWorkers, MaxParallel: c.MaxParallel, PoolMinIdle: c.PoolMinIdle, ShimGroupSize: c.ShimGroupSize,
		DefaultMemoryBytes: c.DefaultMemory, LogDir: c.LogDir, ReadOnlyRootfs: c.ReadOnlyRootfs, ImagePullPolicy: c.ImagePullPolicy,
		RuntimeTimeout: c.RuntimeTimeout, StateDir: journalDir(c.StateFile)}
}

// startNAT applies the NAT rules, when there are any, and keeps them in a
// goroutine that runs until ctx ends or Close, which joins it.
func (d *Daemon) startNAT(ctx context.Context, stack conf.Stack, others []netip.Prefix) (nat.DNAT, error) {
	if d.cfg.NATRules == "" {
		return nil, nil
	}
	rules, err := natfile.Load(d.cfg.NATRules)
	if err != nil {
		return nil, err
	}
	if stack.Network != conf.NetworkName && rules.Bridge != stack.Bridge {
		return nil, fmt.Errorf("invalid nat-rules %s: bridge %s is not network %s's bridge %s", d.cfg.NATRules, rules.Bridge, stack.Network, stack.Bridge)
	}
	rules.Others = others
	if d.dns, rules, err = startWorkerDNS(d.cfg, rules, d.workerHostname, d.log); err != nil {
		return nil, err
	}
	if d.dns != nil {
		srv := d.dns.srv
		d.closers = append(d.closers, func() { _ = srv.Close() })
	}
	var m nat.DNAT = nat.NewManagerFor(nil, stack.Table)
	if _, err := m.Apply(ctx, rules); err != nil {
		return nil, fmt.Errorf("apply NAT rules: %w", err)
	}
	d.goUntilClose(ctx, func(ctx context.Context) {
		_ = m.Watch(ctx, rules, d.cfg.NATInterval, func(e nat.Event) {
			if e.Err != nil {
				d.log.Error("NAT repair failed", "trigger", e.Trigger, "err", e.Err)
				return
			}
			d.log.Info("NAT table repaired", "trigger", e.Trigger, "change", e.Change.String(), "took", e.Took)
		})
	})
	return m, nil
}

// goUntilClose runs f in a goroutine until ctx ends or Close, which
// cancels its context and waits for it.
func (d *Daemon) goUntilClose(ctx context.Context, f func(context.Context)) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(ctx)
	}()
	d.closers = append(d.closers, func() { stop(); <-done })
}

// Close stops the NAT watch and the node resolv.conf's and waits for them,
// closes the records and the runtime's client. Workers keep running.
func (d *Daemon) Close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// journalDir is where the agent journals creations in flight: beside its
// state file ("" when it keeps none).
func journalDir(stateFile string) string {
	if stateFile == "" {
		return ""
	}
	return filepath.Dir(stateFile)
}

func newRuntime(c DaemonConfig) (shim.Runtime, func(), error) {
	switch c.Runtime {
	case "containerd":
		if err := checkExecutable("runc-binary", c.RuncBinary); err != nil {
			return nil, nil, err
		}
		rt, err := containerd.New(containerd.Options{Address: c.ContainerdAddress, Namespace: c.ContainerdNamespace,
			PlainHTTP: splitList(c.PlainHTTPRegistries, ","), Snapshotter: c.Snapshotter, RuncBinary: c.RuncBinary})
		if err != nil {
			return nil, nil, err
		}
		return rt, func() { _ = rt.Close() }, nil
	case "docker":
		rt, err := docker.New(docker.Options{Host: c.DockerHost, Namespace: c.DockerNamespace})
		if err != nil {
			return nil, nil, err
		}
		return rt, func() { _ = rt.Close() }, nil
	default:
		return nil, nil, fmt.Errorf("runtime %q is not supported by this build", c.Runtime)
	}
}

// ensureConflist writes the default conflist when the conf dir has no
// configuration for the default network; another stack's network must
// have its own (its subnet is the operator's choice).
func ensureConflist(c DaemonConfig, stack conf.Stack, log *slog.Logger) error {
	if _, err := shim.NewCNI(shim.CNIOptions{ConfDir: c.CNIConfDir, Network: c.Network}); err == nil {
		return nil
	}
	path := filepath.Join(c.CNIConfDir, stack.Conflist)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists but does not define network %q", path, c.Network)
	}
	if stack.Network != conf.NetworkName {
		return fmt.Errorf("network %s has no configuration in %s: write one with its own subnet (esbctl conflist -network %s -subnet <cidr> -o %s)",
			stack.Network, c.CNIConfDir, stack.Network, path)
	}
	b, err := conf.DefaultConflist().Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.CNIConfDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	log.Info("wrote the default conflist", "path", path)
	return nil
}

// otherStacks returns the subnets of the other stacks configured in the
// CNI configuration directory, for the NAT table to keep them apart; a
// stack with the network's bridge or an overlapping subnet stops the
// agent with a message naming both.
func otherStacks(c DaemonConfig) ([]netip.Prefix, error) {
	nets, err := confdir.Networks(c.CNIConfDir)
	if err != nil {
		return nil, err
	}
	return confdir.Others(c.Network, nets)
}

// networkCapacity returns how many addresses the network's esb-ipam range
// can hand out, or 0 when the conflist does not use esb-ipam.
func networkCapacity(c DaemonConfig) uint64 {
	list, err := libcni.LoadNetworkConf(c.CNIConfDir, c.Network)
	if err != nil {
		return 0
	}
	for _, p := range list.Plugins {
		nc, err := conf.ParseBridgeNetConf(p.Bytes)
		if err != nil || nc.IPAM == nil {
			continue
		}
		var n uint64
		for _, r := range nc.IPAM.Ranges()[:1] {
			n = r.Size()
		}
		return n
	}
	return 0
}

// warnPrivateMountNS warns when the agent runs in another mount namespace
// than PID 1 (as under "ip netns exec"): the worker namespaces it pins
// there are invisible to containerd, and runc then fails to start workers.
func warnPrivateMountNS(log *slog.Logger) {
	self, err1 := os.Stat("/proc/self/ns/mnt")
	init, err2 := os.Stat("/proc/1/ns/mnt")
	if err1 == nil && err2 == nil && !os.SameFile(self, init) {
		log.Warn("esb-agent runs in a private mount namespace: worker namespaces pinned here are invisible to containerd; " +
			"run it in the host's mount namespace (to put it in another network namespace use nsenter --net, not ip netns exec)")
	}
}

// checkExecutable fails, naming the setting, when path is set and is not
// an executable file: containerd's shim would otherwise fail each create.
func checkExecutable(name, path string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("invalid %s: %w", name, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("invalid %s %q: not an executable file", name, path)
	}
	return nil
}
