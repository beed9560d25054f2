//go:build windows

package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// The lock covers one byte far past the end of the file, so that the pid
// at its start stays readable by the process that fails to lock it.
const lockOffsetHigh = 1 // offset 4 GiB

// tryLock takes a non-blocking exclusive LockFileEx lock on f, or returns
// errHeld. Like flock, it belongs to the file handle, so a second handle
// fails to lock even in the same process, and Windows releases it when the
// process ends.
func tryLock(f *os.File) error {
	ol := &windows.Overlapped{OffsetHigh: lockOffsetHigh}
	err := windows.LockFileEx(windows.Handle(f.Fd()),
		windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, windows.ERROR_LOCK_VIOLATION):
		return errHeld
	default:
		return fmt.Errorf("LockFileEx: %w", err)
	}
}

// unlock releases the lock of f.
func unlock(f *os.File) error {
	ol := &windows.Overlapped{OffsetHigh: lockOffsetHigh}
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, ol)
}

// staleHint adds nothing: the lock cannot outlive its process.
func staleHint(string) string { return "" }
