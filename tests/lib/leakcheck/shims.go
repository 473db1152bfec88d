package leakcheck

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/prometheus/procfs"
)

// Shim is a containerd shim process of one namespace.
type Shim struct {
	PID int
	// ID is the shim's -id: the task whose creation started it; for a
	// grouped runc v2 shim (annotation io.containerd.runc.v2.group) the
	// member that came first, not necessarily the one the group is
	// named after, and gone once that member is.
	ID string
	// Children are the PIDs of its child processes: the init processes
	// of the tasks it serves (it is their subreaper).
	Children []int
	// Dir is its working directory, the bundle of the task it was
	// started for (" (deleted)" once that task's bundle is gone).
	Dir string
}

// Shims lists the containerd shim processes of containerd namespace ns
// with their children, read from /proc.
func Shims(ns string) ([]Shim, error) { return shimsIn("/proc", ns) }

// shimsIn lists the shims of namespace ns under proc, a /proc tree,
// through prometheus/procfs. Processes that end while it reads are
// skipped.
func shimsIn(proc, ns string) ([]Shim, error) {
	fs, err := procfs.NewFS(proc)
	if err != nil {
		return nil, err
	}
	procs, err := fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var shims []Shim
	byPID := map[int]int{} // shim PID -> index in shims
	parents := map[int]int{}
	for _, p := range procs {
		if st, err := p.Stat(); err == nil {
			parents[p.PID] = st.PPID
		}
		argv, err := p.CmdLine()
		if err != nil {
			continue // the process ended
		}
		if sns, id, ok := parseShimArgs(argv); ok && sns == ns {
			byPID[p.PID] = len(shims)
			dir, _ := p.Cwd()
			shims = append(shims, Shim{PID: p.PID, ID: id, Dir: dir})
		}
	}
	for pid, ppid := range parents {
		if i, ok := byPID[ppid]; ok {
			shims[i].Children = append(shims[i].Children, pid)
		}
	}
	return shims, nil
}

// parseShimArgs reads a process's command line: ok when argv[0]'s base
// name contains containerd-shim, with the values of its -namespace and -id
// flags (Go's flag syntax: one or two dashes, the value apart or after
// "=").
func parseShimArgs(args []string) (ns, id string, ok bool) {
	if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
		return "", "", false
	}
	for i := 1; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "-")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "-")
		name, val, inline := strings.Cut(name, "=")
		if !inline {
			if i+1 >= len(args) || (name != "namespace" && name != "id") {
				continue
			}
			i++
			val = args[i]
		}
		switch name {
		case "namespace":
			ns = val
		case "id":
			id = val
		}
	}
	return ns, id, true
}

// shims records the shim processes of the node's containerd namespace: a
// shim serves a live worker when its -id is one (a worker's own shim, or
// a group's started by a live member) or when it has a child process (a
// task's init: a grouped shim's other members; a child of a worker that
// should not live is found as that worker's container and cgroup). Any
// other shim is an orphan: it stays after its last task was deleted (and
// with it, its bundle directory).
// Shims exit shortly after their last task's delete, so this is for
// Wait, not for a single Check right after a release.
func (c *checker) shims() error { return c.shimsFrom("/proc") }

func (c *checker) shimsFrom(proc string) error {
	if c.n.ShimNamespace == "" {
		return nil
	}
	shims, err := shimsIn(proc, c.n.ShimNamespace)
	if err != nil {
		return fmt.Errorf("list containerd shims: %w", err)
	}
	for _, s := range shims {
		c.rep.Found["shim"]++
		if _, ok := c.live[s.ID]; ok || len(s.Children) > 0 {
			continue
		}
		c.rep.Orphans = append(c.rep.Orphans, fmt.Sprintf("shim pid %d (-id %s, namespace %s, in %s) with no task process",
			s.PID, s.ID, c.n.ShimNamespace, s.Dir))
	}
	return nil
}
