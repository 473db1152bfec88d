// Package shim is the seam between a container runtime and CNI: it owns the
// lifecycle of pinned network namespaces and runs the network's plugins
// through libcni, exactly as containerd, Podman or Kubernetes do. The
// runtime adapters live in shim/containerd and shim/docker.
package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
)

// NetNSes creates and removes pinned network namespaces named
// <Dir>/<Prefix><id>. The zero value uses conf.DefaultNetNSDir and the
// default stack's prefix, esb-.
type NetNSes struct {
	Dir string
	// Prefix is the stack's conf.Stack.NetNSPrefix ("": conf.NetNSPrefix);
	// List finds only the pins of its own stack.
	Prefix string
}

func (n NetNSes) prefix() string {
	if n.Prefix == "" {
		return conf.NetNSPrefix
	}
	return n.Prefix
}

func (n NetNSes) dir() string {
	if n.Dir == "" {
		return conf.DefaultNetNSDir
	}
	return n.Dir
}

// Path returns where the namespace of id is pinned.
func (n NetNSes) Path(id string) string { return filepath.Join(n.dir(), n.prefix()+id) }

// ErrNetNSExists is returned by Create when the namespace is already pinned.
var ErrNetNSExists = errors.New("network namespace already exists")

// Create makes a new network namespace with its loopback up and pins it at
// Path(id). It fails with ErrNetNSExists when one is pinned there already.
// Loopback is the runtime's part, as Docker does and as containerd's CRI
// does with the loopback plugin: a worker's own processes talk over
// 127.0.0.1 (the Lambda RIE serves its runtime API there).
func (n NetNSes) Create(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("create netns: bad id %q", id)
	}
	path, err := n.mountPoint(id)
	if err != nil {
		return "", err
	}
	// The namespace is made on a locked thread that then switches back to
	// its old namespace; if it cannot, the thread stays locked and Go throws
	// it away, so no goroutine ever runs in the new namespace. (The thread
	// may be the process's main thread, which Go parks instead of killing:
	// switching back matters.)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own network namespace: %w", err)
			return
		}
		defer func() { _ = orig.Close() }()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		mountErr := errors.Join(loopbackUp(), unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""))
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		if mountErr != nil {
			errc <- fmt.Errorf("pin network namespace at %s: %w", path, mountErr)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		return "", errors.Join(err, os.Remove(path))
	}
	return path, nil
}

// Pin pins the existing network namespace at from (a process's
// /proc/<pid>/ns/net, where the runtime made it: Docker) at Path(id), so
// that it outlives the process until Remove, under the same path as the
// namespaces Create makes. It fails with ErrNetNSExists when one is pinned
// there already.
func (n NetNSes) Pin(id, from string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return "", fmt.Errorf("pin netns: bad id %q", id)
	}
	if err := ns.IsNSorErr(from); err != nil {
		return "", fmt.Errorf("pin netns of %s: %w", id, err)
	}
	path, err := n.mountPoint(id)
	if err != nil {
		return "", err
	}
	if err := unix.Mount(from, path, "none", unix.MS_BIND, ""); err != nil {
		return "", errors.Join(fmt.Errorf("pin network namespace %s at %s: %w", from, path, err), os.Remove(path))
	}
	return path, nil
}

// mountPoint makes the empty file a pin of id is mounted on, in the
// shared pin directory.
func (n NetNSes) mountPoint(id string) (string, error) {
	if err := n.makeDirShared(); err != nil {
		return "", err
	}
	path := n.Path(id)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("%w: %s", ErrNetNSExists, path)
		}
		return "", fmt.Errorf("create netns mount point: %w", err)
	}
	return path, f.Close()
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find loopback: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set loopback up: %w", err)
	}
	return nil
}

// makeDirShared makes the pin directory a shared mount point, as `ip netns`
// does, so that pins propagate into mount namespaces made later.
func (n NetNSes) makeDirShared() error {
	dir := n.dir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s on itself: %w", dir, err)
		}
		err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", dir, err)
	}
	return nil
}

// Remove unpins and deletes the namespace of id. A namespace that is not
// there is not an error.
func (n NetNSes) Remove(id string) error {
	path := n.Path(id)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// workerIDRE is the form of worker IDs (16 hex digits); List ignores other
// esb-* pins, such as a namespace an operator named esb-something.
var workerIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// IsWorkerID reports whether id has the form of a worker ID.
func IsWorkerID(id string) bool { return workerIDRE.MatchString(id) }

// List returns the ids of the pinned worker namespaces (esb-<worker ID>).
func (n NetNSes) List() ([]string, error) {
	entries, err := os.ReadDir(n.dir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), n.prefix()); ok && IsWorkerID(id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Exists reports whether a network namespace is pinned at Path(id).
func (n NetNSes) Exists(id string) bool {
	return ns.IsNSorErr(n.Path(id)) == nil
}
