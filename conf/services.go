package conf

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Worker DNS: workers query the gateway on DNSPort; the NAT rules forward
// it (udp and tcp) to the resolver, which listens on the gateway's
// DefaultResolverPort.
const (
	DNSPort             = 53
	DefaultResolverPort = 1053
	// ResolvConfOptions are the resolver options workers get: names are
	// tried as written (ndots:0, no search list), and a lost UDP answer
	// costs one second, not five.
	ResolvConfOptions = "ndots:0 attempts:2 timeout:1"
)

// ResolvConf is the /etc/resolv.conf of a worker on a network whose
// gateway is gw.
func ResolvConf(gw netip.Addr) string {
	return "nameserver " + gw.String() + "\noptions " + ResolvConfOptions + "\n"
}

// WorkerHosts is how every worker's /etc/hosts begins: the loopback
// names, as Docker and the kubelet write them (an image's own file is
// replaced; the runtimes make none for a worker whose network is the
// agent's). WorkerHostsLine follows once its address is known.
const WorkerHosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// WorkerHostsLine is the line of a worker's /etc/hosts that maps its host
// name to its address, as Docker and the kubelet add it.
func WorkerHostsLine(ip netip.Addr, hostname string) string {
	return ip.String() + "\t" + hostname + "\n"
}

// Service is a data service's name and the gateway port its forward
// listens on: the name resolves to the gateway, so name:port goes through
// the DNAT forward to the local proxy.
type Service struct {
	Name string // lower case, without the trailing dot
	Port uint16
}

// Services are the named data services, sorted by name.
type Services []Service

// String renders the services as ParseServices reads them.
func (s Services) String() string {
	parts := make([]string, len(s))
	for i, svc := range s {
		parts[i] = fmt.Sprintf("%s=%d", svc.Name, svc.Port)
	}
	return strings.Join(parts, ",")
}

// dnsLabelRE is compiled on its first use, not at init: conf is linked
// into every esb-bridge process, and compiling it there cost 1.4 ms and
// 241 allocations of each ADD and DEL (GODEBUG=inittrace=1), for a check
// only the agent and esbctl make.
var dnsLabelRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
})

// ParseServices reads "name=port,name=port" (spaces around items are
// ignored; "" is none). Errors are *FieldError naming field: a name that
// is not a DNS name (labels of letters, digits and '-'), a port out of
// range, and a clash (the same name twice in any case, or a name under
// another, whose subdomains answer NXDOMAIN).
func ParseServices(field, s string) (Services, error) {
	var out Services
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, port, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fieldErr(field, item, "must be name=port, such as s3-storage=9000")
		}
		name = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
		if err := validateDNSName(field, name); err != nil {
			return nil, err
		}
		p, err := strconv.Atoi(strings.TrimSpace(port))
		if err != nil || p < 1 || p > 65535 {
			return nil, fieldErr(field+"."+name, strings.TrimSpace(port), "port must be from 1 to 65535")
		}
		out = append(out, Service{Name: name, Port: uint16(p)})
	}
	slices.SortFunc(out, func(a, b Service) int { return strings.Compare(a.Name, b.Name) })
	for i, a := range out {
		for _, b := range out[i+1:] {
			switch {
			case a.Name == b.Name:
				return nil, fieldErr(field+"."+a.Name, "", "name clash: given twice")
			case strings.HasSuffix(b.Name, "."+a.Name) || strings.HasSuffix(a.Name, "."+b.Name):
				return nil, fieldErr(field+"."+b.Name, "", "name clash with %s: subdomains of a service answer NXDOMAIN", a.Name)
			}
		}
	}
	return out, nil
}

func validateDNSName(field, name string) error {
	if name == "" || len(name) > 253 {
		return fieldErr(field, name, "a service name must be 1 to 253 characters")
	}
	for _, l := range strings.Split(name, ".") {
		if !dnsLabelRE().MatchString(l) {
			return fieldErr(field, name, "invalid service name: labels of 1 to 63 letters, digits and '-', not starting or ending with '-'")
		}
	}
	if _, err := netip.ParseAddr(name); err == nil || strings.Trim(name, "0123456789.") == "" {
		return fieldErr(field, name, "invalid service name: a service name is not an address")
	}
	if IsLocalhostName(name) {
		return fieldErr(field, name, "invalid service name: localhost names are each worker's loopback")
	}
	return nil
}

// IsLocalhostName reports whether name (with or without the trailing dot,
// any case) is localhost or under it: RFC 6761 reserves these for the
// loopback, which the workers' hosts file and resolver answer.
func IsLocalhostName(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// CheckServices checks that every service has a TCP forward on the rule
// set's gateway: a name whose port has none would resolve to a gateway
// port that refuses connections (or, under egress open, to nothing).
func (r *NATRules) CheckServices(field string, s Services) error {
	for _, svc := range s {
		if !slices.ContainsFunc(r.Forwards, func(f Forward) bool { return f.Proto == "tcp" && f.Port == svc.Port }) {
			return fieldErr(field+"."+svc.Name, strconv.Itoa(int(svc.Port)), "unknown port: the NAT rules have no tcp forward on it")
		}
	}
	return nil
}

// WithResolver returns a copy of the rule set with udp and tcp DNSPort on
// the gateway forwarded to the resolver at to. A rule set that already
// forwards DNSPort is refused (field "forwards").
func (r *NATRules) WithResolver(to netip.AddrPort) (*NATRules, error) {
	for i, f := range r.Forwards {
		if f.Port == DNSPort {
			return nil, fieldErr(fmt.Sprintf("forwards[%d].port", i), strconv.Itoa(DNSPort), "is the workers' resolver's forward, which the agent adds")
		}
	}
	out := *r
	out.Forwards = append(slices.Clone(r.Forwards),
		Forward{Proto: "udp", Port: DNSPort, To: to}, Forward{Proto: "tcp", Port: DNSPort, To: to})
	return &out, nil
}
