package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

var (
	// ErrLocked is wrapped by Open when another Platform, in this process
	// or another, has the directory open. The error names the directory.
	ErrLocked = errors.New("store: data directory is locked by another platform")
	// ErrNotFound is returned by Get when the key is absent.
	ErrNotFound = errors.New("store: not found")
	// ErrClosed is returned by every method of a closed DB but Close.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt is wrapped by errors that report a damaged database,
	// from Open or from a read or write that met the damage.
	ErrCorrupt = errors.New("store: corrupted")
)

const (
	// defaultCacheSize is the block cache size when Options.CacheSize is 0.
	defaultCacheSize = 8 << 20
	// diskSlowThreshold is how long a disk operation may take before it is
	// logged at Warn (Pebble's default).
	diskSlowThreshold = 5 * time.Second
)

// Options configure Open. The zero value is ready to use.
type Options struct {
	// Logger receives Pebble's log: its informational lines at Debug,
	// its errors and on-disk corruption at Error. Nil discards them.
	Logger *slog.Logger
	// CacheSize is the block cache size in bytes; 0 means 8 MiB.
	CacheSize int64
	// MinFreeBytes is the free disk space a write must leave; writes that
	// would leave less fail with ErrDiskFull. 0 means 64 MiB; a negative
	// value turns the check off.
	MinFreeBytes int64
}

// DB is an open store. It is safe for concurrent use.
type DB struct {
	dir      string
	path     string     // dir/db
	pdb      *pebble.DB // closed only once every operation has left
	fsCloser io.Closer  // of pdb's file system, after pdb
	lock     *dirLock
	space    spaceGuard

	mu     sync.Mutex
	closed bool
	failed error          // set when a write met a fatal engine error
	ops    sync.WaitGroup // operations in progress; Add only under mu while !closed
	done   chan struct{}  // closed when Close has finished
}

// Open locks dir and opens its store, creating dir (mode 0700) and the
// database if they do not exist. It fails with an error wrapping ErrLocked
// if dir is open elsewhere, and with one wrapping ErrCorrupt if the
// database is damaged.
func Open(dir string, opts Options) (*DB, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = defaultCacheSize
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "db")
	existed := hasManifest(path)
	pdb, fsCloser, err := openPebble(path, existed, cacheSize, log)
	if err != nil {
		lock.release()
		if isOpenCorruption(existed, err) {
			return nil, &corruptError{dir: dir, path: path, err: err}
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	minFree := uint64(defaultMinFree)
	switch {
	case opts.MinFreeBytes > 0:
		minFree = uint64(opts.MinFreeBytes)
	case opts.MinFreeBytes < 0:
		minFree = 0
	}
	return &DB{dir: dir, path: path, pdb: pdb, fsCloser: fsCloser, lock: lock, done: make(chan struct{}),
		space: spaceGuard{dir: dir, min: minFree, free: freeSpace}}, nil
}

// openPebble opens the Pebble database at path. A new database gets the
// newest format Pebble v2.1.7 supports; an existing one keeps its format.
//
// An existing database must be found as one: with its manifest marker
// gone, Pebble would otherwise create a new, empty database over the old
// files and delete them as obsolete.
//
// The file system is Pebble's default one, with its disk-health checks,
// but made here: Pebble leaks the checker's goroutine when Open fails. The
// returned closer stops it, once the database is closed.
func openPebble(path string, existed bool, cacheSize int64, log *slog.Logger) (*pebble.DB, io.Closer, error) {
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref() // pebble.Open takes its own reference
	fs, fsCloser := vfs.WithDiskHealthChecks(vfs.Default, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		log.Warn("store: slow disk: " + info.String())
	})
	po := &pebble.Options{
		FS:    fs,
		Cache: cache,
		// Pipeline logs write several keys per packet: a larger memtable
		// means fewer, larger flushes and less compaction work.
		MemTableSize:  32 << 20,
		Logger:        pebbleLogger{log},
		EventListener: eventListener(log),
	}
	if existed {
		po.ErrorIfNotExists = true
	} else {
		po.FormatMajorVersion = pebble.FormatNewest
	}
	pdb, err := pebble.Open(path, po)
	if err != nil {
		fsCloser.Close()
		return nil, nil, err
	}
	return pdb, fsCloser, nil
}

// hasManifest tells whether a Pebble database was created at path: Pebble
// writes its first manifest, then the marker that names it, before
// anything else, and always keeps both.
func hasManifest(path string) bool {
	for _, pattern := range []string{"MANIFEST-*", "marker.manifest.*"} {
		if m, _ := filepath.Glob(filepath.Join(path, pattern)); len(m) > 0 {
			return true
		}
	}
	return false
}

// Dir returns the data directory, as passed to Open.
func (d *DB) Dir() string { return d.dir }

// Flush writes the memtable to disk. Writes are durable without it (they
// are in the synced write-ahead log); it only shortens the next Open.
func (d *DB) Flush() error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	if err := d.pdb.Flush(); err != nil {
		return d.opErr("flush", err)
	}
	return nil
}

// Close waits for the operations in progress, flushes and closes the
// database, and releases the directory, which another Open may then take.
// Operations that start once Close has begun return ErrClosed. Close is
// idempotent: later calls wait for the first to finish and return nil. It
// must not be called from the function passed to Batch or Scan, which
// would wait for itself.
func (d *DB) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		<-d.done
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	defer close(d.done)

	d.mu.Lock()
	failed := d.failed
	d.mu.Unlock()
	if failed != nil {
		// The engine may hold its own locks forever: do not wait for it.
		d.lock.release()
		return fmt.Errorf("store: close %s: %w", d.path, failed)
	}
	d.ops.Wait()
	err := d.pdb.Flush()
	err = errors.Join(err, d.pdb.Close(), d.fsCloser.Close())
	d.lock.release()
	if err != nil {
		return fmt.Errorf("store: close %s: %w", d.path, err)
	}
	return nil
}

// enter registers an operation, which must call d.ops.Done when it ends,
// or returns ErrClosed.
func (d *DB) enter() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if d.failed != nil {
		return d.failed
	}
	d.ops.Add(1)
	return nil
}

// write runs a write of about n bytes: it checks the free space first, and
// turns a fatal engine error during the write (Pebble stops when it cannot
// write its log) into an error wrapping ErrFailed, after which the DB
// refuses every operation. Writes acknowledged before stay durable.
func (d *DB) write(op string, n int, fn func() error) (err error) {
	if err := d.space.check(n); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s %s: %v", ErrFailed, op, d.path, r)
			d.mu.Lock()
			d.failed = err
			d.mu.Unlock()
		}
	}()
	if err := fn(); err != nil {
		return d.opErr(op, err)
	}
	return nil
}
