package agentconf

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edge-serverless-box/esbnet/conf"
)

// validateDNS checks the worker DNS settings that need no NAT rules; the
// agent checks the services' ports against the rules it loads
// (CheckServices).
func (c Config) validateDNS() error {
	if c.DNSPort < 0 || c.DNSPort > 65535 {
		return fmt.Errorf("invalid dns-port %d: must be from 1 to 65535, or 0 (no resolver)", c.DNSPort)
	}
	if c.DNSPort == conf.DNSPort {
		return fmt.Errorf("invalid dns-port %d: port %d on the gateway is the forward to the resolver", c.DNSPort, conf.DNSPort)
	}
	svcs, err := conf.ParseServices("services", c.Services)
	if err != nil {
		return err
	}
	if len(svcs) > 0 && (c.NATRules == "" || c.DNSPort == 0) {
		return errors.New("invalid services: names need the resolver (nat-rules set and dns-port not 0)")
	}
	if c.DNSUpstream != "" {
		up, err := netip.ParseAddrPort(c.DNSUpstream)
		if err != nil || !up.Addr().Is4() || up.Port() == 0 || up.Addr().IsUnspecified() {
			return fmt.Errorf("invalid dns-upstream %q: must be an IPv4 address and port such as 192.0.2.53:53", c.DNSUpstream)
		}
	}
	return nil
}

// CheckServices checks the services against the NAT rules: every port
// has a tcp forward, and an upstream is given only under egress open
// (under proxy-only no other name resolves, by design).
func (c Config) CheckServices(rules *conf.NATRules) (conf.Services, error) {
	svcs, err := conf.ParseServices("services", c.Services)
	if err != nil {
		return nil, err
	}
	if err := rules.CheckServices("services", svcs); err != nil {
		return nil, err
	}
	if c.DNSUpstream != "" && rules.Egress != conf.EgressOpen {
		return nil, fmt.Errorf("invalid dns-upstream %q: egress is %s in %s, which resolves no other names; use egress: open", c.DNSUpstream, rules.Egress, c.NATRules)
	}
	return svcs, nil
}

// settingText renders a settings file's value for its flag: a map (as
// services is usually written) becomes "key=value,..." in key order.
func settingText(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprint(v)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, ",")
}
