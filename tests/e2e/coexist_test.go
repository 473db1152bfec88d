package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// nodeDockerd is a dockerd of the test's own, run in the node namespace
// with Docker's defaults for networking: the docker0 bridge, iptables
// rules (iptables-nft), ip_forward.
type nodeDockerd struct {
	sock, root, exec string
	short            string         // the directory of the exec root, socket and pidfile
	dc               *client.Client // its client
	stackDC          *client.Client // the stack's, given back to the env at the end
	stackSock        string
	args             []string // nsenter's, to start (and restart) it
	cmd              *exec.Cmd
	exited           chan struct{}
	log              *nodetest.SyncBuffer
	answered         bool // it answered once: a stopped one is started again for the teardown
}

// start runs the dockerd and waits until it answers.
func (d *nodeDockerd) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command("nsenter", d.args...)
	cmd.Stdout, cmd.Stderr = d.log, d.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(d.cmd, d.exited)
	exited, err := waitDaemon("dockerd", d.exited, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := d.dc.Ping(ctx)
		return err
	})
	if exited {
		t.Fatalf("dockerd exited at start:\n%s", d.log.String())
	}
	if err != nil {
		t.Fatalf("dockerd does not answer on %s within %s: %v\n%s", d.sock, daemonStartTimeout, err, d.log.String())
	}
	d.answered = true
}

// waitDaemon calls ping every interval until it answers, the daemon
// exits (exited closes) or daemonStartTimeout passes; it notes the wait as
// "<name> start" and returns whether the daemon exited and ping's last
// error.
func waitDaemon(name string, exited <-chan struct{}, every time.Duration, ping func() error) (bool, error) {
	start := time.Now()
	deadline := start.Add(daemonStartTimeout)
	for {
		err := ping()
		if err == nil {
			noteWait(name+" start", daemonStartTimeout, time.Since(start))
			return false, nil
		}
		select {
		case <-exited:
			return true, err
		default:
		}
		if time.Now().After(deadline) {
			return false, err
		}
		time.Sleep(every)
	}
}

// stop sends SIGTERM (dockerd stops its containers: no live-restore) and
// waits for the exit; it reports whether dockerd stopped in time.
func (d *nodeDockerd) stop() bool {
	if d.cmd == nil {
		return true
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	stopped := time.Now()
	defer func() { d.cmd = nil }()
	select {
	case <-d.exited:
		noteWait("dockerd stop", agentStopTimeout, time.Since(stopped))
		return true
	case <-time.After(agentStopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return false
	}
}

// startNodeDockerd starts the dockerd in the node with its own data root,
// exec root (and so its own containerd), pidfile and socket, loads the
// worker image into it from the stack's dockerd (it cannot reach the
// registry on the host's loopback), and points the env's Docker client
// and the agent's -docker-host at it. It is stopped, and its files
// removed, when the test ends.
func (e *env) startNodeDockerd() *nodeDockerd {
	e.t.Helper()
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		e.t.Fatalf("dockerd is not installed (run scripts/deps.sh): %v", err)
	}
	// The exec root holds containerd's socket: keep its path short.
	short, err := os.MkdirTemp("/run", "esbcx-")
	if err != nil {
		e.t.Fatal(err)
	}
	d := &nodeDockerd{sock: filepath.Join(short, "docker.sock"), root: filepath.Join(e.Base, "dockerd-root"), short: short,
		exec: filepath.Join(short, "x"), log: &nodetest.SyncBuffer{}, stackDC: e.dc, stackSock: e.stack.DockerSock}
	// From here on, whatever fails: the daemon is stopped and its
	// directories removed.
	e.t.Cleanup(func() { e.stopNodeDockerd(d) })
	cfg := map[string]any{
		"data-root": d.root, "exec-root": d.exec, "pidfile": filepath.Join(short, "dockerd.pid"),
		"hosts": []string{"unix://" + d.sock}, "storage-driver": "overlay2", "iptables": true, "ip6tables": false,
		"userland-proxy": false, "live-restore": false, "shutdown-timeout": 5,
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	conf := filepath.Join(e.Base, "dockerd.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	d.args = []string{"--net=" + e.node.Path(), bin, "--config-file", conf}
	dc, err := client.NewClientWithOpts(client.WithHost("unix://"+d.sock), client.WithAPIVersionNegotiation())
	if err != nil {
		e.t.Fatal(err)
	}
	d.dc = dc
	d.start(e.t)
	ctx, cancel := cmdCtx()
	defer cancel()
	// The stack's dockerd holds the image only after something pulled it
	// there (a test run alone on a fresh machine has not): pull it first.
	pull, err := e.dc.ImagePull(ctx, e.image, image.PullOptions{})
	if err == nil {
		_, err = io.Copy(io.Discard, pull)
		_ = pull.Close()
	}
	if err != nil {
		e.t.Fatalf("pull %s into the stack's dockerd: %v", e.image, err)
	}
	rc, err := e.dc.ImageSave(ctx, []string{e.image})
	if err != nil {
		e.t.Fatalf("save %s from the stack's dockerd: %v", e.image, err)
	}
	resp, err := dc.ImageLoad(ctx, rc)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	_ = rc.Close()
	if err != nil {
		e.t.Fatalf("load %s into the node's dockerd: %v", e.image, err)
	}
	// From here on the env's Docker is the node's: the agent, the traces and
	// the cleanup use it.
	e.dc, e.stack.DockerSock = dc, d.sock
	return d
}

// stopNodeDockerd runs the env's teardown while the node's dockerd still
// answers (stop the agent, check and remove what is left), stops the
// dockerd (SIGTERM: it stops its containerd and unmounts its namespaces),
// removes its files and gives the env back the stack's dockerd.
func (e *env) stopNodeDockerd(d *nodeDockerd) {
	t := e.t
	if d.cmd == nil && d.answered {
		d.start(t) // the test failed while it was stopped
	}
	if d.answered {
		e.teardown()
	}
	if !d.stop() {
		t.Errorf("the node's dockerd did not stop within %s of SIGTERM", agentStopTimeout)
	}
	if t.Failed() {
		t.Logf("the node's dockerd:\n%s", tail(d.log.String(), 40))
	}
	e.dc, e.stack.DockerSock = d.stackDC, d.stackSock
	if d.dc != nil {
		_ = d.dc.Close()
	}
	for _, dir := range []string{d.root, d.short} {
		if err := unmountUnder(dir); err != nil {
			t.Errorf("unmount under %s: %v", dir, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// unmountUnder unmounts every mount point below dir (deepest first).
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		if err := unix.Unmount(points[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", points[i], err))
		}
	}
	return errors.Join(errs...)
}

// dockerTables renders every nftables table of the node but esbnet's own
// (iptables-nft's ip nat and ip filter that dockerd wrote, and any other),
// with nft's own listing, and iptables-save's view of them; counters (they
// count traffic, not configuration) are blanked.
func (e *env) dockerTables() string {
	e.t.Helper()
	run := func(args ...string) string {
		out, err := e.nodeCmd(nil, args...)
		if err != nil {
			e.t.Fatalf("%s in the node: %v", strings.Join(args, " "), err)
		}
		return out
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(run("nft", "list", "tables")), "\n") {
		f := strings.Fields(line) // "table <family> <name>"
		if len(f) != 3 || f[2] == nat.TableName {
			continue
		}
		b.WriteString(run("nft", "list", "table", f[1], f[2]))
	}
	for _, line := range strings.Split(run("iptables-save"), "\n") {
		if !strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
		}
	}
	return counters.ReplaceAllString(b.String(), "counter packets N bytes N")
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// TestCoexistWithDockerBridge runs esbnet beside a dockerd that uses its
// own default bridge and iptables, in the node: a container on Docker's
// bridge and an esb worker (made by that same dockerd, network none, on
// esb-cni0) both work, and applying and deleting esbnet's NAT changes
// nothing of Docker's tables.
func TestCoexistWithDockerBridge(t *testing.T) {
	e := newEnvFor(t, stacktest.Docker)
	e.startNodeDockerd()
	ctx, cancel := cmdCtx()
	defer cancel()

	// A container on Docker's default bridge.
	created, err := e.dc.ContainerCreate(ctx, &container.Config{Image: e.image,
		Labels: map[string]string{"esb.namespace": e.ctrNS}}, &container.HostConfig{NetworkMode: "bridge"}, nil, nil, "esb-bridged-"+e.ctrNS)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.dc.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := e.dc.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	bridged := &agentv1.Worker{Id: "bridged", Port: 8080}
	if ep := info.NetworkSettings.Networks["bridge"]; ep != nil {
		bridged.Ip = ep.IPAddress
	}
	if bridged.Ip == "" {
		t.Fatalf("the container on Docker's bridge has no address: %+v", info.NetworkSettings)
	}
	rules := e.startProxy()
	// Docker's tables once its container runs and no traffic flows.
	before := e.dockerTables()
	if !strings.Contains(before, "DOCKER") || !strings.Contains(before, "MASQUERADE") {
		t.Fatalf("dockerd wrote no iptables rules in the node:\n%s", before)
	}
	var tables []string
	for _, l := range strings.Split(before, "\n") {
		if strings.HasPrefix(l, "table ") || strings.HasPrefix(l, "*") {
			tables = append(tables, strings.TrimSuffix(l, " {"))
		}
	}
	t.Logf("Docker's tables in the node: %d lines: %s", strings.Count(before, "\n"), strings.Join(tables, ", "))
	e.startAgent("-nat-rules", rules)
	if after := e.dockerTables(); after != before {
		t.Errorf("applying esbnet's NAT changed Docker's tables:\n--- before\n%s\n--- after\n%s", before, after)
	}

	// The esb worker: invoked from the node, and its call through the
	// gateway to HAProxy.
	w := e.mustAcquire(e.acquireReq("owner-cx", "beside-docker"))
	a := e.mustInvoke(w, `{"fetch":"`+fetchURL+`"}`)
	if a.Fetch == nil || a.Fetch.Status != http.StatusOK || a.Fetch.Body != backendBody(frontendName) {
		t.Errorf("esb worker's GET %s = %+v", fetchURL, a.Fetch)
	}
	// The bridged container: invoked from the node over docker0, and its
	// own call to the node's HAProxy (routed by Docker's bridge).
	direct := "http://" + proxyAddr + "/"
	body, err := e.invoke(bridged, `{"fetch":"`+direct+`"}`, invokeTimeout)
	if err != nil {
		t.Fatalf("invoke the container on Docker's bridge: %v", err)
	}
	var ba nodetest.Answer
	if err := json.Unmarshal([]byte(body), &ba); err != nil || ba.Fetch == nil || ba.Fetch.Status != http.StatusOK {
		t.Errorf("bridged container's GET %s: %s (%v)", direct, body, err)
	}
	// The esb worker stays off Docker's bridge (proxy-only egress).
	a = e.mustInvoke(w, `{"fetch":"http://`+bridged.Ip+`:8080/"}`)
	if a.Fetch == nil || a.Fetch.Status == http.StatusOK {
		t.Errorf("the esb worker reached the container on Docker's bridge: %+v", a.Fetch)
	}
	e.mustRelease(w)
	e.expectNoTraces("after release", w.GetId())

	// Deleting esbnet's NAT leaves Docker's tables as they were.
	e.stopAgent(syscall.SIGTERM)
	mid := e.dockerTables()
	if err := nat.NewManager(e.node).Delete(t.Context(), "esb-cni0"); err != nil {
		t.Fatal(err)
	}
	if after := e.dockerTables(); after != mid {
		t.Errorf("deleting esbnet's NAT changed Docker's tables:\n--- before\n%s\n--- after\n%s", mid, after)
	}
	if mid != before {
		t.Logf("Docker's own tables changed while the workers ran (its doing, not ours):\n--- before\n%s\n--- after\n%s", before, mid)
	}
	if err := e.removeDockerWorker(strings.TrimPrefix("esb-bridged-"+e.ctrNS, "esb-")); err != nil {
		t.Error(err)
	}
}
