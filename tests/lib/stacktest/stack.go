// Package stacktest finds the runtime stack that scripts/stack.sh starts
// (esbnet's own containerd and dockerd, the local registry on 127.0.0.1:5000
// and the worker image in it) for the end-to-end tests, and checks that it
// answers.
// Its own tests prove the stack works: containerd answers, the registry
// serves the worker image, and the image runs under runc in its own network
// namespace.
//
// The settings come, for each field, from the environment variable of the
// same name, else from the stack.env file that "scripts/stack.sh up" writes
// ($ESB_RUN_DIR/stack.env, default /run/esbnet/stack.env), else from the
// defaults of scripts/stack.sh.
package stacktest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/shim/runtimetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// Stack is where the stack's parts are.
type Stack struct {
	// ContainerdSock is the containerd gRPC socket (ESB_CONTAINERD_SOCK).
	ContainerdSock string
	// Snapshotter is the snapshotter clients must ask for (ESB_SNAPSHOTTER):
	// overlayfs, or native where overlay mounts do not work.
	Snapshotter string
	// DockerSock is dockerd's API socket (ESB_DOCKER_SOCK).
	DockerSock string
	// Registry is the local registry's host:port, plain HTTP (ESB_REGISTRY).
	Registry string
	// WorkerImage is the worker image reference (ESB_WORKER_IMAGE).
	WorkerImage string
}

// Defaults of scripts/stack.sh.
const (
	DefaultRunDir         = "/run/esbnet"
	DefaultContainerdSock = "/run/esbnet/containerd/containerd.sock"
	DefaultSnapshotter    = "overlayfs"
	DefaultDockerSock     = "/run/esbnet/docker.sock"
	DefaultRegistry       = "127.0.0.1:5000"
	DefaultWorkerRepo     = "esb/worker:latest"
)

// Settings returns the stack's settings: environment, then stack.env, then
// the defaults. A missing stack.env is not an error.
func Settings() (Stack, error) {
	runDir := os.Getenv("ESB_RUN_DIR")
	if runDir == "" {
		runDir = DefaultRunDir
	}
	file, err := readEnvFile(filepath.Join(runDir, "stack.env"))
	if err != nil {
		return Stack{}, err
	}
	get := func(key, def string) string {
		if v := os.Getenv(key); v != "" {
			return v
		}
		if v := file[key]; v != "" {
			return v
		}
		return def
	}
	s := Stack{
		ContainerdSock: get("ESB_CONTAINERD_SOCK", DefaultContainerdSock),
		Snapshotter:    get("ESB_SNAPSHOTTER", DefaultSnapshotter),
		DockerSock:     get("ESB_DOCKER_SOCK", DefaultDockerSock),
		Registry:       get("ESB_REGISTRY", DefaultRegistry),
	}
	s.WorkerImage = get("ESB_WORKER_IMAGE", s.Registry+"/"+DefaultWorkerRepo)
	return s, nil
}

// Harness returns what the stack gives a runtime conformance harness
// (shim/runtimetest): the worker image, two references its registry
// answers for but lacks (an unknown repository, an unknown tag) and one
// whose registry does not answer. The caller adds New, Unavailable and
// the runtime's capabilities.
func (s Stack) Harness() runtimetest.Harness {
	return runtimetest.Harness{
		Image: s.WorkerImage,
		MissingImages: []string{s.Registry + "/esb/missing-" + nstest.RandomHex(4) + ":latest",
			s.Registry + "/esb/worker:missing-" + nstest.RandomHex(4)},
		UnreachableImage: "127.0.0.1:1/esb/worker:latest",
	}
}

// readEnvFile reads KEY=VALUE lines; a missing file gives an empty map.
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stack settings: %w", err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

// Require returns the stack's settings after checking, as root, that
// containerd and the registry answer. When they do not it fails under CI
// and skips elsewhere, saying to run scripts/stack.sh up.
func Require(t testing.TB) Stack {
	t.Helper()
	return require(t, func(ctx context.Context, s Stack) error {
		if _, err := exec.LookPath("ctr"); err != nil {
			return fmt.Errorf("ctr is not installed (run scripts/deps.sh, then scripts/stack.sh up): %w", err)
		}
		if _, err := os.Stat(s.ContainerdSock); err != nil {
			return fmt.Errorf("containerd socket %s is missing (run scripts/stack.sh up): %w", s.ContainerdSock, err)
		}
		if out, err := s.Ctr(ctx, "", "version").CombinedOutput(); err != nil {
			return fmt.Errorf("containerd on %s does not answer (run scripts/stack.sh up): %w\n%s", s.ContainerdSock, err, out)
		}
		return nil
	})
}

// require is Require and RequireDocker: root, the settings, the runtime
// daemon as daemon checks it, then the registry, each within 10 seconds.
func require(t testing.TB, daemon func(context.Context, Stack) error) Stack {
	t.Helper()
	nstest.RequirePrivileged(t)
	s, err := Settings()
	if err != nil {
		t.Fatalf("stack settings: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := daemon(ctx, s); err != nil {
		nstest.Unavailable(t, "%v", err)
	}
	if err := s.PingRegistry(ctx); err != nil {
		nstest.Unavailable(t, "%v (run scripts/stack.sh up)", err)
	}
	return s
}

// Ctr returns a ctr command against the stack's containerd, in namespace
// ns when it is not empty, with the stack's snapshotter. The command is
// killed when ctx ends.
func (s Stack) Ctr(ctx context.Context, ns string, args ...string) *exec.Cmd {
	a := []string{"--address", s.ContainerdSock}
	if ns != "" {
		a = append(a, "--namespace", ns)
	}
	cmd := exec.CommandContext(ctx, "ctr", append(a, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERD_SNAPSHOTTER="+s.Snapshotter)
	return cmd
}

// DockerHost is dockerd's address for Docker clients (unix://...).
func (s Stack) DockerHost() string { return "unix://" + s.DockerSock }

// RequireDocker returns the stack's settings after checking, as root, that
// dockerd and the registry answer. When they do not it fails under CI and
// skips elsewhere, saying to run scripts/stack.sh up.
func RequireDocker(t testing.TB) Stack {
	t.Helper()
	return require(t, func(ctx context.Context, s Stack) error {
		if _, err := os.Stat(s.DockerSock); err != nil {
			return fmt.Errorf("dockerd socket %s is missing (run scripts/deps.sh, then scripts/stack.sh up): %w", s.DockerSock, err)
		}
		if err := s.PingDocker(ctx); err != nil {
			return fmt.Errorf("%w (run scripts/stack.sh up)", err)
		}
		return nil
	})
}

// The stack's runtimes, by esb-agent's -runtime names.
const (
	Containerd = "containerd"
	Docker     = "docker"
)

// RequireRuntime is Require for runtime Containerd and RequireDocker for
// Docker.
func RequireRuntime(t testing.TB, runtime string) Stack {
	t.Helper()
	if runtime == Docker {
		return RequireDocker(t)
	}
	return Require(t)
}

// PingDocker checks that dockerd answers GET /_ping with OK on its socket.
func (s Stack) PingDocker(ctx context.Context) error {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", s.DockerSock)
	}}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
	if err != nil {
		return fmt.Errorf("ping dockerd: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("dockerd on %s does not answer: %w", s.DockerSock, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return fmt.Errorf("read dockerd's answer to /_ping: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(b) != "OK" {
		return fmt.Errorf("dockerd on %s answers %s %q to /_ping", s.DockerSock, resp.Status, b)
	}
	return nil
}

// Docker returns a docker CLI command against the stack's dockerd. The
// command is killed when ctx ends.
func (s Stack) Docker(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "docker", append([]string{"--host", s.DockerHost()}, args...)...)
}

// PingRegistry checks that the registry answers GET /v2/ with 200.
func (s Stack) PingRegistry(ctx context.Context) error {
	url := "http://" + s.Registry + "/v2/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("ping registry: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("registry %s does not answer: %w", url, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("registry %s answers %s", url, resp.Status)
	}
	return nil
}

// ScriptImage is an image that one of the repository's image scripts
// (scripts/*-image.sh) builds and pushes once per test binary.
type ScriptImage struct {
	once sync.Once
	ref  string
	err  error
}

// Ref runs script (a path from the repository root) once, within timeout
// and with env added to the environment, and returns the image reference
// it prints; a failure fails every test that asks.
func (i *ScriptImage) Ref(tb testing.TB, timeout time.Duration, script string, env ...string) string {
	tb.Helper()
	i.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, script)
		cmd.Dir = nstest.RepoRoot(tb)
		cmd.Env = append(os.Environ(), env...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			i.err = fmt.Errorf("%s: %w\n%s", script, err, stderr.String())
			return
		}
		i.ref = strings.TrimSpace(string(out))
	})
	if i.err != nil {
		tb.Fatal(i.err)
	}
	return i.ref
}
