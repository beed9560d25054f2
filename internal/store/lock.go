package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// lockName is the lock file inside a data directory. The lock is an
// operating-system lock on the open file (see tryLock); the file's content,
// the holder's pid, is only for diagnostics. The file is never removed:
// removing a locked file would let a second opener lock a new file of the
// same name.
const lockName = "LOCK.pipes"

// errHeld is returned by tryLock when another open file holds the lock.
var errHeld = errors.New("lock held")

// openDirs is the process-wide set of directories a DB has open, keyed by
// canonical path. It is a second guard beside the operating-system lock,
// which already fails for a second open file in the same process.
var openDirs = struct {
	sync.Mutex
	m map[string]struct{}
}{m: map[string]struct{}{}}

// dirLock is a held directory lock.
type dirLock struct {
	key string // canonical directory
	f   *os.File
}

// lockDir takes the lock of dir, which must exist.
func lockDir(dir string) (*dirLock, error) {
	key, err := canonical(dir)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	openDirs.Lock()
	defer openDirs.Unlock()
	if _, ok := openDirs.m[key]; ok {
		return nil, fmt.Errorf("%w: %s is already open in this process", ErrLocked, key)
	}
	path := filepath.Join(key, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", dir, err)
	}
	if err := tryLock(f); err != nil {
		holder := holderOf(f)
		f.Close()
		if errors.Is(err, errHeld) {
			return nil, fmt.Errorf("%w: %s is in use%s%s", ErrLocked, key, holder, staleHint(path))
		}
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	// The pid is for diagnostics only: failing to write it is no reason
	// not to open.
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	openDirs.m[key] = struct{}{}
	return &dirLock{key: key, f: f}, nil
}

// release clears the pid, unlocks and closes the lock file, and only then
// drops the directory from openDirs, so that an Open that finds it absent
// also finds the file unlocked.
func (l *dirLock) release() {
	_ = l.f.Truncate(0)
	_ = unlock(l.f)
	_ = l.f.Close() // closing alone releases the lock
	openDirs.Lock()
	delete(openDirs.m, l.key)
	openDirs.Unlock()
}

// canonical returns dir as a clean absolute path with symlinks resolved, so
// that two names of one directory are one key.
func canonical(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}

// holderOf describes the holder of the lock from the pid in its file.
func holderOf(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	switch {
	case err != nil:
		return ""
	case pid == os.Getpid():
		return fmt.Sprintf(" by this process (pid %d)", pid)
	default:
		return fmt.Sprintf(" by pid %d", pid)
	}
}
