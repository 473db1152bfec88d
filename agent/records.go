package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Record is what the agent keeps of a worker outside the runtime: whose it
// is, which request made it, and which pool it belongs to. Runtimes whose
// labels cannot change (Docker) keep a pooled worker's creation-time owner
// ("") for ever, so after a restart the record, not the label, says whose
// the worker is.
type Record struct {
	Owner   string `json:"owner,omitempty"`
	Request string `json:"request,omitempty"`
	PoolKey string `json:"pool,omitempty"`
}

// Records keeps one Record per worker ID across agent restarts.
type Records interface {
	// Put stores id's record, replacing any earlier one.
	Put(id string, r Record) error
	// Delete removes id's record; a missing one is not an error.
	Delete(id string) error
	// All returns every record (empty when there are none).
	All() (map[string]Record, error)
}

// noRecords keeps nothing: labels alone say whose a worker is.
type noRecords struct{}

func (noRecords) Put(string, Record) error        { return nil }
func (noRecords) Delete(string) error             { return nil }
func (noRecords) All() (map[string]Record, error) { return map[string]Record{}, nil }

var recordsBucket = []byte("workers")

// BoltRecords keeps the records in a bbolt file that one agent holds
// locked while it runs.
//
// Writes are not fsynced: the records only need to outlive the agent's
// process, not the host (the file belongs on tmpfs under /run, and the
// workers die with the host anyway); the page cache keeps a write made
// before the process died.
type BoltRecords struct {
	db *bolt.DB
}

var _ Records = (*BoltRecords)(nil)

// OpenRecords opens (creating it and its directory) the records file at
// path. It fails when another agent holds the file.
func OpenRecords(path string) (*BoltRecords, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: true, NoFreelistSync: true})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state file %s: another agent holds it", path)
		}
		return nil, fmt.Errorf("open state file %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(recordsBucket)
		return err
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("init state file %s: %w", path, err), db.Close())
	}
	return &BoltRecords{db: db}, nil
}

// Close closes the file and releases its lock.
func (b *BoltRecords) Close() error { return b.db.Close() }

// Put implements Records.
func (b *BoltRecords) Put(id string, r Record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(recordsBucket).Put([]byte(id), v) })
	if err != nil {
		return fmt.Errorf("record worker %s: %w", id, err)
	}
	return nil
}

// Delete implements Records.
func (b *BoltRecords) Delete(id string) error {
	err := b.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(recordsBucket).Delete([]byte(id)) })
	if err != nil {
		return fmt.Errorf("forget worker %s: %w", id, err)
	}
	return nil
}

// All implements Records. A record that does not decode is skipped (the
// worker's labels then speak for it).
func (b *BoltRecords) All() (map[string]Record, error) {
	out := map[string]Record{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(recordsBucket).ForEach(func(k, v []byte) error {
			var r Record
			if json.Unmarshal(v, &r) == nil {
				out[string(k)] = r
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read worker records: %w", err)
	}
	return out, nil
}
