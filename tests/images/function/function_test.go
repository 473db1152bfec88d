package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The handler against the real data services of the end-to-end tier
// (gofakes3, dynalite, VictoriaLogs from scripts/deps.sh's tools folder),
// each on a loopback port of this test. The image and the names are the
// e2e suite's business (tests/e2e function_test.go).

func toolsDir() string {
	if d := os.Getenv("ESB_TOOLS_DIR"); d != "" {
		return filepath.Dir(d)
	}
	return "/opt/esbnet-tools"
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return addr
}

// start runs a service and waits until addr accepts connections.
func start(t *testing.T, addr string, name string, args ...string) {
	t.Helper()
	if _, err := os.Stat(name); err != nil {
		msg := fmt.Sprintf("%s is missing (run scripts/deps.sh): %v", name, err)
		if os.Getenv("CI") != "" || os.Getenv("ESB_REQUIRE_PRIVILEGED") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(name, args...)
	out, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := <-exited // "signal: killed", the usual end
		t.Logf("%s ended: %v", filepath.Base(name), err)
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("%s exited before listening on %s: %v\n%s", name, addr, err, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s", name, addr)
		}
	}
}

func TestHandlerRoundTrip(t *testing.T) {
	d := toolsDir()
	s3Addr, ddbAddr, logsAddr := freePort(t), freePort(t), freePort(t)
	_, ddbPort, _ := net.SplitHostPort(ddbAddr)
	start(t, s3Addr, filepath.Join(d, "bin/gofakes3"), "-host", s3Addr, "-backend", "memory", "-quiet")
	start(t, ddbAddr, filepath.Join(d, "dynalite-4.0.0/node_modules/.bin/dynalite"), "--host", "127.0.0.1", "--port", ddbPort, "--createTableMs", "0")
	start(t, logsAddr, filepath.Join(d, "bin/victoria-logs"), "-httpListenAddr", logsAddr, "-storageDataPath", t.TempDir(), "-loggerLevel", "ERROR")

	env := map[string]string{
		"AWS_ENDPOINT_URL_S3":       "http://" + s3Addr,
		"AWS_ENDPOINT_URL_DYNAMODB": "http://" + ddbAddr,
		"VICTORIALOGS_URL":          "http://" + logsAddr,
		"AWS_LAMBDA_FUNCTION_NAME":  "unit-fn",
		"AWS_REGION":                "",
		"AWS_ACCESS_KEY_ID":         "",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx := context.Background()
	fn, err := newFunction(ctx, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	for i, body := range []string{"first", "second"} {
		res, err := fn.Handle(ctx, Event{Key: "k", Body: body})
		if err != nil {
			t.Fatalf("invoke %d: %v", i, err)
		}
		if res.Object != body || res.Item != body || res.Logged != "unit-fn" {
			t.Fatalf("invoke %d read back %+v, want object and item %q from unit-fn", i, res, body)
		}
	}
	// The log line is found again by a query, once VictoriaLogs has made it
	// searchable (it flushes in-memory parts about every second).
	q := url.Values{"query": {`function:unit-fn AND key:k`}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + logsAddr + "/select/logsql/query?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(b), `"key":"k"`) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VictoriaLogs does not return both lines: %q", b)
		}
		time.Sleep(200 * time.Millisecond)
	}

	if _, err := fn.Handle(ctx, Event{Key: "bad/key"}); err == nil || !strings.Contains(err.Error(), "key") {
		t.Fatalf("bad key: %v, want an error naming key", err)
	}
}
