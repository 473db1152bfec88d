// Package shimtest holds the privileged tests of package shim: namespaces
// pinned for real, and the esb plugins run through the libcni seam inside a
// test-made node namespace.
package shimtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

func TestMain(m *testing.M) { nstest.Main(m) }

func TestNetNSLifecycle(t *testing.T) {
	nstest.RequirePrivileged(t)
	var nses shim.NetNSes
	id := nstest.RandomHex(8)
	t.Cleanup(func() { _ = nses.Remove(id) })
	path, err := nses.Create(id)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if path != filepath.Join(conf.DefaultNetNSDir, "esb-"+id) || !nses.Exists(id) {
		t.Fatalf("created %s, Exists=%v", path, nses.Exists(id))
	}
	if err := ns.IsNSorErr(path); err != nil {
		t.Fatalf("%s is not a network namespace: %v", path, err)
	}
	// It is a new namespace, not ours.
	var own, theirs os.FileInfo
	if own, err = os.Stat("/proc/thread-self/ns/net"); err != nil {
		t.Fatal(err)
	}
	if theirs, err = os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if os.SameFile(own, theirs) {
		t.Fatal("the pinned namespace is the test's own")
	}
	// Its loopback is up (a worker's processes talk over 127.0.0.1).
	var loFlags net.Flags
	if err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		lo, err := net.InterfaceByName("lo")
		if err == nil {
			loFlags = lo.Flags
		}
		return err
	}); err != nil || loFlags&net.FlagUp == 0 {
		t.Errorf("lo in %s: %v, flags %v; want up", path, err, loFlags)
	}
	ids, err := nses.List()
	if err != nil || !slices.Contains(ids, id) {
		t.Errorf("List = %v, %v; want it to contain %s", ids, err, id)
	}
	// A namespace an operator named esb-something is not a worker's.
	other := shim.NetNSes{}
	if _, err := other.Create("demo-node"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Remove("demo-node") })
	if ids, _ := nses.List(); slices.Contains(ids, "demo-node") {
		t.Errorf("List returned a namespace that is not a worker's: %v", ids)
	}
	if _, err := nses.Create(id); !errors.Is(err, shim.ErrNetNSExists) {
		t.Errorf("second Create: %v, want ErrNetNSExists", err)
	}
	for i := 0; i < 2; i++ {
		if err := nses.Remove(id); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if nses.Exists(id) {
		t.Error("namespace still pinned after Remove")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("mount point left behind: %v", err)
	}
}

// TestNetNSPin pins the namespace of a process (as the agent pins the one
// runc made for a Docker worker): the pin is that namespace, outlives the
// process until Remove, and a second pin or a path that is no namespace
// fails without leaving a mount point.
func TestNetNSPin(t *testing.T) {
	nstest.RequirePrivileged(t)
	nstest.RequirePrograms(t, "unshare")
	var nses shim.NetNSes
	id := nstest.RandomHex(8)
	t.Cleanup(func() { _ = nses.Remove(id) })
	cmd := exec.Command("unshare", "-n", "--", "sh", "-c", "echo in; exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The line comes once the shell runs in its new namespace.
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "in\n" {
		t.Fatalf("the process in a new namespace said %q, %v", line, err)
	}
	from := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	path, err := nses.Pin(id, from)
	if err != nil {
		t.Fatalf("pin %s: %v", from, err)
	}
	if path != nses.Path(id) || !nses.Exists(id) {
		t.Fatalf("pinned at %s, Exists=%v", path, nses.Exists(id))
	}
	theirs, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(theirs, pinned) {
		t.Fatalf("the pin is not the process's namespace")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if err := ns.IsNSorErr(path); err != nil {
		t.Errorf("the pin did not outlive the process: %v", err)
	}
	if _, err := nses.Pin(id, "/proc/self/ns/net"); !errors.Is(err, shim.ErrNetNSExists) {
		t.Errorf("second Pin: %v, want ErrNetNSExists", err)
	}
	other := nstest.RandomHex(8)
	if _, err := nses.Pin(other, "/etc/hostname"); err == nil {
		_ = nses.Remove(other)
		t.Error("pinned a file that is no namespace")
	}
	if _, err := os.Stat(nses.Path(other)); !os.IsNotExist(err) {
		t.Errorf("a failed Pin left %s: %v", nses.Path(other), err)
	}
	if err := nses.Remove(id); err != nil || nses.Exists(id) {
		t.Errorf("Remove: %v, still pinned %v", err, nses.Exists(id))
	}
}

func writeConflist(t *testing.T) string {
	dir := t.TempDir()
	nodetest.WriteConflist(t, dir, conf.CNIVersion, filepath.Join(dir, "ipam"), "0s")
	return dir
}

func TestCNIThroughLibcni(t *testing.T) {
	node := nstest.NewNS(t)
	confDir := writeConflist(t)
	net, err := shim.NewCNI(shim.CNIOptions{ConfDir: confDir, BinDirs: []string{nstest.PluginDir(t)}, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var nses shim.NetNSes
	ids := []string{nstest.RandomHex(8), nstest.RandomHex(8)}
	var atts []shim.Attachment
	for _, id := range ids {
		t.Cleanup(func() { _ = nses.Remove(id) })
		path, err := nses.Create(id)
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, shim.Attachment{ContainerID: id, NetNS: path})
	}
	ctx := context.Background()
	var addrs []string
	err = node.Do(func(ns.NetNS) error {
		if err := net.Status(ctx); err != nil {
			return fmt.Errorf("status: %w", err)
		}
		for _, a := range atts {
			res, err := net.Attach(ctx, a)
			if err != nil {
				return err
			}
			addrs = append(addrs, res.IPs[0].Address.String())
			if err := net.Check(ctx, a); err != nil {
				return err
			}
		}
		// GC keeps the live one and releases the other.
		if err := net.GC(ctx, atts[:1]); err != nil {
			return err
		}
		if err := net.Check(ctx, atts[0]); err != nil {
			return fmt.Errorf("live attachment broken by GC: %w", err)
		}
		if err := net.Check(ctx, atts[1]); err == nil {
			return errors.New("CHECK of a collected attachment passed")
		}
		for _, a := range atts {
			if err := net.Detach(ctx, a); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 2 || addrs[0] == addrs[1] || !strings.HasPrefix(addrs[0], "10.88.") {
		t.Errorf("addresses %v", addrs)
	}
}

func TestNewCNIWithoutConflist(t *testing.T) {
	_, err := shim.NewCNI(shim.CNIOptions{ConfDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `load network "esb"`) {
		t.Errorf("NewCNI without a conflist: %v", err)
	}
}
