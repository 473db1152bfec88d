package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"

	"github.com/edge-serverless-box/esbnet/conf"
)

const schemaVersion = "1"

var (
	bucketMeta    = []byte("meta")
	bucketAllocs  = []byte("allocations")
	bucketChunks4 = []byte("chunks4")
	bucketChunks6 = []byte("chunks6")
	bucketCursors = []byte("cursors")
	keyBootID     = []byte("boot_id")
	keySchema     = []byte("schema")
	// keyUnseeded marks a store created or reset and not yet seeded with
	// the attachments the node has in use (UpdateSeeded, Readopt).
	keyUnseeded = []byte("unseeded")
)

// BoltOptions tunes OpenBolt.
type BoltOptions struct {
	// LockWait bounds the wait for the store's lock (default 5s).
	LockWait time.Duration
	// BootID is the identity of the running kernel; empty means read
	// /proc/sys/kernel/random/boot_id. A store stamped with another boot ID
	// was written before a reboot, and its allocations are dropped.
	BootID string
}

// BoltStore is the Store of one network: a bbolt database at
// <dir>/<network>.db, guarded across processes by an exclusive lock on
// <dir>/<network>.lock that is held from OpenBolt to Close.
type BoltStore struct {
	db   *bolt.DB
	lock *os.File
}

// DBPath returns the database file of network under dir.
func DBPath(dir, network string) string { return conf.DataDBPath(dir, network) }

// OpenBolt locks and opens the store of network under dir, creating both
// when missing. It fails with ErrLockTimeout when another process holds the
// lock for longer than the wait. Close releases the lock: keep a store open
// only for the transactions of one operation.
func OpenBolt(dir, network string, opt BoltOptions) (*BoltStore, error) {
	if opt.LockWait <= 0 {
		opt.LockWait = 5 * time.Second
	}
	if opt.BootID == "" {
		b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if err != nil {
			return nil, fmt.Errorf("read boot id: %w", err)
		}
		opt.BootID = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create IPAM data dir: %w", err)
	}
	lock, err := lockFile(filepath.Join(dir, network+".lock"), opt.LockWait)
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(DBPath(dir, network), 0o600, &bolt.Options{
		Timeout:      opt.LockWait,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		_ = lock.Close()
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, ErrLockTimeout
		}
		return nil, fmt.Errorf("open IPAM store %s: %w", DBPath(dir, network), err)
	}
	s := &BoltStore{db: db, lock: lock}
	if err := s.stamp(opt.BootID); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// stamp makes sure the buckets exist and the store belongs to this boot;
// a store from an earlier boot loses its allocations, whose containers and
// namespaces died with that boot.
func (s *BoltStore) stamp(bootID string) error {
	fresh := false
	err := s.db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		fresh = m != nil && string(m.Get(keyBootID)) == bootID && string(m.Get(keySchema)) == schemaVersion
		return nil
	})
	if err != nil || fresh {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m != nil && m.Get(keySchema) != nil && string(m.Get(keySchema)) != schemaVersion {
			return errCorrupt("schema %q, this esb-ipam reads %q", m.Get(keySchema), schemaVersion)
		}
		for _, b := range [][]byte{bucketMeta, bucketAllocs, bucketChunks4, bucketChunks6, bucketCursors} {
			if tx.Bucket(b) != nil {
				if err := tx.DeleteBucket(b); err != nil {
					return err
				}
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		m = tx.Bucket(bucketMeta)
		if err := m.Put(keySchema, []byte(schemaVersion)); err != nil {
			return err
		}
		if err := m.Put(keyUnseeded, []byte("1")); err != nil {
			return err
		}
		return m.Put(keyBootID, []byte(bootID))
	})
}

// Update implements Store.
func (s *BoltStore) Update(fn func(Txn) error) error {
	return s.db.Update(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

// UpdateSeeded runs fn in an Update. When the store was created or reset
// and not yet seeded, the same transaction first adopts (Adopt) what seed
// returns, the attachments the node has in use, and marks the store
// seeded; seed is not called otherwise.
func (s *BoltStore) UpdateSeeded(cfg *conf.IPAM, seed func() ([]*Allocation, error), fn func(Txn) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if m := tx.Bucket(bucketMeta); seed != nil && m.Get(keyUnseeded) != nil {
			allocs, err := seed()
			if err != nil {
				return fmt.Errorf("list the attachments in use to seed a new IPAM store: %w", err)
			}
			if _, err := Adopt(boltTxn{tx}, cfg, allocs); err != nil {
				return err
			}
			if err := m.Delete(keyUnseeded); err != nil {
				return err
			}
		}
		return fn(boltTxn{tx})
	})
}

// View implements Store.
func (s *BoltStore) View(fn func(Txn) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(boltTxn{tx}) })
}

// Close implements Store: it closes the database, then drops the lock.
func (s *BoltStore) Close() error {
	var errs []error
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	if s.lock != nil {
		errs = append(errs, unix.Flock(int(s.lock.Fd()), unix.LOCK_UN), s.lock.Close())
		s.lock = nil
	}
	return errors.Join(errs...)
}

// lockFile takes an exclusive flock on path, waiting at most wait. The wait
// blocks in the kernel (woken as soon as the holder lets go) rather than
// polling; on timeout the blocked attempt is abandoned to a goroutine that
// drops the lock if it ever gets it.
func lockFile(path string, wait time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open IPAM lock: %w", err)
	}
	fd := int(f.Fd())
	err = unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return nil, errors.Join(fmt.Errorf("lock %s: %w", path, err), f.Close())
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(fd, unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				done <- err
				return
			}
		}
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			return nil, errors.Join(fmt.Errorf("lock %s: %w", path, err), f.Close())
		}
		return f, nil
	case <-timer.C:
		go func() {
			<-done //nolint:errcheck // granted or not, closing the file below drops the lock
			_ = f.Close()
		}()
		return nil, fmt.Errorf("%w: %s held for more than %s", ErrLockTimeout, path, wait)
	}
}

type boltTxn struct{ tx *bolt.Tx }

// allocRecord is an allocation's value; the attachment is the key. Records
// written before the key was made the only copy also carry the attachment.
type allocRecord struct {
	ContainerID string   `json:"containerID,omitempty"`
	IfName      string   `json:"ifname,omitempty"`
	IPs         []string `json:"ips"`
	Created     int64    `json:"created"`
}

func allocKey(id AttachmentID) []byte {
	return []byte(id.ContainerID + "\x00" + id.IfName)
}

func (t boltTxn) bucket(name []byte) (*bolt.Bucket, error) {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil, errCorrupt("bucket %q missing", name)
	}
	return b, nil
}

func decodeAlloc(k, v []byte) (*Allocation, error) {
	var rec allocRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, errCorrupt("allocation record: %v", err)
	}
	cid, ifName, ok := strings.Cut(string(k), "\x00")
	if !ok {
		return nil, errCorrupt("allocation key %q", k)
	}
	a := &Allocation{
		ID:      AttachmentID{cid, ifName},
		Created: time.Unix(0, rec.Created),
	}
	for _, s := range rec.IPs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, errCorrupt("allocation %s: %v", a.ID, err)
		}
		a.IPs = append(a.IPs, p)
	}
	return a, nil
}

func (t boltTxn) Allocation(id AttachmentID) (*Allocation, error) {
	b, err := t.bucket(bucketAllocs)
	if err != nil {
		return nil, err
	}
	k := allocKey(id)
	v := b.Get(k)
	if v == nil {
		return nil, nil
	}
	return decodeAlloc(k, v)
}

func (t boltTxn) PutAllocation(a *Allocation) error {
	b, err := t.bucket(bucketAllocs)
	if err != nil {
		return err
	}
	rec := allocRecord{Created: a.Created.UnixNano()}
	for _, p := range a.IPs {
		rec.IPs = append(rec.IPs, p.String())
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.Put(allocKey(a.ID), v)
}

func (t boltTxn) DeleteAllocation(id AttachmentID) error {
	b, err := t.bucket(bucketAllocs)
	if err != nil {
		return err
	}
	return b.Delete(allocKey(id))
}

func (t boltTxn) ForEachAllocation(fn func(*Allocation) error) error {
	b, err := t.bucket(bucketAllocs)
	if err != nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		a, err := decodeAlloc(k, v)
		if err != nil {
			return err
		}
		return fn(a)
	})
}

func chunkBucket(a netip.Addr) []byte {
	if a.Is4() {
		return bucketChunks4
	}
	return bucketChunks6
}

func (t boltTxn) NextChunk(from netip.Addr) (netip.Addr, *Bitmap, bool, error) {
	b, err := t.bucket(chunkBucket(from))
	if err != nil {
		return netip.Addr{}, nil, false, err
	}
	k, v := b.Cursor().Seek(from.AsSlice())
	if k == nil {
		return netip.Addr{}, nil, false, nil
	}
	base, ok := netip.AddrFromSlice(k)
	if !ok || base.BitLen() != from.BitLen() {
		return netip.Addr{}, nil, false, errCorrupt("chunk key %x", k)
	}
	bm := &Bitmap{}
	if err := bm.UnmarshalBinary(v); err != nil {
		return netip.Addr{}, nil, false, err
	}
	return base, bm, true, nil
}

func (t boltTxn) PutChunk(base netip.Addr, bm *Bitmap) error {
	b, err := t.bucket(chunkBucket(base))
	if err != nil {
		return err
	}
	if bm.Empty() {
		return b.Delete(base.AsSlice())
	}
	v, err := bm.MarshalBinary()
	if err != nil {
		return err
	}
	return b.Put(base.AsSlice(), v)
}

func (t boltTxn) Cursor(key string) (netip.Addr, error) {
	b, err := t.bucket(bucketCursors)
	if err != nil {
		return netip.Addr{}, err
	}
	v := b.Get([]byte(key))
	if v == nil {
		return netip.Addr{}, nil
	}
	a, ok := netip.AddrFromSlice(v)
	if !ok {
		return netip.Addr{}, errCorrupt("cursor %q: %x", key, v)
	}
	return a, nil
}

func (t boltTxn) SetCursor(key string, a netip.Addr) error {
	b, err := t.bucket(bucketCursors)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), bytes.Clone(a.AsSlice()))
}
