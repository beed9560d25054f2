//go:build unix

package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockFileExclusive takes a non-blocking exclusive flock(2). flock locks
// belong to the open file description and vanish when the process dies, so
// a crashed daemon never leaves the directory locked.
func lockFileExclusive(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}

func unlockFile(f *os.File) { unix.Flock(int(f.Fd()), unix.LOCK_UN) }
