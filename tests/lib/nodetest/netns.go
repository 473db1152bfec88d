package nodetest

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// HTTPClient is an HTTP client whose sockets are made in netns (workers'
// addresses are reachable only from the node), each request bounded by
// timeout, with no connection kept between requests.
func HTTPClient(netns ns.NetNS, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			err := netns.Do(func(ns.NetNS) error {
				var err error
				c, err = (&net.Dialer{Timeout: timeout}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Answer is a worker's reply to an invoke (tests/images/worker).
type Answer struct {
	Echo     json.RawMessage   `json:"echo"`
	Hostname string            `json:"hostname"`
	Env      map[string]string `json:"env"`
	Fetch    *struct {
		Status int    `json:"status"`
		Body   string `json:"body"`
		Error  string `json:"error"`
	} `json:"fetch"`
}

// DoIn runs fn on a thread in netns and returns what it returns.
func DoIn[T any](netns ns.NetNS, fn func() (T, error)) (T, error) {
	var v T
	err := netns.Do(func(ns.NetNS) error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}

// ServeVia runs a proxy's backend on addr in netns until the test ends:
// it answers body(via), via being the X-Esb-Via header that the frontends
// of HAProxyConfig set.
func ServeVia(tb testing.TB, netns ns.NetNS, addr string, body func(via string) string) {
	tb.Helper()
	l, err := Listen(netns, "tcp4", addr)
	if err != nil {
		tb.Fatalf("backend listen on %s: %v", addr, err)
	}
	ServeHTTP(tb, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, body(r.Header.Get("X-Esb-Via")))
	}))
}

// Listen opens a listener for network ("tcp4", "tcp") on addr in netns.
func Listen(netns ns.NetNS, network, addr string) (net.Listener, error) {
	return DoIn(netns, func() (net.Listener, error) { return net.Listen(network, addr) })
}

// ListenPacket opens a packet listener for network ("udp4") on addr in
// netns.
func ListenPacket(netns ns.NetNS, network, addr string) (net.PacketConn, error) {
	return DoIn(netns, func() (net.PacketConn, error) { return net.ListenPacket(network, addr) })
}

// ServeHTTP serves h on l from a goroutine until the test ends, then
// closes the server and waits for it.
func ServeHTTP(tb testing.TB, l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close(); <-done })
}
