package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/shim/containerd"
	"github.com/edge-serverless-box/esbnet/shim/docker"
)

// Run is esb-agent: it writes the conflist when the network has none,
// applies and keeps the NAT rules, connects to the runtime, reconciles,
// follows the runtime's events (Agent.Watch), serves the API until ctx ends, then stops serving. Workers outlive it: a
// restarted agent adopts them.
func Run(ctx context.Context, c DaemonConfig, log *slog.Logger) error {
	var a *Agent
	if err := ensureConflist(c, log); err != nil {
		return err
	}
	warnPrivateMountNS(log)
	var natMgr *nat.Manager
	var wdns *workerDNS
	if c.NATRules != "" {
		rules, err := natfile.Load(c.NATRules)
		if err != nil {
			return err
		}
		if wdns, rules, err = startWorkerDNS(c, rules, log); err != nil {
			return err
		}
		if wdns != nil {
			defer func() { _ = wdns.srv.Close() }()
		}
		m := nat.NewManager(nil)
		natMgr = m
		if _, err := m.Apply(rules); err != nil {
			return fmt.Errorf("apply NAT rules: %w", err)
		}
		go func() {
			_ = m.Watch(ctx, rules, c.NATInterval, func(e nat.Event) {
				if e.Err != nil {
					log.Error("NAT repair failed", "trigger", e.Trigger, "err", e.Err)
					return
				}
				log.Info("NAT table repaired", "trigger", e.Trigger, "change", e.Change.String(), "took", e.Took)
			})
		}()
	}
	rt, closeRT, err := newRuntime(c)
	if err != nil {
		return err
	}
	defer closeRT()
	network, err := shim.NewCNI(shim.CNIOptions{ConfDir: c.CNIConfDir, Network: c.Network,
		BinDirs: splitList(c.CNIBinDirs, ":"), CacheDir: c.CNICacheDir})
	if err != nil {
		return err
	}
	recs, err := OpenRecords(c.StateFile)
	if err != nil {
		return err
	}
	defer func() { _ = recs.Close() }()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a = New(Options{Runtime: rt, Network: network, NetNSes: shim.NetNSes{Dir: c.NetNSDir}, Log: log, Records: recs,
		Metrics: NewMetrics(reg), Config: Config{Port: c.Port, ReadyTimeout: c.ReadyTimeout, StopGrace: c.StopGrace,
			MaxWorkers: c.MaxWorkers, MaxParallel: c.MaxParallel, PoolMinIdle: c.PoolMinIdle,
			DefaultMemoryBytes: c.DefaultMemory, LogDir: c.LogDir, ReadOnlyRootfs: c.ReadOnlyRootfs,
			RuntimeTimeout: c.RuntimeTimeout, StateDir: journalDir(c.StateFile), ResolvConf: wdns.resolvConfPath()}})
	reg.MustRegister(newNodeCollector(a, natMgr, networkCapacity(c)))
	if err := rt.Ping(ctx); err != nil {
		return fmt.Errorf("runtime %s does not answer: %w", rt.Name(), err)
	}
	if _, err := a.Reconcile(ctx); err != nil {
		log.Error("reconcile left errors", "err", err)
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { a.Watch(watchCtx); close(watched) }()
	defer func() { stopWatch(); <-watched }()
	swept := make(chan struct{})
	go func() { a.Maintain(watchCtx, c.SweepInterval); close(swept) }()
	defer func() { stopWatch(); <-swept }()

	srv := grpc.NewServer()
	agentv1.RegisterAgentServiceServer(srv, NewServer(a))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	hs.SetServingStatus(agentv1.AgentService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)

	errc := make(chan error, 4)
	if wdns != nil {
		go func() {
			if err := <-wdns.srv.Err(); err != nil {
				errc <- fmt.Errorf("workers' resolver: %w", err)
			}
		}()
	}
	var listeners []net.Listener
	if c.Socket != "" {
		l, err := listenUnix(c.Socket)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		go func() { errc <- srv.Serve(l) }()
	}
	if c.TCPListen != "" {
		tcpSrv, l, err := listenTCP(c, NewServer(a), hs)
		if err != nil {
			return err
		}
		go func() { errc <- tcpSrv.Serve(l) }()
		defer tcpSrv.GracefulStop()
	}
	if c.MetricsListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		hsrv := &http.Server{Addr: c.MetricsListen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hsrv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("metrics: %w", err)
			}
		}()
		defer func() { _ = hsrv.Close() }()
	}
	log.Info("esb-agent serving", "socket", c.Socket, "tcp", c.TCPListen, "metrics", c.MetricsListen, "runtime", rt.Name())
	select {
	case <-ctx.Done():
	case err := <-errc:
		srv.Stop()
		return err
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	a.Wait()
	for _, l := range listeners {
		_ = os.Remove(l.Addr().String())
	}
	log.Info("esb-agent stopped; workers keep running")
	return nil
}

// journalDir is where the agent journals creations in flight: beside its
// state file ("" when it keeps none).
func journalDir(stateFile string) string {
	if stateFile == "" {
		return ""
	}
	return filepath.Dir(stateFile)
}

func newRuntime(c DaemonConfig) (shim.Runtime, func(), error) {
	switch c.Runtime {
	case "containerd":
		rt, err := containerd.New(containerd.Options{Address: c.ContainerdAddress, Namespace: c.ContainerdNamespace,
			PlainHTTP: splitList(c.PlainHTTPRegistries, ","), Snapshotter: c.Snapshotter})
		if err != nil {
			return nil, nil, err
		}
		return rt, func() { _ = rt.Close() }, nil
	case "docker":
		rt, err := docker.New(docker.Options{Host: c.DockerHost, Namespace: c.DockerNamespace})
		if err != nil {
			return nil, nil, err
		}
		return rt, func() { _ = rt.Close() }, nil
	default:
		return nil, nil, fmt.Errorf("runtime %q is not supported by this build", c.Runtime)
	}
}

// ensureConflist writes the default conflist when the conf dir has no
// configuration for the network.
func ensureConflist(c DaemonConfig, log *slog.Logger) error {
	if _, err := shim.NewCNI(shim.CNIOptions{ConfDir: c.CNIConfDir, Network: c.Network}); err == nil {
		return nil
	}
	path := filepath.Join(c.CNIConfDir, filepath.Base(conf.ConflistPath))
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s exists but does not define network %q", path, c.Network)
	}
	b, err := conf.DefaultConflist().Marshal()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.CNIConfDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write conflist: %w", err)
	}
	log.Info("wrote the default conflist", "path", path)
	return nil
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
	srv := grpc.NewServer(grpc.Creds(creds))
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

// networkCapacity returns how many addresses the network's esb-ipam range
// can hand out, or 0 when the conflist does not use esb-ipam.
func networkCapacity(c DaemonConfig) uint64 {
	list, err := libcni.LoadNetworkConf(c.CNIConfDir, c.Network)
	if err != nil {
		return 0
	}
	for _, p := range list.Plugins {
		nc, err := conf.ParseBridgeNetConf(p.Bytes)
		if err != nil || nc.IPAM == nil {
			continue
		}
		var n uint64
		for _, r := range nc.IPAM.Ranges()[:1] {
			n = r.Size()
		}
		return n
	}
	return 0
}

// warnPrivateMountNS warns when the agent runs in another mount namespace
// than PID 1 (as under "ip netns exec"): the worker namespaces it pins
// there are invisible to containerd, and runc then fails to start workers.
func warnPrivateMountNS(log *slog.Logger) {
	self, err1 := os.Stat("/proc/self/ns/mnt")
	init, err2 := os.Stat("/proc/1/ns/mnt")
	if err1 == nil && err2 == nil && !os.SameFile(self, init) {
		log.Warn("esb-agent runs in a private mount namespace: worker namespaces pinned here are invisible to containerd; " +
			"run it in the host's mount namespace (to put it in another network namespace use nsenter --net, not ip netns exec)")
	}
}
