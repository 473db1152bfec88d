// Package benchnat benchmarks table ip esb side by side with what it
// replaces: the time Apply takes for 1, 100 and 1000 forwards, the time
// Watch takes to restore the table after `nft flush ruleset`, a worker's
// connection rate and throughput through the DNAT to HAProxy against the
// same worker connecting to HAProxy directly, and the per-connection cost
// of our one-rule map with 1000 forwards against one iptables DNAT rule
// per port. The benchmark itself (BenchmarkNATSideBySide) needs root; this
// file holds the load generator the worker runs (through
// tests/bench/nat/loadgen) and the summary the benchmark prints, both
// tested without privileges.
package benchnat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// Modes of a round.
const (
	// ModeHTTP sends a GET with "Connection: close" on each connection and
	// reads the response to the server's close (so the server, not the
	// client, keeps the TIME_WAIT).
	ModeHTTP = "http"
	// ModeConnect only opens each connection and resets it at once
	// (SO_LINGER 0): the time is the TCP handshake, the part of a
	// connection the DNAT adds to, and nobody keeps a TIME_WAIT.
	ModeConnect = "connect"
)

// LoadConfig is one round of sequential connections, taking the addresses
// in turn (so that load from elsewhere on the machine falls on all of them
// alike).
type LoadConfig struct {
	Addrs    []string      // host:port to connect to, in turn
	Mode     string        // ModeHTTP (default) or ModeConnect
	Path     string        // request path, "/" when empty
	Duration time.Duration // the round ends at the first turn that starts after this
	MaxConns int           // or after this many connections (0: no limit)
	// BodySize, when > 0, is the body length a response must have: the
	// bytes after the header, as sent (the servers here send a
	// Content-Length, not chunks).
	BodySize int64
	// Timeout bounds one connection, from dial to the end of the body.
	Timeout time.Duration
}

// LoadResult is what one round measured for one address.
type LoadResult struct {
	Addr      string  `json:"addr"`
	Conns     int     `json:"conns"`      // connections that completed (a 200 response in ModeHTTP)
	Errors    int     `json:"errors"`     // connections that failed
	FirstErr  string  `json:"first_err"`  // the first failure, "" when none
	BodyBytes int64   `json:"body_bytes"` // response bodies received by the completed connections
	Seconds   float64 `json:"seconds"`    // time spent in this address's connections, completed or not
	P50us     float64 `json:"p50_us"`     // median time of a completed connection, dial to end
	P99us     float64 `json:"p99_us"`
}

// Rate returns completed connections per second of this address's
// connection time: the rate of a client that only made these, 0 for an
// empty round.
func (r LoadResult) Rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Conns) / r.Seconds
}

// MBps returns response body megabytes (10^6 bytes) per second.
func (r LoadResult) MBps() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.BodyBytes) / 1e6 / r.Seconds
}

// P50 returns the median connection time in microseconds.
func (r LoadResult) P50() float64 { return r.P50us }

// maxLoadDuration bounds a round whatever the configuration says.
const maxLoadDuration = time.Minute

// RunLoad makes connections one after the other, to each of cfg.Addrs in
// turn, until cfg.Duration has passed, cfg.MaxConns connections were made
// or ctx ends, and returns one result per address. It returns an error
// only for a configuration it cannot run; failed connections are counted
// in the results.
func RunLoad(ctx context.Context, cfg LoadConfig) ([]LoadResult, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("load: no address")
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeHTTP
	}
	if cfg.Mode != ModeHTTP && cfg.Mode != ModeConnect {
		return nil, fmt.Errorf("load: mode %q, want %q or %q", cfg.Mode, ModeHTTP, ModeConnect)
	}
	if cfg.Duration <= 0 && cfg.MaxConns <= 0 {
		return nil, errors.New("load: neither duration nor max conns is set")
	}
	if cfg.Duration <= 0 || cfg.Duration > maxLoadDuration {
		cfg.Duration = maxLoadDuration
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	path := cfg.Path
	if path == "" {
		path = "/"
	}
	res := make([]LoadResult, len(cfg.Addrs))
	reqs := make([][]byte, len(cfg.Addrs))
	lat := make([][]time.Duration, len(cfg.Addrs))
	for i, a := range cfg.Addrs {
		res[i].Addr = a
		reqs[i] = []byte("GET " + path + " HTTP/1.1\r\nHost: " + a + "\r\nUser-Agent: esb-benchnat\r\nConnection: close\r\n\r\n")
		lat[i] = make([]time.Duration, 0, 4096)
	}
	buf := make([]byte, 256<<10)
	d := net.Dialer{Timeout: cfg.Timeout}
	end := time.Now().Add(cfg.Duration)
	made := 0
	for ctx.Err() == nil && time.Now().Before(end) && (cfg.MaxConns <= 0 || made < cfg.MaxConns) {
		for i, a := range cfg.Addrs {
			if cfg.MaxConns > 0 && made >= cfg.MaxConns {
				break
			}
			made++
			t0 := time.Now()
			body, err := oneConn(ctx, &d, cfg, a, reqs[i], buf)
			took := time.Since(t0)
			res[i].Seconds += took.Seconds()
			if err != nil {
				res[i].Errors++
				if res[i].FirstErr == "" {
					res[i].FirstErr = err.Error()
				}
				continue
			}
			lat[i] = append(lat[i], took)
			res[i].Conns++
			res[i].BodyBytes += body
		}
	}
	for i, l := range lat {
		if len(l) > 0 {
			slices.Sort(l)
			res[i].P50us = float64(l[len(l)/2]) / float64(time.Microsecond)
			res[i].P99us = float64(l[(len(l)-1)*99/100]) / float64(time.Microsecond)
		}
	}
	return res, nil
}

var (
	headerEnd = []byte("\r\n\r\n")
	status200 = []byte("HTTP/1.1 200 ")
)

// oneConn makes one connection and returns the body length received.
func oneConn(ctx context.Context, d *net.Dialer, cfg LoadConfig, addr string, req, buf []byte) (int64, error) {
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return 0, err
	}
	if cfg.Mode == ModeConnect {
		return 0, errors.Join(c.(*net.TCPConn).SetLinger(0), c.Close())
	}
	defer func() { _ = c.Close() }()
	if err := c.SetDeadline(time.Now().Add(cfg.Timeout)); err != nil {
		return 0, err
	}
	if _, err := c.Write(req); err != nil {
		return 0, fmt.Errorf("send request: %w", err)
	}
	// The header: read until its end, into buf.
	n := 0
	hdr := -1
	for hdr < 0 {
		if n == len(buf) {
			return 0, errors.New("response header longer than the buffer")
		}
		k, err := c.Read(buf[n:])
		n += k
		hdr = bytes.Index(buf[:n], headerEnd)
		if err != nil && hdr < 0 {
			return 0, fmt.Errorf("read response header: %w", err)
		}
	}
	if !bytes.HasPrefix(buf, status200) {
		line, _, _ := bytes.Cut(buf[:hdr], []byte("\r\n"))
		return 0, fmt.Errorf("response %q, want 200", line)
	}
	body := int64(n - hdr - len(headerEnd))
	for {
		k, err := c.Read(buf)
		body += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("read response body: %w", err)
		}
	}
	if cfg.BodySize > 0 && body != cfg.BodySize {
		return 0, fmt.Errorf("response body of %d bytes, want %d", body, cfg.BodySize)
	}
	return body, nil
}
