package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/internal/testpki"
	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

const (
	agentTCPPort   = 17443 // the agent's mutual-TLS listener, on every node address
	hostSvcPort    = 18081 // a service of the node on every node address
	hostSvcBody    = "esb e2e host service"
	spoofedAddr    = "10.88.77.77"
	spoofedMAC     = "0a:58:0a:58:99:99"
	spoofTimeout   = 5 * time.Second // an answer took up to 1.3 s at load 20-40
	isolationProbe = "probe"
)

// TestWorkerIsolation starts the agent as production would (NAT rules
// with the proxy forward, the mutual-TLS TCP listener on every node
// address, read-only worker roots) and checks, from inside a real worker
// it created, what the worker can reach: the proxy forward answers, while
// the agent's TCP port and metrics, a node service, HAProxy's own address,
// and another worker do not; the agent's socket is not in the worker's
// file system; the worker process is confined (no-new-privileges, seccomp,
// no NET_RAW or NET_ADMIN, read-only root). Each refusal has a control that
// shows the target answers the node. Finally frames from the worker's
// namespace with a forged source address or MAC get no answer, while its
// own do.
func TestWorkerIsolation(t *testing.T) { forRuntimes(t, testWorkerIsolation) }

func testWorkerIsolation(t *testing.T, e *env) {
	rules := e.startProxy()
	e.serveHostService()
	ca := testpki.New(t, "esb-e2e")
	cert, key, _ := ca.Issue(t, "agent", true, net.ParseIP(nodeAddr))
	_, _, client := ca.Issue(t, "gateway", false)
	e.startAgent("-nat-rules", rules, "-tcp-listen", fmt.Sprintf("0.0.0.0:%d", agentTCPPort),
		"-tls-cert", cert, "-tls-key", key, "-tls-client-ca", ca.File, "-read-only-rootfs")

	// The socket: mode 0600, owned by root.
	fi, err := os.Lstat(e.Socket())
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Errorf("agent socket %s is %v owned by uid %d, want a socket of mode 0600 owned by root", e.Socket(), fi.Mode(), st.Uid)
	}

	a := e.mustAcquire(e.acquireReq("alice", isolationProbe))
	b := e.mustAcquire(e.acquireReq("bob", "neighbour"))

	// Controls: from the node, every target answers.
	e.mustInvoke(b, `{"from":"node"}`)
	nodeTargets := map[string]string{
		"agent TCP port": fmt.Sprintf("%s:%d", nodeAddr, agentTCPPort),
		"host service":   fmt.Sprintf("%s:%d", gatewayIP, hostSvcPort),
		"metrics":        metricsAddr,
		"HAProxy":        proxyAddr,
	}
	for what, addr := range nodeTargets {
		if err := e.inNode(func() error {
			c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
			if err == nil {
				_ = c.Close()
			}
			return err
		}); err != nil {
			t.Fatalf("control: the node cannot reach the %s at %s: %v", what, addr, err)
		}
	}
	if err := e.tlsCall(addr(nodeAddr, agentTCPPort), ca, client); err != nil {
		t.Fatalf("control: a client with a good certificate cannot call the agent over TCP: %v", err)
	}

	// The worker process: confined, read-only root, no agent socket.
	pid := e.workerPID(a.GetId())
	runtimetest.CheckWorkerConfinement(t, pid, true)
	for _, p := range []string{e.Socket(), filepath.Dir(e.Socket())} {
		if _, err := os.Lstat(filepath.Join(fmt.Sprintf("/proc/%d/root", pid), p)); !os.IsNotExist(err) {
			t.Errorf("the worker's file system has %s (%v), want it absent", p, err)
		}
	}

	// Probes from inside worker a, all at once (a refused one waits for
	// the worker's 5 s fetch timeout). Every target answers at once when
	// reached (the HTTP services with a status, the TLS listener by ending
	// a connection that does not speak TLS), so a failed dial or a timeout
	// means the connection was never made.
	probes := []struct {
		what, url string
		reach     bool
	}{
		{"the proxy forward", fetchURL, true},
		{"the agent's TCP port on the gateway", url(gatewayIP, agentTCPPort), false},
		{"the agent's TCP port on the node address", url(nodeAddr, agentTCPPort), false},
		{"the agent's metrics through the gateway", url(gatewayIP, 9464) + "metrics", false},
		{"a node service on the gateway", url(gatewayIP, hostSvcPort), false},
		{"a node service on the node address", url(nodeAddr, hostSvcPort), false},
		{"HAProxy directly", "http://" + proxyAddr + "/", false},
		{"another worker", url(b.GetIp(), int(b.GetPort())) + "healthz", false},
	}
	type result struct {
		status  int
		body    string
		fetchOK bool
		err     string
	}
	results := make([]result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := e.invoke(a, fmt.Sprintf(`{"fetch":%q}`, p.url), 3*invokeTimeout)
			if err != nil {
				results[i].err = "invoke: " + err.Error()
				return
			}
			var ans nodetest.Answer
			if err := jsonUnmarshal(body, &ans); err != nil || ans.Fetch == nil {
				results[i].err = fmt.Sprintf("answer without fetch: %v: %s", err, body)
				return
			}
			results[i] = result{status: ans.Fetch.Status, body: ans.Fetch.Body, err: ans.Fetch.Error, fetchOK: true}
		}()
	}
	wg.Wait()
	for i, p := range probes {
		r := results[i]
		switch {
		case !r.fetchOK:
			t.Errorf("probe of %s: %s", p.what, r.err)
		case p.reach && (r.status != http.StatusOK || r.body != backendBody(frontendName)):
			t.Errorf("worker cannot reach %s at %s: status %d body %q error %q", p.what, p.url, r.status, r.body, r.err)
		case !p.reach && (r.status != 0 || !connectFailed(r.err)):
			t.Errorf("worker reached %s at %s: status %d body %q error %q; want a failed connect", p.what, p.url, r.status, r.body, r.err)
		default:
			t.Logf("probe of %s: status %d error %q", p.what, r.status, r.err)
		}
	}

	e.checkSpoofing(a)

	e.mustRelease(a)
	e.mustRelease(b)
	e.expectNoTraces("after release")
}

// connectFailed tells a fetch error of a connection never made (refused,
// unreachable, or no answer before the worker's timeout).
func connectFailed(fetchErr string) bool {
	return strings.Contains(fetchErr, "dial tcp") || strings.Contains(fetchErr, "Client.Timeout exceeded")
}

func url(host string, port int) string { return "http://" + addr(host, port) + "/" }

func addr(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// tlsCall calls ListWorkers from the node over the agent's TCP listener
// at target with the client certificate.
func (e *env) tlsCall(target string, ca *testpki.CA, client tls.Certificate) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	creds := credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{client}, ServerName: nodeAddr})
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) {
			var c net.Conn
			err := e.inNode(func() error {
				var err error
				c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", a)
				return err
			})
			return c, err
		}))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	_, err = agentv1.NewAgentServiceClient(conn).ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: "alice"})
	return err
}

// serveHostService runs an HTTP service on every address of the node, as
// an SSH daemon or a database of the host would listen.
func (e *env) serveHostService() {
	e.t.Helper()
	l, err := nodetest.Listen(e.node, "tcp4", fmt.Sprintf("0.0.0.0:%d", hostSvcPort))
	if err != nil {
		e.t.Fatalf("host service: %v", err)
	}
	nodetest.ServeHTTP(e.t, l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, hostSvcBody)
	}))
}

// workerPID returns the host PID of worker id's process.
func (e *env) workerPID(id string) int {
	e.t.Helper()
	if e.rt == stacktest.Docker {
		info := e.dockerInspect(id)
		if info.State == nil || info.State.Pid <= 0 {
			e.t.Fatalf("worker %s has no process", id)
		}
		return info.State.Pid
	}
	sc := bufio.NewScanner(strings.NewReader(e.ctr("tasks", "list")))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == id {
			pid, err := strconv.Atoi(f[1])
			if err != nil || pid <= 0 {
				e.t.Fatalf("task %s has PID %q", id, f[1])
			}
			return pid
		}
	}
	e.t.Fatalf("worker %s has no task", id)
	return 0
}

// inWorkerNS runs a command in worker w's network namespace (as root,
// with every capability the worker itself lacks).
func (e *env) inWorkerNS(w *agentv1.Worker, args ...string) (string, error) {
	return netnsCmd(e.pinPath(w.GetId()), nil, args...)
}

func (e *env) mustInWorkerNS(w *agentv1.Worker, args ...string) string {
	e.t.Helper()
	out, err := e.inWorkerNS(w, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// gatewayAnswers pings the gateway once from w's namespace, from src when
// set.
func (e *env) gatewayAnswers(w *agentv1.Worker, src string) bool {
	args := []string{"ping", "-n", "-c", "1", "-W", strconv.Itoa(int(spoofTimeout.Seconds()))}
	if src != "" {
		args = append(args, "-I", src)
	}
	start := time.Now()
	_, err := e.inWorkerNS(w, append(args, gatewayIP)...)
	if err == nil {
		// The margin of the wait for no answer is how long an answer
		// takes (nsenter and ping's start included).
		noteWait("spoofTimeout (answered ping)", spoofTimeout, time.Since(start))
	}
	return err == nil
}

// checkSpoofing forges, from w's namespace, first a source address and
// then a source MAC: neither gets an answer from the gateway, while w's own
// address and MAC do before, between and after.
func (e *env) checkSpoofing(w *agentv1.Worker) {
	e.t.Helper()
	if _, err := exec.LookPath("ping"); err != nil {
		e.t.Fatalf("ping is not installed (iputils-ping, scripts/deps.sh): %v", err)
	}
	if !e.gatewayAnswers(w, "") {
		e.t.Fatalf("control: worker %s cannot ping the gateway with its own address", w.GetIp())
	}
	e.mustInWorkerNS(w, "ip", "addr", "add", spoofedAddr+"/16", "dev", "eth0")
	if e.gatewayAnswers(w, spoofedAddr) {
		e.t.Errorf("a ping from the forged source %s got an answer", spoofedAddr)
	}
	e.mustInWorkerNS(w, "ip", "addr", "del", spoofedAddr+"/16", "dev", "eth0")
	if !e.gatewayAnswers(w, w.GetIp()) {
		e.t.Fatalf("ping from the worker's own %s fails after removing the forged address", w.GetIp())
	}
	// Not /sys/class/net: nsenter --net keeps the host's sysfs mount.
	f := strings.Fields(e.mustInWorkerNS(w, "ip", "-br", "link", "show", "dev", "eth0"))
	if len(f) < 3 {
		e.t.Fatalf("ip -br link show eth0 in worker %s: %q", w.GetId(), f)
	}
	orig := f[2]
	if want := macOf(w.GetIp()); orig != want {
		e.t.Fatalf("worker %s has MAC %s, want %s", w.GetId(), orig, want)
	}
	setMAC := func(mac string) {
		e.t.Helper()
		e.mustInWorkerNS(w, "ip", "link", "set", "eth0", "address", mac)
		e.mustInWorkerNS(w, "ip", "neigh", "flush", "all")
		if _, err := e.nodeCmd(nil, "ip", "neigh", "flush", "all"); err != nil {
			e.t.Fatalf("flush the node's neighbours: %v", err)
		}
	}
	setMAC(spoofedMAC)
	if e.gatewayAnswers(w, "") {
		e.t.Errorf("a ping from the forged MAC %s got an answer", spoofedMAC)
	}
	setMAC(orig)
	if !e.gatewayAnswers(w, "") {
		e.t.Fatalf("ping fails after restoring MAC %s", orig)
	}
}

// macOf is the MAC esb-bridge derives from a worker's IPv4 address: 0a:58
// followed by the address's four bytes.
func macOf(ip string) string {
	b := net.ParseIP(ip).To4()
	if b == nil {
		return ""
	}
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}
