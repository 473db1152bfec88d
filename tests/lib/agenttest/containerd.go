package agenttest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
	"github.com/edge-serverless-box/esbnet/tests/lib/stacktest"
)

// BuildAgent builds esb-agent into dir and returns the binary's path.
func BuildAgent(tb testing.TB, dir string) string {
	return nstest.GoBuild(tb, dir, "./agent/cmd/esb-agent")
}

// Containerd is a containerd namespace of one run, reached through the
// run's own client. Clean removes everything in it, and the namespace.
type Containerd struct {
	Stack  stacktest.Stack
	NS     string
	Client *client.Client
	// RuncBinary is the runc of this namespace's workers: RunDetached's
	// and a profiler's; a benchmark passes it to the agent it starts ("":
	// runc on containerd's PATH).
	RuncBinary string
}

// NewContainerd connects to the stack's containerd in namespace ns; the
// client is closed when the test ends.
func NewContainerd(tb testing.TB, s stacktest.Stack, ns string) *Containerd {
	tb.Helper()
	c, err := client.New(s.ContainerdSock, client.WithDefaultNamespace(ns), client.WithTimeout(10*time.Second))
	if err != nil {
		tb.Fatalf("connect to containerd: %v", err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return &Containerd{Stack: s, NS: ns, Client: c}
}

// Pull pulls image into the namespace with the stack's snapshotter (an
// agent in a node namespace cannot reach the registry on the host's
// loopback: the image is pulled here, so every acquire finds it).
func (c *Containerd) Pull(tb testing.TB, image string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := c.Stack.Ctr(ctx, c.NS, "images", "pull", "--plain-http", "--snapshotter", c.Stack.Snapshotter, image).CombinedOutput(); err != nil {
		tb.Fatalf("pull %s: %v\n%s", image, err, out)
	}
}

// Containers lists the IDs of every container in the namespace, sorted.
func (c *Containerd) Containers(ctx context.Context) ([]string, error) {
	cs, err := c.Client.Containers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	ids := make([]string, 0, len(cs))
	for _, x := range cs {
		ids = append(ids, x.ID())
	}
	slices.Sort(ids)
	return ids, nil
}

// Remove kills and deletes a container with its snapshot, as `ctr tasks
// rm -f` and `ctr containers rm` would. A missing container is not an
// error.
func (c *Containerd) Remove(ctx context.Context, id string) error {
	x, err := c.Client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load container %s: %w", id, err)
	}
	if t, err := x.Task(ctx, nil); err == nil {
		if _, err := t.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task of %s: %w", id, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("task of %s: %w", id, err)
	}
	if err := x.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// Snapshots lists the active snapshots of the namespace (a worker's is
// keyed by its ID; image layers are committed), for leakcheck.
func (c *Containerd) Snapshots(ctx context.Context) ([]string, error) {
	var ids []string
	err := c.Client.SnapshotService(c.Stack.Snapshotter).Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			ids = append(ids, info.Name)
		}
		return nil
	})
	return ids, err
}

// Cgroups lists the worker cgroups runc made in the namespace, for
// leakcheck (NamespaceCgroups).
func (c *Containerd) Cgroups() ([]string, error) { return NamespaceCgroups(c.NS) }

// NamespaceCgroups lists the cgroups runc made for the containers of
// containerd namespace ns (/<ns>/<container ID> under each v1
// controller), by container ID.
func NamespaceCgroups(ns string) ([]string, error) {
	dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", ns, "*"))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var ids []string
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && !seen[filepath.Base(d)] {
			seen[filepath.Base(d)] = true
			ids = append(ids, filepath.Base(d))
		}
	}
	return ids, nil
}

// Cgroup is the v1 cgroup directory of worker id under controller.
func (c *Containerd) Cgroup(controller, id string) string {
	return filepath.Join("/sys/fs/cgroup", controller, c.NS, id)
}

// ForEach runs fn for every item, 8 at a time, and joins the errors.
func ForEach[T any](ctx context.Context, items []T, fn func(context.Context, T) error) error {
	var mu sync.Mutex
	var errs []error
	work := make(chan T)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for it := range work {
				if err := fn(ctx, it); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, it := range items {
		work <- it
	}
	close(work)
	wg.Wait()
	return errors.Join(errs...)
}

// Spread runs fn for the items from through n-1 from clients concurrent
// goroutines, each taking the next item: fn gets its client's number and
// the item, and returns what records the item's results, called under a
// lock when fn succeeded. A client stops at its first error; Spread
// returns the errors joined.
func Spread(clients, from, n int, fn func(client, i int) (record func(), err error)) error {
	var next atomic.Int64
	next.Store(int64(from))
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				record, err := fn(c, i)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					record()
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Unpin unmounts and removes every netns pin (esb-*) in dir; an empty
// dir is nothing to do.
func Unpin(dir string) error {
	if dir == "" {
		return nil
	}
	var errs []error
	pins, _ := filepath.Glob(filepath.Join(dir, conf.NetNSPrefix+"*"))
	for _, p := range pins {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Clean removes every container (8 at a time), the pins in pinDir, every
// image, the namespace itself and runc's cgroups of it, so that a failed
// run leaves the machine clean too.
func (c *Containerd) Clean(ctx context.Context, pinDir string) error {
	ids, err := c.Containers(ctx)
	errs := []error{err, ForEach(ctx, ids, c.Remove), Unpin(pinDir)}
	is := c.Client.ImageService()
	imgs, err := is.List(ctx)
	errs = append(errs, err)
	for i, img := range imgs {
		var opts []images.DeleteOpt
		if i == len(imgs)-1 {
			opts = append(opts, images.SynchronousDelete()) // collect the content once, at the end
		}
		if err := is.Delete(ctx, img.Name, opts...); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove image %s: %w", img.Name, err))
		}
	}
	if err := c.Client.NamespaceService().Delete(ctx, c.NS); err != nil && !errdefs.IsNotFound(err) {
		errs = append(errs, fmt.Errorf("remove containerd namespace %s: %w", c.NS, err))
	}
	// runc leaves the namespace's parent cgroup under each v1 controller.
	errs = append(errs, stacktest.RemoveNamespaceCgroups(c.NS))
	return errors.Join(errs...)
}

// Version is containerd's version, for the reports.
func (c *Containerd) Version(ctx context.Context) string {
	v, err := c.Client.Version(ctx)
	if err != nil {
		return "?"
	}
	return v.Version
}
