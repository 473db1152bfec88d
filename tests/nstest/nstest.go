// Package nstest holds the helpers every privileged esbnet test uses: a
// root check that fails instead of skipping under CI, self-cleaning network
// namespaces, and the plugin binaries built once per test binary.
package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
)

// InCI reports whether the tests run under CI (or make test, which sets
// ESB_REQUIRE_PRIVILEGED), where a privileged test that
// cannot run is a failure, never a skip.
func InCI() bool { return os.Getenv("CI") != "" || os.Getenv("ESB_REQUIRE_PRIVILEGED") != "" }

// Unavailable fails the test under CI and skips it elsewhere, saying what
// is missing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("CI is set but this test cannot run: %s", msg)
	}
	t.Skipf("skipping: %s (run as root, or set CI to make this a failure)", msg)
}

var nsOK struct {
	once sync.Once
	err  error
}

// RequirePrivileged makes sure the test runs as root on Linux and can make
// network namespaces.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		Unavailable(t, "needs Linux network namespaces, running on %s", runtime.GOOS)
	}
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (euid is %d)", os.Geteuid())
	}
	nsOK.once.Do(func() {
		n, err := testutils.NewNS()
		if err != nil {
			nsOK.err = err
			return
		}
		nsOK.err = cleanupNS(n)
	})
	if nsOK.err != nil {
		Unavailable(t, "cannot create a network namespace: %v", nsOK.err)
	}
}

// NewNS returns a fresh network namespace pinned under /run/netns that is
// closed and removed when the test ends.
func NewNS(t testing.TB) ns.NetNS {
	t.Helper()
	RequirePrivileged(t)
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		if err := cleanupNS(n); err != nil {
			t.Errorf("remove netns %s: %v", n.Path(), err)
		}
	})
	return n
}

func cleanupNS(n ns.NetNS) error {
	if err := n.Close(); err != nil {
		return err
	}
	return testutils.UnmountNS(n)
}

// RepoRoot returns the module's root directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out)))
}

// GoBuild builds the main package pkg (a path from the repository root,
// such as "./cmd/esbctl") into dir and returns the binary's path, named
// after pkg's last element.
func GoBuild(tb testing.TB, dir, pkg string) string {
	tb.Helper()
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = RepoRoot(tb)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

var built struct {
	once sync.Once
	dir  string
	err  error
}

// PluginDir builds esbnet's CNI plugins once per test binary into a
// temporary directory and returns it, for use as CNI_PATH. The directory is
// removed by CleanupBuilt, which TestMain should call.
func PluginDir(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "esbnet-plugins-")
		if err != nil {
			built.err = err
			return
		}
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./plugins/...")
		cmd.Dir = RepoRoot(t)
		// As make build does: static binaries start faster, and a plugin
		// is a process per CNI call.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./plugins/...: %w\n%s", err, out)
			return
		}
		built.dir = dir
	})
	if built.err != nil {
		t.Fatalf("build plugins: %v", built.err)
	}
	return built.dir
}

// CleanupBuilt removes what PluginDir built.
func CleanupBuilt() {
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
}

// Main is a suite's whole TestMain: it runs the tests, then each of after
// in order, removes what PluginDir built and exits with the tests' code.
func Main(m *testing.M, after ...func()) {
	code := m.Run()
	for _, f := range after {
		f()
	}
	CleanupBuilt()
	os.Exit(code)
}

// ToolsDir is where scripts/deps.sh installs the third-party binaries the
// tests drive: cnitool and the reference plugins (bridge, host-local).
func ToolsDir() string {
	if d := os.Getenv("ESB_TOOLS_DIR"); d != "" {
		return d
	}
	return "/opt/esbnet-tools/bin"
}

// Tool returns the path of a third-party binary from ToolsDir, failing
// under CI (skipping elsewhere) when it is missing.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), name)
	if _, err := os.Stat(p); err != nil {
		Unavailable(t, "%s is not installed (run scripts/deps.sh): %v", p, err)
	}
	return p
}
