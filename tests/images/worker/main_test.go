package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start serves a worker made from environ on a loopback test server.
func start(t *testing.T, environ []string) (*worker, *httptest.Server) {
	t.Helper()
	w := newWorker(environ)
	srv := httptest.NewServer(w.handler())
	t.Cleanup(srv.Close)
	return w, srv
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}

func invoke(t *testing.T, srv *httptest.Server, payload string) map[string]any {
	t.Helper()
	code, body := do(t, http.MethodPost, srv.URL+InvokePath, payload)
	if code != http.StatusOK {
		t.Fatalf("invoke: status %d: %s", code, body)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, body)
	}
	return got
}

func TestHealthz(t *testing.T) {
	_, srv := start(t, nil)
	if code, body := do(t, http.MethodGet, srv.URL+HealthPath, ""); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("GET %s = %d %q, want 200 \"ok\\n\"", HealthPath, code, body)
	}
}

func TestRoutes(t *testing.T) {
	_, srv := start(t, nil)
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, InvokePath, http.StatusMethodNotAllowed},
		{http.MethodPost, HealthPath, http.StatusMethodNotAllowed},
		{http.MethodPost, "/2015-03-31/functions/other/invocations", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	} {
		if code, _ := do(t, tc.method, srv.URL+tc.path, ""); code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
}

func TestEcho(t *testing.T) {
	_, srv := start(t, nil)
	for _, tc := range []struct {
		name, payload, want string // want: the echo field, re-encoded
	}{
		{"object", `{"a": 1, "b": [true, null]}`, `{"a":1,"b":[true,null]}`},
		{"array", `[1,2]`, `[1,2]`},
		{"number", `42`, `42`},
		{"json string", `"hi"`, `"hi"`},
		{"text", `hello worker`, `"hello worker"`},
		{"broken json", `{"a":`, `"{\"a\":"`},
		{"empty", ``, `""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := invoke(t, srv, tc.payload)
			echo, err := json.Marshal(got["echo"])
			if err != nil {
				t.Fatal(err)
			}
			if string(echo) != tc.want {
				t.Errorf("echo = %s, want %s", echo, tc.want)
			}
			if _, ok := got["fetch"]; ok {
				t.Errorf("answer has a fetch field without a fetch in the payload: %v", got)
			}
		})
	}
}

func TestHostnameAndEnv(t *testing.T) {
	w, srv := start(t, []string{"ESB_FUNCTION=hello", "PATH=/bin", "ESB_OWNER=a=b", "XESB_NOT=1", "ESB_EMPTY="})
	got := invoke(t, srv, `{}`)
	if got["hostname"] != w.hostname || w.hostname == "" {
		t.Errorf("hostname = %v, want %q", got["hostname"], w.hostname)
	}
	env, err := json.Marshal(got["env"])
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"ESB_EMPTY":"","ESB_FUNCTION":"hello","ESB_OWNER":"a=b"}`; string(env) != want {
		t.Errorf("env = %s, want %s", env, want)
	}
}

func TestFetch(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(rw, "from "+r.URL.Path)
	}))
	t.Cleanup(target.Close)
	_, srv := start(t, nil)

	got := invoke(t, srv, `{"fetch": "`+target.URL+`/proxy"}`)
	f, ok := got["fetch"].(map[string]any)
	if !ok {
		t.Fatalf("no fetch object in %v", got)
	}
	if f["status"] != float64(http.StatusTeapot) || f["body"] != "from /proxy" || f["error"] != nil {
		t.Errorf("fetch = %v, want status 418 and body \"from /proxy\"", f)
	}
	if echo, _ := got["echo"].(map[string]any); echo["fetch"] != target.URL+"/proxy" {
		t.Errorf("echo = %v, want the payload", got["echo"])
	}
}

func TestFetchBodyIsTruncated(t *testing.T) {
	big := strings.Repeat("x", maxFetchBody+100)
	target := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(rw, big)
	}))
	t.Cleanup(target.Close)
	_, srv := start(t, nil)
	f, _ := invoke(t, srv, `{"fetch": "`+target.URL+`"}`)["fetch"].(map[string]any)
	if body, _ := f["body"].(string); len(body) != maxFetchBody {
		t.Errorf("fetched body has %d bytes, want %d", len(body), maxFetchBody)
	}
}

// refusedURL returns the URL of a loopback port that refuses connections
// for the whole test: a socket holds it bound without listening, so no
// server, of this test or of another run beside it, can take the port
// (a closed server's port could be handed to the next one to bind).
func refusedURL(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind a loopback port: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

func TestFetchErrors(t *testing.T) {
	closedURL := refusedURL(t)

	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)

	w, srv := start(t, nil)
	w.client.Timeout = 200 * time.Millisecond

	for _, tc := range []struct{ name, url, want string }{
		{"refused", closedURL, "refused"},
		{"bad url", "::not a url", "missing protocol scheme"},
		{"unsupported scheme", "ftp://127.0.0.1/", "unsupported protocol scheme"},
		{"timeout", slow.URL, "Client.Timeout exceeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := invoke(t, srv, `{"fetch": "`+tc.url+`"}`)
			f, ok := got["fetch"].(map[string]any)
			if !ok {
				t.Fatalf("no fetch object in %v", got)
			}
			if msg, _ := f["error"].(string); !strings.Contains(msg, tc.want) || f["status"] != nil {
				t.Errorf("fetch = %v, want an error containing %q and no status", f, tc.want)
			}
		})
	}
}

func TestFetchIgnoredWhenNotAString(t *testing.T) {
	_, srv := start(t, nil)
	for _, payload := range []string{`{"fetch": 1}`, `{"fetch": ""}`, `["fetch"]`} {
		if got := invoke(t, srv, payload); got["fetch"] != nil {
			t.Errorf("payload %s: answer has fetch %v, want none", payload, got["fetch"])
		}
	}
}

func TestPayloadTooLarge(t *testing.T) {
	_, srv := start(t, nil)
	code, _ := do(t, http.MethodPost, srv.URL+InvokePath, strings.Repeat("a", maxPayload+1))
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", code)
	}
}

func TestSelfTest(t *testing.T) {
	out, err := newWorker([]string{"ESB_X=1"}).selfTest()
	if err != nil {
		t.Fatalf("selfTest: %v", err)
	}
	if !strings.Contains(string(out), `"env":{"ESB_X":"1"}`) {
		t.Errorf("selfTest answer = %s, want the ESB_X variable", out)
	}
}
