package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edge-serverless-box/esbnet/internal/testpki"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// gatewayPython is Debian's interpreter, which python3-grpcio and
// python3-grpc-tools install for (scripts/deps.sh).
const gatewayPython = "/usr/bin/python3"

// TestGatewayPythonClient: a Python gRPC client with the ESB Gateway's
// settings (AGENT_GRPC_TLS_*: CA, client certificate and key; the address
// dialed is in the agent certificate's SAN) drives esb-agent over mutual
// TLS, and over the unix socket, through stubs generated from our proto.
func TestGatewayPythonClient(t *testing.T) {
	if out, err := exec.Command(gatewayPython, "-c", "import grpc, grpc_tools").CombinedOutput(); err != nil {
		nstest.Unavailable(t, "python3-grpcio and python3-grpc-tools (scripts/deps.sh): %v: %s", err, out)
	}
	e := newEnv(t)
	stubs := t.TempDir()
	if out, err := exec.Command(gatewayPython, "-m", "grpc_tools.protoc", "-I", "../../agent/api/v1",
		"--python_out="+stubs, "--grpc_python_out="+stubs, "agent.proto").CombinedOutput(); err != nil {
		t.Fatalf("generate Python stubs: %v: %s", err, out)
	}
	ca := testpki.New(t, "esb-gateway-py")
	cert, key, _ := ca.Issue(t, "agent", true, net.ParseIP("127.0.0.1"))
	clientCert, clientKey, _ := ca.Issue(t, "gateway", false)
	port := 17444
	e.startAgent("-tcp-listen", fmt.Sprintf("127.0.0.1:%d", port), "-tls-cert", cert, "-tls-key", key, "-tls-client-ca", ca.File)
	script, err := filepath.Abs("testdata/gateway_client.py")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		// The Gateway shares the node's network: run it there; the
		// address it dials is in the agent certificate's SAN.
		{"mutual TLS", []string{"nsenter", "--net=" + e.node.Path(), gatewayPython, script, stubs,
			fmt.Sprintf("127.0.0.1:%d", port), e.image, "py-gw", ca.File, clientCert, clientKey}},
		{"unix socket", []string{gatewayPython, script, stubs, "unix:" + e.Socket(), e.image, "py-gw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(tc.cmd[0], tc.cmd[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(tc.cmd, " "), err, out)
			}
			var got struct {
				Worker struct {
					ID        string `json:"id"`
					IPAddress string `json:"ip_address"`
					Port      int    `json:"port"`
				} `json:"worker"`
				Listed []struct {
					ID     string `json:"id"`
					Status string `json:"status"`
				} `json:"listed"`
				Invoke struct {
					StatusCode int             `json:"status_code"`
					Body       nodetest.Answer `json:"body"`
				} `json:"invoke"`
				Destroyed bool   `json:"destroyed"`
				Pause     string `json:"pause_after_destroy"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("decode %s: %v", out, err)
			}
			e.seen.add(got.Worker.ID)
			if got.Worker.Port != 8080 || len(got.Listed) != 1 || got.Listed[0].ID != got.Worker.ID || got.Listed[0].Status != "RUNNING" ||
				got.Invoke.StatusCode != 200 || got.Invoke.Body.Env["ESB_WORKER_ID"] != got.Worker.ID || !got.Destroyed || got.Pause != "NOT_FOUND" {
				t.Errorf("the Python client saw %s", out)
			}
			t.Logf("Python client: %s", out)
		})
	}
	e.expectNoTraces("after the Python client")
}
