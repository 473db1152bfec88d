// Package benchipam measures esb-ipam beside the reference host-local IPAM
// plugin (v1.10.0): the cost of one ADD+DEL through each plugin binary,
// executed the way a runtime executes it, with 0 to 60,000 addresses already
// allocated, and esb-ipam's in-process allocate+release cost. Run it with
// "make bench"; the benchmarks print a summary table.
//
// This file fills both plugins' stores quickly: esb-ipam's through the ipam
// library, host-local's by writing its reservation files the way its disk
// backend does.
package benchipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/edge-serverless-box/esbnet/conf"
	"github.com/edge-serverless-box/esbnet/ipam"
)

// ContainerID returns a runtime-like 64-hex-digit container ID, unique per
// (tag, i), so fill and benchmark attachments never collide.
func ContainerID(tag byte, i int) string { return fmt.Sprintf("%02x%062x", tag, i) }

// Tags of the container IDs the benchmarks use.
const (
	TagFill   byte = 0xf1 // attachments that fill a store
	TagSample byte = 0xad // attachments a benchmark adds and deletes
	TagProbe  byte = 0xcc // attachments that verify a fill
)

// FillIDs returns the n attachment IDs that fill a store, on interface ifname.
func FillIDs(n int, ifname string) []ipam.AttachmentID {
	ids := make([]ipam.AttachmentID, n)
	for i := range ids {
		ids[i] = ipam.AttachmentID{ContainerID: ContainerID(TagFill, i), IfName: ifname}
	}
	return ids
}

// FillOrder returns the first n addresses of r in ascending order, skipping
// the reserved ones (network, gateway, broadcast): what both esb-ipam and
// host-local hand out, in that order, from an empty store.
func FillOrder(r conf.Range, n int) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, n)
	for a := r.Start; len(out) < n; a = a.Next() {
		if !a.IsValid() || !r.Contains(a) {
			return nil, fmt.Errorf("range %s holds fewer than %d addresses", r, n)
		}
		if !r.Reserved(a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// fillBatch bounds the size of one fill transaction.
const fillBatch = 10000

// FillESB allocates one address for each of ids in esb-ipam's store under
// cfg.DataDir, through the library, in transactions of up to 10,000, and
// returns the IPv4 addresses in the order of ids.
func FillESB(cfg *conf.IPAM, ids []ipam.AttachmentID) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, len(ids))
	now := time.Now()
	for lo := 0; lo < len(ids) || lo == 0; lo += fillBatch {
		hi := min(lo+fillBatch, len(ids))
		s, err := OpenESB(cfg)
		if err != nil {
			return nil, err
		}
		err = s.Update(func(tx ipam.Txn) error {
			for _, id := range ids[lo:hi] {
				a, err := ipam.Allocate(tx, cfg, id, now)
				if err != nil {
					return fmt.Errorf("allocate for %s: %w", id, err)
				}
				out = append(out, a.IPs[0].Addr())
			}
			return nil
		})
		if err := errors.Join(err, s.Close()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OpenESB locks and opens esb-ipam's store for cfg the way the plugin does.
func OpenESB(cfg *conf.IPAM) (*ipam.BoltStore, error) {
	return ipam.OpenBolt(cfg.DataDir, cfg.Network, ipam.BoltOptions{LockWait: cfg.LockWait})
}

// ESBUsage returns how many addresses of cfg's IPv4 range esb-ipam's store
// holds.
func ESBUsage(cfg *conf.IPAM) (uint64, error) {
	s, err := OpenESB(cfg)
	if err != nil {
		return 0, err
	}
	var used uint64
	err = s.View(func(tx ipam.Txn) error {
		var err error
		used, _, err = ipam.Usage(tx, cfg.V4)
		return err
	})
	return used, errors.Join(err, s.Close())
}

// Layout of host-local v1.10.0's disk backend
// (plugins/ipam/host-local/backend/disk/backend.go): the network's
// directory <dataDir>/<network> (mode 0755) holds one file per reserved
// address, named by the address and holding "<containerID>\r\n<ifname>"
// (mode 0600); last_reserved_ip.<range index> holding the address handed
// out last, where the next search starts; and the flock file "lock".
const (
	hostLocalLineBreak = "\r\n"
	hostLocalLastIP    = "last_reserved_ip."
	hostLocalLock      = "lock"
)

// HostLocalDir returns host-local's directory for network under dataDir.
func HostLocalDir(dataDir, network string) string { return filepath.Join(dataDir, network) }

// FillHostLocal writes host-local's reservations of addrs[i] for ids[i]
// directly, as its disk backend would have after allocating them in this
// order for range set 0: one file per address, last_reserved_ip.0 naming
// the last address, and the lock file.
func FillHostLocal(dataDir, network string, ids []ipam.AttachmentID, addrs []netip.Addr) error {
	if len(ids) != len(addrs) {
		return fmt.Errorf("fill host-local: %d IDs for %d addresses", len(ids), len(addrs))
	}
	dir := HostLocalDir(dataDir, network)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create host-local dir: %w", err)
	}
	for i, id := range ids {
		content := id.ContainerID + hostLocalLineBreak + id.IfName
		if err := os.WriteFile(filepath.Join(dir, addrs[i].String()), []byte(content), 0o600); err != nil {
			return fmt.Errorf("write host-local reservation: %w", err)
		}
	}
	if len(addrs) > 0 {
		last := []byte(addrs[len(addrs)-1].String())
		if err := os.WriteFile(filepath.Join(dir, hostLocalLastIP+"0"), last, 0o600); err != nil {
			return fmt.Errorf("write host-local last reserved IP: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, hostLocalLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create host-local lock: %w", err)
	}
	return f.Close()
}

// HostLocalUsage counts host-local's reservation files for network under
// dataDir (every file but the lock and the last_reserved_ip markers). A
// missing directory holds none.
func HostLocalUsage(dataDir, network string) (int, error) {
	entries, err := os.ReadDir(HostLocalDir(dataDir, network))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if _, err := netip.ParseAddr(e.Name()); err == nil && e.Type().IsRegular() {
			n++
		}
	}
	return n, nil
}
