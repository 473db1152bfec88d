package benchnat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// The topology: a node namespace playing the host, with the esb bridge
// made by esb-bridge, a second node address on its loopback, HAProxy bound
// to that address in front of a Go backend on 127.0.0.1, and a worker
// attached to the bridge. A worker reaches HAProxy through the gateway's
// forwarded port (DNAT to Frontend) or directly (Direct): two frontends
// alike but for their port, so that the two paths never meet on one
// server-side 4-tuple. (They would otherwise: a port the worker reuses
// finds HAProxy's TIME_WAIT of the other path, whose TCP timestamps, whose
// offset Linux derives from the address pair the client sees, run on
// another clock; PAWS then drops the SYN and the connection waits for a
// retransmission.) The density benchmark builds the same around a live
// esb-agent.
const (
	NodeAddr  = "192.0.2.10"        // on the node's lo: reachable from workers without DNAT
	FwdPort   = 9000                // the forward every setup uses
	Frontend  = NodeAddr + ":19000" // the forward's target
	Direct    = NodeAddr + ":19001" // the worker's direct way in
	Backend   = "127.0.0.1:18080"
	ViaDNAT   = conf.DefaultGateway + ":9000"
	BigPath   = "/big"
	SmallPath = "/small"
	BigSize   = 10 << 20 // bytes of a /big response
	SmallBody = "ok\n"
)

// HAProxyConfig is the local proxy: two HTTP frontends on the node
// address, the Go backend behind it with its connections reused across
// clients (so a worker's connection costs one accept, not also a connect).
const HAProxyConfig = `global
	maxconn 4096
	nbthread 1

defaults
	mode http
	timeout connect 2s
	timeout client 10s
	timeout server 10s
	http-reuse always

frontend fe_dnat
	bind ` + Frontend + `
	default_backend be_go

frontend fe_direct
	bind ` + Direct + `
	default_backend be_go

backend be_go
	server go ` + Backend + `
`

// ServeBackend runs the proxy's backend in node until the test ends:
// SmallPath answers SmallBody, BigPath BigSize bytes, both with a
// Content-Length.
func ServeBackend(tb testing.TB, node ns.NetNS) {
	tb.Helper()
	l, err := nodetest.Listen(node, "tcp4", Backend)
	if err != nil {
		tb.Fatalf("backend listen on %s: %v", Backend, err)
	}
	big := bytes.Repeat([]byte("esb-benchnat "), BigSize/13+1)[:BigSize]
	nodetest.ServeHTTP(tb, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := []byte(SmallBody)
		if r.URL.Path == BigPath {
			body = big
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	}))
}

// BuildLoadgen builds the load generator (tests/bench/nat/loadgen) into a
// directory removed when the test ends.
func BuildLoadgen(tb testing.TB) string {
	return nstest.GoBuild(tb, tb.TempDir(), "./tests/bench/nat/loadgen")
}

// RunLoadgen runs one round of the load generator bin inside a worker's
// namespace, entered by the command enter (ip netns exec NAME, or nsenter
// --net=PATH), and returns one result per address of cfg.
func RunLoadgen(ctx context.Context, enter []string, bin string, cfg LoadConfig) ([]LoadResult, error) {
	args := append(enter[1:], bin, "-mode", cfg.Mode, "-addr", strings.Join(cfg.Addrs, ","), "-path", cfg.Path,
		"-duration", cfg.Duration.String(), "-max", strconv.Itoa(cfg.MaxConns),
		"-body", strconv.FormatInt(cfg.BodySize, 10), "-timeout", cfg.Timeout.String())
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, enter[0], args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("loadgen in the worker: %w\n%s", err, stderr.String())
	}
	var res []LoadResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("loadgen output %q: %w", out, err)
	}
	if len(res) != len(cfg.Addrs) {
		return nil, fmt.Errorf("loadgen output %q: %d results for %d addresses", out, len(res), len(cfg.Addrs))
	}
	return res, nil
}
