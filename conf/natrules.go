package conf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Egress policies of the NAT rule set.
const (
	// EgressProxyOnly lets a worker reach only the forwarded ports on the
	// gateway (and answer connections the node opened): no other node port
	// or address, no other network.
	EgressProxyOnly = "proxy-only"
	// EgressOpen also lets workers reach node addresses and, masqueraded,
	// other networks.
	EgressOpen = "open"
)

// ForwardConfig is one forward as written in a rule file.
type ForwardConfig struct {
	Proto string `json:"proto"`
	Port  int    `json:"port"`
	To    string `json:"to"`
}

// NATConfig is a NAT rule file as written (YAML or JSON).
type NATConfig struct {
	Forwards []ForwardConfig `json:"forwards"`
	Egress   string          `json:"egress,omitempty"`
	Bridge   string          `json:"bridge,omitempty"`
	Gateway  string          `json:"gateway,omitempty"`
	Subnet   string          `json:"subnet,omitempty"`
}

// Forward is a validated forward: traffic a worker sends to the gateway's
// Port over Proto is DNAT-ed to To.
type Forward struct {
	Proto string // "tcp" or "udp"
	Port  uint16
	To    netip.AddrPort
}

// NATRules is a validated rule set.
type NATRules struct {
	Forwards []Forward
	Egress   string
	Bridge   string
	Gateway  netip.Addr
	Subnet   netip.Prefix
	// Others are the subnets of the other stacks on the host (not in the
	// rule file: the agent finds them in the CNI configuration directory).
	// Traffic between Subnet and any of them is dropped in both
	// directions, before anything else is allowed, in both egress modes.
	// Empty: no such rule (the table of a host with one stack).
	Others []netip.Prefix
}

// Loopback reports whether a forward targets 127.0.0.0/8, which needs
// route_localnet on the bridge and the loopback guard.
func (r *NATRules) Loopback() bool {
	for _, f := range r.Forwards {
		if f.To.Addr().IsLoopback() {
			return true
		}
	}
	return false
}

// DecodeNATRules validates a rule set given as JSON (empty or null: no
// forwards, the defaults). Errors name the field: "forwards[1].port",
// "egress", ... Rule files are YAML or JSON: package conf/natfile reads
// them (conf itself links no YAML decoder, for the plugins' sake: each CNI
// call starts a plugin process, and YAML's package init costs it time).
func DecodeNATRules(js []byte) (*NATRules, error) {
	if len(bytes.TrimSpace(js)) == 0 {
		js = []byte("null")
	}
	// Forwards are decoded one by one so a type error names its index.
	var raw struct {
		NATConfig
		Forwards []json.RawMessage `json:"forwards"`
	}
	if string(js) != "null" {
		if err := decode(js, &raw); err != nil {
			return nil, err
		}
	}
	c := raw.NATConfig
	for i, f := range raw.Forwards {
		var fc ForwardConfig
		if err := decode(f, &fc); err != nil {
			return nil, prefixField(fmt.Sprintf("forwards[%d]", i), err)
		}
		c.Forwards = append(c.Forwards, fc)
	}
	return c.Validate()
}

// Validate checks the rule set and fills in the esb defaults.
func (c *NATConfig) Validate() (*NATRules, error) {
	out := &NATRules{Egress: c.Egress, Bridge: c.Bridge}
	if out.Egress == "" {
		out.Egress = EgressProxyOnly
	}
	if out.Egress != EgressProxyOnly && out.Egress != EgressOpen {
		return nil, fieldErr("egress", c.Egress, "must be %q or %q", EgressProxyOnly, EgressOpen)
	}
	if out.Bridge == "" {
		out.Bridge = BridgeName
	}
	if err := ValidateIfName("bridge", out.Bridge); err != nil {
		return nil, err
	}
	subnet := c.Subnet
	if subnet == "" {
		subnet = DefaultSubnet
	}
	gw := c.Gateway
	if gw == "" {
		gw = DefaultGateway
	}
	r, err := parseRange("", RangeConfig{Subnet: subnet, Gateway: gw}, false)
	var fe *FieldError
	if errors.As(err, &fe) {
		fe.Field = strings.TrimPrefix(fe.Field, ".")
		return nil, fe
	}
	if err != nil {
		return nil, err
	}
	out.Subnet, out.Gateway = r.Subnet, r.Gateway
	seen := map[string]int{}
	for i, f := range c.Forwards {
		field := fmt.Sprintf("forwards[%d]", i)
		proto := strings.ToLower(f.Proto)
		if proto != "tcp" && proto != "udp" {
			return nil, fieldErr(field+".proto", f.Proto, "must be \"tcp\" or \"udp\"")
		}
		if f.Port < 1 || f.Port > 65535 {
			return nil, fieldErr(field+".port", fmt.Sprint(f.Port), "must be from 1 to 65535")
		}
		key := fmt.Sprintf("%s/%d", proto, f.Port)
		if j, dup := seen[key]; dup {
			return nil, fieldErr(field+".port", fmt.Sprint(f.Port), "duplicates forwards[%d] (%s)", j, key)
		}
		seen[key] = i
		to, err := netip.ParseAddrPort(f.To)
		if err != nil || !to.Addr().Is4() || to.Port() == 0 {
			return nil, fieldErr(field+".to", f.To, "must be an IPv4 address and port such as \"127.0.0.1:9000\"")
		}
		if to.Addr().IsUnspecified() || to.Addr().IsMulticast() {
			return nil, fieldErr(field+".to", f.To, "must be a unicast address")
		}
		out.Forwards = append(out.Forwards, Forward{Proto: proto, Port: uint16(f.Port), To: to})
	}
	return out, nil
}
