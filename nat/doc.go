// Package nat is esbnet's nftables manager. It owns two tables and touches
// nothing outside them:
//
//   - "bridge esb": anti-spoofing. Frames that enter a guarded port of the
//     esb bridge must carry the MAC and IP address assigned to that
//     attachment; everything else from the port is dropped. esb-bridge adds
//     one set element per attachment on ADD and removes it on DEL and GC.
//   - "ip esb": DNAT of 10.88.0.1:<port> to the local proxy (later).
//
// Every change is one netlink transaction (one Conn.Flush).
package nat
