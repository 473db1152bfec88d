package benchnat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// The topology's names (topology.go), as the benchmark's code uses them.
const (
	bridgeName = conf.BridgeName
	gatewayIP  = conf.DefaultGateway
	nodeAddr   = NodeAddr
	fwdPort    = FwdPort
	frontend   = Frontend
	direct     = Direct
	backend    = Backend
	viaDNAT    = ViaDNAT
	bigPath    = BigPath
	smallPath  = SmallPath
	bigSize    = BigSize
	smallBody  = SmallBody

	callTimeout = time.Minute      // one libcni call
	cmdTimeout  = 30 * time.Second // one command
)

// node is the host namespace with its NAT manager.
type node struct {
	*nodetest.Node
	tb  testing.TB
	mgr *nat.Manager
}

func newNode(tb testing.TB) *node {
	tb.Helper()
	n := &node{Node: nodetest.New(tb, "benchnat"), tb: tb}
	n.mgr = nat.NewManager(n.NS)
	if err := nodetest.LoUp(n.NS, nodeAddr); err != nil {
		tb.Fatalf("set up lo with %s in node: %v", nodeAddr, err)
	}
	return n
}

// flushConntrack empties the node's conntrack table, so that every round
// starts from the same state (a round leaves thousands of TIME_WAIT
// entries).
func (n *node) flushConntrack() {
	n.tb.Helper()
	h := n.Handle()
	defer h.Close()
	if err := h.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
		n.tb.Fatalf("flush conntrack in node: %v", err)
	}
}

// worker is a namespace attached to the node's bridge by esb-bridge.
type worker = nodetest.Worker

func (n *node) serveBackend() { ServeBackend(n.tb, n.NS) }

func buildLoadgen(tb testing.TB) string { return BuildLoadgen(tb) }

// startHAProxy runs Debian's haproxy in the node in the foreground until
// the benchmark ends, and waits until its frontends accept connections.
func (n *node) startHAProxy() {
	n.tb.Helper()
	n.StartHAProxy(HAProxyConfig, frontend, direct)
}

// run runs a command with cmdTimeout, stdin when not nil, and returns its
// combined output.
func run(stdin []byte, name string, args ...string) (string, error) {
	return nodetest.Run(cmdTimeout, stdin, name, args...)
}

// load runs one round of the load generator in the worker, taking addrs
// in turn, after emptying the node's conntrack table; it returns one
// result per address.
func (n *node) load(w *worker, loadgen, mode string, addrs []string, path string, d time.Duration, body int64) []LoadResult {
	n.tb.Helper()
	n.flushConntrack()
	ctx, cancel := context.WithTimeout(context.Background(), d+cmdTimeout)
	defer cancel()
	res, err := RunLoadgen(ctx, []string{"ip", "netns", "exec", w.Name}, loadgen,
		LoadConfig{Mode: mode, Addrs: addrs, Path: path, Duration: d, BodySize: body, Timeout: 3 * time.Second})
	if err != nil {
		n.tb.Fatal(err)
	}
	return res
}

// --- rule sets ----------------------------------------------------------

// rules returns a rule set of count forwards under open egress (so the
// worker may also reach the node address directly): tcp/9000 to HAProxy,
// then tcp/20000, 20001, ... to ports 30000, 30001, ... of the node
// address. moved moves the last of those to another port (40000 + i).
func rules(tb testing.TB, count int, moved bool) *conf.NATRules {
	tb.Helper()
	c := conf.NATConfig{Egress: conf.EgressOpen, Forwards: []conf.ForwardConfig{{Proto: "tcp", Port: fwdPort, To: frontend}}}
	for i := 0; i < count-1; i++ {
		to := 30000 + i
		if moved && i == count-2 {
			to = 40000 + i
		}
		c.Forwards = append(c.Forwards, conf.ForwardConfig{Proto: "tcp", Port: 20000 + i, To: fmt.Sprintf("%s:%d", nodeAddr, to)})
	}
	r, err := c.Validate()
	if err != nil {
		tb.Fatalf("rules of %d forwards: %v", count, err)
	}
	return r
}

// iptablesRules is the upstream runtime-node's way for the same forwards:
// a chain reached from PREROUTING for the gateway, one DNAT rule per port,
// the used port (9000) last: the worst case of a linear walk.
func iptablesRules(count int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:ESB - [0:0]\n-A PREROUTING -i %s -d %s/32 -j ESB\n", bridgeName, gatewayIP)
	for i := 0; i < count-1; i++ {
		fmt.Fprintf(&b, "-A ESB -p tcp --dport %d -j DNAT --to-destination %s:%d\n", 20000+i, nodeAddr, 30000+i)
	}
	fmt.Fprintf(&b, "-A ESB -p tcp --dport %d -j DNAT --to-destination %s\nCOMMIT\n", fwdPort, frontend)
	return []byte(b.String())
}

// --- nftables reads -----------------------------------------------------

var natTable = &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "nat"} // iptables-nft's

// nft opens a lasting nftables connection in the node, closed at cleanup.
func (n *node) nft() *nftables.Conn { return n.NFT(nftables.AsLasting()) }

// deleteIptables removes iptables-nft's table ip nat from the node, if
// there.
func (n *node) deleteIptables(c *nftables.Conn) {
	n.tb.Helper()
	ok, err := nodetest.HasTable(c, natTable.Name)
	if err == nil && ok {
		c.DelTable(natTable)
		err = c.Flush()
	}
	if err != nil {
		n.tb.Fatalf("delete table ip nat: %v", err)
	}
}

// iptablesHits returns the packets counted by the last rule of chain ESB
// (the used port's DNAT).
func iptablesHits(c *nftables.Conn) (uint64, error) {
	rs, err := c.GetRules(natTable, &nftables.Chain{Table: natTable, Name: "ESB"})
	if err != nil {
		return 0, err
	}
	if len(rs) == 0 {
		return 0, errors.New("chain ESB is empty")
	}
	for _, e := range rs[len(rs)-1].Exprs {
		if ct, ok := e.(*expr.Counter); ok {
			return ct.Packets, nil
		}
	}
	return 0, errors.New("the last rule of chain ESB has no counter")
}

// genID returns the node's nftables ruleset generation, which every
// committed transaction moves on by one (NFT_MSG_GETGEN, which the
// nftables library does not offer).
func (n *node) genID() (uint32, error) {
	var id uint32
	err := n.NS.Do(func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return fmt.Errorf("netfilter socket: %w", err)
		}
		defer func() { _ = unix.Close(fd) }()
		tv := unix.Timeval{Sec: 5}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		// nlmsghdr and nfgenmsg.
		req := make([]byte, unix.NLMSG_HDRLEN+4)
		binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
		binary.NativeEndian.PutUint16(req[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN)
		binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST)
		binary.NativeEndian.PutUint32(req[8:], 1)
		req[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC
		req[unix.NLMSG_HDRLEN+1] = unix.NFNETLINK_V0
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("send GETGEN: %w", err)
		}
		buf := make([]byte, 1<<16)
		k, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("receive GETGEN: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:k])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return fmt.Errorf("GETGEN: %w", syscall.Errno(-errno))
					}
				}
				continue
			}
			if m.Header.Type != unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN || len(m.Data) < 4 {
				continue
			}
			ad, err := netlinkAttrs(m.Data[4:])
			if err != nil {
				return err
			}
			if v, ok := ad[unix.NFTA_GEN_ID]; ok && len(v) == 4 {
				id = binary.BigEndian.Uint32(v)
				return nil
			}
		}
		return errors.New("no generation ID in the answer to GETGEN")
	})
	return id, err
}

// netlinkAttrs splits netlink attributes into a map by type.
func netlinkAttrs(b []byte) (map[uint16][]byte, error) {
	out := map[uint16][]byte{}
	for len(b) >= unix.NLA_HDRLEN {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.NLA_HDRLEN || l > len(b) {
			return nil, fmt.Errorf("bad netlink attribute length %d", l)
		}
		out[binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER)] = b[unix.NLA_HDRLEN:l]
		b = b[min((l+unix.NLA_ALIGNTO-1)&^(unix.NLA_ALIGNTO-1), len(b)):]
	}
	return out, nil
}

// mapHits returns the connections counted by forward tcp/9000.
func (n *node) mapHits() (uint64, error) {
	fcs, err := n.mgr.Counters(context.Background())
	if err != nil {
		return 0, err
	}
	for _, fc := range fcs {
		if fc.Forward.Proto == "tcp" && fc.Forward.Port == fwdPort {
			return fc.Packets, nil
		}
	}
	return 0, errors.New("no forward tcp/9000 installed")
}
