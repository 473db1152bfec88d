package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// registryStartTimeout bounds the wait for a test registry to answer.
const registryStartTimeout = 30 * time.Second

// testRegistry is a registry of the test's own (Debian's docker-registry)
// on a loopback port of the network namespace the runtime pulls from: the
// node for containerd (the agent, in the node, pulls itself), the host for
// Docker (dockerd pulls, and takes 127.0.0.0/8 registries as plain HTTP).
// The shared registry of the stack is never stopped; this one is, by the
// tests of a registry that does not answer, and at the test's end.
type testRegistry struct {
	e       *env
	inNode  bool
	addr    string // host:port, plain HTTP
	conf    string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// freePort returns a loopback address where nothing listens now, in the
// node or in the host's namespace.
func (e *env) freePort(inNode bool) string {
	e.t.Helper()
	var addr string
	listen := func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		return l.Close()
	}
	var err error
	if inNode {
		err = e.inNode(listen)
	} else {
		err = listen()
	}
	if err != nil {
		e.t.Fatalf("find a free loopback port: %v", err)
	}
	return addr
}

// pullsInNode says whether the runtime's pulls come from the node (the
// agent's containerd client) rather than the host (dockerd).
func (e *env) pullsInNode() bool { return e.rt == stacktest.Containerd }

// startRegistry starts an empty registry where the runtime pulls from and
// waits until it answers; it is stopped when the test ends.
func (e *env) startRegistry() *testRegistry {
	e.t.Helper()
	bin := nstest.LookPath(e.t, "docker-registry")
	dir := filepath.Join(e.Base, "registry-"+nstest.RandomHex(2))
	r := &testRegistry{e: e, inNode: e.pullsInNode(), addr: e.freePort(e.pullsInNode()),
		conf: dir + ".yml", logPath: dir + ".log", exited: make(chan struct{})}
	conf := fmt.Sprintf("version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", dir, r.addr)
	if err := os.WriteFile(r.conf, []byte(conf), 0o644); err != nil {
		e.t.Fatal(err)
	}
	f, err := os.Create(r.logPath)
	if err != nil {
		e.t.Fatal(err)
	}
	args := []string{bin, "serve", r.conf}
	if r.inNode {
		args = append([]string{"nsenter", "--net=" + e.node.Path()}, args...)
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		_ = f.Close()
		e.t.Fatalf("start docker-registry: %v", err)
	}
	go func() { _ = r.cmd.Wait(); _ = f.Close(); close(r.exited) }()
	e.t.Cleanup(r.stop)

	client := &http.Client{Timeout: time.Second}
	if r.inNode {
		client = e.nodeClient(time.Second)
	}
	deadline := time.Now().Add(registryStartTimeout)
	for {
		resp, err := client.Get("http://" + r.addr + "/v2/")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r
			}
		}
		select {
		case <-r.exited:
			e.t.Fatalf("docker-registry exited at start:\n%s", r.log())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("docker-registry does not answer on %s within %s (last: %v):\n%s", r.addr, registryStartTimeout, err, r.log())
		}
		time.Sleep(pollInterval)
	}
}

func (r *testRegistry) log() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", r.logPath, err)
	}
	return string(b)
}

// stop stops the registry and waits for it to exit; stopping a stopped
// registry does nothing.
func (r *testRegistry) stop() {
	select {
	case <-r.exited:
		return
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		r.e.t.Errorf("stop docker-registry: %v", err)
	}
	select {
	case <-r.exited:
	case <-time.After(agentStopTimeout):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

// push copies the image tag of the OCI layout to ref in this registry
// (skopeo, from the namespace the registry listens in).
func (r *testRegistry) push(layout, tag, ref string) {
	r.e.t.Helper()
	args := []string{"skopeo", "--policy", filepath.Join(layout, "policy.json"), "copy", "--quiet", "--dest-tls-verify=false",
		"oci:" + layout + ":" + tag, "docker://" + ref}
	if r.inNode {
		args = append([]string{"nsenter", "--net=" + r.e.node.Path()}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
		r.e.t.Fatalf("push %s as %s: %v: %s", tag, ref, err, out)
	}
}

// markedImages writes an OCI layout holding the worker image under each
// of marks as a tag, each with ESB_IMAGE_MARK=<mark> in its config: images
// that differ only in what the worker reports (tests/images/worker echoes its
// ESB_* variables). The layout's directory is returned.
func (e *env) markedImages(marks ...string) string {
	e.t.Helper()
	nstest.RequirePrograms(e.t, "skopeo", "umoci")
	layout := filepath.Join(e.Base, "oci")
	if err := os.MkdirAll(layout, 0o755); err != nil {
		e.t.Fatal(err)
	}
	policy := filepath.Join(layout, "policy.json") // our own: not the machine's /etc/containers/policy.json
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`+"\n"), 0o644); err != nil {
		e.t.Fatal(err)
	}
	run := func(args ...string) {
		e.t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer cancel()
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			e.t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("skopeo", "--policy", policy, "copy", "--quiet", "--src-tls-verify=false", "docker://"+e.stack.WorkerImage, "oci:"+layout+":base")
	for _, m := range marks {
		run("umoci", "config", "--image", layout+":base", "--tag", m, "--config.env", "ESB_IMAGE_MARK="+m)
	}
	return layout
}

// keepDockerImage notes an image (reference or ID) the test made dockerd
// pull, for forceClean to remove once the containers are gone.
func (e *env) keepDockerImage(ref string) {
	if e.rt != stacktest.Docker {
		return
	}
	ctx, cancel := cmdCtx()
	defer cancel()
	e.dockerImages = append(e.dockerImages, ref)
	if info, err := e.dc.ImageInspect(ctx, ref); err == nil {
		e.dockerImages = append(e.dockerImages, info.ID)
	}
}

// removeDockerImages removes what keepDockerImage noted.
func (e *env) removeDockerImages() error {
	var errs []error
	for _, ref := range e.dockerImages {
		ctx, cancel := cmdCtx()
		_, err := e.dc.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true})
		cancel()
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("docker rmi %s: %w", ref, err))
		}
	}
	e.dockerImages = nil
	return errors.Join(errs...)
}
