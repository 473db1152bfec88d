package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
)

// TestEsbctl drives the operator's flows with the esbctl binary: acquire
// (JSON), ls, invoke from the node, status, a refused release by another
// owner, release, and release of a worker that is gone.
func TestEsbctl(t *testing.T) {
	e := newEnv(t)
	e.startAgent()
	sock := e.Socket()
	run := func(inNode bool, wantCode int, args ...string) string {
		t.Helper()
		out, errOut, code := e.esbctl(inNode, args...)
		if code != wantCode {
			t.Fatalf("esbctl %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, wantCode, out, errOut)
		}
		if wantCode != 0 {
			return errOut
		}
		return out
	}

	out := run(false, 0, "acquire", "-socket", sock, "-owner", "ops", "-function", "cli", "-image", e.image, "-o", "json")
	var ws []*agentv1.Worker
	if err := json.Unmarshal([]byte(out), &ws); err != nil || len(ws) != 1 {
		t.Fatalf("esbctl acquire -o json printed %q (%v), want a list of one worker", out, err)
	}
	w := ws[0]
	e.seen.add(w.GetId())
	if w.GetOwnerId() != "ops" || w.GetFunction() != "cli" || w.GetState() != agentv1.WorkerState_WORKER_STATE_BUSY || !strings.HasPrefix(w.GetIp(), "10.88.") {
		t.Errorf("esbctl acquire: %+v, want a busy worker of ops for cli on 10.88.0.0/16", w)
	}
	e.expectTraces(w)

	out = run(false, 0, "ls", "-socket", sock, "-owner", "ops")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") {
		t.Fatalf("esbctl ls printed:\n%s\nwant a header and one worker", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 7 || f[0] != w.GetId() || f[1] != "cli" || f[2] != "ops" || f[3] != w.GetIp() || f[4] != "8080" || f[5] != "busy" || f[6] != "false" {
		t.Errorf("esbctl ls row %q, want %s cli ops %s 8080 busy false", lines[1], w.GetId(), w.GetIp())
	}
	if out := run(false, 0, "ls", "-socket", sock, "-owner", "someone-else"); strings.Contains(out, w.GetId()) {
		t.Errorf("esbctl ls of another owner shows the worker:\n%s", out)
	}

	out = run(true, 0, "invoke", "-socket", sock, "-owner", "ops", w.GetId(), `{"a":1}`)
	var a nodetest.Answer
	if err := json.Unmarshal([]byte(out), &a); err != nil || !jsonEqual(a.Echo, []byte(`{"a":1}`)) || a.Env["ESB_WORKER_ID"] != w.GetId() {
		t.Errorf("esbctl invoke printed %q (%v), want the echo of {\"a\":1} from %s", out, err, w.GetId())
	}
	if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
		t.Errorf("esbctl invoke printed %d lines, want the answer once:\n%s", n+1, out)
	}

	out = run(false, 0, "status", "-socket", sock)
	if want := "agent SERVING on " + sock + "; workers: 1 busy, 0 idle, 0 paused"; strings.TrimSpace(out) != want {
		t.Errorf("esbctl status printed %q, want %q", out, want)
	}

	errOut := run(false, 1, "release", "-socket", sock, "-owner", "intruder", w.GetId())
	if !strings.Contains(errOut, "PermissionDenied") || !strings.Contains(errOut, "-owner") {
		t.Errorf("esbctl release by another owner: %q, want PermissionDenied with the -owner hint", errOut)
	}
	out = run(false, 0, "release", "-socket", sock, "-owner", "ops", w.GetId())
	if strings.TrimSpace(out) != "released "+w.GetId() {
		t.Errorf("esbctl release printed %q", out)
	}
	e.expectNoTraces("after esbctl release")
	errOut = run(false, 1, "release", "-socket", sock, "-owner", "ops", w.GetId())
	if !strings.Contains(errOut, "NotFound") || !strings.Contains(errOut, "esbctl ls") {
		t.Errorf("esbctl release of a released worker: %q, want NotFound with the ls hint", errOut)
	}
	out = run(false, 0, "status", "-socket", sock, "-o", "json")
	var st struct {
		Health  string         `json:"health"`
		Workers map[string]int `json:"workers"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Health != "SERVING" || len(st.Workers) != 0 {
		t.Errorf("esbctl status -o json printed %q (%v), want SERVING and no workers", out, err)
	}
}
