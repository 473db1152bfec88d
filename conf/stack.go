package conf

import (
	"fmt"
	"path/filepath"
)

// Stack is every per-host name of one network, that is of one ESB stack:
// several stacks share a host, each with its own network name N, and
// every name below derives from N here and nowhere else. The default
// network (NetworkName, "esb") keeps the names esbnet always had.
//
//	name                 default network "esb"      network N
//	Bridge               esb-cni0                   N-cni0
//	Table                table ip/bridge esb        table ip/bridge N
//	NetNSPrefix          /run/netns/esb-<id>        /run/netns/N-<id>
//	ContainerdNamespace  esb                        N
//	DockerNamespace      esb (label esb.namespace)  N
//	Socket               /run/esb/agent.sock        /run/esb/N/agent.sock
//	StateFile            /run/esb/agent/state.db    /run/esb/N/state.db
//	LogDir               /var/log/esb/workers       /run/esb/N/workers
//	Conflist             10-esb.conflist            10-N.conflist
//	DataDB(dir)          <dir>/esb.db               <dir>/N.db
type Stack struct {
	Network             string
	Bridge              string
	Table               string
	NetNSPrefix         string
	ContainerdNamespace string
	DockerNamespace     string
	Socket              string
	StateFile           string
	LogDir              string
	Conflist            string // the file name in the CNI configuration directory
}

// Where the agents keep their sockets and state.
const (
	RunDir           = "/run/esb"
	DefaultSocket    = RunDir + "/agent.sock"
	DefaultStateFile = RunDir + "/agent/state.db"
	DefaultLogDir    = "/var/log/esb/workers"
	// bridgeSuffix makes a stack's bridge name from its network name.
	bridgeSuffix = "-cni0"
	// MaxStackNameLen keeps N-cni0 within an interface name (15).
	MaxStackNameLen = MaxIfNameLen - len(bridgeSuffix)
)

// stackNamePattern is what a stack's network name must match: it becomes
// an nftables table, an interface name's prefix, a containerd namespace, a
// Docker label value, a directory and a pin prefix; no '-', so that the
// pins of one stack (N-<id>) never parse as another's.
const stackNamePattern = `^[a-z][a-z0-9]*$`

// ValidateStackName checks a network name for use as a stack: what
// ValidateNetworkName takes, and also at most MaxStackNameLen characters
// of stackNamePattern. The error is a *FieldError naming field.
func ValidateStackName(field, network string) error {
	if network == "" {
		return fieldErr(field, "", "is required")
	}
	ok := len(network) <= MaxStackNameLen
	for i, r := range network {
		letter, digit := r >= 'a' && r <= 'z', r >= '0' && r <= '9'
		if !letter && (i == 0 || !digit) {
			ok = false
		}
	}
	if !ok {
		return fieldErr(field, network, "must match %s and be at most %d characters (its bridge is <network>%s, at most %d)",
			stackNamePattern, MaxStackNameLen, bridgeSuffix, MaxIfNameLen)
	}
	return nil
}

// StackOf returns the names of network's stack, or a *FieldError naming
// "network" when network cannot name one (see ValidateStackName).
func StackOf(network string) (Stack, error) {
	if err := ValidateStackName("network", network); err != nil {
		return Stack{}, err
	}
	if network == NetworkName {
		return Stack{Network: network, Bridge: BridgeName, Table: network, NetNSPrefix: NetNSPrefix,
			ContainerdNamespace: network, DockerNamespace: network, Socket: DefaultSocket,
			StateFile: DefaultStateFile, LogDir: DefaultLogDir, Conflist: filepath.Base(ConflistPath)}, nil
	}
	dir := filepath.Join(RunDir, network)
	return Stack{Network: network, Bridge: network + bridgeSuffix, Table: network, NetNSPrefix: network + "-",
		ContainerdNamespace: network, DockerNamespace: network, Socket: filepath.Join(dir, "agent.sock"),
		StateFile: filepath.Join(dir, "state.db"), LogDir: filepath.Join(dir, "workers"),
		Conflist: fmt.Sprintf("10-%s.conflist", network)}, nil
}

// DefaultStack is the stack of the default network, NetworkName.
func DefaultStack() Stack {
	s, err := StackOf(NetworkName)
	if err != nil {
		panic(err) // NetworkName is a valid stack name; TestStackOf proves it
	}
	return s
}

// DataDB returns where esb-ipam keeps the stack's allocations under dir
// (the ipam object's dataDir): <dir>/<network>.db.
func (s Stack) DataDB(dir string) string { return DataDBPath(dir, s.Network) }

// DataDBPath returns where esb-ipam keeps network's allocations under dir,
// for any network name (a stack's or not).
func DataDBPath(dir, network string) string { return filepath.Join(dir, network+".db") }

// BridgeFor returns the bridge esb-bridge uses for network when its
// configuration names none: the stack's bridge when network is a stack
// name, else BridgeName (networks whose names are not stack names, which
// esb-bridge has always taken, keep the bridge they always had).
func BridgeFor(network string) string {
	if s, err := StackOf(network); err == nil {
		return s.Bridge
	}
	return BridgeName
}

// TableFor returns the name of the nftables tables (ip and bridge) of
// network: the stack's when network is a stack name, else the default
// network's, as BridgeFor.
func TableFor(network string) string {
	if s, err := StackOf(network); err == nil {
		return s.Table
	}
	return DefaultStack().Table
}
