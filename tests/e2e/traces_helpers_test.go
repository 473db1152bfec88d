package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	agentv1 "github.com/edge-serverless-box/esbnet/agent/api/v1"
	"github.com/edge-serverless-box/esbnet/ipam"
	"github.com/edge-serverless-box/esbnet/tests/stacktest"
)

// --- what a worker leaves ----------------------------------------------------------

// traces lists what of any worker is on the node: containers in the
// test's namespace, netns pins (in the test's directory, and in /run/netns
// for any worker the test saw), esb veths in the node, addresses in the
// IPAM store and results in libcni's cache. only, when given, restricts
// the report to those workers.
func (e *env) traces(only ...string) []string {
	keep := func(id string) bool { return len(only) == 0 || slices.Contains(only, id) }
	var out []string
	ids, err := e.containers()
	if err != nil {
		out = append(out, err.Error())
	}
	for _, id := range ids {
		if keep(id) {
			out = append(out, "container "+id)
		}
	}
	prefix := e.Names().NetNSPrefix
	pins, _ := filepath.Glob(filepath.Join(e.NetnsDir(), prefix+"*"))
	for _, p := range pins {
		if keep(strings.TrimPrefix(filepath.Base(p), prefix)) {
			out = append(out, "netns pin "+p)
		}
	}
	for _, id := range e.seen.list() {
		if p := "/run/netns/" + prefix + id; keep(id) {
			if _, err := os.Lstat(p); err == nil {
				out = append(out, "netns pin "+p)
			}
		}
	}
	veths, err := e.veths()
	if err != nil {
		out = append(out, err.Error())
	}
	for name, alias := range veths {
		if len(only) == 0 || slices.ContainsFunc(only, func(id string) bool { return strings.Contains(alias, id) }) {
			out = append(out, fmt.Sprintf("veth %s (%s)", name, alias))
		}
	}
	allocs, err := e.allocations()
	if err != nil {
		out = append(out, err.Error())
	}
	for id, ip := range allocs {
		if keep(strings.TrimSuffix(id, "/eth0")) {
			out = append(out, fmt.Sprintf("address %s of %s", ip, id))
		}
	}
	results, _ := filepath.Glob(filepath.Join(e.CacheDir(), "results", "*"))
	for _, r := range results {
		if len(only) == 0 || slices.ContainsFunc(only, func(id string) bool { return strings.Contains(filepath.Base(r), id) }) {
			out = append(out, "libcni cache entry "+r)
		}
	}
	slices.Sort(out)
	return out
}

// expectNoTraces waits (bounded: the kernel removes the veths of a dead
// namespace asynchronously) until traces reports nothing, else fails the
// test with what is left.
func (e *env) expectNoTraces(what string, only ...string) {
	e.t.Helper()
	if left := e.tracesAfterSettle(only...); len(left) > 0 {
		e.t.Errorf("%s: left behind:\n  %s", what, strings.Join(left, "\n  "))
	}
}

// tracesAfterSettle polls traces until it reports nothing, for at most
// settleTimeout, and returns what is left then.
func (e *env) tracesAfterSettle(only ...string) []string {
	start := time.Now()
	defer since("settle (traces)", settleTimeout, start)
	deadline := start.Add(settleTimeout)
	for {
		left := e.traces(only...)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(pollInterval)
	}
}

// veths returns the esb veths in the node, by name, with their alias
// (esb-bridge writes the attachment in it): those on the env's stack's
// bridge or on none (another stack's are that stack's env's).
func (e *env) veths() (map[string]string, error) {
	h, err := e.handle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle in the node: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links of the node: %w", err)
	}
	own := -1
	for _, l := range links {
		if l.Attrs().Name == e.Names().Bridge {
			own = l.Attrs().Index
		}
	}
	out := map[string]string{}
	for _, l := range links {
		if m := l.Attrs().MasterIndex; m != 0 && m != own {
			continue
		}
		if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, "esb") {
			out[l.Attrs().Name] = l.Attrs().Alias
		}
	}
	return out, nil
}

// vethOf returns the node-side veth of worker id.
func (e *env) vethOf(id string) (string, bool) {
	e.t.Helper()
	veths, err := e.veths()
	if err != nil {
		e.t.Fatal(err)
	}
	for name, alias := range veths {
		if strings.Contains(alias, " "+id+" ") { // "esb-bridge <created> <id> <ifname>"
			return name, true
		}
	}
	return "", false
}

// allocations returns the IPAM store's allocations: attachment -> address.
func (e *env) allocations() (map[string]string, error) {
	if _, err := os.Stat(ipam.DBPath(e.IPAMDir(), e.Names().Network)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	s, err := ipam.OpenBolt(e.IPAMDir(), e.Names().Network, ipam.BoltOptions{LockWait: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open the IPAM store: %w", err)
	}
	out := map[string]string{}
	err = s.View(func(tx ipam.Txn) error {
		return tx.ForEachAllocation(func(a *ipam.Allocation) error {
			var ips []string
			for _, p := range a.IPs {
				ips = append(ips, p.Addr().String())
			}
			out[a.ID.String()] = strings.Join(ips, ",")
			return nil
		})
	})
	return out, errors.Join(err, s.Close())
}

// expectTraces checks that a live worker has everything it needs: its
// container, pin (containerd), veth, address (the one the API gave) and cache entry.
func (e *env) expectTraces(w *agentv1.Worker) {
	e.t.Helper()
	left := e.traces(w.GetId())
	want := []string{"container " + w.GetId(), fmt.Sprintf("address %s of %s/eth0", w.GetIp(), w.GetId())}
	if !e.ownsNetNS() {
		want = append(want, "netns pin "+e.pinPath(w.GetId()))
	}
	for _, want := range want {
		if !slices.Contains(left, want) {
			e.t.Errorf("worker %s: no %s; it has:\n  %s", w.GetId(), want, strings.Join(left, "\n  "))
		}
	}
	if _, ok := e.vethOf(w.GetId()); !ok {
		e.t.Errorf("worker %s has no veth in the node", w.GetId())
	}
	if !slices.ContainsFunc(left, func(s string) bool { return strings.HasPrefix(s, "libcni cache entry") }) {
		e.t.Errorf("worker %s has no libcni cache entry", w.GetId())
	}
}

// --- teardown ------------------------------------------------------------------

// teardown stops the agent, checks that no worker is left, then removes
// whatever is (so a failed test leaves the machine clean too), the image
// and the containerd namespace.
func (e *env) teardown() {
	t := e.t
	if e.agent != nil {
		if err := e.stopAgentErr(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
	}
	if left := e.traces(); len(left) > 0 {
		// The kernel may still be removing veths of namespaces that
		// died: wait for it (expectNoTraces's wait, without its error).
		left = e.tracesAfterSettle()
		if len(left) > 0 {
			if t.Failed() {
				t.Logf("removing what the failed test left:\n  %s", strings.Join(left, "\n  "))
			} else {
				t.Errorf("the test left:\n  %s", strings.Join(left, "\n  "))
			}
		}
	}
	if err := e.forceClean(); err != nil {
		t.Errorf("clean up: %v", err)
	}
	if t.Failed() {
		logs, _ := filepath.Glob(filepath.Join(e.Base, "agent-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("%s:\n%s", filepath.Base(l), b)
		}
	}
}

// forceClean removes every container, pin, image and the containerd
// namespace of the test, and runc's cgroups of that namespace.
func (e *env) forceClean() error {
	var errs []error
	ids, err := e.containers()
	errs = append(errs, err)
	for _, id := range ids {
		errs = append(errs, removeContainer(e, id))
	}
	if e.rt == rtDocker {
		// The worker image is dockerd's, shared; only images of the
		// test's own are removed.
		errs = append(errs, e.removeDockerImages())
		return errors.Join(errs...)
	}
	killStrayShims(e.ctrNS)
	prefix := e.Names().NetNSPrefix
	pins, _ := filepath.Glob(filepath.Join(e.NetnsDir(), prefix+"*"))
	for _, id := range e.seen.list() {
		if _, err := os.Lstat("/run/netns/" + prefix + id); err == nil {
			pins = append(pins, "/run/netns/"+prefix+id)
		}
	}
	for _, p := range pins {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if out, err := e.ctrOut("images", "list", "-q"); err == nil {
		if imgs := strings.Fields(out); len(imgs) > 0 {
			_, err := e.ctrOut(append([]string{"images", "remove", "--sync"}, imgs...)...)
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := e.stack.Ctr(ctx, "", "namespaces", "remove", e.ctrNS).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("remove containerd namespace %s: %w: %s", e.ctrNS, err, strings.TrimSpace(string(out))))
	}
	// runc leaves the namespace's parent cgroup under each v1 controller.
	errs = append(errs, stacktest.RemoveNamespaceCgroups(e.ctrNS))
	return errors.Join(errs...)
}

// killStrayShims kills the containerd shims still running for namespace ns
// once its containers are gone: containerd 1.6 leaves a shim behind when a
// creation is cut off (the agent or containerd killed mid-create, as the
// fault tests do), and it would outlive the test. The namespace is the
// test's own, so no other test's shim matches.
func killStrayShims(ns string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i := range len(args) - 1 {
			if args[i] == "-namespace" && args[i+1] == ns {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
		}
	}
}
