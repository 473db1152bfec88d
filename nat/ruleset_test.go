package nat

import (
	"slices"
	"testing"

	"github.com/google/nftables"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/conf/natfile"
)

func rules(t *testing.T, yaml string) *conf.NATRules {
	t.Helper()
	r, err := natfile.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestBuildElementsFitTypes checks that the elements Apply sends fit the
// key and data types of their sets (the kernel refuses them otherwise), and
// that targets are deduplicated: tcp and udp to one target are two, two
// tcp forwards to one target are one.
func TestBuildElementsFitTypes(t *testing.T) {
	d := build(rules(t, `forwards: [{proto: tcp, port: 9000, to: "127.0.0.1:9000"}, {proto: udp, port: 514, to: "127.0.0.1:9000"}, {proto: tcp, port: 9001, to: "127.0.0.1:9000"}]`))
	if len(d.forwards) != 3 || len(d.targets) != 2 {
		t.Errorf("forwards %d, targets %d; want 3 and 2", len(d.forwards), len(d.targets))
	}
	for _, e := range d.forwards {
		if len(e.Key) != int(setForwards.KeyType.Bytes) || len(e.Val) != int(setForwards.DataType.Bytes) {
			t.Errorf("element %x : %x does not fit the map's types", e.Key, e.Val)
		}
	}
	for _, e := range d.targets {
		if len(e.Key) != int(setTargets.KeyType.Bytes) {
			t.Errorf("target key %x does not fit the set's type", e.Key)
		}
	}
}

func TestDiff(t *testing.T) {
	have := map[string][]byte{"a": {1}, "b": {2}, "c": {3}}
	want := []nftables.SetElement{{Key: []byte("a"), Val: []byte{1}}, {Key: []byte("b"), Val: []byte{9}}, {Key: []byte("d"), Val: []byte{4}}}
	del, add := diff(have, want)
	keys := func(es []nftables.SetElement) []string {
		var out []string
		for _, e := range es {
			out = append(out, string(e.Key))
		}
		slices.Sort(out)
		return out
	}
	if got := keys(del); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("delete %q, want b (changed) and c (gone)", got)
	}
	if got := keys(add); !slices.Equal(got, []string{"b", "d"}) {
		t.Errorf("add %q, want b (changed) and d (new)", got)
	}
}
