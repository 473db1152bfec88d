package bridgetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/edge-serverless-box/esbnet/tests/lib/nodetest"
	"github.com/edge-serverless-box/esbnet/tests/lib/nstest"
)

// TestDelegatedIPAM runs esb-bridge with an IPAM plugin other than
// esb-ipam, the reference host-local, which esb-bridge must find in
// CNI_PATH and execute as the spec says: ADD takes host-local's address
// (recorded in host-local's own data dir), CHECK and DEL reach it, DEL
// releases the address, and an IPAM type that CNI_PATH does not hold fails
// ADD with an error naming it, with nothing left behind.
func TestDelegatedIPAM(t *testing.T) {
	hostLocal := nstest.Tool(t, "host-local")
	hlDir := t.TempDir()
	n := newNode(t, nil, map[string]any{"type": "host-local", "dataDir": hlDir})
	n.cni = libcni.NewCNIConfigWithCacheDir([]string{n.plugins, filepath.Dir(hostLocal)}, t.TempDir(), nodetest.PluginExec())
	held := func() []string {
		t.Helper()
		entries, err := os.ReadDir(filepath.Join(hlDir, netName))
		if err != nil && !os.IsNotExist(err) {
			t.Fatalf("read host-local's data dir: %v", err)
		}
		var ips []string
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "10.88.") {
				ips = append(ips, e.Name())
			}
		}
		return ips
	}

	w := n.newWorker("delegated")
	n.mustAdd(w)
	if got := held(); len(got) != 1 || got[0] != w.ip.String() {
		t.Fatalf("host-local holds %v after ADD, want exactly the result's %s", got, w.ip)
	}
	owner, err := os.ReadFile(filepath.Join(hlDir, netName, w.ip.String()))
	if err != nil || !strings.HasPrefix(string(owner), w.id) {
		t.Errorf("host-local's record of %s is %q (%v), want container %s", w.ip, owner, err, w.id)
	}
	if !pingWorks(w.name, w.ip, gateway) {
		t.Errorf("worker %s (address from host-local) cannot ping the gateway", w.ip)
	}
	if err := n.check(w); err != nil {
		t.Errorf("CHECK with delegated IPAM: %v", err)
	}
	n.mustDel(w)
	if got := held(); len(got) != 0 {
		t.Errorf("host-local still holds %v after DEL", got)
	}
	n.assertClean("after DEL")

	n.ipam["type"] = "esb-no-such-ipam"
	w2 := n.newWorker("delegated-missing")
	err = n.add(w2)
	_ = wantCNIError(t, err, types.ErrInvalidEnvironmentVariables, "ADD with an IPAM plugin missing from CNI_PATH", "esb-no-such-ipam", "CNI_PATH")
	n.assertClean("after the failed ADD")
}
