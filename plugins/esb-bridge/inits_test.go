package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// initAllocLimit is the most allocations one of esbnet's packages may
// make at init in the plugin: every ADD and DEL starts a process and pays
// for them (a regexp compiled at init was 241 allocations and 1.4 ms).
const initAllocLimit = 30

// TestPluginInitsAreCheap builds esb-bridge, starts it with
// GODEBUG=inittrace=1 for a VERSION request, and checks that no esbnet
// package's init does real work: work that only some callers need belongs
// behind a sync.OnceValue.
func TestPluginInitsAreCheap(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "esb-bridge")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build esb-bridge: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"CNI_COMMAND=VERSION", "GODEBUG=inittrace=1"}
	cmd.Stdin = strings.NewReader(`{"cniVersion":"1.1.0"}`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || !bytes.Contains(out, []byte("supportedVersions")) {
		t.Fatalf("esb-bridge VERSION: %v: %s\n%s", err, out, stderr.String())
	}
	seen := 0
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		// init <package> @<t> ms, <t> ms clock, <n> bytes, <n> allocs
		f := strings.Fields(sc.Text())
		if len(f) < 11 || f[0] != "init" || !strings.HasPrefix(f[1], "github.com/edge-serverless-box/esbnet/") {
			continue
		}
		seen++
		allocs, err := strconv.Atoi(f[9])
		if err != nil {
			t.Fatalf("unexpected inittrace line %q", sc.Text())
		}
		if allocs > initAllocLimit {
			t.Errorf("init of %s makes %d allocations (at most %d): %s", f[1], allocs, initAllocLimit, sc.Text())
		}
	}
	if seen == 0 {
		t.Fatalf("no init of an esbnet package traced; stderr:\n%s", stderr.String())
	}
}
