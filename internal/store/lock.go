package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// lockFile is the lock file inside a data directory.
const lockFile = "LOCK.pipes"

// openDirs guards against a second Open in this process even where the
// operating-system lock would not (it is per open file on Unix, so it
// would, but the set also gives a clear error cheaply).
var openDirs struct {
	sync.Mutex
	m map[string]bool
}

type dirLock struct {
	key  string
	f    *os.File
	once sync.Once
}

func lockDir(dir string) (*dirLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	}
	openDirs.Lock()
	defer openDirs.Unlock()
	if openDirs.m == nil {
		openDirs.m = map[string]bool{}
	}
	if openDirs.m[abs] {
		return nil, fmt.Errorf("%w: %s is open in this process", ErrLocked, abs)
	}
	f, err := os.OpenFile(filepath.Join(abs, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock: %w", err)
	}
	if err := lockFileExclusive(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %s (held by another process: %v)", ErrLocked, abs, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	openDirs.m[abs] = true
	return &dirLock{key: abs, f: f}, nil
}

func (l *dirLock) release() {
	l.once.Do(func() {
		unlockFile(l.f)
		l.f.Close()
		openDirs.Lock()
		delete(openDirs.m, l.key)
		openDirs.Unlock()
	})
}
