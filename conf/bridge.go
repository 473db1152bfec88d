package conf

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
)

// Bridge defaults and limits.
const (
	MinMTU = 68
	MaxMTU = 65535
	// MaxIfNameLen is the longest interface name the kernel takes (IFNAMSIZ-1).
	MaxIfNameLen = 15
	// BridgeMaxPorts is the most ports a Linux bridge holds: port numbers
	// run from 1 to BR_MAX_PORTS-1 (1023), and attaching one more fails in
	// the kernel with EXFULL. One port per worker, so it bounds the live
	// workers on one bridge; esb-bridge's ADD past it is CodeBridgeFull.
	BridgeMaxPorts = 1023
)

// BridgeNetConf is a validated esb-bridge network configuration.
type BridgeNetConf struct {
	CNIVersion string
	Name       string
	Bridge     string
	// MTU of the veth pair; 0 means the bridge's.
	MTU       int
	Isolation bool
	AntiSpoof bool
	// IPAMType is the IPAM plugin's type. When it is esb-ipam, IPAM holds
	// its validated configuration and the bridge allocates in-process.
	IPAMType         string
	IPAM             *IPAM
	ValidAttachments []types.GCAttachment
	// Raw is the input, passed on to a delegated IPAM plugin and used for
	// version-aware parsing of prevResult.
	Raw []byte
}

type bridgeEnvelope struct {
	CNIVersion       string               `json:"cniVersion"`
	Name             string               `json:"name"`
	Type             string               `json:"type"`
	Bridge           string               `json:"bridge"`
	MTU              int                  `json:"mtu"`
	Isolation        *bool                `json:"isolation"`
	AntiSpoof        *bool                `json:"antiSpoof"`
	IPAM             json.RawMessage      `json:"ipam"`
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
}

// ParseBridgeNetConf decodes and validates an esb-bridge configuration,
// including its IPAM object when that is esb-ipam. Errors are *DecodeError
// for malformed JSON and *FieldError naming the field otherwise.
func ParseBridgeNetConf(data []byte) (*BridgeNetConf, error) {
	var env bridgeEnvelope
	if err := decode(data, &env); err != nil {
		return nil, err
	}
	if err := ValidateNetworkName("name", env.Name); err != nil {
		return nil, err
	}
	out := &BridgeNetConf{
		CNIVersion:       env.CNIVersion,
		Name:             env.Name,
		Bridge:           env.Bridge,
		MTU:              env.MTU,
		Isolation:        env.Isolation == nil || *env.Isolation,
		AntiSpoof:        env.AntiSpoof == nil || *env.AntiSpoof,
		ValidAttachments: env.ValidAttachments,
		Raw:              data,
	}
	if out.Bridge == "" {
		out.Bridge = BridgeFor(env.Name)
	}
	if err := ValidateIfName("bridge", out.Bridge); err != nil {
		return nil, err
	}
	if out.MTU != 0 && (out.MTU < MinMTU || out.MTU > MaxMTU) {
		return nil, fieldErr("mtu", strconv.Itoa(out.MTU), "must be 0 (the bridge's MTU) or from %d to %d", MinMTU, MaxMTU)
	}
	if len(env.IPAM) == 0 || string(env.IPAM) == "null" {
		return nil, fieldErr("ipam", "", "is required, for example {\"type\": %q}", IPAMType)
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := decode(env.IPAM, &head); err != nil {
		return nil, prefixField("ipam", err)
	}
	if head.Type == "" {
		return nil, fieldErr("ipam.type", "", "is required, for example %q", IPAMType)
	}
	if strings.ContainsAny(head.Type, "/\\") {
		return nil, fieldErr("ipam.type", head.Type, "must be a plugin name, not a path")
	}
	out.IPAMType = head.Type
	if head.Type == IPAMType {
		var ic IPAMConfig
		if err := decode(env.IPAM, &ic); err != nil {
			return nil, prefixField("ipam", err)
		}
		ipam, err := ic.Validate(env.Name, "ipam")
		if err != nil {
			return nil, err
		}
		out.IPAM = ipam
	}
	return out, nil
}

// prefixField puts the enclosing object's name before a type error's field.
func prefixField(prefix string, err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		c := *fe
		c.Field = prefix + "." + c.Field
		return &c
	}
	return err
}

// ValidateIfName checks a Linux interface name.
func ValidateIfName(field, name string) error {
	switch {
	case name == "":
		return fieldErr(field, "", "is required")
	case len(name) > MaxIfNameLen:
		return fieldErr(field, name, "is %d characters long; an interface name has at most %d", len(name), MaxIfNameLen)
	case name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n"):
		return fieldErr(field, name, "is not a valid interface name (no '/', ':' or white space)")
	}
	return nil
}
