package store

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrDiskFull is wrapped by the error of a write refused because the file
// system holding the store has less free space than Options.MinFreeBytes.
// Nothing of the refused write is stored; writes succeed again once space
// is freed.
var ErrDiskFull = errors.New("store: not enough free disk space")

// ErrFailed is wrapped by every error of a DB whose database engine met a
// write error it cannot recover from (the write-ahead log could not be
// written). What earlier writes made durable stays durable. The engine's
// state is then unknown: Close releases the directory without flushing,
// and the process must be restarted before the directory is opened again
// (the engine keeps its own lock on it). A write that was inside the
// engine at the moment of the failure may never return.
var ErrFailed = errors.New("store: database failed; close and reopen it")

// defaultMinFree is the free space a write needs when Options.MinFreeBytes
// is 0. Pebble cannot survive running out of space in the middle of a
// write-ahead log record, so writes stop well before that.
const defaultMinFree = 64 << 20

// spaceCheckEvery bounds how stale the free-space figure may be.
const spaceCheckEvery = 100 * time.Millisecond

// spaceGuard refuses writes when the disk is nearly full. It asks the file
// system at most every spaceCheckEvery, and whenever more than a tenth of
// the reserve has been written since the last look.
type spaceGuard struct {
	dir     string
	min     uint64
	free    func(dir string) (uint64, error)
	mu      sync.Mutex
	checked time.Time
	avail   uint64
	written uint64
}

// check returns an error wrapping ErrDiskFull if a write of n bytes would
// leave less than the reserve free.
func (g *spaceGuard) check(n int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.min == 0 || g.free == nil {
		return nil
	}
	g.written += uint64(n)
	if time.Since(g.checked) > spaceCheckEvery || g.written > g.min/10 {
		avail, err := g.free(g.dir)
		if err != nil {
			return nil // cannot tell: let the write try
		}
		g.avail, g.checked, g.written = avail, time.Now(), uint64(n)
	}
	if g.avail < g.min+g.written {
		// Look again next time: space may have been freed.
		g.checked = time.Time{}
		return fmt.Errorf("%w: %d bytes free in %s, %d kept in reserve", ErrDiskFull, g.avail, g.dir, g.min)
	}
	return nil
}

// SetMinFreeBytes changes the reserve (see Options.MinFreeBytes; 0 or
// negative turns the check off).
func (d *DB) SetMinFreeBytes(n int64) {
	d.space.mu.Lock()
	defer d.space.mu.Unlock()
	d.space.min = uint64(max(n, 0))
	d.space.checked = time.Time{}
}
