// Package resolver is the workers' DNS server: it answers the data
// services' names (conf.Services) with the bridge gateway, so a worker's
// connection to s3-storage:9000 goes through the gateway's DNAT forward to
// the local proxy. localhost (and names under it) is the loopback, as RFC
// 6761 asks of a resolver, and a worker's own host name is its address
// (Config.Hostname). Every other name gets NXDOMAIN under egress proxy-only
// (no way around the proxy) and is forwarded to an upstream under egress
// open. It answers only clients inside the worker subnet, over UDP and TCP.
//
// It is built on github.com/miekg/dns (the library CoreDNS is built on) and
// runs inside the agent process: see docs/architecture.md for the choice.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
)

// TTL of the service names' answers, in seconds: short, so a changed
// configuration reaches workers soon; workers of one function rarely look
// a name up twice anyway.
const TTL = 30

// Config is what the resolver answers.
type Config struct {
	// Listen is the address served over UDP and TCP, normally the gateway
	// and conf.DefaultResolverPort. It may be bound before the address
	// exists (IP_FREEBIND): the bridge gets its gateway on the first
	// worker's CNI ADD, after the agent started.
	Listen netip.AddrPort
	// Gateway is the address service names resolve to.
	Gateway netip.Addr
	// Subnet is the only source the resolver answers; others get REFUSED.
	Subnet netip.Prefix
	// Services are the data services' names.
	Services conf.Services
	// Upstream, when valid, receives every other name (egress open);
	// when not, every other name is NXDOMAIN (egress proxy-only).
	Upstream netip.AddrPort
	// Hostname, when set, names the worker at an address ("": none); a
	// worker's query for its own host name is answered with its address,
	// another worker's host name is not answered.
	Hostname func(netip.Addr) string
	// Log receives one line per failed forward (nil: discarded).
	Log *slog.Logger
}

// Server is a running resolver.
type Server struct {
	cfg   Config
	names map[string]bool // fully qualified, lower case
	udp   *dns.Server
	tcp   *dns.Server
	upUDP *dns.Client
	upTCP *dns.Client
	done  chan struct{}
	errc  chan error
	once  sync.Once
}

// Start binds the UDP and TCP sockets and serves until Close. It returns
// once both sockets are bound, so a query sent after it returns is
// answered.
func Start(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, names: map[string]bool{}, done: make(chan struct{}), errc: make(chan error, 2),
		upUDP: &dns.Client{Net: "udp", Timeout: 2 * time.Second},
		upTCP: &dns.Client{Net: "tcp", Timeout: 2 * time.Second}}
	for _, svc := range cfg.Services {
		s.names[dns.Fqdn(svc.Name)] = true
	}
	pc, l, err := listen(cfg.Listen, 0)
	if err != nil {
		return nil, err
	}
	s.cfg.Listen = netip.AddrPortFrom(cfg.Listen.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	addr := s.cfg.Listen.String()
	h := dns.HandlerFunc(s.serve)
	var started sync.WaitGroup
	started.Add(2)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: started.Done}
	s.tcp = &dns.Server{Listener: l, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		NotifyStartedFunc: started.Done}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				s.errc <- err
			}
		}()
	}
	ready := make(chan struct{})
	go func() { started.Wait(); close(ready) }()
	select {
	case <-ready:
		return s, nil
	case err := <-s.errc:
		return nil, errors.Join(fmt.Errorf("serve DNS on %s: %w", addr, err), pc.Close(), l.Close())
	}
}

// listen binds UDP and TCP on one address. Port 0 (tests) takes the port
// the kernel gives UDP for TCP too; TCP's port space is another, so that
// port may be taken there (seen in CI: a client connection of a parallel
// test held it): then it tries again with a new port. first, when not
// 0, is the port the first try takes with port 0 (a test's seam).
func listen(at netip.AddrPort, first uint16) (net.PacketConn, net.Listener, error) {
	lc := net.ListenConfig{Control: freebind}
	for attempt := 1; ; attempt++ {
		try := at
		if attempt == 1 && at.Port() == 0 && first != 0 {
			try = netip.AddrPortFrom(at.Addr(), first)
		}
		pc, err := lc.ListenPacket(context.Background(), "udp4", try.String())
		if err != nil && try != at {
			continue // the seam's port is taken for UDP: the kernel picks
		}
		if err != nil {
			return nil, nil, fmt.Errorf("listen on udp %s: %w", at, err)
		}
		addr := netip.AddrPortFrom(at.Addr(), uint16(pc.LocalAddr().(*net.UDPAddr).Port)).String()
		l, err := lc.Listen(context.Background(), "tcp4", addr)
		if err == nil {
			return pc, l, nil
		}
		err = errors.Join(fmt.Errorf("listen on tcp %s: %w", addr, err), pc.Close())
		if at.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || attempt == 20 {
			return nil, nil, err
		}
	}
}

// Addr is the address served.
func (s *Server) Addr() netip.AddrPort { return s.cfg.Listen }

// Err receives an error when a socket stops serving before Close.
func (s *Server) Err() <-chan error { return s.errc }

// Close stops serving and releases the sockets; it is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
	})
	return err
}

// freebind lets the resolver bind the gateway before the bridge has it.
func freebind(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
	}); err != nil {
		return err
	}
	return serr
}

func (s *Server) serve(w dns.ResponseWriter, q *dns.Msg) {
	resp := s.answer(w, q)
	if resp == nil {
		return
	}
	if err := w.WriteMsg(resp); err != nil {
		s.cfg.Log.Debug("DNS reply not sent", "client", w.RemoteAddr().String(), "err", err)
	}
}

// answer builds the reply to q, or returns nil when nothing is sent.
func (s *Server) answer(w dns.ResponseWriter, q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	if !s.fromSubnet(w.RemoteAddr()) {
		return m.SetRcode(q, dns.RcodeRefused)
	}
	if q.Opcode != dns.OpcodeQuery || len(q.Question) != 1 {
		return m.SetRcode(q, dns.RcodeNotImplemented)
	}
	qq := q.Question[0]
	name := strings.ToLower(dns.Fqdn(qq.Name))
	switch {
	case conf.IsLocalhostName(name):
		return authoritative(q, netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback())
	case s.names[name]:
		return authoritative(q, s.cfg.Gateway, netip.Addr{})
	case s.isOwnName(w.RemoteAddr(), name):
		return authoritative(q, addrOf(w.RemoteAddr()), netip.Addr{})
	case s.underService(name):
		m.SetRcode(q, dns.RcodeNameError)
		m.Authoritative = true
		return m
	case !s.cfg.Upstream.IsValid():
		return m.SetRcode(q, dns.RcodeNameError)
	}
	return s.forward(w, q)
}

// authoritative answers q with v4 for A and v6 for AAAA, when valid;
// other types, and a type whose address is not valid, get NOERROR with no
// records (the name exists).
func authoritative(q *dns.Msg, v4, v6 netip.Addr) *dns.Msg {
	m := new(dns.Msg).SetReply(q)
	m.Authoritative = true
	qq := q.Question[0]
	hdr := dns.RR_Header{Name: qq.Name, Rrtype: qq.Qtype, Class: dns.ClassINET, Ttl: TTL}
	switch {
	case qq.Qclass != dns.ClassINET:
	case qq.Qtype == dns.TypeA && v4.IsValid():
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: v4.AsSlice()})
	case qq.Qtype == dns.TypeAAAA && v6.IsValid():
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: v6.AsSlice()})
	}
	return m
}

// isOwnName reports whether name is the host name of the worker asking.
// Host names are one label: other names do not take the lookup (the
// agent's table, under its lock).
func (s *Server) isOwnName(from net.Addr, name string) bool {
	if s.cfg.Hostname == nil || dns.CountLabel(name) != 1 {
		return false
	}
	own := s.cfg.Hostname(addrOf(from))
	return own != "" && name == strings.ToLower(dns.Fqdn(own))
}

// forward asks the upstream over the client's transport.
func (s *Server) forward(w dns.ResponseWriter, q *dns.Msg) *dns.Msg {
	c := s.upUDP
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		c = s.upTCP
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	r, _, err := c.ExchangeContext(ctx, q, s.cfg.Upstream.String())
	if err != nil {
		s.cfg.Log.Warn("DNS forward failed", "upstream", s.cfg.Upstream.String(), "name", q.Question[0].Name, "err", err)
		return new(dns.Msg).SetRcode(q, dns.RcodeServerFailure)
	}
	r.Id = q.Id
	return r
}

func (s *Server) fromSubnet(a net.Addr) bool {
	addr := addrOf(a)
	return addr.IsValid() && s.cfg.Subnet.Contains(addr)
}

// addrOf is a client's address, not valid for an address of neither UDP
// nor TCP.
func addrOf(a net.Addr) netip.Addr {
	var ip net.IP
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.IP
	case *net.TCPAddr:
		ip = a.IP
	}
	addr, _ := netip.AddrFromSlice(ip)
	return addr.Unmap()
}

// underService reports whether name is a subdomain of a service name.
func (s *Server) underService(name string) bool {
	for off, end := dns.NextLabel(name, 0); !end; off, end = dns.NextLabel(name, off) {
		if s.names[name[off:]] {
			return true
		}
	}
	return false
}
