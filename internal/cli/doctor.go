package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
	"github.com/edge-serverless-box/esbnet/internal/buildinfo"
	"github.com/edge-serverless-box/esbnet/internal/doctor"
)

// defaultAgentConfig is where make install puts esb-agent's settings.
const defaultAgentConfig = "/etc/esb/agent.yaml"

// errProblems makes esbctl exit 1 after doctor printed its report. The
// text report's closing line already says so, so there it exits quietly
// (the sentence was printed twice); JSON has no sentence, so it goes to
// stderr once, on its own line.
var errProblems = errors.New("doctor found problems that block workers")

// doctorCmd checks the node; the checks live in internal/doctor. Where
// things are comes from esb-agent's settings file (-config), and each flag
// overrides one setting.
func doctorCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("esbctl doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: esbctl doctor [flags]

Checks this node (run it in the node's network namespace) and prints each
finding with the command that fixes it. Exits 1 when something blocks
workers, 0 otherwise (warnings included). Settings default to esb-agent's
(-config), so doctor checks what the agent uses.

`)
		fs.PrintDefaults()
	}
	cfgFile := fs.String("config", defaultAgentConfig, "esb-agent's settings file (skipped when the default one is absent)")
	confDir := fs.String("cni-conf-dir", "", "CNI configuration directory (default: the agent's cni-conf-dir)")
	binDirs := fs.String("cni-bin-dirs", "", "colon-separated plugin directories (default: the agent's cni-bin-dirs)")
	network := fs.String("network", "", "CNI network name, the stack to check: its conflist, bridge, tables and the other stacks' conflicts (default: the agent's network)")
	natRules := fs.String("nat-rules", "", "NAT rule file to compare the network's table ip (esb, or N for -network N) with (default: the agent's nat-rules; \"none\": no NAT)")
	runtime := fs.String("runtime", "", "containerd, docker or none (default: the agent's runtime)")
	runtimeAddr := fs.String("runtime-address", "", "containerd socket or docker unix:// address (default: the agent's)")
	registry := fs.String("registry", "", "host:port of the local registry (default: the agent's first plain-http-registries entry; \"none\": skip)")
	sysRoot := fs.String("sys-root", "/sys", "sysfs, for the loaded kernel modules")
	modulesDir := fs.String("modules-dir", "", "the kernel's module directory (default: /lib/modules/<running release>)")
	kconfig := fs.String("kernel-config", "", "kernel config file (default: /proc/config.gz, else /boot/config-<release>)")
	workers := fs.Int("workers", 0, "live workers the node is meant to hold, compared with the kernel's ceilings (default: the agent's max-workers)")
	dnsPort := fs.Int("dns-port", -1, "port of the workers' resolver on the gateway (default: the agent's dns-port; 0: skip the DNS check)")
	timeout := fs.Duration("timeout", 2*time.Second, "bound of each probe (socket, registry, proxy, IPAM lock)")
	out := fs.String("o", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("doctor takes no arguments, got %q", fs.Args())}
	}
	if *out != "text" && *out != "json" {
		return usageError{fmt.Errorf("-o must be text or json, not %q", *out)}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var agentArgs []string
	if _, err := os.Stat(*cfgFile); err == nil || set["config"] {
		agentArgs = []string{"--config", *cfgFile}
	}
	ac, err := agentconf.Load(agentArgs, func(string) string { return "" }, io.Discard)
	if err != nil {
		return fmt.Errorf("read esb-agent's settings: %w", err)
	}
	pick := func(flagVal, fromAgent string) string {
		if flagVal != "" {
			return flagVal
		}
		return fromAgent
	}
	o := doctor.Options{
		ConfDir:    pick(*confDir, ac.CNIConfDir),
		Network:    pick(*network, ac.Network),
		BinDirs:    splitList(pick(*binDirs, ac.CNIBinDirs), ":"),
		Version:    buildinfo.Version,
		NATRules:   pick(*natRules, ac.NATRules),
		Runtime:    pick(*runtime, ac.Runtime),
		RuncBinary: ac.RuncBinary,
		Registry:   *registry,
		DNSPort:    ac.DNSPort,
		Services:   ac.Services,
		Workers:    ac.MaxWorkers,
		SysRoot:    *sysRoot,
		ModulesDir: *modulesDir,
		Timeout:    *timeout,
	}
	if *kconfig != "" {
		o.KernelConfig = []string{*kconfig}
	}
	if o.Registry == "" {
		if regs := splitList(ac.PlainHTTPRegistries, ","); len(regs) > 0 {
			o.Registry = regs[0]
		}
	}
	o.RuntimeURL = *runtimeAddr
	if o.RuntimeURL == "" {
		o.RuntimeURL = map[string]string{"containerd": ac.ContainerdAddress, "docker": ac.DockerHost}[o.Runtime]
	}
	if *workers > 0 {
		o.Workers = *workers
	}
	if *dnsPort >= 0 {
		o.DNSPort = *dnsPort
	}
	for _, s := range []*string{&o.NATRules, &o.Runtime, &o.Registry} {
		if *s == "none" {
			*s = ""
		}
	}
	report := doctor.Run(context.Background(), o)
	if *out == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		return err
	}
	if !report.OK && *out == "json" {
		return errProblems
	}
	if !report.OK {
		return silentError{errProblems}
	}
	return nil
}

func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
