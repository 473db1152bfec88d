package critest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/moby/sys/mountinfo"
	toml "github.com/pelletier/go-toml/v2"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/nat"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

const (
	// criNamespace is the containerd namespace the CRI plugin keeps pods in.
	criNamespace = "k8s.io"
	// ifName is the pod interface the CRI plugin asks CNI for.
	ifName = "eth0"
	// loopbackPlugin is the reference loopback plugin from Debian's
	// containernetworking-plugins (scripts/deps.sh), which the CRI plugin
	// calls for every pod's lo.
	loopbackPlugin = "/usr/lib/cni/loopback"
	// deployConfig is the checked-in containerd configuration under test.
	deployConfig = "deploy/containerd/config.toml"

	startTimeout = 30 * time.Second // containerd start to the CRI answering
	stopTimeout  = 20 * time.Second // SIGTERM to containerd's exit
	cmdTimeout   = 90 * time.Second // one crictl, ctr or runc command
	readyTimeout = 15 * time.Second // a started worker to its port answering
	pollInterval = 100 * time.Millisecond
)

var esbSubnet = netip.MustParsePrefix(conf.DefaultSubnet)

// node is one test's Kubernetes node: a network namespace that plays the
// host, a containerd of its own (root, state, socket, runc root, netns pins
// all under base) started in that namespace with the checked-in CRI
// configuration, esb-bridge and esb-ipam as its CNI, and the pause and
// worker images pulled into it.
type node struct {
	t       *testing.T
	st      stacktest.Stack // the shared stack, for its registry and images only
	netns   ns.NetNS
	base    string
	plugins string // esbnet's plugins as built (nstest.PluginDir)
	crictl  string

	ctrd   *exec.Cmd
	exited chan struct{} // closed when containerd has exited
	// seen holds every sandbox ID the test learnt of, for the cleanup of
	// what a failed test may leave in the machine's libcni cache.
	seen map[string]bool
}

func (n *node) binDir() string   { return filepath.Join(n.base, "bin") }
func (n *node) confDir() string  { return filepath.Join(n.base, "net.d") }
func (n *node) dataDir() string  { return filepath.Join(n.base, "ipam") }
func (n *node) rootDir() string  { return filepath.Join(n.base, "root") }
func (n *node) stateDir() string { return filepath.Join(n.base, "state") }
func (n *node) runcRoot() string { return filepath.Join(n.stateDir(), "runc") }
func (n *node) socket() string   { return filepath.Join(n.stateDir(), "containerd.sock") }
func (n *node) verbsLog() string { return filepath.Join(n.base, "verbs.log") }
func (n *node) ctrdLog() string  { return filepath.Join(n.base, "containerd.log") }

// cgroupParent is the cgroup (cgroupfs driver) of the test's pods, one per
// test, which the cleanup removes.
func (n *node) cgroupParent() string { return "/" + filepath.Base(n.base) }

// netnsDir is where the CRI plugin pins pods' network namespaces with
// netns_mounts_under_state_dir.
func (n *node) netnsDir() string {
	return filepath.Join(n.stateDir(), "io.containerd.grpc.v1.cri", "netns")
}

// override changes one setting of the CRI plugin's table in the checked-in
// configuration (a key it must already have).
type override struct {
	key   string
	value any
}

// newNode makes the node and starts its containerd with the checked-in
// configuration (with overrides); everything is stopped and removed when
// the test ends, whether it passed or not.
func newNode(t *testing.T, overrides ...override) *node {
	t.Helper()
	st := stacktest.Require(t)
	nstest.RequirePrograms(t, "containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter")
	if _, err := os.Stat(loopbackPlugin); err != nil {
		nstest.Unavailable(t, "the loopback CNI plugin is missing (containernetworking-plugins, scripts/deps.sh): %v", err)
	}
	n := &node{t: t, st: st, crictl: nstest.Tool(t, "crictl"), plugins: nstest.PluginDir(t), seen: map[string]bool{}}
	pause := n.pauseImage()

	base, err := os.MkdirTemp("", "esbcri-")
	if err != nil {
		t.Fatal(err)
	}
	n.base = base
	// Cleanups run last-registered first: the directory goes after
	// containerd and its pods (teardown), the node namespace after both.
	n.netns = nstest.NewNS(t)
	t.Cleanup(n.removeBase)
	if err := nodetest.LoUp(n.netns); err != nil {
		t.Fatalf("set lo up in the node: %v", err)
	}
	n.writeBinDir()
	n.writeConflist()
	n.writeConfig(pause, overrides)
	n.writeCrictlConfig()
	began := time.Now()
	n.start()
	started := time.Now()
	n.pull(pause)
	n.pull(st.WorkerImage)
	t.Logf("containerd ready in %s, images pulled in %s", started.Sub(began).Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	return n
}

var pauseBuilt stacktest.ScriptImage

// pauseImage builds the sandbox image with scripts/pause-image.sh once per
// test binary; the script pushes it to the stack's registry (reproducibly:
// an unchanged source pushes nothing new). It returns its reference.
func (n *node) pauseImage() string {
	n.t.Helper()
	return pauseBuilt.Ref(n.t, cmdTimeout, "scripts/pause-image.sh", "ESB_REGISTRY="+n.st.Registry)
}

// writeBinDir fills the CNI bin_dir: esb-ipam and loopback as links, and
// esb-bridge behind a wrapper that appends the verb containerd sent to
// verbs.log before it runs the real plugin with the same environment,
// arguments and stdin.
func (n *node) writeBinDir() {
	n.t.Helper()
	if err := os.MkdirAll(n.binDir(), 0o755); err != nil {
		n.t.Fatal(err)
	}
	links := map[string]string{
		"esb-ipam": filepath.Join(n.plugins, "esb-ipam"),
		"loopback": loopbackPlugin,
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(n.binDir(), name)); err != nil {
			n.t.Fatal(err)
		}
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n"+
		"# tests/daemon/critest: record the verb, then run esb-bridge as containerd asked.\n"+
		"printf '%%s %%s %%s %%s %%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_IFNAME\" \"$CNI_NETNS\" \"$CNI_ARGS\" >>'%s'\n"+
		"exec '%s' \"$@\"\n", n.verbsLog(), filepath.Join(n.plugins, "esb-bridge"))
	if err := os.WriteFile(filepath.Join(n.binDir(), "esb-bridge"), []byte(wrapper), 0o755); err != nil {
		n.t.Fatal(err)
	}
}

// writeConflist installs the conflist containerd reads: cniVersion 1.0.0,
// the newest result version containerd 1.6's libcni reads.
func (n *node) writeConflist() {
	n.t.Helper()
	nodetest.WriteConflist(n.t, n.confDir(), "1.0.0", n.dataDir(), "")
}

// writeConfig writes deploy/containerd/config.toml with the paths it
// marks "test: moved" moved under base, the stack's snapshotter and the
// pause image just pushed; every other setting is the file's own.
func (n *node) writeConfig(pause string, overrides []override) {
	n.t.Helper()
	raw, err := os.ReadFile(filepath.Join(nstest.RepoRoot(n.t), deployConfig))
	if err != nil {
		n.t.Fatal(err)
	}
	var cfg map[string]any
	if err := toml.Unmarshal(raw, &cfg); err != nil {
		n.t.Fatalf("parse %s: %v", deployConfig, err)
	}
	const cri = `io.containerd.grpc.v1.cri`
	set := func(value any, path ...string) {
		n.t.Helper()
		m := cfg
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				n.t.Fatalf("%s has no table %s", deployConfig, strings.Join(path, "."))
			}
			m = next
		}
		last := path[len(path)-1]
		if _, ok := m[last]; !ok {
			n.t.Fatalf("%s has no key %s", deployConfig, strings.Join(path, "."))
		}
		m[last] = value
	}
	set(n.rootDir(), "root")
	set(n.stateDir(), "state")
	set(n.socket(), "grpc", "address")
	set(n.binDir(), "plugins", cri, "cni", "bin_dir")
	set(n.confDir(), "plugins", cri, "cni", "conf_dir")
	set(n.runcRoot(), "plugins", cri, "containerd", "runtimes", "runc", "options", "Root")
	set(pause, "plugins", cri, "sandbox_image")
	set(n.st.Snapshotter, "plugins", cri, "containerd", "snapshotter")
	for _, o := range overrides {
		set(o.value, "plugins", cri, o.key)
	}
	out, err := toml.Marshal(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.base, "containerd.toml"), out, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// writeCrictlConfig points crictl at the node's containerd.
func (n *node) writeCrictlConfig() {
	n.t.Helper()
	y := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: %d\n",
		n.socket(), n.socket(), int(cmdTimeout.Seconds()))
	if err := os.WriteFile(filepath.Join(n.base, "crictl.yaml"), []byte(y), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// start runs containerd in the node's network namespace and the host's
// mount namespace (nsenter --net), and waits until the CRI plugin reports
// the runtime and the network ready.
func (n *node) start() {
	n.t.Helper()
	logf, err := os.Create(n.ctrdLog())
	if err != nil {
		n.t.Fatal(err)
	}
	defer func() { _ = logf.Close() }()
	containerd, _ := exec.LookPath("containerd")
	n.ctrd = exec.Command("nsenter", "--net="+n.netns.Path(), containerd, "--config", filepath.Join(n.base, "containerd.toml"))
	n.ctrd.Stdout, n.ctrd.Stderr = logf, logf
	// Its own process group: a signal to the test's group does not stop it
	// before the cleanup does.
	n.ctrd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.ctrd.Start(); err != nil {
		n.t.Fatalf("start containerd: %v", err)
	}
	n.exited = make(chan struct{})
	go func() { _ = n.ctrd.Wait(); close(n.exited) }()
	n.t.Cleanup(n.teardown)

	deadline := time.Now().Add(startTimeout)
	for {
		out, err := n.crictlOut("info")
		if err == nil && criReady(out) {
			return
		}
		select {
		case <-n.exited:
			n.t.Fatalf("containerd exited while starting: %s\n%s", n.ctrd.ProcessState, n.logTail())
		default:
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("the CRI plugin was not ready within %s (last: %v %s)\n%s", startTimeout, err, out, n.logTail())
		}
		time.Sleep(pollInterval)
	}
}

// criReady reports whether crictl info says RuntimeReady and NetworkReady.
func criReady(info string) bool {
	var v struct {
		Status struct {
			Conditions []struct {
				Type   string `json:"type"`
				Status bool   `json:"status"`
			} `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return false
	}
	ready := 0
	for _, c := range v.Status.Conditions {
		if (c.Type == "RuntimeReady" || c.Type == "NetworkReady") && c.Status {
			ready++
		}
	}
	return ready == 2
}

// logTail returns the end of containerd's log, for failure messages.
func (n *node) logTail() string {
	b, _ := os.ReadFile(n.ctrdLog())
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return "containerd log (end):\n" + string(b)
}

// pull puts an image from the stack's registry into the node's containerd.
// ctr fetches it in the test's (the machine's) network namespace, where the
// registry listens on loopback, which the node's namespace cannot reach;
// the CRI plugin then finds it present and pulls nothing. It waits until
// the CRI plugin's image store has it.
func (n *node) pull(ref string) {
	n.t.Helper()
	st := n.st
	st.ContainerdSock = n.socket()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := st.Ctr(ctx, criNamespace, "images", "pull", "--plain-http", "--snapshotter", st.Snapshotter, ref).CombinedOutput(); err != nil {
		n.t.Fatalf("ctr pull %s: %v\n%s", ref, err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		_, err := n.crictlOut("inspecti", ref)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("the CRI plugin does not list %s: %v", ref, err)
		}
		time.Sleep(pollInterval)
	}
}

// --- crictl ------------------------------------------------------------------

// crictlOut runs crictl against the node's containerd and returns its
// standard output.
func (n *node) crictlOut(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.crictl, append([]string{"--config", filepath.Join(n.base, "crictl.yaml")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// crictl runs crictl, failing the test when it fails, and returns its
// trimmed output.
func (n *node) crictlRun(args ...string) string {
	n.t.Helper()
	out, err := n.crictlOut(args...)
	if err != nil {
		n.t.Fatalf("%v\n%s", err, n.logTail())
	}
	return strings.TrimSpace(out)
}

// writeJSON writes v as a JSON file in base and returns its path.
func (n *node) writeJSON(name string, v any) string {
	n.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		n.t.Fatal(err)
	}
	p := filepath.Join(n.base, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		n.t.Fatal(err)
	}
	return p
}

// pod is a pod sandbox made with crictl runp.
type pod struct {
	id, name string
	config   string // the pod config file, which crictl create needs too
}

// podConfig writes the crictl pod config of a pod named name, in the
// test's cgroup parent, and returns its path.
func (n *node) podConfig(name string) string {
	n.t.Helper()
	logs := filepath.Join(n.base, "logs", name)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		n.t.Fatal(err)
	}
	return n.writeJSON("pod-"+name+".json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": "uid-" + name, "attempt": 0},
		"hostname":      name,
		"log_directory": logs,
		"linux":         map[string]any{"cgroup_parent": n.cgroupParent()},
	})
}

// runPod creates a pod sandbox named name with crictl runp.
func (n *node) runPod(name string) *pod {
	n.t.Helper()
	cfg := n.podConfig(name)
	began := time.Now()
	id := n.crictlRun("runp", cfg)
	n.seen[id] = true
	n.t.Logf("crictl runp %s: %s", name, time.Since(began).Round(time.Millisecond))
	return &pod{id: id, name: name, config: cfg}
}

// startWorker creates and starts the worker image in p, with env.
func (n *node) startWorker(p *pod, env map[string]string) string {
	n.t.Helper()
	var envs []map[string]string
	for k, v := range env {
		envs = append(envs, map[string]string{"key": k, "value": v})
	}
	cfg := n.writeJSON("ctr-"+p.name+".json", map[string]any{
		"metadata": map[string]any{"name": "worker"},
		"image":    map[string]any{"image": n.st.WorkerImage},
		"envs":     envs,
		"log_path": "worker.log",
		"linux":    map[string]any{},
	})
	id := n.crictlRun("create", p.id, cfg, p.config)
	n.crictlRun("start", id)
	return id
}

// sandboxStatus is what crictl inspectp tells of a pod.
type sandboxStatus struct {
	Status struct {
		State   string `json:"state"`
		Network struct {
			IP string `json:"ip"`
		} `json:"network"`
	} `json:"status"`
	Info struct {
		RuntimeSpec struct {
			Process struct {
				OOMScoreAdj *int `json:"oomScoreAdj"`
			} `json:"process"`
		} `json:"runtimeSpec"`
	} `json:"info"`
}

func (n *node) inspect(p *pod) sandboxStatus {
	n.t.Helper()
	var s sandboxStatus
	if err := json.Unmarshal([]byte(n.crictlRun("inspectp", "-o", "json", p.id)), &s); err != nil {
		n.t.Fatalf("parse crictl inspectp: %v", err)
	}
	return s
}

// podIDs lists the node's pod sandboxes.
func (n *node) podIDs() []string {
	n.t.Helper()
	out := n.crictlRun("pods", "-q")
	if out == "" {
		return nil
	}
	return strings.Fields(out)
}

// --- what containerd sent -------------------------------------------------------

// verb is one CNI call containerd made to esb-bridge.
type verb struct{ Command, ContainerID, IfName, NetNS, Args string }

func (v verb) String() string {
	return v.Command + " " + v.ContainerID + " " + v.IfName + " " + v.NetNS + " " + v.Args
}

// verbs returns the calls to esb-bridge so far, in order, for the
// sandbox id (all of them when id is empty).
func (n *node) verbs(id string) []verb {
	n.t.Helper()
	f, err := os.Open(n.verbsLog())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		n.t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	var out []verb
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Split on single spaces so that an empty field (a DEL without a
		// netns) keeps its place.
		p := strings.SplitN(sc.Text(), " ", 5)
		for len(p) < 5 {
			p = append(p, "")
		}
		v := verb{p[0], p[1], p[2], p[3], p[4]}
		if id == "" || v.ContainerID == id {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		n.t.Fatal(err)
	}
	return out
}

// --- what the node holds ---------------------------------------------------------

// veths returns the names of the veths in the node.
func (n *node) veths() []string {
	n.t.Helper()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(int(n.netns.Fd())))
	if err != nil {
		n.t.Fatalf("netlink handle in the node: %v", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		n.t.Fatalf("list the node's links: %v", err)
	}
	var out []string
	for _, l := range links {
		if l.Type() == "veth" {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out
}

// guards returns the bridge ports that have anti-spoof elements in the
// node's "bridge esb" table.
func (n *node) guards() []string {
	n.t.Helper()
	gs, err := nat.NewManager(n.netns).ListGuards(n.t.Context())
	if err != nil {
		n.t.Fatalf("list anti-spoof guards: %v", err)
	}
	var out []string
	for _, g := range gs {
		out = append(out, g.Port)
	}
	slices.Sort(out)
	return out
}

// attachment is the IPAM key of a pod's eth0.
func attachment(id string) ipam.AttachmentID {
	return ipam.AttachmentID{ContainerID: id, IfName: ifName}
}

// vethOf is the node-side veth esb-bridge gives a pod's eth0.
func vethOf(id string) string { return conf.VethName(id, ifName) }

// wantHeld fails the test unless the node holds exactly the veths,
// anti-spoof guards and allocations of the sandboxes in ids.
func (n *node) wantHeld(what string, ids ...string) {
	n.t.Helper()
	wantVeths := []string{}
	for _, id := range ids {
		wantVeths = append(wantVeths, vethOf(id))
	}
	slices.Sort(wantVeths)
	if got := n.veths(); !slices.Equal(got, wantVeths) {
		n.t.Errorf("%s: node veths %v, want %v", what, got, wantVeths)
	}
	if got := n.guards(); !slices.Equal(got, wantVeths) {
		n.t.Errorf("%s: anti-spoof guards on %v, want %v", what, got, wantVeths)
	}
	allocs := nodetest.Allocs(n.t, n.dataDir(), conf.NetworkName)
	for _, id := range ids {
		if _, ok := allocs[attachment(id)]; !ok {
			n.t.Errorf("%s: no allocation for %s", what, attachment(id))
		}
		delete(allocs, attachment(id))
	}
	if len(allocs) > 0 {
		n.t.Errorf("%s: allocations left: %v", what, allocs)
	}
}

// --- traffic from the node --------------------------------------------------------

// httpClient dials from the node's network namespace.
func (n *node) httpClient() *http.Client {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := n.netns.Do(func(ns.NetNS) error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// waitHealthy polls the worker's /healthz at ip:8080 from the node until
// it answers 200.
func (n *node) waitHealthy(ip netip.Addr) {
	n.t.Helper()
	c := n.httpClient()
	url := "http://" + netip.AddrPortFrom(ip, 8080).String() + "/healthz"
	deadline := time.Now().Add(readyTimeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("GET %s from the node: %v", url, err)
		}
		time.Sleep(pollInterval)
	}
}

// serveInNode answers GET requests with body on a port of every address of
// the node (the gateway 10.88.0.1 among them, once the bridge exists) until
// the test ends, and returns the port.
func (n *node) serveInNode(body string) int {
	n.t.Helper()
	l, err := nodetest.Listen(n.netns, "tcp4", "0.0.0.0:0")
	if err != nil {
		n.t.Fatalf("listen in the node: %v", err)
	}
	nodetest.ServeHTTP(n.t, l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprint(w, body) }))
	return l.Addr().(*net.TCPAddr).Port
}

// --- cleanup -----------------------------------------------------------------

// teardown removes every pod, stops containerd, and then makes sure that
// nothing of it is left: runc containers, shims, their sockets, and the
// entries of the machine's libcni cache (/var/lib/cni, where containerd
// 1.6 keeps it) for the test's sandboxes. It reports what it could not do.
func (n *node) teardown() {
	t := n.t
	running := true
	select {
	case <-n.exited:
		running = false
	default:
	}
	if running {
		if out, err := n.crictlOut("pods", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				n.seen[id] = true
			}
		}
		if _, err := n.crictlOut("rmp", "--force", "--all"); err != nil {
			t.Errorf("teardown: %v", err)
		}
		_ = n.ctrd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(stopTimeout):
			t.Errorf("teardown: containerd did not exit within %s of SIGTERM; killing it", stopTimeout)
			_ = n.ctrd.Process.Kill()
			<-n.exited
		}
	}
	// Containers runc still knows of (a pod crictl could not remove).
	runcRoot := filepath.Join(n.runcRoot(), criNamespace)
	if out, err := exec.Command("runc", "--root", runcRoot, "list", "-q").Output(); err == nil {
		for _, id := range strings.Fields(string(out)) {
			t.Logf("teardown: deleting runc container %s", id)
			if out, err := exec.Command("runc", "--root", runcRoot, "delete", "--force", id).CombinedOutput(); err != nil {
				t.Errorf("teardown: runc delete %s: %v: %s", id, err, out)
			}
		}
	}
	// Shims of this containerd (their -address names its socket).
	killed := false
	for _, pid := range pidsWithArg(n.socket()) {
		t.Logf("teardown: killing shim %d", pid)
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed = true
		}
	}
	if killed {
		deadline := time.Now().Add(stopTimeout)
		for len(pidsWithArg(n.socket())) > 0 && time.Now().Before(deadline) {
			time.Sleep(pollInterval)
		}
		if left := pidsWithArg(n.socket()); len(left) > 0 {
			t.Errorf("teardown: shims %v outlived SIGKILL by %s", left, stopTimeout)
		}
		// A killed shim leaves its socket in /run/containerd/s, named by
		// the hash containerd 1.6 gives <address>/<namespace>/<id>.
		for id := range n.seen {
			sum := sha256.Sum256([]byte(filepath.Join(n.socket(), criNamespace, id)))
			_ = os.Remove(filepath.Join("/run/containerd/s", hex.EncodeToString(sum[:])))
		}
	}
	n.removeCgroups()
	for id := range n.seen {
		for _, f := range []string{"esb-" + id + "-" + ifName, "cni-loopback-" + id + "-lo"} {
			p := filepath.Join("/var/lib/cni/results", f)
			if err := os.Remove(p); err == nil {
				t.Logf("teardown: removed %s", p)
			}
		}
	}
}

// removeCgroups removes the test's pod cgroups, in every hierarchy (cgroup
// v1) or the unified one (v2), deepest first. runc removes a container's
// own cgroup when it deletes the container, but not the parent.
func (n *node) removeCgroups() {
	roots, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", n.cgroupParent()))
	roots = append(roots, filepath.Join("/sys/fs/cgroup", n.cgroupParent()))
	for _, root := range roots {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, d := range dirs {
			if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
				n.t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	}
}

// pidsWithArg returns the processes one of whose arguments is arg.
func pidsWithArg(arg string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(b), "\x00"), arg) {
			out = append(out, pid)
		}
	}
	return out
}

// removeBase unmounts what is still mounted under base (netns pins,
// overlay root file systems, sandbox /dev/shm), deepest first, and removes
// it.
func (n *node) removeBase() {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(n.base))
	if err != nil {
		n.t.Errorf("read mounts: %v", err)
	}
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return len(b.Mountpoint) - len(a.Mountpoint) })
	for _, m := range mounts {
		n.t.Logf("cleanup: unmounting %s", m.Mountpoint)
		if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			n.t.Errorf("unmount %s: %v", m.Mountpoint, err)
		}
	}
	if err := os.RemoveAll(n.base); err != nil {
		n.t.Errorf("remove %s: %v", n.base, err)
	}
}
