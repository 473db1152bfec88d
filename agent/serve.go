package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
)

// Serve follows the runtime's events (Agent.Watch), sweeps, and serves
// the API on the unix socket, TCP with mutual TLS and the metrics
// listener until ctx ends or a listener fails; then it stops serving,
// waits for the watch, the sweeps and the background work of the agent,
// and removes its socket.
func (d *Daemon) Serve(ctx context.Context) error {
	a, c := d.agent, d.cfg
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { a.Watch(watchCtx); close(watched) }()
	defer func() { stopWatch(); <-watched }()
	swept := make(chan struct{})
	go func() { a.Maintain(watchCtx, c.SweepInterval); close(swept) }()
	defer func() { stopWatch(); <-swept }()

	srv := grpc.NewServer(grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.StatsHandler(answerStats{}))
	agentv1.RegisterAgentServiceServer(srv, NewServer(a))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus(agentv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 4)
	d.watchResolver(ctx, errc)
	var listeners []net.Listener
	if c.Socket != "" {
		l, err := listenUnix(c.Socket)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		go func() { errc <- srv.Serve(l) }()
	}
	stopTCP, err := d.serveTCP(hs, errc)
	if err != nil {
		return err
	}
	defer stopTCP()
	stopMetrics, err := d.serveMetrics(errc)
	if err != nil {
		return err
	}
	defer stopMetrics()
	d.log.Info("esb-agent serving", "socket", c.Socket, "tcp", c.TCPListen, "metrics", c.MetricsListen, "runtime", d.rt.Name())
	select {
	case <-ctx.Done():
	case err := <-errc:
		srv.Stop()
		return err
	}
	d.shutdown(srv, hs, listeners)
	return nil
}

// shutdown stops serving (gracefully, for at most 10 s), waits for the
// agent's background work and removes the unix socket.
func (d *Daemon) shutdown(srv *grpc.Server, hs *health.Server, listeners []net.Listener) {
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	d.agent.Wait()
	for _, l := range listeners {
		_ = os.Remove(l.Addr().String())
	}
	d.log.Info("esb-agent stopped; workers keep running")
}

// watchResolver passes a failure of the workers' resolver to errc: the
// daemon stops rather than serve workers whose names do not resolve.
func (d *Daemon) watchResolver(ctx context.Context, errc chan<- error) {
	if d.dns == nil {
		return
	}
	go func() {
		select {
		case err := <-d.dns.srv.Err():
			if err != nil {
				errc <- fmt.Errorf("workers' resolver: %w", err)
			}
		case <-ctx.Done():
		}
	}()
}

// serveTCP serves the API over TCP with mutual TLS when configured; the
// function it returns stops that server.
func (d *Daemon) serveTCP(hs *health.Server, errc chan<- error) (func(), error) {
	if d.cfg.TCPListen == "" {
		return func() {}, nil
	}
	tcpSrv, l, err := listenTCP(d.cfg, NewServer(d.agent), hs)
	if err != nil {
		return nil, err
	}
	go func() { errc <- tcpSrv.Serve(l) }()
	return tcpSrv.GracefulStop, nil
}

// serveMetrics serves /metrics when configured; the function it returns
// closes that server. An address another process (another stack's agent)
// holds fails here, at start, naming the setting.
func (d *Daemon) serveMetrics(errc chan<- error) (func(), error) {
	if d.cfg.MetricsListen == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", d.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("metrics-listen %s (each agent on a host needs its own): %w", d.cfg.MetricsListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	hsrv := &http.Server{Addr: d.cfg.MetricsListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hsrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return func() { _ = hsrv.Close() }, nil
}

// listenUnix listens on path with mode 0600, replacing a stale socket.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return nil, fmt.Errorf("another agent serves %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// listenTCP makes the TCP face of the API: a gRPC server that accepts
// only TLS 1.3 clients presenting a certificate signed by the client CA.
func listenTCP(c DaemonConfig, api agentv1.AgentServiceServer, hs healthpb.HealthServer) (*grpc.Server, net.Listener, error) {
	creds, err := mutualTLS(c)
	if err != nil {
		return nil, nil, err
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.MaxRecvMsgSize(MaxRequestBytes), grpc.StatsHandler(answerStats{}))
	agentv1.RegisterAgentServiceServer(srv, api)
	healthpb.RegisterHealthServer(srv, hs)
	l, err := net.Listen("tcp", c.TCPListen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", c.TCPListen, err)
	}
	return srv, l, nil
}

func mutualTLS(c DaemonConfig) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	pem, err := os.ReadFile(c.TLSClientCA)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", c.TLSClientCA)
	}
	return credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}), nil
}
