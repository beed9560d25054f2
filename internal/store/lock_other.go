//go:build !unix && !windows

package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// On platforms with neither flock nor LockFileEx the lock is a marker file,
// LOCK.pipes.held, created with O_EXCL and removed on release. This is
// weaker than an operating-system lock: if the process dies without
// closing the store, the marker stays and the directory reads as locked
// until someone removes it by hand (the ErrLocked error says so).
//
// (Pebble v2.1.7 itself builds only on Unix and Windows; this file keeps
// the package's own code portable.)

func heldPath(f *os.File) string { return f.Name() + ".held" }

// tryLock creates the marker of f's directory, or returns errHeld.
func tryLock(f *os.File) error {
	h, err := os.OpenFile(heldPath(f), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return errHeld
	}
	if err != nil {
		return fmt.Errorf("create lock marker: %w", err)
	}
	return h.Close()
}

// unlock removes the marker.
func unlock(f *os.File) error { return os.Remove(heldPath(f)) }

// staleHint tells how to clear a marker left by a process that died.
func staleHint(lockPath string) string {
	return fmt.Sprintf(" (if no process has it open, one died holding it: remove %s.held)", lockPath)
}
