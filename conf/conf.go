// Package conf holds the schemas and defaults every part of esbnet shares:
// the CNI network configuration list (esb-bridge + esb-ipam), the IPAM
// configuration, and their validation. Errors name the offending field and
// the values it accepts, so a plugin can report them verbatim as CNI error
// code 7 (invalid network configuration).
package conf

import (
	"errors"
	"fmt"
)

// Fixed names and defaults of the esb network (docs/architecture.md, Fixed
// names and defaults).
const (
	NetworkName     = "esb"
	BridgeName      = "esb-cni0"
	DefaultSubnet   = "10.88.0.0/16"
	DefaultGateway  = "10.88.0.1"
	DefaultDataDir  = "/run/esb/ipam"
	ConflistPath    = "/etc/cni/net.d/10-esb.conflist"
	CNIBinDir       = "/opt/cni/bin"
	CNIVersion      = "1.1.0"
	BridgeType      = "esb-bridge"
	IPAMType        = "esb-ipam"
	DefaultLockWait = "5s"
	// DefaultGCGrace protects allocations younger than this from GC, so a GC
	// whose valid-attachment list was taken just before a concurrent ADD
	// finished cannot release that ADD's address.
	DefaultGCGrace = "30s"
)

// MaxFileBytes bounds a YAML file (NAT rules, the agent's configuration):
// YAML decoding is slow on large inputs (an 8 MB rule file took about a
// minute), and no real file comes near it.
const MaxFileBytes = 1 << 20

// FieldError reports a configuration field whose value is not acceptable.
// Field is the JSON path of the field, for example "ipam.rangeStart".
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// DecodeError reports input that is not well-formed JSON.
type DecodeError struct{ Err error }

func (e *DecodeError) Error() string { return "decode network config: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// IsFieldError reports whether err is (or wraps) a *FieldError.
func IsFieldError(err error) bool {
	var fe *FieldError
	return errors.As(err, &fe)
}

// IsDecodeError reports whether err is (or wraps) a *DecodeError.
func IsDecodeError(err error) bool {
	var de *DecodeError
	return errors.As(err, &de)
}

func fieldErr(field, value, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Value: value, Reason: fmt.Sprintf(format, args...)}
}
