package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Invoke limits (the ESB Gateway's InvokeWorker).
const (
	// DefaultInvokePath is the Lambda runtime interface's invoke path.
	DefaultInvokePath = "/2015-03-31/functions/function/invocations"
	// DefaultInvokeTimeout bounds an invoke that sets no timeout.
	DefaultInvokeTimeout = 30 * time.Second
	// InvokeConnectTimeout bounds each connection attempt to a worker.
	InvokeConnectTimeout = 2 * time.Second
	// MaxInvokeResponseBytes caps a worker's answer.
	MaxInvokeResponseBytes = 10 << 20
	// MaxRequestBytes is the largest gRPC request the agent accepts
	// (Lambda payloads go to 6 MB).
	MaxRequestBytes = 8 << 20
)

// InvokeRequest is an HTTP POST to a worker.
type InvokeRequest struct {
	// Path defaults to DefaultInvokePath.
	Path    string
	Payload []byte
	Headers map[string]string
	// Timeout bounds the whole invoke; 0 means DefaultInvokeTimeout.
	Timeout time.Duration
}

// InvokeResponse is the worker's answer: the first value of each header.
type InvokeResponse struct {
	Status  int
	Headers map[string]string
	Body    []byte
}

// invokers are the HTTP clients of Invoke, one per worker: a worker's
// keep-alive connections end with it. With one shared client, those of a
// released worker stayed open until their idle timeout (a descriptor each,
// and a dead connection that a later worker on the same address would
// meet).
type invokers struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	mu   sync.Mutex
	m    map[string]*http.Client
}

// get returns the client of worker id, made on first use.
func (i *invokers) get(id string) *http.Client {
	i.mu.Lock()
	defer i.mu.Unlock()
	c := i.m[id]
	if c == nil {
		if i.m == nil {
			i.m = map[string]*http.Client{}
		}
		c = newInvoker(i.dial)
		i.m[id] = c
	}
	return c
}

// drop closes the idle connections of worker id and forgets its client.
func (i *invokers) drop(id string) {
	i.mu.Lock()
	c := i.m[id]
	delete(i.m, id)
	i.mu.Unlock()
	if c != nil {
		c.CloseIdleConnections()
	}
}

// newInvoker returns an HTTP client of Invoke. Its dial retries failures
// to connect (refused, unreachable, a connect timeout) with a backoff from
// 100 ms doubling to 1 s until the invoke's deadline: nothing has reached
// the worker then. Failures after the request was written are not retried.
func newInvoker(dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Client {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	retrying := func(ctx context.Context, network, addr string) (net.Conn, error) {
		backoff := 100 * time.Millisecond
		for {
			dctx, cancel := context.WithTimeout(ctx, InvokeConnectTimeout)
			c, err := dial(dctx, network, addr)
			cancel()
			if err == nil {
				return c, nil
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("connect to worker %s: %w", addr, err)
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, time.Second)
		}
	}
	return &http.Client{
		Transport: &http.Transport{DialContext: retrying, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second,
			DisableCompression: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Invoke POSTs r to the owner's worker and returns its answer. The request
// is sent at most once. Errors: Invalid (path), NotFound, Permission,
// Precondition (the worker is paused), Unavailable (the worker cannot be
// reached, or failed after the request was sent), NotReady (the deadline
// passed), Exhausted (an answer over MaxInvokeResponseBytes).
func (a *Agent) Invoke(ctx context.Context, id, owner string, r InvokeRequest) (*InvokeResponse, error) {
	w, err := a.owned(id, owner)
	if err != nil {
		return nil, err
	}
	path, err := invokePath(r)
	if err != nil {
		return nil, err
	}
	c := a.table.snapshot(w)
	paused, addr := c.State == StatePaused, net.JoinHostPort(c.IP.String(), strconv.Itoa(c.Port))
	if paused {
		return nil, errf(Precondition, nil, "worker %s is paused: resume it before invoking", id)
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultInvokeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a.touch(id)
	defer a.touch(id)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(r.Payload))
	if err != nil {
		return nil, invalid("path", "%q: %v", truncate(path), err)
	}
	for k, v := range r.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != "" {
		// net/http would resend such a request after a failure on a reused
		// connection; without GetBody it does not.
		req.GetBody = nil
	}
	resp, err := a.invokers.get(id).Do(req)
	if !a.table.has(id) { // released meanwhile: its client goes too
		defer a.invokers.drop(id)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, errf(NotReady, err, "invoke worker %s: no answer within %s", id, timeout)
		}
		return nil, errf(Unavailable, err, "invoke worker %s (not retried once connected: the function may have run)", id)
	}
	defer func() { _ = resp.Body.Close() }()
	return readAnswer(ctx, resp, id, timeout)
}

// invokePath checks an invoke's path (default DefaultInvokePath) and
// headers and returns the path.
func invokePath(r InvokeRequest) (string, error) {
	path := r.Path
	if path == "" {
		path = DefaultInvokePath
	}
	if !strings.HasPrefix(path, "/") || len(path) > 2048 || hasControl(path) || strings.ContainsAny(path, " #") {
		return "", invalid("path", "%q must be an absolute URL path", truncate(path))
	}
	for k, v := range r.Headers {
		if k == "" || hasControl(k) || hasControl(v) || strings.ContainsAny(k, " :") {
			return "", invalid("headers", "%q is not an HTTP header", truncate(k))
		}
	}
	return path, nil
}

// readAnswer reads a worker's answer, at most MaxInvokeResponseBytes.
func readAnswer(ctx context.Context, resp *http.Response, id string, timeout time.Duration) (*InvokeResponse, error) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxInvokeResponseBytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, errf(NotReady, err, "read the answer of worker %s: no answer within %s", id, timeout)
		}
		return nil, errf(Unavailable, err, "read the answer of worker %s", id)
	}
	if len(body) > MaxInvokeResponseBytes {
		return nil, errf(Exhausted, nil, "the answer of worker %s is over %d bytes", id, MaxInvokeResponseBytes)
	}
	out := &InvokeResponse{Status: resp.StatusCode, Headers: map[string]string{}, Body: body}
	for k, v := range resp.Header {
		if len(v) > 0 {
			out.Headers[k] = v[0]
		}
	}
	return out, nil
}

// touch records a use of the worker (last_used_at).
func (a *Agent) touch(id string) { a.table.touch(id, time.Now()) }
