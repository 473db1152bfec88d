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

func comments(d *desired, chain string) []string {
	var out []string
	for _, r := range d.rules {
		if r.Chain.Name == chain {
			out = append(out, comment(r))
		}
	}
	return out
}

func TestBuildProxyOnly(t *testing.T) {
	d := build(rules(t, `forwards: [{proto: tcp, port: 9000, to: "127.0.0.1:9000"}, {proto: udp, port: 514, to: "127.0.0.1:9000"}, {proto: tcp, port: 9001, to: "127.0.0.1:9000"}]`))
	if len(d.chains) != 3 {
		t.Errorf("chains %d, want prerouting, input, forward", len(d.chains))
	}
	if got := comments(d, "prerouting"); len(got) != 1 {
		t.Errorf("prerouting has %d rules, want the one DNAT rule: %q", len(got), got)
	}
	if got := comments(d, "input"); got[len(got)-1] != "esb: egress proxy-only" {
		t.Errorf("input does not end in the proxy-only drop: %q", got)
	}
	if len(d.forwards) != 3 {
		t.Errorf("forwards %d", len(d.forwards))
	}
	// tcp and udp to the same target are two targets; two tcp forwards to
	// one target are one.
	if len(d.targets) != 2 {
		t.Errorf("targets %d, want 2", len(d.targets))
	}
	for _, e := range d.forwards {
		if len(e.Key) != int(setForwards.KeyType.Bytes) || len(e.Val) != int(setForwards.DataType.Bytes) {
			t.Errorf("element %x : %x does not fit the map's types", e.Key, e.Val)
		}
	}
	if got := d.targets[0].Key; len(got) != int(setTargets.KeyType.Bytes) {
		t.Errorf("target key %x does not fit the set's type", got)
	}
}

func TestBuildOpenMasquerades(t *testing.T) {
	d := build(rules(t, `egress: open`))
	if len(d.chains) != 4 || d.chains[3] != chainPostrouting {
		t.Fatalf("open needs the postrouting chain, got %d chains", len(d.chains))
	}
	if slices.Contains(comments(d, "input"), "esb: egress proxy-only") {
		t.Error("open egress still drops")
	}
	if got := comments(d, "postrouting"); len(got) != 1 {
		t.Errorf("postrouting %q", got)
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
