package containerd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// TestRemoveCgroupKillsLeftovers plays what a `runc create` cut off by a
// containerd stop leaves: a process (standing in for `runc init`) in the
// worker's cgroups, frozen in one of them. removeCgroup kills it and
// removes every cgroup directory; a second call finds nothing and
// succeeds.
func TestRemoveCgroupKillsLeftovers(t *testing.T) {
	if os.Geteuid() != 0 {
		nstest.Unavailable(t, "needs root to make cgroups (euid is %d)", os.Geteuid())
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "freezer")); err != nil {
		nstest.Unavailable(t, "needs the cgroup v1 freezer at %s/freezer: %v", cgroupRoot, err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "esbtest-" + hex.EncodeToString(b)
	path := "/" + ns + "/worker1"
	var dirs []string
	for _, c := range []string{"freezer", "pids"} {
		d := filepath.Join(cgroupRoot, c, path)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
		t.Cleanup(func() { _ = os.Remove(d); _ = os.Remove(filepath.Dir(d)) })
	}
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dirs[0], "freezer.state"), []byte("FROZEN"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := removeCgroup(ctx, cgroupRoot, path); err != nil {
		t.Fatalf("remove the cgroups of a worker with a leftover process: %v", err)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Error("the process in the cgroups was not killed")
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s is left: %v", d, err)
		}
	}
	if err := removeCgroup(ctx, cgroupRoot, path); err != nil {
		t.Errorf("a second removal: %v", err)
	}
	if err := removeCgroup(ctx, cgroupRoot, "/"); err == nil {
		t.Error("removeCgroup accepted the root cgroup")
	}
}
