package runtimetest

import (
	"net"
	"os"
	"slices"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// checkNetNS fails the test unless path is a network namespace other than
// the test's own that holds only lo: what a runtime that makes the
// worker's namespace (OwnsNetNS) returns from Start, before any CNI.
func checkNetNS(t *testing.T, path string) {
	t.Helper()
	if err := ns.IsNSorErr(path); err != nil {
		t.Fatalf("Start returned %q: %v", path, err)
	}
	theirs, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.Stat("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(theirs, ours) {
		t.Fatalf("the worker's namespace %s is the test's own", path)
	}
	var names []string
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("interfaces in %s: %v", path, err)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Errorf("the worker's namespace holds %v, want only lo", names)
	}
}
