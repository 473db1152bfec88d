package conf

import (
	"errors"

	"github.com/containernetworking/cni/pkg/types"
)

// CNI error codes of esb-bridge and esb-ipam beyond the spec's (the spec
// keeps 0 to 99; 100 and up are the plugins'). This is the one list: the
// plugins return them, the agent and the tests act on them through the
// helpers below.
const (
	CodeExhausted      uint = 100 // a range has no free address
	CodeCorrupt        uint = 101 // the IPAM store cannot be read
	CodeDrift          uint = 102 // CHECK found the attachment differs from the previous result
	CodeBridgeFull     uint = 103 // the bridge holds BridgeMaxPorts ports: the kernel takes no more
	CodeSubnetConflict uint = 110 // another interface owns the subnet
	CodeLinkConflict   uint = 111 // a link of ours is in the way or is not what we expect
)

// CNICode returns the code of the CNI error in err's chain; ok is false
// when err holds none (the plugin did not run, or failed outside CNI).
func CNICode(err error) (code uint, ok bool) {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code, true
	}
	return 0, false
}

// IsExhausted reports whether err says the network has no address left:
// ADD's CodeExhausted, or STATUS's 50 (plugin not available: no ADD can
// succeed).
func IsExhausted(err error) bool {
	code, ok := CNICode(err)
	return ok && (code == CodeExhausted || code == types.ErrPluginNotAvailable)
}

// IsTryAgain reports whether err is the spec's 11 (try again later), which
// the plugins return when the IPAM store stays locked past lockWait.
func IsTryAgain(err error) bool {
	code, ok := CNICode(err)
	return ok && code == types.ErrTryAgainLater
}

// IsDrift reports whether err is CHECK's CodeDrift.
func IsDrift(err error) bool {
	code, ok := CNICode(err)
	return ok && code == CodeDrift
}

// IsBridgeFull reports whether err is ADD's CodeBridgeFull: the bridge
// already holds BridgeMaxPorts ports, so no worker can be attached to it
// until one is detached.
func IsBridgeFull(err error) bool {
	code, ok := CNICode(err)
	return ok && code == CodeBridgeFull
}
