// Package store is the embedded database of a platform's data directory: a
// Pebble v2 database in dir/db, guarded by an exclusive lock on
// dir/LOCK.pipes so that one Platform at a time, in any process, has the
// directory open.
//
// Keyspace: every key starts with a one-byte table tag owned by one caller
// (see Key); ids follow as fixed-size byte strings, so a table's keys sort
// by id and a prefix scan lists them. Writes are synced: when Set, Delete or
// Batch return nil the change survives a crash of the process or machine.
package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Errors.
var (
	ErrLocked   = errors.New("store: directory is locked by another platform")
	ErrNotFound = errors.New("store: not found")
	ErrClosed   = errors.New("store: closed")
	ErrCorrupt  = errors.New("store: corrupted")
)

// Options configure Open.
type Options struct {
	Logger    *slog.Logger
	CacheSize int64 // block cache bytes (default 8 MiB)
}

// DB is an open store. It is safe for concurrent use.
type DB struct {
	dir  string
	lock *dirLock
	mu   sync.RWMutex // write-locked only by Close
	db   *pebble.DB
}

// Open opens (creating, mode 0700) the store of dir and locks dir.
func Open(dir string, opts Options) (*DB, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	path := filepath.Join(dir, "db")
	_, statErr := os.Stat(path)
	po := &pebble.Options{
		Cache:  cache,
		Logger: pebbleLogger{opts.Logger},
	}
	if os.IsNotExist(statErr) {
		po.FormatMajorVersion = pebble.FormatNewest
	}
	db, err := pebble.Open(path, po)
	if err != nil {
		lock.release()
		if errors.Is(err, pebble.ErrCorruption) {
			return nil, fmt.Errorf("%w: the database at %s is damaged (%v); restore it from a backup or move it away to start empty", ErrCorrupt, path, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &DB{dir: dir, lock: lock, db: db}, nil
}

// Dir returns the directory of the store.
func (d *DB) Dir() string { return d.dir }

// Key builds a key: the table tag followed by the parts.
func Key(table byte, parts ...[]byte) []byte {
	n := 1
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	k = append(k, table)
	for _, p := range parts {
		k = append(k, p...)
	}
	return k
}

// PrefixEnd returns the smallest key greater than every key with prefix,
// or nil if there is none.
func PrefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// Get returns a copy of the value of key, or ErrNotFound.
func (d *DB) Get(key []byte) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return nil, ErrClosed
	}
	v, closer, err := d.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get: %w", err)
	}
	defer closer.Close()
	return bytes.Clone(v), nil
}

// Set stores value under key, synced.
func (d *DB) Set(key, value []byte) error {
	return d.Batch(func(b *Batch) error { return b.Set(key, value) })
}

// Delete removes key, synced. Deleting an absent key is not an error.
func (d *DB) Delete(key []byte) error {
	return d.Batch(func(b *Batch) error { return b.Delete(key) })
}

// Batch is a set of writes applied atomically.
type Batch struct{ b *pebble.Batch }

// Set adds a write to the batch.
func (b *Batch) Set(key, value []byte) error { return b.b.Set(key, value, nil) }

// Delete adds a deletion to the batch.
func (b *Batch) Delete(key []byte) error { return b.b.Delete(key, nil) }

// Batch runs fn and applies its writes atomically and synced, or none of
// them if fn returns an error.
func (d *DB) Batch(fn func(b *Batch) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return ErrClosed
	}
	pb := d.db.NewBatch()
	defer pb.Close()
	if err := fn(&Batch{b: pb}); err != nil {
		return err
	}
	if err := pb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("store: write: %w", err)
	}
	return nil
}

// Scan calls fn for every key with prefix, in key order. The slices are
// valid only during the call. An error from fn stops the scan and is
// returned.
func (d *DB) Scan(prefix []byte, fn func(key, value []byte) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return ErrClosed
	}
	it, err := d.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: PrefixEnd(prefix)})
	if err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("store: scan: %w", err)
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("store: scan: %w", err)
	}
	return nil
}

// Flush writes the memtable to disk.
func (d *DB) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.db == nil {
		return ErrClosed
	}
	return d.db.Flush()
}

// Close flushes and closes the database and releases the directory. It is
// idempotent.
func (d *DB) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.db == nil {
		return nil
	}
	err := d.db.Flush()
	if cerr := d.db.Close(); err == nil {
		err = cerr
	}
	d.db = nil
	d.lock.release()
	if err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// pebbleLogger forwards Pebble's log to slog. Pebble's contract is that
// Fatalf does not return: it logs at error level and panics, as Pebble's
// own default logger exits the process.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error("pebble: " + fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := "pebble: " + fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic(msg)
}
