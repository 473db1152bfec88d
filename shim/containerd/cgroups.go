package containerd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupPath is the cgroup the adapter gives the worker id (runc makes it
// under every controller): /<namespace>/<id>, set explicitly in Create so
// that the cleanup knows it.
func (r *Runtime) cgroupPath(id string) string { return "/" + r.opts.Namespace + "/" + id }

// cgroupDirs lists the worker's cgroup directories under root, one per
// mounted hierarchy (cgroup v1) or the single unified one (v2).
func cgroupDirs(root, path string) []string {
	dirs, _ := filepath.Glob(filepath.Join(root, "*", path))
	return append(dirs, filepath.Join(root, path))
}

// removeCgroup removes the worker's cgroups. A creation cut off by a
// runtime outage (a killed `runc create`) can leave its `runc init`
// waiting in them, which keeps them from going: those processes are
// killed first (the cgroup is thawed so the kill lands), and the removal
// is retried until they have exited or ctx ends. Missing cgroups are
// success; an error means a cgroup is still there, for the caller to
// retry later.
func removeCgroup(ctx context.Context, root, path string) error {
	if strings.Trim(path, "/") == "" || strings.Contains(path, "..") {
		return fmt.Errorf("remove cgroup: refusing path %q", path)
	}
	var errs []error
	for _, d := range cgroupDirs(root, path) {
		if err := removeCgroupDir(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeCgroupDir(ctx context.Context, dir string) error {
	delay := 5 * time.Millisecond
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if kerr := killCgroup(dir); kerr != nil {
			return fmt.Errorf("remove cgroup %s: %w", dir, kerr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove cgroup %s: its processes did not exit: %w", dir, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// killCgroup thaws dir (a frozen process takes no signal) and sends
// SIGKILL to every process in it.
func killCgroup(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "freezer.state")); err == nil {
		if err := os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0o644); err != nil {
			return fmt.Errorf("thaw: %w", err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read processes: %w", err)
	}
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill process %d: %w", pid, err)
		}
	}
	return nil
}
