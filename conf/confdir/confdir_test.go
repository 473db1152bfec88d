package confdir

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, dir, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const esb = `{"cniVersion":"1.1.0","name":"esb","plugins":[{"type":"esb-bridge","bridge":"esb-cni0","ipam":{"type":"esb-ipam","subnet":"10.88.0.0/16"}}]}`

func TestNetworksAndOthers(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "10-esb.conflist", esb)
	write(t, dir, "10-esb2.conflist", `{"cniVersion":"1.1.0","name":"esb2","plugins":[{"type":"esb-bridge","ipam":{"type":"esb-ipam","subnet":"10.89.0.0/16"}}]}`)
	write(t, dir, "20-other.conflist", `{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"bridge","bridge":"cni0"}]}`)
	write(t, dir, "junk.conf", `not json`)
	write(t, dir, "README", `ignored`)
	nets, err := Networks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 2 || nets[0].Name != "esb" || nets[1].Name != "esb2" || nets[1].Bridge != "esb2-cni0" ||
		nets[1].Subnet != netip.MustParsePrefix("10.89.0.0/16") {
		t.Fatalf("Networks = %+v", nets)
	}
	others, err := Others("esb2", nets)
	if err != nil || !slices.Equal(others, []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")}) {
		t.Errorf("Others(esb2) = %v, %v", others, err)
	}
	if others, err := Others("esb", nets); err != nil || len(others) != 1 || others[0].String() != "10.89.0.0/16" {
		t.Errorf("Others(esb) = %v, %v", others, err)
	}
	if _, ok := Find(nets, "esb2"); !ok {
		t.Error("Find(esb2) found nothing")
	}
	if nets, err := Networks(filepath.Join(dir, "missing")); err != nil || nets != nil {
		t.Errorf("missing dir: %v, %v", nets, err)
	}
}

func TestConflictNamesBoth(t *testing.T) {
	for _, tc := range []struct{ second, want string }{
		{`{"cniVersion":"1.1.0","name":"esb2","plugins":[{"type":"esb-bridge","ipam":{"type":"esb-ipam","subnet":"10.88.128.0/17"}}]}`, "overlapping subnets"},
		{`{"cniVersion":"1.1.0","name":"esb2","plugins":[{"type":"esb-bridge","bridge":"esb-cni0","ipam":{"type":"esb-ipam","subnet":"10.89.0.0/16"}}]}`, "the same bridge"},
	} {
		dir := t.TempDir()
		write(t, dir, "10-esb.conflist", esb)
		write(t, dir, "10-esb2.conflist", tc.second)
		nets, err := Networks(dir)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Others("esb2", nets)
		var ce *ConflictError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "network esb2 (") || !strings.Contains(err.Error(), "network esb (") ||
			!strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want a conflict naming esb and esb2 (%s)", err, tc.want)
		}
	}
}
