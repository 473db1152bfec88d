package stacktest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// testNS is the containerd namespace these tests work in; they remove it,
// with everything in it, when they end.
const testNS = "esbtest"

func ctrCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ctr runs ctr in the test namespace and returns its output, failing the
// test on error.
func ctr(t *testing.T, s Stack, args ...string) string {
	t.Helper()
	out, err := s.Ctr(ctrCtx(t), testNS, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// cleanNamespace removes every task, container and image of the test
// namespace, then the namespace. It is used before (leftovers of an
// interrupted run) and after the tests, and reports what it could not do.
func cleanNamespace(s Stack) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list := func(args ...string) ([]string, error) {
		out, err := s.Ctr(ctx, testNS, args...).Output()
		if err != nil {
			return nil, fmt.Errorf("ctr %s: %w", strings.Join(args, " "), err)
		}
		return strings.Fields(string(out)), nil
	}
	nss, err := s.Ctr(ctx, "", "namespaces", "list", "-q").Output()
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	if !strings.Contains("\n"+string(nss), "\n"+testNS+"\n") {
		return nil
	}
	var errs []string
	run := func(args ...string) {
		if out, err := s.Ctr(ctx, testNS, args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
		}
	}
	tasks, err := list("tasks", "list", "-q")
	if err != nil {
		return err
	}
	for _, id := range tasks {
		run("tasks", "delete", "--force", id)
	}
	containers, err := list("containers", "list", "-q")
	if err != nil {
		return err
	}
	for _, id := range containers {
		run("containers", "delete", id)
	}
	images, err := list("images", "list", "-q")
	if err != nil {
		return err
	}
	if len(images) > 0 {
		run(append([]string{"images", "remove", "--sync"}, images...)...)
	}
	if out, err := s.Ctr(ctx, "", "namespaces", "remove", testNS).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Sprintf("remove namespace %s: %v: %s", testNS, err, strings.TrimSpace(string(out))))
	}
	// runc leaves the namespace's parent cgroup (/<namespace> under each
	// v1 controller, or in the v2 tree); remove it once empty.
	if err := RemoveNamespaceCgroups(testNS); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("clean namespace %s: %s", testNS, strings.Join(errs, "; "))
	}
	return nil
}

// pullWorker pulls the worker image into the test namespace and removes
// the namespace when the test ends.
func pullWorker(t *testing.T, s Stack) {
	t.Helper()
	if err := cleanNamespace(s); err != nil {
		t.Fatalf("before the test: %v", err)
	}
	t.Cleanup(func() {
		if err := cleanNamespace(s); err != nil {
			t.Errorf("after the test: %v", err)
		}
	})
	ctr(t, s, "images", "pull", "--plain-http", "--snapshotter", s.Snapshotter, s.WorkerImage)
}

func TestContainerdAnswers(t *testing.T) {
	s := Require(t)
	out, err := s.Ctr(ctrCtx(t), "", "version").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr version: %v\n%s", err, out)
	}
	_, server, ok := strings.Cut(string(out), "Server:")
	if !ok || !strings.Contains(server, "Version:") {
		t.Fatalf("ctr version has no server version:\n%s", out)
	}
	t.Logf("containerd on %s:%s", s.ContainerdSock, strings.Join(strings.Fields(server), " "))

	out, err = s.Ctr(ctrCtx(t), "", "plugins", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr plugins list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.snapshotter.v1" && f[1] == s.Snapshotter {
			if f[3] != "ok" {
				t.Fatalf("snapshotter %s is %s:\n%s", s.Snapshotter, f[3], out)
			}
			return
		}
	}
	t.Fatalf("snapshotter %s is not loaded:\n%s", s.Snapshotter, out)
}

// splitRef splits host/repo:tag.
func splitRef(t *testing.T, ref string) (host, repo, tag string) {
	t.Helper()
	host, rest, ok := strings.Cut(ref, "/")
	i := strings.LastIndex(rest, ":")
	if !ok || i < 0 || strings.Contains(rest[i:], "/") {
		t.Fatalf("image reference %q is not host/repository:tag", ref)
	}
	return host, rest[:i], rest[i+1:]
}

func registryGet(t *testing.T, url string, accept ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctrCtx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range accept {
		req.Header.Add("Accept", a)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return resp, body
}

func TestRegistryServesWorkerImage(t *testing.T) {
	s := Require(t)
	host, repo, tag := splitRef(t, s.WorkerImage)
	base := "http://" + host + "/v2/" + repo

	resp, body := registryGet(t, base+"/manifests/"+tag,
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.list.v2+json")
	ct := resp.Header.Get("Content-Type")
	if ct != "application/vnd.oci.image.manifest.v1+json" && ct != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("manifest Content-Type = %q, want an OCI or Docker image manifest", ct)
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct {
			MediaType string
			Size      int64
		}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode manifest: %v\n%s", err, body)
	}
	if len(m.Layers) != 1 || m.Config.Digest == "" {
		t.Fatalf("manifest has %d layers and config %q, want one layer (no base) and a config:\n%s", len(m.Layers), m.Config.Digest, body)
	}
	t.Logf("%s@%s: %s, one layer of %d bytes", s.WorkerImage, resp.Header.Get("Docker-Content-Digest"), ct, m.Layers[0].Size)

	_, body = registryGet(t, base+"/blobs/"+m.Config.Digest)
	var cfg struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Config       struct {
			Entrypoint   []string
			ExposedPorts map[string]struct{}
		} `json:"config"`
	}
	if err := json.Unmarshal(body, &cfg); err != nil {
		t.Fatalf("decode image config: %v\n%s", err, body)
	}
	if cfg.OS != "linux" || strings.Join(cfg.Config.Entrypoint, " ") != "/esb-worker" {
		t.Errorf("image config: os %q entrypoint %q, want linux and /esb-worker", cfg.OS, cfg.Config.Entrypoint)
	}
	if _, ok := cfg.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("image config exposes %v, want 8080/tcp", cfg.Config.ExposedPorts)
	}
}

// TestWorkerRunsUnderRunc pulls the image and runs the worker's self-test
// in a container with its own, empty network namespace.
func TestWorkerRunsUnderRunc(t *testing.T) {
	s := Require(t)
	pullWorker(t, s)
	out := ctr(t, s, "run", "--rm", "--snapshotter", s.Snapshotter, "--env", "ESB_FUNCTION=stacktest",
		s.WorkerImage, "esbtest-selftest", "/esb-worker", "-selftest")
	if !strings.Contains(out, "esb-worker: selftest ok") || !strings.Contains(out, `"ESB_FUNCTION":"stacktest"`) {
		t.Fatalf("selftest output:\n%s\nwant \"selftest ok\" and the ESB_FUNCTION variable", out)
	}
	out = ctr(t, s, "run", "--rm", "--snapshotter", s.Snapshotter, s.WorkerImage, "esbtest-version", "/esb-worker", "-version")
	t.Logf("worker in the image: %s", strings.TrimSpace(out))
}

// TestWorkerServesInItsNetns starts the worker with its image's entrypoint,
// checks that it has a network namespace of its own, invokes it on the
// loopback of that namespace, and stops it with SIGTERM.
func TestWorkerServesInItsNetns(t *testing.T) {
	s := Require(t)
	pullWorker(t, s)
	const id = "esbtest-serve"
	ctr(t, s, "run", "-d", "--snapshotter", s.Snapshotter, "--env", "ESB_FUNCTION=served", s.WorkerImage, id)

	pid := taskPID(t, s, id)
	netns := fmt.Sprintf("/proc/%d/ns/net", pid)
	theirs, err := os.Readlink(netns)
	if err != nil {
		t.Fatalf("worker netns: %v", err)
	}
	ours, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if theirs == ours {
		t.Fatalf("the worker shares the host's network namespace %s", ours)
	}

	var status int
	var body string
	err = ns.WithNetNSPath(netns, func(ns.NetNS) error {
		if err := waitHealthy(5 * time.Second); err != nil {
			return err
		}
		var err error
		status, body, err = post(invokePath, `{"fetch": "http://127.0.0.1:8080/healthz"}`)
		return err
	})
	if err != nil {
		t.Fatalf("in the worker's netns: %v", err)
	}
	var a struct {
		Echo  map[string]string
		Env   map[string]string
		Fetch struct {
			Status int
			Body   string
		}
	}
	if err := json.Unmarshal([]byte(body), &a); status != http.StatusOK || err != nil {
		t.Fatalf("invoke: status %d, %v: %s", status, err, body)
	}
	if a.Echo["fetch"] == "" || a.Env["ESB_FUNCTION"] != "served" || a.Fetch.Status != http.StatusOK || a.Fetch.Body != "ok\n" {
		t.Fatalf("invoke answer %s, want the payload echoed, ESB_FUNCTION=served and the fetch of /healthz", body)
	}

	ctr(t, s, "tasks", "kill", "--signal", "SIGTERM", id)
	deadline := time.Now().Add(10 * time.Second)
	for taskStatus(t, s, id) != "STOPPED" {
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not stop within 10s of SIGTERM")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// invokePath is the worker's invoke endpoint (tests/images/worker).
const invokePath = "/2015-03-31/functions/function/invocations"

// taskRow returns the PID and STATUS columns of ctr tasks list for id.
func taskRow(t *testing.T, s Stack, id string) (pid int, status string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(ctr(t, s, "tasks", "list")))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == id {
			if _, err := fmt.Sscan(f[1], &pid); err != nil {
				t.Fatalf("task %s pid %q: %v", id, f[1], err)
			}
			return pid, f[2]
		}
	}
	t.Fatalf("task %s is not listed", id)
	return 0, ""
}

func taskPID(t *testing.T, s Stack, id string) int {
	t.Helper()
	pid, status := taskRow(t, s, id)
	if status != "RUNNING" {
		t.Fatalf("task %s is %s, want RUNNING", id, status)
	}
	return pid
}

func taskStatus(t *testing.T, s Stack, id string) string {
	t.Helper()
	_, status := taskRow(t, s, id)
	return status
}

// The helpers below run inside ns.WithNetNSPath, on its locked thread: they
// dial in the calling goroutine (http.Transport would dial on another one,
// in the host's namespace) and return errors instead of failing the test.

const workerAddr = "127.0.0.1:8080"

func waitHealthy(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		status, _, err := roundTrip(http.MethodGet, "/healthz", "")
		if err == nil && status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("status %d", status)
			}
			return fmt.Errorf("worker not healthy on %s within %s: %w", workerAddr, limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func post(path, body string) (int, string, error) {
	return roundTrip(http.MethodPost, path, body)
}

func roundTrip(method, path, body string) (int, string, error) {
	conn, err := net.DialTimeout("tcp", workerAddr, 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return 0, "", err
	}
	req, err := http.NewRequest(method, "http://"+workerAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Close = true
	if err := req.Write(conn); err != nil {
		return 0, "", fmt.Errorf("send %s %s: %w", method, path, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, "", fmt.Errorf("read answer to %s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, string(b), nil
}
