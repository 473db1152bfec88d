package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/shim"
)

// TestWorkerOwnEtcFiles: each worker gets its own /etc/hosts (the loopback
// names, then its host name on its address) and /etc/hostname beside the
// state file; they go with its release, with a failed creation's rollback
// and, for workers that ended while no agent ran, with reconcile.
func TestWorkerOwnEtcFiles(t *testing.T) {
	state := t.TempDir()
	r := newRig(t, Config{StateDir: state})
	ctx := context.Background()
	w, err := r.a.Acquire(ctx, req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(state, "etc", w.ID)
	spec := r.spec(w.ID)
	if spec.Hosts != filepath.Join(dir, "hosts") || spec.HostnameFile != filepath.Join(dir, "hostname") {
		t.Fatalf("spec's hosts %q, hostname %q; want them in %s", spec.Hosts, spec.HostnameFile, dir)
	}
	name := shim.WorkerHostname(w.ID)
	for path, want := range map[string]string{
		spec.Hosts:        conf.WorkerHosts + w.IP.String() + "\t" + name + "\n",
		spec.HostnameFile: name + "\n",
	} {
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", path, b, err, want)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode: %v, %v; want 0644 (read by every worker's user)", path, fi, err)
		}
	}

	// A restart finds the live worker's files and one of a worker gone.
	gone := filepath.Join(state, "etc", "gone")
	if err := os.MkdirAll(gone, 0o755); err != nil {
		t.Fatal(err)
	}
	b := New(Options{Runtime: r.rt, Network: r.net, NetNSes: r.nses, Config: Config{StateDir: state, LogDir: t.TempDir()},
		Probe: func(context.Context, string) error { return nil }})
	if rep, err := b.Reconcile(ctx); err != nil || rep.Adopted != 1 {
		t.Fatalf("Reconcile = %+v, %v; want the worker adopted", rep, err)
	}
	if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the files of a worker gone after reconcile: %v; want removed", err)
	}
	if _, err := os.Stat(spec.Hosts); err != nil {
		t.Errorf("the adopted worker's hosts after reconcile: %v", err)
	}
	if err := b.Release(ctx, w.ID, "o1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the worker's /etc files after its release: %v; want removed", err)
	}

	// A creation that fails takes its files with it.
	r.rt.FailCreate(errors.New("no room"))
	if _, err := r.a.Acquire(ctx, req("o2")); err == nil {
		t.Fatal("acquire with a failing create succeeded")
	}
	if ents, err := os.ReadDir(filepath.Join(state, "etc")); err != nil || len(ents) != 0 {
		t.Errorf("/etc files after a failed creation: %v, %v; want none", ents, err)
	}
}

// TestWorkerEtcWithoutStateDir: an agent with no state directory writes no
// files, and the workers keep their images' own.
func TestWorkerEtcWithoutStateDir(t *testing.T) {
	r := newRig(t, Config{})
	w, err := r.a.Acquire(context.Background(), req("o1"))
	if err != nil {
		t.Fatal(err)
	}
	if s := r.spec(w.ID); len(s.EtcFiles()) != 0 {
		t.Errorf("etc files without a state dir: %v", s.EtcFiles())
	}
}

// BenchmarkWorkerEtc is what a worker's own /etc files add to its
// creation (write, then name) and teardown (remove), on the state
// directory's file system (go test -bench WorkerEtc -benchtime 2000x
// with TMPDIR on it).
func BenchmarkWorkerEtc(b *testing.B) {
	e := workerEtc{dir: b.TempDir()}
	ip := netip.MustParseAddr("10.88.0.2")
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("%064x", i)
		if err := e.write(id); err != nil {
			b.Fatal(err)
		}
		if err := e.name(id, ip); err != nil {
			b.Fatal(err)
		}
		if err := e.remove(id); err != nil {
			b.Fatal(err)
		}
	}
}
