package agent

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// toServer points the agent's invokes at srv, whatever the worker's address.
func (r *rig) toServer(srv *httptest.Server, dial func(ctx context.Context, network, addr string) (net.Conn, error)) {
	addr := srv.Listener.Addr().String()
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	r.a.invokers.dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, addr)
	}
}

// A released worker's keep-alive connection is closed with the release,
// not left open until its idle timeout.
func TestReleaseClosesTheWorkersConnections(t *testing.T) {
	r := newRig(t, Config{})
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	r.toServer(srv, nil)
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.Invoke(context.Background(), w.ID, "o1", InvokeRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Fatal("the connection closed before the release")
	default:
	}
	if err := r.a.Release(context.Background(), w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	<-closed // the test's deadline bounds the wait
	r.a.invokers.mu.Lock()
	defer r.a.invokers.mu.Unlock()
	if len(r.a.invokers.m) != 0 {
		t.Errorf("clients of released workers kept: %d", len(r.a.invokers.m))
	}
}

// invokeRig serves one worker of owner gw with h, dialled through dial
// (nil: a real dial).
func invokeRig(t *testing.T, h http.HandlerFunc, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Server, string) {
	t.Helper()
	r := newRig(t, Config{})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	r.toServer(srv, dial)
	s := NewServer(r.a)
	w, err := s.EnsureContainer(context.Background(), ensure("gw", "f", nil))
	if err != nil {
		t.Fatal(err)
	}
	return s, w.Id
}

func TestInvokeWorker(t *testing.T) {
	ctx := context.Background()
	setup := invokeRig
	t.Run("retries a refused connection", func(t *testing.T) {
		var dials, hits atomic.Int32
		s, id := setup(t, func(w http.ResponseWriter, _ *http.Request) { hits.Add(1); _, _ = w.Write([]byte("ok")) },
			func(ctx context.Context, network, addr string) (net.Conn, error) {
				if dials.Add(1) <= 2 {
					return nil, syscall.ECONNREFUSED
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			})
		resp, err := s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw", Path: "/x"})
		if err != nil || string(resp.Body) != "ok" || dials.Load() != 3 || hits.Load() != 1 {
			t.Errorf("invoke %v %v after %d dials, %d requests: want ok after 3 dials, 1 request", resp, err, dials.Load(), hits.Load())
		}
	})
	t.Run("no retry once the request was sent", func(t *testing.T) {
		var hits atomic.Int32
		s, id := setup(t, func(w http.ResponseWriter, _ *http.Request) {
			hits.Add(1)
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = c.Close() // the worker dies mid-invoke
			}
		}, nil)
		_, err := s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw", Payload: []byte("x")})
		wantCode(t, "invoke of a dying worker", err, codes.Unavailable, "not retried")
		if n := hits.Load(); n != 1 {
			t.Errorf("the worker got the request %d times, want 1", n)
		}
	})
	t.Run("answer over 10 MiB", func(t *testing.T) {
		s, id := setup(t, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write(make([]byte, MaxInvokeResponseBytes+1))
		}, nil)
		_, err := s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw"})
		wantCode(t, "big answer", err, codes.ResourceExhausted, "bytes")
	})
	t.Run("timeout_ms", func(t *testing.T) {
		release := make(chan struct{})
		s, id := setup(t, func(_ http.ResponseWriter, q *http.Request) {
			select {
			case <-release:
			case <-q.Context().Done():
			}
		}, nil)
		defer close(release)
		_, err := s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw", TimeoutMs: 50})
		wantCode(t, "slow worker", err, codes.DeadlineExceeded, "no answer")
	})
	t.Run("bad input", func(t *testing.T) {
		s, id := setup(t, func(http.ResponseWriter, *http.Request) {}, nil)
		_, err := s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw", Path: "no-slash"})
		wantCode(t, "relative path", err, codes.InvalidArgument, "invalid path")
		_, err = s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{OwnerId: "gw"})
		wantCode(t, "no container_id", err, codes.InvalidArgument, "invalid container_id")
		_, err = s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: "0123456789abcdef", OwnerId: "gw"})
		wantCode(t, "unknown worker", err, codes.NotFound, "no worker")
		_, err = s.InvokeWorker(ctx, &agentv1.InvokeWorkerRequest{ContainerId: id, OwnerId: "gw", TimeoutMs: -1})
		wantCode(t, "negative timeout", err, codes.InvalidArgument, "timeout_ms")
	})
}
