package nat

import (
	"context"
	"fmt"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Diff reports, changing nothing, what Apply(r) would do now: Unchanged
// when table ip esb matches r, ElementsUpdated when only the forwards
// differ, Rebuilt when the table is missing (exists is then false) or its
// chains or rules differ. It is what "esbctl doctor" checks.
func (m *Manager) Diff(ctx context.Context, r *conf.NATRules) (change Change, exists bool, err error) {
	c, err := m.conn(ctx)
	if err != nil {
		return Unchanged, false, fmt.Errorf("open nftables: %w", err)
	}
	defer func() { _ = c.CloseLasting() }()
	cur, err := m.read(c)
	if err != nil {
		return Unchanged, false, err
	}
	d := m.t.build(r)
	if !cur.sameStructure(d) {
		return Rebuilt, cur.exists, nil
	}
	delF, addF := diff(cur.forwards, d.forwards)
	delT, addT := diff(boolMap(cur.targets), d.targets)
	if len(delF)+len(addF)+len(delT)+len(addT) > 0 {
		return ElementsUpdated, true, nil
	}
	return Unchanged, true, nil
}
