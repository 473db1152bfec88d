package bridge

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VethName returns the host-side veth name of an attachment: "esb" and 12
// hex digits of a hash of container ID and ifname, so DEL and GC find the
// veth without entering the container's namespace.
func VethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return "esb" + hex.EncodeToString(sum[:6])
}

// isVethName tells whether name has the form VethName makes: "esb" and 12
// lower-case hex digits.
func isVethName(name string) bool {
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

// MACFor returns the container interface's MAC for an IPv4 address:
// 0a:58 followed by the address. 0a is a locally administered unicast
// prefix, and deriving the MAC from the address lets the anti-spoof element
// be written before the interface is read back.
func MACFor(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}

// The host veth's alias records whose it is and which addresses it was
// given, for GC and DEL: "esb-bridge <unix-seconds> <containerID> <ifname>
// <ip>[,<ip>...]" (aliases of earlier versions lack the addresses).
const aliasPrefix = "esb-bridge "

// vethAlias is the alias of an attachment's host veth.
func vethAlias(containerID, ifName string, created time.Time, ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return fmt.Sprintf("%s%d %s %s %s", aliasPrefix, created.Unix(), containerID, ifName, strings.Join(s, ","))
}

// vethRecord is what a host veth's alias records.
type vethRecord struct {
	containerID, ifName string
	created             time.Time
	ips                 []netip.Addr // nil when the alias does not list them
}

// parseAlias returns what an alias records.
func parseAlias(alias string) (r vethRecord, ok bool) {
	if !strings.HasPrefix(alias, aliasPrefix) {
		return r, false
	}
	f := strings.Fields(strings.TrimPrefix(alias, aliasPrefix))
	if len(f) != 3 && len(f) != 4 {
		return r, false
	}
	sec, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return r, false
	}
	r = vethRecord{containerID: f[1], ifName: f[2], created: time.Unix(sec, 0)}
	if len(f) == 4 {
		for _, s := range strings.Split(f[3], ",") {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return r, false
			}
			r.ips = append(r.ips, ip)
		}
	}
	return r, true
}
