//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tryLock takes a non-blocking exclusive flock(2) on f, or returns errHeld.
// A flock lock belongs to the open file description, so a second open of
// the same file fails to lock it even in the same process, and it vanishes
// when the process dies: a crashed platform never leaves its directory
// locked. (Go opens files close-on-exec, so child processes do not inherit
// it.)
func tryLock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return errHeld
		default:
			return fmt.Errorf("flock: %w", err)
		}
	}
}

// unlock releases the lock of f.
func unlock(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// staleHint adds nothing: a flock lock cannot outlive its process.
func staleHint(string) string { return "" }
