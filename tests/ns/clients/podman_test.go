package clients

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/plugins/esb-bridge/bridge"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// podman drives Podman (Debian 12: 4.3.1) with its CNI network backend,
// confined to one test:
//
//   - Every podman call runs as "nsenter --net=<node> podman ...": Podman
//     is the runtime, so it runs the CNI plugins in its own network
//     namespace, and esb-cni0, the veths and the nftables table "bridge
//     esb" land in the node, never on the machine. (ip netns exec does not
//     work: it remounts /sys, which hides /sys/fs/cgroup from runc, and
//     each call gets its own mount namespace, so a later "podman rm" could
//     not see the container's netns mount.)
//   - CONTAINERS_CONF and CONTAINERS_STORAGE_CONF name files in the test's
//     directory, so no system containers.conf or storage.conf is read;
//     --root, --runroot, --tmpdir and runc's --root keep all of Podman's
//     and runc's state there.
//   - The container runs from a root file system directory (--rootfs) with
//     a static busybox, so no image is pulled or imported (podman import
//     would write the machine's /var/lib/containers/cache).
//
// What stays on the machine while a container runs, and goes with "podman
// rm": the container's netns under /run/netns, libcni's cached result in
// /var/lib/cni/results (libcni's default cache; Podman 4.3 has no setting
// for it) and the container's cgroup under --cgroup-parent, a directory
// the test removes.
type podman struct {
	t       *testing.T
	nsenter string
	bin     string
	node    *node
	dataDir string // esb-ipam's store
	rootfs  string
	// cgroupParent holds the container's cgroups in each hierarchy.
	cgroupParent string
	env          []string
	global       []string
}

// The podman settings that make Podman 4.3 use our network and nothing of
// the machine's. The limits are small: Podman's default for root, 1048576
// open files and processes, fails in runc's setrlimit where root lacks
// CAP_SYS_RESOURCE (as in this VM) and the hard limits are lower (here
// 20000 open files, and 32768 processes for conmon and its children).
// runc, not crun: crun 1.8 refuses a cgroup v1 host whose cgroup2
// hierarchy has a controller enabled, as this VM's has (hugetlb), and
// --cgroups=disabled needs crun. "no-conmon" leaves conmon in the caller's
// cgroup instead of /libpod_parent/conmon.
const containersConf = `# Written by esbnet's tests/ns/clients: Podman confined to one test.
[containers]
default_ulimits = ["nofile=%[1]d:%[1]d", "nproc=%[2]d:%[2]d"]
cgroups = "no-conmon"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = %[3]q

[network]
network_backend = "cni"
cni_plugin_dirs = [%[4]q]
network_config_dir = %[5]q
# Never the built-in "podman" network (cni-podman0, 10.88.0.0/16).
default_network = %[6]q
`

const storageConf = `[storage]
driver = "vfs"
graphroot = %q
runroot = %q
`

func newPodman(t *testing.T, cniVersion string) *podman {
	t.Helper()
	nstest.RequirePrivileged(t)
	p := &podman{
		t:       t,
		nsenter: lookPath(t, "nsenter", "util-linux"),
		bin:     lookPath(t, "podman", "podman"),
	}
	lookPath(t, "runc", "runc")
	p.node = newNode(t)
	// A short directory: conmon's sockets live below it, and a socket
	// path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "esbpod-")
	if err != nil {
		t.Fatalf("make podman dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove podman dir: %v", err)
		}
	})
	p.cgroupParent = "/" + filepath.Base(dir)
	sub := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("make %s: %v", d, err)
		}
		return d
	}
	netDir, tmpDir, root, runRoot := sub("net.d"), sub("tmp"), sub("root"), sub("runroot")
	p.dataDir, p.rootfs = sub("ipam"), sub("rootfs")
	nodetest.WriteConflist(t, netDir, cniVersion, p.dataDir, "0s")
	buildRootfs(t, p.rootfs)

	nofile, nproc := lowLimit(t, unix.RLIMIT_NOFILE), lowLimit(t, unix.RLIMIT_NPROC)
	files := map[string]string{
		"containers.conf": fmt.Sprintf(containersConf, nofile, nproc, tmpDir, nstest.PluginDir(t), netDir, netName),
		"storage.conf":    fmt.Sprintf(storageConf, root, runRoot),
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
	}
	p.env = []string{
		"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf"),
	}
	p.global = []string{"--root", root, "--runroot", runRoot, "--tmpdir", tmpDir, "--storage-driver", "vfs",
		"--runtime-flag", "root=" + sub("runc")} // runc's state, /run/runc by default

	// Runs before the node namespace and the directory are removed.
	t.Cleanup(func() {
		if _, err := p.run("rm", "--all", "--force", "--time", "0"); err != nil {
			t.Errorf("remove containers: %v", err)
		}
		if err := removeCgroups(p.cgroupParent); err != nil {
			t.Errorf("remove cgroups %s: %v", p.cgroupParent, err)
		}
	})
	return p
}

// lowLimit returns 1024, or the caller's hard limit when that is lower.
func lowLimit(t *testing.T, resource int) uint64 {
	t.Helper()
	var r unix.Rlimit
	if err := unix.Getrlimit(resource, &r); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	return min(r.Max, 1024)
}

// buildRootfs makes a root file system of busybox-static and the applets
// the test uses.
func buildRootfs(t *testing.T, dir string) {
	t.Helper()
	const busybox = "/bin/busybox"
	f, err := elf.Open(busybox)
	if err != nil {
		nstest.Unavailable(t, "%s (Debian package busybox-static; run scripts/deps.sh): %v", busybox, err)
	}
	static := true
	for _, prog := range f.Progs {
		static = static && prog.Type != elf.PT_INTERP
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if !static {
		nstest.Unavailable(t, "%s is dynamically linked; install busybox-static", busybox)
	}
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ip", "ping", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(bin, applet)); err != nil {
			t.Fatal(err)
		}
	}
}

// removeCgroups removes the cgroup directory name (and the container
// cgroups runc left in it, if any) from every hierarchy.
func removeCgroups(name string) error {
	dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	if err != nil {
		return err
	}
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", name)) // a cgroup v2 host
	var errs []error
	for _, dir := range dirs {
		subs, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, s := range subs {
			if s.IsDir() {
				errs = append(errs, os.Remove(filepath.Join(dir, s.Name())))
			}
		}
		errs = append(errs, os.Remove(dir))
	}
	return errors.Join(errs...)
}

// run runs podman in the node namespace and returns its stdout.
func (p *podman) run(args ...string) (string, error) {
	p.t.Helper()
	argv := append([]string{"--net=" + p.node.ns.Path(), p.bin}, p.global...)
	return run(p.t, p.env, p.nsenter, append(argv, args...)...)
}

func (p *podman) mustRun(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// start runs a detached container on the esb network and returns its ID,
// which is known even when the start fails after the container was made.
func (p *podman) start(name string) (string, error) {
	p.t.Helper()
	out, err := p.run("run", "--detach", "--name", name, "--network", netName,
		"--cgroup-parent", p.cgroupParent, "--rootfs", p.rootfs, "sleep", "600")
	if err == nil {
		return strings.TrimSpace(out), nil
	}
	id, ierr := p.run("inspect", "--format", "{{.Id}}", name)
	if ierr != nil {
		return "", err
	}
	return strings.TrimSpace(id), err
}

// attachment is what podman inspect says about a container's network.
type attachment struct {
	ID              string `json:"Id"`
	NetworkSettings struct {
		SandboxKey string
		Networks   map[string]struct {
			IPAddress   string
			IPPrefixLen int
			Gateway     string
			MacAddress  string
		}
	}
}

func (p *podman) inspect(id string) attachment {
	p.t.Helper()
	var got []attachment
	out := p.mustRun("inspect", "--type", "container", id)
	if err := json.Unmarshal([]byte(out), &got); err != nil || len(got) != 1 {
		p.t.Fatalf("podman inspect %s: %v\n%s", id, err, out)
	}
	return got[0]
}

// TestPodman runs a container on the esb network with Podman's CNI
// backend, for each cniVersion a conflist can have. The container gets an
// address of 10.88.0.0/16 (in podman inspect and on its eth0, with the
// MAC esb-bridge derives and a default route via 10.88.0.1), esb-ipam
// holds it for Podman's container ID, the container reaches the gateway
// and the node reaches the container, whose veth is an anti-spoof guarded
// port; the veth is in the node, not in the machine's namespace.
// podman rm removes the veth and its guard, the container's netns and
// libcni's cache entry, and releases the address.
//
// Podman 4.3's libcni (1.1.2) reads results up to cniVersion 1.0.0, so a
// 1.1.0 conflist (conf.DefaultConflist) is refused: then the test checks
// that Podman's teardown DEL left nothing behind.
func TestPodman(t *testing.T) {
	nstest.RequirePrivileged(t)
	for _, v := range []string{"1.0.0", "0.4.0", "1.1.0"} {
		t.Run("cniVersion="+v, func(t *testing.T) {
			p := newPodman(t, v)
			if drv := p.mustRun("network", "inspect", "--format", "{{.Driver}}", netName); drv != conf.BridgeType {
				t.Fatalf("podman network inspect %s: driver %q, want %q", netName, drv, conf.BridgeType)
			}
			id, err := p.start("esbnet-clients")
			switch {
			case err != nil && v == "1.1.0" && strings.Contains(err.Error(), `unsupported CNI result version "`+v+`"`):
				t.Logf("Podman refuses a cniVersion %s conflist (its libcni is too old): %v", v, err)
				p.wantNothingLeft(id)
				return
			case err != nil:
				t.Fatal(err)
			}
			sandbox := p.wantAttached(id)
			p.mustRun("rm", "--force", "--time", "0", id)
			p.wantNothingLeft(id)
			if _, err := os.Stat(sandbox); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("container netns %s: want it gone, stat says %v", sandbox, err)
			}
		})
	}
}

// wantAttached checks a running container's network from Podman's, the
// container's, the node's and esb-ipam's side, and returns the path of the
// container's netns.
func (p *podman) wantAttached(id string) string {
	t := p.t
	t.Helper()
	ins := p.inspect(id)
	nw, ok := ins.NetworkSettings.Networks[netName]
	if !ok {
		t.Fatalf("podman inspect: container is not on %s: %+v", netName, ins.NetworkSettings)
	}
	addr := wantInSubnet(t, "podman inspect", fmt.Sprintf("%s/%d", nw.IPAddress, nw.IPPrefixLen))
	t.Logf("podman container %.12s: %s", id, addr)
	if nw.Gateway != gateway {
		t.Errorf("podman inspect: gateway %q, want %s", nw.Gateway, gateway)
	}
	if want := bridge.MACFor(addr.Addr()).String(); nw.MacAddress != want {
		t.Errorf("podman inspect: MAC %q, want %s", nw.MacAddress, want)
	}

	if out := p.mustRun("exec", id, "ip", "-4", "-o", "addr", "show", ifName); !strings.Contains(out, "inet "+addr.String()+" ") {
		t.Errorf("container's %s does not hold %s:\n%s", ifName, addr, out)
	}
	if out := p.mustRun("exec", id, "ip", "route"); !strings.Contains(out, "default via "+gateway+" dev "+ifName) {
		t.Errorf("container has no default route via %s:\n%s", gateway, out)
	}
	if _, err := p.run("exec", id, "ping", "-c1", "-W1", gateway); err != nil {
		t.Errorf("container cannot reach the gateway: %v", err)
	}
	if err := ping(t, p.node.name, addr.Addr().String()); err != nil {
		t.Errorf("node cannot reach the container: %v", err)
	}

	wantAllocation(t, p.dataDir, id, addr)
	veth := conf.VethName(id, ifName)
	if !hasLink(t, p.node.ns, veth) || !hasLink(t, p.node.ns, conf.BridgeName) {
		t.Errorf("node lacks veth %s or %s", veth, conf.BridgeName)
	}
	if hostHasLink(t, veth) {
		t.Errorf("veth %s is in the machine's namespace", veth)
	}
	if !guarded(t, p.node.name, veth) {
		t.Errorf("node's nft table bridge esb does not guard %s", veth)
	}
	if _, err := os.Stat(ins.NetworkSettings.SandboxKey); err != nil {
		t.Errorf("container netns: %v", err)
	}
	if _, err := os.Stat(libcniCache(id)); err != nil {
		t.Errorf("libcni cached no result: %v", err)
	}
	return ins.NetworkSettings.SandboxKey
}

// libcniCache is where Podman's libcni caches an attachment's result.
func libcniCache(id string) string {
	return filepath.Join("/var/lib/cni/results", netName+"-"+id+"-"+ifName)
}

// wantNothingLeft checks that container id (if Podman made one) has no
// veth, address or cache entry, removes it, and checks that Podman knows
// no container.
func (p *podman) wantNothingLeft(id string) {
	t := p.t
	t.Helper()
	if id != "" {
		if veth := conf.VethName(id, ifName); hasLink(t, p.node.ns, veth) || guarded(t, p.node.name, veth) {
			t.Errorf("veth of %.12s or its anti-spoof guard is still on the node", id)
		}
		if _, err := os.Stat(libcniCache(id)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("libcni cache entry of %.12s: want it gone, stat says %v", id, err)
		}
		p.mustRun("rm", "--force", "--time", "0", "--ignore", id)
	}
	if got := allocations(t, p.dataDir); len(got) != 0 {
		t.Errorf("IPAM store still holds %v", got)
	}
	if out := p.mustRun("ps", "--all", "--quiet"); out != "" {
		t.Errorf("podman still has containers: %s", out)
	}
}
