package conf

import (
	"encoding/json"
	"net/netip"
)

// BridgeConfig is the esb-bridge entry of the conflist. Its validation lives
// with the bridge plugin's configuration.
type BridgeConfig struct {
	Type      string     `json:"type"`
	Bridge    string     `json:"bridge,omitempty"`
	MTU       int        `json:"mtu,omitempty"`
	Isolation *bool      `json:"isolation,omitempty"`
	AntiSpoof *bool      `json:"antiSpoof,omitempty"`
	IPAM      IPAMConfig `json:"ipam"`
}

// Conflist is a CNI network configuration list.
type Conflist struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

// DefaultConflist returns the esb network: esb-bridge on esb-cni0 with
// esb-ipam handing out 10.88.0.0/16, gateway 10.88.0.1, a default route.
func DefaultConflist() Conflist {
	return Conflist{
		CNIVersion: CNIVersion,
		Name:       NetworkName,
		Plugins: []any{BridgeConfig{
			Type:   BridgeType,
			Bridge: BridgeName,
			IPAM:   DefaultIPAMConfig(),
		}},
	}
}

// Marshal renders the list as indented JSON with a trailing newline, the
// form written to /etc/cni/net.d.
func (c Conflist) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// StackConflist returns the conflist of stack s: esb-bridge on s.Bridge
// with esb-ipam handing out subnet, its first address the gateway, a
// default route. The default stack on the default subnet is exactly
// DefaultConflist.
func StackConflist(s Stack, subnet netip.Prefix) Conflist {
	c := DefaultConflist()
	c.Name = s.Network
	br := c.Plugins[0].(BridgeConfig)
	br.Bridge = s.Bridge
	subnet = subnet.Masked()
	br.IPAM.Subnet, br.IPAM.Gateway = subnet.String(), subnet.Addr().Next().String()
	c.Plugins[0] = br
	return c
}
