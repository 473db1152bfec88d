package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// --- API calls -------------------------------------------------------------------

func rpcCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	t.Cleanup(cancel)
	return ctx
}

// api returns the running agent's client.
func (e *env) api() agentv1.AgentServiceClient {
	e.t.Helper()
	if e.agent == nil {
		e.t.Fatal("no agent runs")
	}
	return e.agent.API
}

// acquireReq is an acquire of the worker image for owner and function.
func (e *env) acquireReq(owner, function string) *agentv1.AcquireWorkerRequest {
	return &agentv1.AcquireWorkerRequest{Function: function, Image: e.image, OwnerId: owner}
}

// acquire calls AcquireWorker and remembers the worker's ID.
func (e *env) acquire(r *agentv1.AcquireWorkerRequest) (*agentv1.Worker, error) {
	defer since("rpc (acquire)", rpcTimeout, time.Now())
	resp, err := e.api().AcquireWorker(rpcCtx(e.t), r)
	if err != nil {
		return nil, err
	}
	e.seen.add(resp.GetWorker().GetId())
	return resp.GetWorker(), nil
}

// mustAcquire acquires and checks what every acquired worker must be:
// busy, owned by the caller, on the esb subnet, serving the agent's port.
func (e *env) mustAcquire(r *agentv1.AcquireWorkerRequest) *agentv1.Worker {
	e.t.Helper()
	w, err := e.acquire(r)
	if err != nil {
		e.t.Fatalf("acquire %s for %s: %v", r.GetFunction(), r.GetOwnerId(), err)
	}
	return e.checkAcquired(w, r)
}

// checkAcquired checks w, acquired for r, as mustAcquire does.
func (e *env) checkAcquired(w *agentv1.Worker, r *agentv1.AcquireWorkerRequest) *agentv1.Worker {
	e.t.Helper()
	ip, err := netip.ParseAddr(w.GetIp())
	subnet, gateway, broadcast := esbSubnet, gatewayIP, "10.88.255.255"
	if e.Subnet.IsValid() { // another stack's env
		subnet, gateway, broadcast = e.Subnet, e.Subnet.Addr().Next().String(), lastAddr(e.Subnet).String()
	}
	switch {
	case err != nil || !subnet.Contains(ip) || ip.String() == gateway || ip.String() == broadcast:
		e.t.Errorf("worker %s has IP %q, want a host address of %s", w.GetId(), w.GetIp(), subnet)
	case w.GetState() != agentv1.WorkerState_WORKER_STATE_BUSY:
		e.t.Errorf("acquired worker %s is %s, want busy", w.GetId(), w.GetState())
	case w.GetOwnerId() != r.GetOwnerId() || w.GetFunction() != r.GetFunction() || w.GetImage() != r.GetImage():
		e.t.Errorf("acquired worker %+v does not match the request %+v", w, r)
	case w.GetId() == "" || w.GetPort() == 0:
		e.t.Errorf("acquired worker has no ID or port: %+v", w)
	}
	return w
}

func (e *env) release(w *agentv1.Worker) error {
	_, err := e.api().ReleaseWorker(rpcCtx(e.t), &agentv1.ReleaseWorkerRequest{WorkerId: w.GetId(), OwnerId: w.GetOwnerId()})
	return err
}

func (e *env) mustRelease(w *agentv1.Worker) {
	e.t.Helper()
	if err := e.release(w); err != nil {
		e.t.Fatalf("release %s: %v", w.GetId(), err)
	}
}

// list calls ListWorkers (every worker when owner is "").
func (e *env) list(owner string) []*agentv1.Worker {
	e.t.Helper()
	r, err := e.api().ListWorkers(rpcCtx(e.t), &agentv1.ListWorkersRequest{OwnerId: owner})
	if err != nil {
		e.t.Fatalf("list workers of %q: %v", owner, err)
	}
	return r.GetWorkers()
}

// waitList polls ListWorkers until ok accepts it.
func (e *env) waitList(what string, limit time.Duration, ok func([]*agentv1.Worker) bool) []*agentv1.Worker {
	e.t.Helper()
	start := time.Now()
	defer since(fmt.Sprintf("waitList %s", limit), limit, start)
	deadline := start.Add(limit)
	for {
		ws := e.list("")
		if ok(ws) {
			return ws
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not within %s; workers: %v", what, limit, ws)
		}
		time.Sleep(pollInterval)
	}
}

// wantCode fails the test unless err is a gRPC status with code and a
// message containing every string of want.
func wantCode(t *testing.T, what string, err error, code codes.Code, want ...string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code {
		t.Errorf("%s: %v, want %s", what, err, code)
		return
	}
	for _, w := range want {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("%s: message %q does not name %q", what, st.Message(), w)
		}
	}
}

// unavailable reports whether err is a gRPC status Unavailable: the
// agent's answer while its runtime is down.
func unavailable(err error) bool {
	st, _ := status.FromError(err)
	return st.Code() == codes.Unavailable
}

// --- invoking workers from the node -------------------------------------------

// nodeClient is an HTTP client whose sockets are made in the node (the
// workers' addresses are reachable only from there).
func (e *env) nodeClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := e.inNode(func() error {
				d := net.Dialer{Timeout: timeout}
				var err error
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// invoke POSTs payload to the worker's invoke path from the node and
// returns the body of a 200 answer.
func (e *env) invoke(w *agentv1.Worker, payload string, timeout time.Duration) (string, error) {
	url := "http://" + net.JoinHostPort(w.GetIp(), strconv.Itoa(int(w.GetPort()))) + invokePath
	defer since(fmt.Sprintf("invoke %s", timeout), timeout, time.Now())
	resp, err := e.nodeClient(timeout).Post(url, "application/json", strings.NewReader(payload))
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("read answer of %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("invoke %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// mustInvoke invokes the worker and checks that the answer echoes payload
// and comes from that worker (its ESB_WORKER_ID and ESB_FUNCTION).
func (e *env) mustInvoke(w *agentv1.Worker, payload string) nodetest.Answer {
	e.t.Helper()
	body, err := e.invoke(w, payload, invokeTimeout)
	if err != nil {
		e.t.Fatalf("invoke worker %s at %s: %v", w.GetId(), w.GetIp(), err)
	}
	var a nodetest.Answer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		e.t.Fatalf("decode answer of %s: %v\n%s", w.GetId(), err, body)
	}
	if !jsonEqual(a.Echo, []byte(payload)) {
		e.t.Errorf("worker %s echoed %s, want %s", w.GetId(), a.Echo, payload)
	}
	if a.Env["ESB_WORKER_ID"] != w.GetId() || a.Env["ESB_FUNCTION"] != w.GetFunction() {
		e.t.Errorf("the answer at %s comes from worker %q of function %q, want %s of %s",
			w.GetIp(), a.Env["ESB_WORKER_ID"], a.Env["ESB_FUNCTION"], w.GetId(), w.GetFunction())
	}
	return a
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// metrics scrapes the agent's /metrics from the node.
func (e *env) metrics() string {
	e.t.Helper()
	resp, err := e.nodeClient(5 * time.Second).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		e.t.Fatalf("scrape metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		e.t.Fatalf("scrape metrics: %s, %v", resp.Status, err)
	}
	return string(b)
}

// metricValue returns the value of the sample whose name and labels are
// exactly series, e.g. `esb_agent_workers{state="busy"}`.
func metricValue(text, series string) (string, bool) {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// --- esbctl ----------------------------------------------------------------------

// esbctl runs esbctl with args, in the node when inNode is set (invoke
// needs the workers' addresses), and returns stdout, stderr and the exit
// code.
func (e *env) esbctl(inNode bool, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	_, bin := binaries(e.t)
	name := bin
	if inNode {
		args = append([]string{"--net=" + e.node.Path(), bin}, args...)
		name = "nsenter"
	}
	return nodetest.RunCode(e.t, cmdTimeout, name, args...)
}
