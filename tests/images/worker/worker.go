package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

const (
	// InvokePath is the runtime interface emulator's invoke endpoint.
	InvokePath = "/2015-03-31/functions/function/invocations"
	// HealthPath answers 200 while the worker serves.
	HealthPath = "/healthz"

	maxPayload   = 6 << 20  // Lambda's synchronous payload limit
	maxFetchBody = 64 << 10 // what an answer carries of a fetched body
	fetchTimeout = 5 * time.Second
	envPrefix    = "ESB_"
)

// worker holds what every answer reports; it has no other state.
type worker struct {
	hostname string
	env      map[string]string
	client   *http.Client
}

// newWorker keeps the ESB_* variables of environ (as os.Environ returns
// them) and makes the client for fetches: 5 s timeout, no proxy from the
// environment, so a fetch goes where its URL says.
func newWorker(environ []string) *worker {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(k, envPrefix) {
			env[k] = v
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	return &worker{
		hostname: host,
		env:      env,
		client:   &http.Client{Timeout: fetchTimeout, Transport: tr},
	}
}

// answer is the JSON body of an invoke's reply.
type answer struct {
	Echo     any               `json:"echo"`
	Hostname string            `json:"hostname"`
	Env      map[string]string `json:"env"`
	Fetch    *fetchResult      `json:"fetch,omitempty"`
}

// fetchResult is what a "fetch" in the payload gave: a status and body, or
// an error.
type fetchResult struct {
	Status int    `json:"status,omitempty"`
	Body   string `json:"body,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (w *worker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+InvokePath, w.invoke)
	mux.HandleFunc("GET "+HealthPath, func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(rw, "ok\n")
	})
	return mux
}

func (w *worker) invoke(rw http.ResponseWriter, r *http.Request) {
	payload, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxPayload))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(rw, fmt.Sprintf("payload larger than %d bytes", maxPayload), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(rw, "read payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	a := answer{Hostname: w.hostname, Env: w.env}
	if json.Valid(payload) {
		a.Echo = json.RawMessage(payload)
		var req struct {
			Fetch string `json:"fetch"`
		}
		// A payload that is valid JSON but not an object has no fetch.
		if json.Unmarshal(payload, &req) == nil && req.Fetch != "" {
			a.Fetch = w.fetch(r, req.Fetch)
		}
	} else {
		a.Echo = string(payload)
	}
	body, err := json.Marshal(a)
	if err != nil {
		http.Error(rw, "encode answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(append(body, '\n'))
}

// fetch GETs url and reports its status and (truncated) body, or the error.
func (w *worker) fetch(r *http.Request, url string) *fetchResult {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
	if err != nil {
		return &fetchResult{Error: err.Error()}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return &fetchResult{Error: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchBody))
	if err != nil {
		return &fetchResult{Status: resp.StatusCode, Error: "read body: " + err.Error()}
	}
	return &fetchResult{Status: resp.StatusCode, Body: string(body)}
}

// selfTest drives the handlers in memory (no socket, so it works in a
// container with no network) and returns the invoke's answer.
func (w *worker) selfTest() ([]byte, error) {
	h := w.handler()
	health, err := http.NewRequest(http.MethodGet, HealthPath, nil)
	if err != nil {
		return nil, err
	}
	rec := newRecorder()
	h.ServeHTTP(rec, health)
	if rec.code != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", HealthPath, rec.code)
	}
	inv, err := http.NewRequest(http.MethodPost, InvokePath, strings.NewReader(`{"selftest":true}`))
	if err != nil {
		return nil, err
	}
	rec = newRecorder()
	h.ServeHTTP(rec, inv)
	if rec.code != http.StatusOK {
		return nil, fmt.Errorf("POST %s: status %d: %s", InvokePath, rec.code, rec.body.Bytes())
	}
	var a answer
	if err := json.Unmarshal(rec.body.Bytes(), &a); err != nil {
		return nil, fmt.Errorf("decode answer: %w", err)
	}
	if echo, ok := a.Echo.(map[string]any); !ok || echo["selftest"] != true {
		return nil, fmt.Errorf("answer does not echo the payload: %s", rec.body.Bytes())
	}
	return bytes.TrimSpace(rec.body.Bytes()), nil
}

// recorder is a minimal in-memory http.ResponseWriter for selfTest (the
// binary does not link net/http/httptest).
type recorder struct {
	code int
	hdr  http.Header
	body bytes.Buffer
}

func newRecorder() *recorder { return &recorder{hdr: http.Header{}} }

func (r *recorder) Header() http.Header { return r.hdr }

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}
