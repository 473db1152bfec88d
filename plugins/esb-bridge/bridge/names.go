package bridge

import (
	"net"
	"net/netip"
)

// MACFor returns the container interface's MAC for an IPv4 address:
// 0a:58 followed by the address. 0a is a locally administered unicast
// prefix, and deriving the MAC from the address lets the anti-spoof element
// be written before the interface is read back.
func MACFor(ip netip.Addr) net.HardwareAddr {
	b := ip.As4()
	return net.HardwareAddr{0x0a, 0x58, b[0], b[1], b[2], b[3]}
}
