package benchnat

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestRunLoad(t *testing.T) {
	body := strings.Repeat("x", 300<<10) // longer than the read buffer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	for _, tc := range []struct {
		name       string
		cfg        LoadConfig
		conns, err int
		firstErr   string
	}{
		{name: "count", cfg: LoadConfig{Addrs: []string{addr}, Path: "/", MaxConns: 20, BodySize: int64(len(body))}, conns: 20},
		{name: "connect", cfg: LoadConfig{Addrs: []string{addr}, Mode: ModeConnect, MaxConns: 20}, conns: 20},
		{name: "wrong size", cfg: LoadConfig{Addrs: []string{addr}, MaxConns: 3, BodySize: 1}, err: 3, firstErr: "want 1"},
		{name: "not found", cfg: LoadConfig{Addrs: []string{addr}, Path: "/missing", MaxConns: 2}, err: 2, firstErr: "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := RunLoad(context.Background(), tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 {
				t.Fatalf("RunLoad = %+v, want one result", rs)
			}
			res := rs[0]
			if res.Conns != tc.conns || res.Errors != tc.err {
				t.Fatalf("RunLoad = %+v, want %d conns and %d errors", rs, tc.conns, tc.err)
			}
			if !strings.Contains(res.FirstErr, tc.firstErr) {
				t.Errorf("first error %q, want it to name %q", res.FirstErr, tc.firstErr)
			}
			if tc.conns > 0 {
				want := int64(tc.conns * len(body))
				if tc.cfg.Mode == ModeConnect {
					want = 0
				}
				if res.BodyBytes != want {
					t.Errorf("body bytes %d, want %d", res.BodyBytes, want)
				}
				if res.Rate() <= 0 || res.P50us <= 0 || res.P99us < res.P50us || res.Addr != addr {
					t.Errorf("figures of %+v are not plausible", res)
				}
			}
		})
	}

	// Two addresses (the same server twice) are taken in turn.
	rs, err := RunLoad(context.Background(), LoadConfig{Addrs: []string{addr, addr}, Duration: 100 * time.Millisecond})
	if err != nil || len(rs) != 2 {
		t.Fatalf("100ms round over two addresses = %+v, %v; want two results", rs, err)
	}
	if rs[0].Conns == 0 || rs[0].Conns-rs[1].Conns > 1 || rs[0].Conns < rs[1].Conns {
		t.Errorf("100ms round over two addresses = %+v", rs)
	}
	if rs[0].Seconds+rs[1].Seconds < 0.05 || rs[0].Seconds+rs[1].Seconds > 5 {
		t.Errorf("connection time of a 100ms round = %v + %v s", rs[0].Seconds, rs[1].Seconds)
	}
	for _, bad := range []LoadConfig{{Addrs: []string{addr}}, {MaxConns: 1}, {Addrs: []string{addr}, MaxConns: 1, Mode: "udp"}} {
		if _, err := RunLoad(context.Background(), bad); err == nil {
			t.Errorf("RunLoad(%+v) ran", bad)
		}
	}
}
