package stacktest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// RemoveNamespaceCgroups removes the parent cgroup runc leaves for a
// containerd namespace (/<namespace> under each v1 controller, or in the
// v2 tree), once it is empty; what cannot be removed is reported.
func RemoveNamespaceCgroups(ns string) error {
	dirs, err := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range append(dirs, "/sys/fs/cgroup/"+ns) {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// UnmountAll unmounts dir (an agent bind-mounts its netns directory on
// itself, shared), however often it is mounted there.
func UnmountAll(dir string) error {
	for range 8 {
		err := unix.Unmount(dir, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("%s is still mounted after 8 unmounts", dir)
}
