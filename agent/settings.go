package agent

import (
	"time"

	"github.com/edge-serverless-box/esbnet/conf/agentconf"
)

// Config tunes the agent; zero fields take the defaults of DefaultConfig.
type Config struct {
	// Port is the port every worker serves (the Lambda invoke endpoint).
	Port int
	// Network is the stack's network name, recorded on every worker as
	// the label esb.network ("" records none).
	Network string
	// ReadyTimeout bounds the wait for a new worker's port to accept TCP.
	ReadyTimeout time.Duration
	// StopGrace is how long a worker gets to stop before it is killed.
	StopGrace time.Duration
	// MaxWorkers bounds the live workers (busy, idle and paused).
	MaxWorkers int
	// MaxParallel bounds the worker creations running at once.
	MaxParallel int
	// ShimGroupSize, when above 0, lets up to that many workers of one
	// function share one containerd shim process (the runc v2 shim's
	// group annotation); 0 gives each worker its own shim.
	ShimGroupSize int
	// PoolMinIdle is the number of idle workers kept warm for every
	// function (image, env and limits) acquired so far.
	PoolMinIdle int
	// DefaultMemoryBytes applies when a request sets no memory limit.
	DefaultMemoryBytes int64
	// LogDir receives one log file per worker.
	LogDir string
	// RuntimeTimeout bounds every call into the runtime (a pull gets ten
	// times as long, a stop the grace on top), so a hung daemon makes
	// calls fail with Unavailable instead of hanging.
	RuntimeTimeout time.Duration
	// StateDir holds the journal of worker creations in flight, which
	// tells a restarted agent which half-made workers were its own, and
	// each worker's /etc/hosts and /etc/hostname; "" keeps no journal and
	// leaves the workers their images' files.
	StateDir string
	// ReadOnlyRootfs gives every worker a read-only root file system with
	// a writable tmpfs on /tmp. It is the node operator's policy, not a
	// request field: a Gateway cannot weaken it per call.
	ReadOnlyRootfs bool
	// ImagePullPolicy is PullIfNotPresent ("", the default) or PullAlways.
	ImagePullPolicy string
	// ResolvConf, when set, is the file every worker gets as its
	// /etc/resolv.conf (read-only): the resolver on the gateway.
	ResolvConf string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Port:               agentconf.DefaultPort,
		ReadyTimeout:       agentconf.DefaultReadyTimeout,
		StopGrace:          agentconf.DefaultStopGrace,
		MaxWorkers:         agentconf.DefaultMaxWorkers,
		MaxParallel:        agentconf.DefaultMaxParallel,
		PoolMinIdle:        0,
		DefaultMemoryBytes: agentconf.DefaultMemoryBytes,
		LogDir:             agentconf.DefaultLogDir,
		RuntimeTimeout:     agentconf.DefaultRuntimeWait,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Port == 0 {
		c.Port = d.Port
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = d.ReadyTimeout
	}
	if c.StopGrace == 0 {
		c.StopGrace = d.StopGrace
	}
	if c.MaxWorkers == 0 {
		c.MaxWorkers = d.MaxWorkers
	}
	if c.MaxParallel == 0 {
		c.MaxParallel = d.MaxParallel
	}
	if c.DefaultMemoryBytes == 0 {
		c.DefaultMemoryBytes = d.DefaultMemoryBytes
	}
	if c.LogDir == "" {
		c.LogDir = d.LogDir
	}
	if c.RuntimeTimeout == 0 {
		c.RuntimeTimeout = d.RuntimeTimeout
	}
	return c
}
