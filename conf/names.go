package conf

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Worker namespaces are pinned as <DefaultNetNSDir>/<NetNSPrefix><id>, as
// `ip netns` does; the agent, esbctl doctor and the leak check find them by
// this name.
const (
	DefaultNetNSDir = "/run/netns"
	NetNSPrefix     = "esb-"
)

// Labels every worker container carries, in both runtimes.
const (
	LabelWorker    = "esb.worker"     // "1"
	LabelFunction  = "esb.function"   // the function's name
	LabelOwner     = "esb.owner"      // the owner's ID ("" while idle in a pool)
	LabelPoolKey   = "esb.pool"       // which warm pool the worker belongs to
	LabelPort      = "esb.port"       // the port its function serves
	LabelShimGroup = "esb.shim-group" // the containerd shim it shares (agent's shim-group-size)
	LabelRequest   = "esb.request"    // the acquire's request ID, for retries after a restart
	LabelNetwork   = "esb.network"    // the stack's network name (the agent's network)
	// LabelNamespace scopes the Docker workers of one agent (its value is
	// the agent's docker-namespace); containerd has namespaces of its own.
	LabelNamespace = "esb.namespace"
)

// VethName returns the host-side veth name of an attachment: "esb" and 12
// hex digits of a hash of container ID and ifname, so DEL and GC find the
// veth without entering the container's namespace.
func VethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "esb" + hex.EncodeToString(sum[:6])
}

// IsVethName tells whether name has the form VethName makes: "esb" and 12
// lower-case hex digits.
func IsVethName(name string) bool {
	if len(name) != 15 || !strings.HasPrefix(name, "esb") {
		return false
	}
	for _, c := range name[3:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// The host veth's alias records whose it is and which addresses it was
// given, for GC and DEL: "esb-bridge <unix-seconds> <containerID> <ifname>
// <ip>[,<ip>...]" (aliases of earlier versions lack the addresses).
const aliasPrefix = BridgeType + " "

// VethAlias is what the alias of an attachment's host veth records.
type VethAlias struct {
	ContainerID string
	IfName      string
	Created     time.Time
	IPs         []netip.Addr // nil when the alias does not list them
}

// String renders the alias as esb-bridge sets it on the veth.
func (a VethAlias) String() string {
	s := make([]string, len(a.IPs))
	for i, ip := range a.IPs {
		s[i] = ip.String()
	}
	return fmt.Sprintf("%s%d %s %s %s", aliasPrefix, a.Created.Unix(), a.ContainerID, a.IfName, strings.Join(s, ","))
}

// ParseVethAlias returns what an alias records; ok is false when the alias
// is not one esb-bridge wrote.
func ParseVethAlias(alias string) (a VethAlias, ok bool) {
	if !strings.HasPrefix(alias, aliasPrefix) {
		return a, false
	}
	f := strings.Fields(strings.TrimPrefix(alias, aliasPrefix))
	if len(f) != 3 && len(f) != 4 {
		return a, false
	}
	sec, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return a, false
	}
	a = VethAlias{ContainerID: f[1], IfName: f[2], Created: time.Unix(sec, 0)}
	if len(f) == 4 {
		for _, s := range strings.Split(f[3], ",") {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return a, false
			}
			a.IPs = append(a.IPs, ip)
		}
	}
	return a, true
}
