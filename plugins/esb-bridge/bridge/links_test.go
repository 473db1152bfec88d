package bridge

import (
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
)

// A refused port is CodeBridgeFull, naming the bridge and the limit; the
// namespace tier (tests/ns/bridgetest TestBridgeFull) gets it from the kernel.
func TestBridgeFullError(t *testing.T) {
	err := bridgeFull("esb-cni0")
	if !conf.IsBridgeFull(err) {
		t.Fatalf("bridgeFull is not CodeBridgeFull: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "bridge esb-cni0 is full") || !strings.Contains(msg, "at most 1023 ports") {
		t.Errorf("message does not name the bridge and the limit: %q", msg)
	}
}
