package nat

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestRenderStack renders a second stack's tables: its own table name,
// its bridge in every rule, and the other stack's subnet dropped in both
// directions first in input and forward.
func TestRenderStack(t *testing.T) {
	g1, _ := goldenGuards(t)
	for _, egress := range []string{"proxy-only", "open"} {
		r := rules(t, "egress: "+egress+"\nbridge: esb2-cni0\nsubnet: 10.89.0.0/16\ngateway: 10.89.0.1\n"+goldenForwards)
		r.Others = []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16")}
		checkGolden(t, "stack-esb2-"+egress+".nft", RenderTable("esb2", r, []Guard{g1}))

		d := newTables("esb2").build(r)
		got := ruleComments(RenderTable("esb2", r, nil))
		for _, c := range d.chains {
			var want []string
			for _, rule := range d.rules {
				if rule.Chain == c {
					want = append(want, comment(rule))
				}
			}
			if !slices.Equal(got[c.Name], want) {
				t.Errorf("%s: chain %s renders %q, Apply sends %q", egress, c.Name, got[c.Name], want)
			}
			if c.Table.Name != "esb2" {
				t.Errorf("chain %s is in table %s", c.Name, c.Table.Name)
			}
		}
		for _, chain := range []string{"input", "forward"} {
			if c := got[chain]; len(c) < 3 || c[0] != "esb: not to stack 10.88.0.0/16" || c[1] != "esb: not from stack 10.88.0.0/16" {
				t.Errorf("%s: chain %s starts %q, want the isolation rules first", egress, chain, c)
			}
		}
	}
}

func TestFakeForKeepsItsTableName(t *testing.T) {
	f := NewFakeFor("esb2")
	r := rules(t, "bridge: esb2-cni0\nsubnet: 10.89.0.0/16\ngateway: 10.89.0.1\n"+goldenForwards)
	if _, err := f.Apply(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if got := f.Dump(); !strings.HasPrefix(got, "table ip esb2 {\n") || got != RenderTable("esb2", r, nil) {
		t.Errorf("Dump = %s", got)
	}
	if m := NewManagerFor(nil, "esb2"); m.Table() != "esb2" || NewManagerFor(nil, TableName).Table() != "esb" {
		t.Errorf("NewManagerFor table names: %s", m.Table())
	}
}
