// Package nstest holds the helpers every privileged esbnet test uses: a
// root check that fails instead of skipping under CI, self-cleaning network
// namespaces, and the plugin binaries built once per test binary.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
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

// RandomHex returns n random bytes as 2n hex digits: names that another
// run, or a leftover of a killed one, cannot hold (containerd namespaces,
// worker and container IDs, image tags).
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead (Go 1.24)
	return hex.EncodeToString(b)
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

// Build is a go build run once per test binary into a temporary
// directory, which Remove takes away (Main does it for PluginDir's).
type Build struct {
	once sync.Once
	dir  string
	err  error
}

// Dir runs go build -o DIR/ with args (flags, then packages) from the
// repository root once, with env added to the environment, into a new
// temporary directory named pattern*, and returns the directory.
func (b *Build) Dir(tb testing.TB, pattern string, env []string, args ...string) string {
	tb.Helper()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", pattern)
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, args...)...)
		cmd.Dir = RepoRoot(tb)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	})
	if b.err != nil {
		tb.Fatal(b.err)
	}
	return b.dir
}

// Remove removes what Dir built.
func (b *Build) Remove() {
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

var plugins Build

// PluginDir builds esbnet's CNI plugins once per test binary into a
// temporary directory and returns it, for use as CNI_PATH. The directory is
// removed by CleanupBuilt, which TestMain should call.
func PluginDir(t testing.TB) string {
	t.Helper()
	// As make build does: static binaries start faster, and a plugin is a
	// process per CNI call.
	return plugins.Dir(t, "esbnet-plugins-", []string{"CGO_ENABLED=0"}, "./plugins/...")
}

// CleanupBuilt removes what PluginDir built.
func CleanupBuilt() { plugins.Remove() }

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

// LookPath returns the path of the program name from PATH, failing the
// test under CI and skipping it elsewhere when it is not installed.
func LookPath(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(tb, "%s is not installed (run scripts/deps.sh): %v", name, err)
	}
	return p
}

// RequirePrograms is LookPath for each of names.
func RequirePrograms(tb testing.TB, names ...string) {
	tb.Helper()
	for _, name := range names {
		LookPath(tb, name)
	}
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
