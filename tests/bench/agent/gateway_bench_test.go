package benchagent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// Sizes and targets of the ESB Gateway's contract (issue 12).
const (
	gatewayColdSamples   = 100  // cold EnsureContainer, and as many cold AcquireWorker
	gatewayInvokeSamples = 1000 // InvokeWorker, and as many direct POSTs
	ensureVsAcquireLimit = 1.05 // EnsureContainer p50 / AcquireWorker p50
	invokeOverheadLimit  = time.Millisecond
)

// BenchmarkGatewayContract: the Gateway's EnsureContainer against our
// AcquireWorker, cold, interleaved, pool off; then InvokeWorker against a
// direct POST from the node namespace, 1 KiB payload, interleaved, on one
// worker. Over containerd; BenchmarkGatewayContractDocker is the same
// over Docker.
func BenchmarkGatewayContract(b *testing.B) { benchGatewayContract(b, stacktest.Containerd) }

// BenchmarkGatewayContractDocker is BenchmarkGatewayContract with the
// agent on Docker.
func BenchmarkGatewayContractDocker(b *testing.B) { benchGatewayContract(b, stacktest.Docker) }

func benchGatewayContract(b *testing.B, rt string) {
	e := newEnvFor(b, rt)
	p := e.startAgent()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	const owner = "bench-gateway"
	ensure := func() (*agentv1.WorkerInfo, time.Duration) {
		start := time.Now()
		w, err := p.API.EnsureContainer(ctx, &agentv1.EnsureContainerRequest{FunctionName: function, Image: e.image, OwnerId: owner})
		took := time.Since(start)
		if err != nil {
			b.Fatalf("EnsureContainer: %v", err)
		}
		return w, took
	}
	destroy := func(id string) {
		if _, err := p.API.DestroyContainer(ctx, &agentv1.DestroyContainerRequest{ContainerId: id, OwnerId: owner}); err != nil {
			b.Fatalf("DestroyContainer: %v", err)
		}
	}
	acquire := func() time.Duration {
		w, took, err := p.Acquire(e.image, owner, function)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Release(w); err != nil {
			b.Fatal(err)
		}
		return took
	}
	b.ResetTimer()
	var ens, acq Samples
	w, _ := ensure() // warm-up
	destroy(w.GetId())
	acquire()
	for i := range gatewayColdSamples {
		if i%2 == 0 {
			w, d := ensure()
			destroy(w.GetId())
			ens = append(ens, d)
			acq = append(acq, acquire())
		} else {
			acq = append(acq, acquire())
			w, d := ensure()
			destroy(w.GetId())
			ens = append(ens, d)
		}
	}

	w, _ = ensure()
	defer destroy(w.GetId())
	payload := bytes.Repeat([]byte("x"), 1024)
	payload = []byte(`{"p":"` + string(payload[:1014]) + `"}`)
	direct := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := e.node.Do(func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	url := "http://" + net.JoinHostPort(w.GetIpAddress(), strconv.Itoa(int(w.GetPort()))) + "/2015-03-31/functions/function/invocations"
	post := func() time.Duration {
		start := time.Now()
		resp, err := direct.Post(url, "application/json", bytes.NewReader(payload))
		if err != nil {
			b.Fatalf("direct POST: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("direct POST: %s", resp.Status)
		}
		return took
	}
	invoke := func() time.Duration {
		start := time.Now()
		resp, err := p.API.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: w.GetId(), OwnerId: owner, Payload: payload,
			Headers: map[string]string{"Content-Type": "application/json"}})
		took := time.Since(start)
		if err != nil || resp.GetStatusCode() != http.StatusOK {
			b.Fatalf("InvokeWorker: %v %v", resp, err)
		}
		return took
	}
	post()
	invoke()
	var inv, dir Samples
	for i := range gatewayInvokeSamples {
		if i%2 == 0 {
			inv, dir = append(inv, invoke()), append(dir, post())
		} else {
			dir, inv = append(dir, post()), append(inv, invoke())
		}
	}
	b.StopTimer()

	ratio := float64(ens.P50()) / float64(acq.P50())
	over := inv.P50() - dir.P50()
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "missed"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nESB Gateway contract, %s, pool off\n", e.rt)
	fmt.Fprintf(&sb, "| measure | n | p50 | p95 |\n| --- | --- | --- | --- |\n")
	for _, row := range []struct {
		name string
		s    Samples
	}{{"EnsureContainer, cold", ens}, {"AcquireWorker, cold", acq}, {"InvokeWorker, 1 KiB", inv}, {"direct POST from the node, 1 KiB", dir}} {
		fmt.Fprintf(&sb, "| %s | %d | %s | %s |\n", row.name, len(row.s), row.s.P50().Round(10*time.Microsecond), row.s.P95().Round(10*time.Microsecond))
	}
	fmt.Fprintf(&sb, "EnsureContainer p50 / AcquireWorker p50 = %.3f (target <= %.2f: %s)\n", ratio, ensureVsAcquireLimit, verdict(ratio <= ensureVsAcquireLimit))
	fmt.Fprintf(&sb, "InvokeWorker p50 - direct POST p50 = %s (target <= %s: %s)\n", over.Round(time.Microsecond), invokeOverheadLimit, verdict(over <= invokeOverheadLimit))
	_, _ = os.Stdout.WriteString(sb.String())
	b.ReportMetric(ratio, "ensure/acquire-p50")
	b.ReportMetric(float64(over.Microseconds()), "invoke-overhead-µs")
}
