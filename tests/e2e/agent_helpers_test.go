package e2e

// The agent process: esb-agent started in the test's node, waited for,
// and stopped.

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc/backoff"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/agenttest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// agentProc is one run of esb-agent in the node.
type agentProc struct {
	*agenttest.Proc
	// ready is the time from the process start to the socket answering
	// health checks with SERVING: reconcile (adoption) included.
	ready time.Duration
}

// startAgent runs esb-agent in the node with the test's settings and
// extra flags, and waits until its socket answers. The agent is entered
// into the node's network namespace only (nsenter --net), so the
// namespaces it pins stay visible to containerd.
func (e *env) startAgent(extra ...string) *agentProc {
	e.t.Helper()
	if e.agent != nil {
		e.t.Fatal("an agent already runs")
	}
	agentBin, _ := binaries(e.t)
	e.runs++
	args := append(e.runtimeFlags(), e.Flags(nstest.PluginDir(e.t))...)
	args = append(args,
		"-metrics-listen", metricsAddr,
		"-log-level", "debug",
	)
	args = append(args, extra...)
	proc, start, err := agenttest.Start(filepath.Join(e.Base, fmt.Sprintf("agent-%d.log", e.runs)), e.node.Path(), agentBin, args)
	if err != nil {
		e.t.Fatal(err)
	}
	p := &agentProc{Proc: proc}
	e.agent = p

	// A short reconnect backoff, so the wait measures the agent and not
	// gRPC's default one-second backoff after the first refused dial.
	if err := p.Dial(e.Socket(), backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.2, MaxDelay: 100 * time.Millisecond}); err != nil {
		e.t.Fatalf("grpc client: %v", err)
	}
	health := healthpb.NewHealthClient(p.Conn)
	deadline := start.Add(agentStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: agentv1.AgentService_ServiceDesc.ServiceName})
		cancel()
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			p.ready = time.Since(start)
			noteWait("agent start", agentStartTimeout, p.ready)
			return p
		}
		select {
		case <-p.Exited:
			e.t.Fatalf("esb-agent exited at start (%v):\n%s", p.WaitErr, p.log())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("esb-agent does not answer on %s within %s (last: %v):\n%s", e.Socket(), agentStartTimeout, err, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// log returns what the agent wrote so far.
func (p *agentProc) log() string { return p.Log() }

// stopAgent signals the agent and waits for it to exit. After SIGTERM the
// agent must exit 0 (a graceful stop that keeps the workers).
func (e *env) stopAgent(sig syscall.Signal) {
	e.t.Helper()
	if err := e.stopAgentErr(sig); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) stopAgentErr(sig syscall.Signal) error {
	p := e.agent
	if p == nil {
		return nil
	}
	e.agent = nil
	took, err := p.Stop(sig, agentStopTimeout)
	if err != nil {
		return err
	}
	noteWait("agent stop", agentStopTimeout, took)
	return p.ExitErr(sig)
}
