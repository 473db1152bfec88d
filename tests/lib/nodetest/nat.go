package nodetest

import (
	"github.com/google/nftables"

	"github.com/edge-serverless-box/esbnet/nat"
)

// NATShape counts what table ip esb holds: rules over all its chains, and
// the elements of its forwards map and targets set. The manager replaces
// the table in one transaction, so equal counts mean a whole table.
type NATShape struct{ Rules, Forwards, Targets int }

// ReadNATShape reads the shape of table ip esb through c; a missing set
// counts as empty.
func ReadNATShape(c *nftables.Conn) (NATShape, error) {
	esb := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: nat.TableName}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return NATShape{}, err
	}
	var s NATShape
	for _, ch := range chains {
		if ch.Table.Name != nat.TableName {
			continue
		}
		rs, err := c.GetRules(esb, ch)
		if err != nil {
			return NATShape{}, err
		}
		s.Rules += len(rs)
	}
	for name, count := range map[string]*int{"forwards": &s.Forwards, "targets": &s.Targets} {
		set, err := c.GetSetByName(esb, name)
		if err != nil {
			continue // no such set: not whole
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			return NATShape{}, err
		}
		*count = len(els)
	}
	return s, nil
}
