package agent

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/internal/testpki"
)

// TestUnixSocketMode: the API socket is a socket of mode 0600 owned by
// the agent's user (root in production), replaces a stale file, and
// refuses to take over a socket another agent serves.
func TestUnixSocketMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("stale"), 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := listenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 || int(st.Uid) != os.Getuid() {
		t.Errorf("socket %s is %v owned by %d, want a socket of mode 0600 owned by %d", path, fi.Mode(), st.Uid, os.Getuid())
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	if l2, err := listenUnix(path); err == nil {
		_ = l2.Close()
		t.Error("a second listener took over a served socket")
	}
}

// TestTCPListenerRequiresMutualTLS serves the API on loopback TCP with the
// listener esb-agent uses and calls it as a plain client, a TLS client
// without a certificate, one with a certificate of another CA, a TLS 1.2
// client, and a client with a good certificate: only the last gets in, and
// over TCP a call must name its owner.
func TestTCPListenerRequiresMutualTLS(t *testing.T) {
	ours, theirs := testpki.New(t, "esb"), testpki.New(t, "other")
	srvCert, srvKey, _ := ours.Issue(t, "agent", true, net.IPv4(127, 0, 0, 1))
	_, _, good := ours.Issue(t, "gateway", false)
	_, _, foreign := theirs.Issue(t, "intruder", false)

	r := newRig(t, Config{})
	c := DaemonConfig{TCPListen: "127.0.0.1:0", TLSCert: srvCert, TLSKey: srvKey, TLSClientCA: ours.File}
	srv, l, err := listenTCP(c, NewServer(r.a), health.NewServer())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	addr := l.Addr().String()

	roots := ours.Pool()
	call := func(creds credentials.TransportCredentials, owner string) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = agentv1.NewAgentServiceClient(conn).ListWorkers(ctx, &agentv1.ListWorkersRequest{OwnerId: owner})
		return err
	}
	tlsClient := func(certs []tls.Certificate, maxVersion uint16) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MaxVersion: maxVersion, ServerName: "127.0.0.1"})
	}
	refused := []struct {
		name  string
		creds credentials.TransportCredentials
	}{
		{"plain gRPC", insecure.NewCredentials()},
		{"TLS without a client certificate", tlsClient(nil, 0)},
		{"TLS with a certificate of another CA", tlsClient([]tls.Certificate{foreign}, 0)},
		{"TLS 1.2", tlsClient([]tls.Certificate{good}, tls.VersionTLS12)},
		{"TLS with the server's own CA but no client certificate", credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})},
	}
	for _, tc := range refused {
		err := call(tc.creds, "tenant")
		if st, _ := status.FromError(err); err == nil || st.Code() != codes.Unavailable {
			t.Errorf("%s: %v, want the connection refused (Unavailable)", tc.name, err)
		}
	}
	checkPlainPeerRefused(t, addr)

	if err := call(tlsClient([]tls.Certificate{good}, 0), "tenant"); err != nil {
		t.Errorf("client with a good certificate: %v", err)
	}
	err = call(tlsClient([]tls.Certificate{good}, 0), "")
	if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || err == nil {
		t.Errorf("list without owner over TCP: %v, want InvalidArgument", err)
	}
}

// checkPlainPeerRefused checks that a raw TCP peer that sends plain
// HTTP/2 gets no answer but a closed connection.
func checkPlainPeerRefused(t *testing.T, addr string) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := raw.Read(buf); err == nil && n > 0 && string(buf[:n]) != "" && buf[0] != 0x15 {
		t.Errorf("a plain-text peer got %q, want a TLS alert or a closed connection", buf[:n])
	}
	_ = raw.Close()
}

func TestListenTCPRefusesBadFiles(t *testing.T) {
	p := testpki.New(t, "esb")
	cert, key, _ := p.Issue(t, "agent", true, net.IPv4(127, 0, 0, 1))
	for _, c := range []DaemonConfig{
		{TCPListen: "127.0.0.1:0", TLSCert: cert, TLSKey: cert, TLSClientCA: p.File},
		{TCPListen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, TLSClientCA: key},
		{TCPListen: "127.0.0.1:0", TLSCert: cert, TLSKey: key, TLSClientCA: filepath.Join(p.Dir, "missing.pem")},
	} {
		if srv, l, err := listenTCP(c, NewServer(newRig(t, Config{}).a), health.NewServer()); err == nil {
			_ = l.Close()
			srv.Stop()
			t.Errorf("listenTCP(%+v) accepted bad files", c)
		}
	}
}
