package agent

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestAfterAnswerInProcess: outside a gRPC call the work starts at once,
// and the agent's Wait joins it.
func TestAfterAnswerInProcess(t *testing.T) {
	r := newRig(t, Config{})
	var ran atomic.Bool
	r.a.afterAnswer(context.Background(), func() { ran.Store(true) })
	r.a.Wait()
	if !ran.Load() {
		t.Error("the work queued outside a call did not run before Wait returned")
	}
}

// TestAfterAnswerWaitsForTheCall serves a call over a unix socket with the
// agent's stats handler: work queued by the handler starts only after the
// handler has returned and the call has ended, and the agent's Wait joins
// it.
func TestAfterAnswerWaitsForTheCall(t *testing.T) {
	r := newRig(t, Config{})
	var returned, startedEarly atomic.Bool
	ran := make(chan struct{})
	queue := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		r.a.afterAnswer(ctx, func() {
			startedEarly.Store(!returned.Load())
			close(ran)
		})
		defer returned.Store(true)
		return h(ctx, req)
	}
	srv := grpc.NewServer(grpc.StatsHandler(answerStats{}), grpc.UnaryInterceptor(queue))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	cc, err := grpc.NewClient("unix://"+l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cc.Close() }()
	if _, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	r.a.Wait()
	select {
	case <-ran:
	default:
		t.Fatal("the queued work had not run when the agent's Wait returned")
	}
	if startedEarly.Load() {
		t.Error("the queued work started before the handler returned")
	}
}
