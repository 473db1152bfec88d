package runtimetest

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/shim"
)

// capBits maps capability names to their bit in /proc/<pid>/status masks.
var capBits = map[string]uint{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
	"CAP_IPC_OWNER": unix.CAP_IPC_OWNER, "CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_PACCT": unix.CAP_SYS_PACCT,
	"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"CAP_MKNOD": unix.CAP_MKNOD, "CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN, "CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ, "CAP_PERFMON": unix.CAP_PERFMON,
	"CAP_BPF": unix.CAP_BPF, "CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// CapMask returns the /proc/<pid>/status mask of the named capabilities.
func CapMask(names []string) (uint64, error) {
	var m uint64
	for _, n := range names {
		b, ok := capBits[n]
		if !ok {
			return 0, fmt.Errorf("unknown capability %q", n)
		}
		m |= 1 << b
	}
	return m, nil
}

// CapNames returns the names of the capabilities in mask, sorted by bit.
func CapNames(mask uint64) []string {
	var out []string
	for b := range uint(64) {
		if mask&(1<<b) == 0 {
			continue
		}
		name := fmt.Sprintf("cap%d", b)
		for n, nb := range capBits {
			if nb == b {
				name = n
			}
		}
		out = append(out, name)
	}
	return out
}

// Confinement is what the kernel reports of a process's confinement in
// /proc/<pid>/status.
type Confinement struct {
	NoNewPrivs             int
	Seccomp                int // 0 off, 1 strict, 2 filter
	CapEff, CapPrm, CapBnd uint64
}

// ReadConfinement reads /proc/<pid>/status.
func ReadConfinement(pid int) (Confinement, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Confinement{}, err
	}
	defer func() { _ = f.Close() }()
	var c Confinement
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "NoNewPrivs":
			c.NoNewPrivs, err = strconv.Atoi(v)
		case "Seccomp":
			c.Seccomp, err = strconv.Atoi(v)
		case "CapEff":
			c.CapEff, err = strconv.ParseUint(v, 16, 64)
		case "CapPrm":
			c.CapPrm, err = strconv.ParseUint(v, 16, 64)
		case "CapBnd":
			c.CapBnd, err = strconv.ParseUint(v, 16, 64)
		default:
			continue
		}
		if err != nil {
			return c, fmt.Errorf("/proc/%d/status %s %q: %w", pid, k, v, err)
		}
		seen++
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if seen != 5 {
		return c, fmt.Errorf("/proc/%d/status lacks NoNewPrivs, Seccomp or a capability set", pid)
	}
	return c, nil
}

// CheckWorkerConfinement fails the test unless the worker process pid
// runs with no-new-privileges, a seccomp filter and exactly
// shim.WorkerCapabilities as its effective, permitted and bounding sets;
// and, when readOnly, unless its root file system refuses a write
// (EROFS) while its /tmp takes one; when not readOnly, the root takes a
// write. The writes go through /proc/<pid>/root, so the kernel resolves
// them in the worker's own mounts.
func CheckWorkerConfinement(t testing.TB, pid int, readOnly bool) {
	t.Helper()
	c, err := ReadConfinement(pid)
	if err != nil {
		t.Fatalf("worker process %d: %v", pid, err)
	}
	want, err := CapMask(shim.WorkerCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	if c.NoNewPrivs != 1 {
		t.Errorf("worker process %d: NoNewPrivs %d, want 1", pid, c.NoNewPrivs)
	}
	if c.Seccomp != 2 {
		t.Errorf("worker process %d: Seccomp %d, want 2 (filter)", pid, c.Seccomp)
	}
	for _, s := range []struct {
		name string
		mask uint64
	}{{"CapEff", c.CapEff}, {"CapPrm", c.CapPrm}, {"CapBnd", c.CapBnd}} {
		if s.mask != want {
			t.Errorf("worker process %d: %s %016x %v, want %016x %v", pid, s.name, s.mask, CapNames(s.mask), want, shim.WorkerCapabilities)
		}
	}
	root := fmt.Sprintf("/proc/%d/root", pid)
	probe := "esb-write-probe-" + strconv.Itoa(os.Getpid())
	err = writeProbe(filepath.Join(root, probe))
	switch {
	case readOnly && !errors.Is(err, syscall.EROFS):
		t.Errorf("write to the read-only root of worker %d: %v, want EROFS", pid, err)
	case !readOnly && err != nil:
		t.Errorf("write to the root of worker %d: %v", pid, err)
	}
	if readOnly {
		if err := writeProbe(filepath.Join(root, shim.WorkerTmpfsPath, probe)); err != nil {
			t.Errorf("write to %s of worker %d: %v", shim.WorkerTmpfsPath, pid, err)
		}
	}
}

// writeProbe creates and removes a file.
func writeProbe(path string) error {
	if err := os.WriteFile(path, []byte("probe\n"), 0o600); err != nil {
		return err
	}
	return os.Remove(path)
}
