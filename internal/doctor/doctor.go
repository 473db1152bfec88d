// Package doctor checks that a node can run esbnet workers: the kernel
// features, sysctls, the conflist and its plugins, the bridge, the subnet,
// the nftables tables, IPAM, the kernel's ceilings against the workers the
// node is meant to hold, the container runtime, the registry and the proxy
// targets. Each finding says what is wrong and the command that
// fixes it. It reads the node and changes nothing (the IPAM store is
// opened like a plugin opens it, and only when it exists).
//
// Run checks the network namespace of the calling process: run it in a
// node namespace with nsenter --net (its TCP probes and /proc/sys reads
// follow the process, not one thread).
package doctor

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
)

// Status is a finding's verdict.
type Status string

// The verdicts. Fail means workers cannot be created or served until it
// is fixed; Warn means something works by chance, degrades, or will fail
// later.
const (
	OK   Status = "ok"
	Warn Status = "warn"
	Fail Status = "fail"
)

// Finding is one check's result.
type Finding struct {
	Check   string `json:"check"` // kernel, sysctl, conflist, stacks, plugins, bridge, subnet, nftables, antispoof, ipam, ports, neigh, pids, inotify, files, conntrack, runtime, runc, registry, proxy, dns
	Status  Status `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"` // a command (or the steps) that fixes it
}

// Report is every finding of one run.
type Report struct {
	OK       bool      `json:"ok"` // no finding is Fail
	Findings []Finding `json:"findings"`
}

// Options says where things are. The zero value of a field takes the
// default named beside it; tests point them at their own namespace's files.
type Options struct {
	ConfDir    string   // CNI configuration directory (/etc/cni/net.d)
	Network    string   // CNI network name (esb)
	BinDirs    []string // CNI plugin directories (/opt/cni/bin)
	Version    string   // the build the plugins should be (esbctl's); "" skips the comparison
	NATRules   string   // NAT rule file the agent applies; "" when it manages none
	Runtime    string   // containerd or docker; "" skips the runtime check
	RuntimeURL string   // containerd's socket path, or dockerd's unix:// address
	RuncBinary string   // the runc of containerd's shim (esb-agent's runc-binary); "" is runc on PATH
	Registry   string   // host:port of the local registry; "" skips the check
	// DNSPort is the port of the agent's resolver on the gateway (its
	// dns-port); 0 skips the DNS check. Services are its names (services).
	DNSPort    int
	Services   string
	SysRoot    string // where the module list lives (/sys)
	ModulesDir string // the running kernel's module directory (/lib/modules/$(uname -r))
	// KernelConfig lists kernel config files, the first found is read
	// (/proc/config.gz, /boot/config-$(uname -r)).
	KernelConfig []string
	ProcSys      string // /proc/sys
	SysctlFile   string // where the kernel settings are kept (SysctlFile)
	ProcRoot     string // /proc, for the open-files limits of the running daemons
	// Workers is how many live workers the node is meant to hold (the
	// agent's max-workers); the kernel's ceilings are compared with it.
	// 0 means agentconf.DefaultMaxWorkers.
	Workers int
	Timeout time.Duration
}

func (o Options) withDefaults() Options {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.ConfDir, "/etc/cni/net.d")
	def(&o.Network, "esb")
	def(&o.SysRoot, "/sys")
	def(&o.ProcSys, "/proc/sys")
	def(&o.ProcRoot, "/proc")
	def(&o.SysctlFile, SysctlFile)
	if o.Workers <= 0 {
		o.Workers = agentconf.DefaultMaxWorkers
	}
	if len(o.BinDirs) == 0 {
		o.BinDirs = []string{"/opt/cni/bin"}
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	return o
}

// Run runs every check and returns the findings in a fixed order.
func Run(ctx context.Context, o Options) Report {
	o = o.withDefaults()
	d := &doctor{o: o}
	d.kernel()
	net := d.conflist()
	d.sysctls(net)
	d.bridge(net)
	d.subnet(net)
	d.nftables(ctx, net)
	d.ipam(net)
	d.ceilings(net)
	d.runtime(ctx)
	d.runc(ctx)
	d.registry(ctx)
	d.proxy(ctx)
	d.dns(ctx)
	r := Report{OK: true, Findings: d.findings}
	for _, f := range d.findings {
		if f.Status == Fail {
			r.OK = false
		}
	}
	return r
}

type doctor struct {
	o        Options
	findings []Finding
	nat      natState
}

func (d *doctor) add(check string, s Status, fix string, format string, args ...any) {
	d.findings = append(d.findings, Finding{Check: check, Status: s, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// WriteText prints the report for a person: problems first, each with its
// fix, then what is fine, then a one-line verdict.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, want := range []Status{Fail, Warn, OK} {
		for _, f := range r.Findings {
			if f.Status != want {
				continue
			}
			fmt.Fprintf(&b, "%-4s  %-9s  %s\n", strings.ToUpper(string(f.Status)), f.Check, f.Message)
			if f.Fix != "" {
				fmt.Fprintf(&b, "%17s fix: %s\n", "", f.Fix)
			}
		}
	}
	fails, warns := r.count(Fail), r.count(Warn)
	switch {
	case fails > 0:
		fmt.Fprintf(&b, "\n%d problem(s) block workers, %d warning(s)\n", fails, warns)
	case warns > 0:
		fmt.Fprintf(&b, "\nworkers can run; %d warning(s)\n", warns)
	default:
		b.WriteString("\nall checks passed\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (r Report) count(s Status) int {
	n := 0
	for _, f := range r.Findings {
		if f.Status == s {
			n++
		}
	}
	return n
}
