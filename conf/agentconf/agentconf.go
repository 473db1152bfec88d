// Package agentconf is esb-agent's configuration schema: its settings,
// their flags, environment variables and YAML file, their defaults and
// their validation. It lives apart from package agent so that esbctl (doctor
// reads the agent's settings) links neither the agent nor the runtime
// clients, and apart from package conf so that the CNI plugins, which import
// conf, link no YAML decoder.
package agentconf

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Image pull policies (image-pull-policy).
const (
	// PullIfNotPresent uses a local image as it is; only a missing one is
	// pulled.
	PullIfNotPresent = "if-not-present"
	// PullAlways asks the registry on each cold start and pool refill what
	// the tag names now, so a function redeployed under the same tag runs
	// its new code; a warm acquire never contacts the registry.
	PullAlways = "always"
)

// Config is esb-agent's configuration. Every field has a flag, an
// environment variable (ESB_AGENT_ and the flag's name in upper case with
// '-' as '_') and a key in the optional YAML file; a flag beats the
// environment, which beats the file, which beats the default.
type Config struct {
	Runtime             string        `json:"runtime"`
	ContainerdAddress   string        `json:"containerd-address"`
	ContainerdNamespace string        `json:"containerd-namespace"`
	Snapshotter         string        `json:"snapshotter"`
	RuncBinary          string        `json:"runc-binary"`
	PlainHTTPRegistries string        `json:"plain-http-registries"`
	DockerHost          string        `json:"docker-host"`
	DockerNamespace     string        `json:"docker-namespace"`
	Socket              string        `json:"socket"`
	TCPListen           string        `json:"tcp-listen"`
	TLSCert             string        `json:"tls-cert"`
	TLSKey              string        `json:"tls-key"`
	TLSClientCA         string        `json:"tls-client-ca"`
	MetricsListen       string        `json:"metrics-listen"`
	CNIConfDir          string        `json:"cni-conf-dir"`
	CNIBinDirs          string        `json:"cni-bin-dirs"`
	CNICacheDir         string        `json:"cni-cache-dir"`
	Network             string        `json:"network"`
	NetNSDir            string        `json:"netns-dir"`
	NATRules            string        `json:"nat-rules"`
	NATInterval         time.Duration `json:"nat-interval"`
	Port                int           `json:"port"`
	ReadyTimeout        time.Duration `json:"ready-timeout"`
	StopGrace           time.Duration `json:"stop-grace"`
	MaxWorkers          int           `json:"max-workers"`
	MaxParallel         int           `json:"max-parallel"`
	ShimGroupSize       int           `json:"shim-group-size"`
	PoolMinIdle         int           `json:"pool-min-idle"`
	DefaultMemory       int64         `json:"default-memory"`
	LogDir              string        `json:"log-dir"`
	StateFile           string        `json:"state-file"`
	RuntimeTimeout      time.Duration `json:"runtime-timeout"`
	SweepInterval       time.Duration `json:"sweep-interval"`
	LogLevel            string        `json:"log-level"`
	ReadOnlyRootfs      bool          `json:"read-only-rootfs"`
	ImagePullPolicy     string        `json:"image-pull-policy"`
	Services            string        `json:"services"`
	DNSPort             int           `json:"dns-port"`
	DNSUpstream         string        `json:"dns-upstream"`
}

// Defaults of the settings that package agent also applies to a zero
// agent.Config.
const (
	DefaultStateFile    = conf.DefaultStateFile
	DefaultPort         = 8080
	DefaultReadyTimeout = 10 * time.Second
	DefaultStopGrace    = 2 * time.Second
	DefaultMaxWorkers   = 1000
	DefaultMaxParallel  = 16
	DefaultMemoryBytes  = 256 << 20
	DefaultLogDir       = conf.DefaultLogDir
	DefaultRuntimeWait  = time.Minute
)

// Bounds of a worker's memory limit, for default-memory and for each
// acquire's limits.memory_bytes.
const (
	MinMemoryBytes = 6 << 20
	MaxMemoryBytes = 64 << 30
)

// ErrHelp is returned by Load when --help was asked for.
var ErrHelp = flag.ErrHelp

// ErrPrintConfig is returned by Load, with the loaded and valid
// configuration, when --print-config was asked for: the caller prints it
// with Write and exits.
var ErrPrintConfig = errors.New("print the configuration")

// Load builds the configuration from args, the environment (getenv) and
// the file named by --config.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Config{}
	fs := flags(&c)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "optional YAML file with any of the settings below (keys are the flag names)")
	printConfig := fs.Bool("print-config", false, "print the resulting settings as a commented YAML file (for --config) and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fromFile := map[string]any{}
	if *file != "" {
		var err error
		if fromFile, err = readConfigFile(*file); err != nil {
			return c, err
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || !isSetting(f.Name) {
			return
		}
		if v := getenv("ESB_AGENT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))); v != "" {
			set[f.Name] = true
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("environment ESB_AGENT_%s: %w", strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")), err))
			}
			return
		}
		if v, ok := fromFile[f.Name]; ok {
			set[f.Name] = true
			if err := f.Value.Set(settingText(v)); err != nil {
				errs = append(errs, fmt.Errorf("config key %s: %w", f.Name, err))
			}
		}
	})
	c.deriveFromNetwork(set)
	for k := range fromFile {
		if fs.Lookup(k) == nil || !isSetting(k) {
			errs = append(errs, fmt.Errorf("config key %q is not a setting of esb-agent", k))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	if *printConfig {
		return c, ErrPrintConfig
	}
	return c, nil
}

// deriveFromNetwork gives the settings that name a per-stack object and
// that no flag, variable or file set the value of the network's stack
// (conf.StackOf): for the default network they are the flags' defaults.
func (c *Config) deriveFromNetwork(set map[string]bool) {
	s, err := conf.StackOf(c.Network)
	if err != nil {
		return // Validate names the network
	}
	for _, d := range []struct {
		name string
		p    *string
		v    string
	}{{"socket", &c.Socket, s.Socket}, {"state-file", &c.StateFile, s.StateFile}, {"log-dir", &c.LogDir, s.LogDir},
		{"containerd-namespace", &c.ContainerdNamespace, s.ContainerdNamespace},
		{"docker-namespace", &c.DockerNamespace, s.DockerNamespace}} {
		if !set[d.name] {
			*d.p = d.v
		}
	}
}

// flags defines one flag per Config field, bound to c, named as the
// field's json tag, with the default and the usage --help shows; Write
// documents the settings file from the same definitions.
func flags(c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("esb-agent", flag.ContinueOnError)
	fs.StringVar(&c.Runtime, "runtime", "containerd", "container runtime: containerd or docker")
	fs.StringVar(&c.ContainerdAddress, "containerd-address", "/run/containerd/containerd.sock", "containerd's socket")
	def := conf.DefaultStack()
	fs.StringVar(&c.ContainerdNamespace, "containerd-namespace", def.ContainerdNamespace, "containerd namespace of the workers (default for a network N other than esb: N)")
	fs.StringVar(&c.Snapshotter, "snapshotter", "", "containerd snapshotter (default: containerd's)")
	fs.StringVar(&c.RuncBinary, "runc-binary", "", "containerd: absolute path of the runc that the shim runs for the workers (default: runc on containerd's PATH); Debian 12's runc 1.1.5 reads the whole mount table in every call, which slows with many live workers (docs/performance.md)")
	fs.StringVar(&c.PlainHTTPRegistries, "plain-http-registries", "127.0.0.1:5000,localhost:5000", "comma-separated registries pulled from over plain HTTP (containerd; dockerd decides on its own)")
	fs.StringVar(&c.DockerHost, "docker-host", "unix:///run/docker.sock", "dockerd's address (runtime docker)")
	fs.StringVar(&c.DockerNamespace, "docker-namespace", def.DockerNamespace, "value of the esb.namespace label that scopes this agent's Docker workers (runtime docker; default for a network N other than esb: N)")
	fs.StringVar(&c.Socket, "socket", def.Socket, "unix socket of the gRPC API (mode 0600; default for a network N other than esb: /run/esb/N/agent.sock)")
	fs.StringVar(&c.TCPListen, "tcp-listen", "", "optional TCP address of the gRPC API; needs --tls-cert, --tls-key and --tls-client-ca (mutual TLS)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "server certificate (PEM) for --tcp-listen")
	fs.StringVar(&c.TLSKey, "tls-key", "", "server key (PEM) for --tcp-listen")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "CA (PEM) that client certificates must chain to")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "127.0.0.1:9464", "address of the Prometheus /metrics endpoint (empty: off)")
	fs.StringVar(&c.CNIConfDir, "cni-conf-dir", filepath.Dir(conf.ConflistPath), "CNI configuration directory; the default conflist is written there when the network has none")
	fs.StringVar(&c.CNIBinDirs, "cni-bin-dirs", conf.CNIBinDir, "CNI_PATH: colon-separated plugin directories")
	fs.StringVar(&c.CNICacheDir, "cni-cache-dir", "/var/lib/cni", "libcni's result cache")
	fs.StringVar(&c.Network, "network", def.Network, "CNI network name: the stack's name, from which its bridge (N-cni0), nftables tables, worker pins (N-<id>), runtime scope, socket, state and logs derive (lower-case letters and digits, at most 10)")
	fs.StringVar(&c.NetNSDir, "netns-dir", conf.DefaultNetNSDir, "where worker namespaces are pinned (esb-<id>; N-<id> for a network N)")
	fs.StringVar(&c.NATRules, "nat-rules", "", "NAT rule file (YAML or JSON) applied on start and kept repaired (empty: NAT untouched)")
	fs.DurationVar(&c.NATInterval, "nat-interval", 5*time.Second, "periodic read-back of the NAT table")
	fs.IntVar(&c.Port, "port", DefaultPort, "port every worker serves")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", DefaultReadyTimeout, "longest wait for a new worker's port to accept TCP")
	fs.DurationVar(&c.StopGrace, "stop-grace", DefaultStopGrace, "time a released worker gets between SIGTERM and SIGKILL")
	fs.IntVar(&c.MaxWorkers, "max-workers", DefaultMaxWorkers, "most live workers")
	fs.IntVar(&c.MaxParallel, "max-parallel", DefaultMaxParallel, "most worker creations at once")
	fs.IntVar(&c.ShimGroupSize, "shim-group-size", 0, fmt.Sprintf("containerd: workers of one function that share one runc shim process, up to %d (0: a shim per worker); a killed shim takes all its workers", MaxShimGroupSize))
	fs.IntVar(&c.PoolMinIdle, "pool-min-idle", 0, "idle workers kept warm per function (image, env and limits)")
	fs.Int64Var(&c.DefaultMemory, "default-memory", DefaultMemoryBytes, "memory limit in bytes of a worker whose request sets none")
	fs.StringVar(&c.LogDir, "log-dir", DefaultLogDir, "containerd: directory of the per-worker log files, each removed with its worker (the log of one gone without a release, a day after its last line); Docker workers log to Docker's json-file log; default for a network N other than esb: /run/esb/N/workers")
	fs.StringVar(&c.StateFile, "state-file", DefaultStateFile, "the agent's own records of its workers (owner, request, pool; bbolt), kept across restarts: put it on tmpfs; its directory also holds the journal of creations in flight (creating/) and each worker's /etc/hosts and /etc/hostname (etc/<ID>/); default for a network N other than esb: /run/esb/N/state.db")
	fs.DurationVar(&c.RuntimeTimeout, "runtime-timeout", DefaultRuntimeWait, "deadline of each call into the runtime (pulls get 10x): a hung daemon gives Unavailable, not a hang")
	fs.DurationVar(&c.SweepInterval, "sweep-interval", time.Minute, "how often leftovers of failed cleanups are removed (unknown worker containers, interrupted creations, CNI GC); 0: never")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&c.ReadOnlyRootfs, "read-only-rootfs", false, "give workers a read-only root file system with a writable tmpfs on /tmp")
	fs.StringVar(&c.Services, "services", "", "data services named for workers, name=port,... (in the file also a map {s3-storage: 9000}): each name resolves to the gateway, whose port must have a tcp forward in nat-rules")
	fs.IntVar(&c.DNSPort, "dns-port", conf.DefaultResolverPort, "with nat-rules: port of the workers' resolver on the gateway; workers get resolv.conf \"nameserver <gateway>\" and udp+tcp 53 is forwarded to it (0, or no nat-rules: no resolver, workers get the node's resolv.conf without its loopback nameservers)")
	fs.StringVar(&c.DNSUpstream, "dns-upstream", "", "with egress open: ip:port of the DNS server that gets every name that is not a service (empty: NXDOMAIN, as under proxy-only)")
	fs.StringVar(&c.ImagePullPolicy, "image-pull-policy", PullIfNotPresent, "if-not-present, or always: each cold start and pool refill asks the registry what the tag names now (a new digest drains that image's idle workers; a failed pull uses the local image with a warning)")
	return fs
}

// Bounds of the daemon's durations.
const (
	MaxReadyTimeout = 10 * time.Minute
	MaxStopGrace    = 5 * time.Minute
	MinNATInterval  = 100 * time.Millisecond
	// MaxShimGroupSize bounds shim-group-size: what one killed shim takes.
	MaxShimGroupSize = 64
)

// Validate checks every setting whose bad value would fail late or
// silently; messages name the setting as its flag is spelled. Load calls it.
func (c Config) Validate() error {
	switch {
	case c.Runtime != "containerd" && c.Runtime != "docker":
		return fmt.Errorf("invalid runtime %q: must be containerd or docker", c.Runtime)
	case c.StateFile == "":
		return errors.New("invalid state-file: must not be empty")
	case c.Socket == "" && c.TCPListen == "":
		return errors.New("invalid socket: give --socket or --tcp-listen")
	case c.TCPListen != "" && (c.TLSCert == "" || c.TLSKey == "" || c.TLSClientCA == ""):
		return errors.New("invalid tcp-listen: the TCP listener requires mutual TLS (--tls-cert, --tls-key and --tls-client-ca)")
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("invalid port %d: must be from 1 to 65535", c.Port)
	case c.MaxWorkers < 1 || c.MaxParallel < 1 || c.PoolMinIdle < 0:
		return errors.New("invalid max-workers, max-parallel or pool-min-idle: must be positive")
	case c.RuntimeTimeout <= 0 || c.RuntimeTimeout > MaxReadyTimeout:
		return fmt.Errorf("invalid runtime-timeout %s: must be more than 0 and at most %s", c.RuntimeTimeout, MaxReadyTimeout)
	case c.SweepInterval < 0:
		return fmt.Errorf("invalid sweep-interval %s: must be 0 (off) or positive", c.SweepInterval)
	case c.ReadyTimeout <= 0 || c.ReadyTimeout > MaxReadyTimeout:
		return fmt.Errorf("invalid ready-timeout %s: must be more than 0 and at most %s", c.ReadyTimeout, MaxReadyTimeout)
	case c.StopGrace < 0 || c.StopGrace > MaxStopGrace:
		return fmt.Errorf("invalid stop-grace %s: must be from 0 to %s", c.StopGrace, MaxStopGrace)
	case c.NATRules != "" && c.NATInterval < MinNATInterval:
		return fmt.Errorf("invalid nat-interval %s: must be at least %s", c.NATInterval, MinNATInterval)
	case c.DefaultMemory < MinMemoryBytes || c.DefaultMemory > MaxMemoryBytes:
		return fmt.Errorf("invalid default-memory %d: must be from %d to %d", c.DefaultMemory, MinMemoryBytes, int64(MaxMemoryBytes))
	case c.ImagePullPolicy != PullIfNotPresent && c.ImagePullPolicy != PullAlways:
		return fmt.Errorf("invalid image-pull-policy %q: must be %s or %s", c.ImagePullPolicy, PullIfNotPresent, PullAlways)
	case c.ShimGroupSize < 0 || c.ShimGroupSize > MaxShimGroupSize:
		return fmt.Errorf("invalid shim-group-size %d: must be from 0 (a shim per worker) to %d", c.ShimGroupSize, MaxShimGroupSize)
	case c.ShimGroupSize > 0 && c.Runtime != "containerd":
		return fmt.Errorf("invalid shim-group-size %d: shims are containerd's; runtime %s has none (use 0)", c.ShimGroupSize, c.Runtime)
	case c.RuncBinary != "" && c.Runtime != "containerd":
		return fmt.Errorf("invalid runc-binary %q: it is containerd's shim's; runtime %s has none (leave it empty)", c.RuncBinary, c.Runtime)
	case c.RuncBinary != "" && !filepath.IsAbs(c.RuncBinary):
		return fmt.Errorf("invalid runc-binary %q: must be an absolute path", c.RuncBinary)
	case c.PoolMinIdle > c.MaxWorkers:
		return fmt.Errorf("invalid pool-min-idle %d: more than max-workers %d", c.PoolMinIdle, c.MaxWorkers)
	}
	for _, a := range []struct{ name, addr string }{{"tcp-listen", c.TCPListen}, {"metrics-listen", c.MetricsListen}} {
		if a.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return fmt.Errorf("invalid %s %q: must be host:port, such as 127.0.0.1:7443", a.name, a.addr)
		}
	}
	if err := conf.ValidateStackName("network", c.Network); err != nil {
		return err
	}
	if err := c.validateDNS(); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("invalid log-level %q: must be debug, info, warn or error", c.LogLevel)
	}
	return nil
}
