// Package confdir reads the esb-bridge networks configured in a CNI
// configuration directory: every ESB stack on a host has its conflist
// there (conf.Stack.Conflist), so an agent finds the other stacks, refuses
// to start on a subnet or bridge another one uses, and learns the subnets
// its NAT table keeps its workers away from (conf.NATRules.Others).
package confdir

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	"github.com/edge-serverless-box/esbnet/conf"
)

// Network is one esb-bridge network of the directory.
type Network struct {
	Name   string
	File   string       // the configuration's path
	Bridge string       // its bridge
	Subnet netip.Prefix // its esb-ipam IPv4 subnet; invalid when IPAM is delegated
}

func (n Network) String() string {
	return fmt.Sprintf("network %s (%s: bridge %s, subnet %s)", n.Name, filepath.Base(n.File), n.Bridge, n.Subnet)
}

// Networks returns the esb-bridge networks configured in dir (files
// ending .conflist, .conf or .json, as libcni reads them), in name order.
// Files that do not parse or hold no esb-bridge plugin are skipped: the
// directory is shared with other networks. A missing dir has none.
func Networks(dir string) ([]Network, error) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory: %w", err)
	}
	var out []Network
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".conflist" && ext != ".conf" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil || len(b) > conf.MaxFileBytes {
			continue
		}
		if n, ok := parse(path, b); ok {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// parse returns the esb-bridge network a configuration defines.
func parse(path string, b []byte) (Network, bool) {
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Type       string            `json:"type"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if json.Unmarshal(b, &list) != nil {
		return Network{}, false
	}
	plugins := list.Plugins
	if list.Type != "" {
		plugins = []json.RawMessage{b}
	}
	for _, p := range plugins {
		var m map[string]any
		if json.Unmarshal(p, &m) != nil || m["type"] != conf.BridgeType {
			continue
		}
		m["name"], m["cniVersion"] = list.Name, list.CNIVersion
		one, err := json.Marshal(m)
		if err != nil {
			continue
		}
		nc, err := conf.ParseBridgeNetConf(one)
		if err != nil {
			continue
		}
		n := Network{Name: nc.Name, File: path, Bridge: nc.Bridge}
		if nc.IPAM != nil {
			n.Subnet = nc.IPAM.V4.Subnet
		}
		return n, true
	}
	return Network{}, false
}

// ConflictError reports two networks that would step on each other: the
// same bridge, or overlapping subnets.
type ConflictError struct {
	Self, Other Network
	What        string // "the same bridge" or "overlapping subnets"
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s conflicts with %s: %s; give each stack its own bridge and subnet",
		e.Self, e.Other, e.What)
}

// Others checks network self against the other networks of nets and
// returns their subnets (each once, in order). Another network with self's
// bridge, or with a subnet overlapping self's, is a *ConflictError naming
// both. When self is not among nets, there is nothing to check against:
// the other subnets are returned as they are.
func Others(self string, nets []Network) ([]netip.Prefix, error) {
	var me *Network
	for i := range nets {
		if nets[i].Name == self {
			me = &nets[i]
		}
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	for _, n := range nets {
		if n.Name == self {
			continue
		}
		if me != nil && n.Bridge == me.Bridge {
			return nil, &ConflictError{Self: *me, Other: n, What: "the same bridge"}
		}
		if !n.Subnet.IsValid() {
			continue
		}
		if me != nil && me.Subnet.IsValid() && me.Subnet.Overlaps(n.Subnet) {
			return nil, &ConflictError{Self: *me, Other: n, What: "overlapping subnets"}
		}
		if !seen[n.Subnet] {
			seen[n.Subnet] = true
			out = append(out, n.Subnet)
		}
	}
	return out, nil
}

// Find returns the network named name, false when nets has none.
func Find(nets []Network, name string) (Network, bool) {
	for _, n := range nets {
		if n.Name == name {
			return n, true
		}
	}
	return Network{}, false
}
