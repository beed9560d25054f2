//go:build linux

package netlab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

const platformOK = true

// doIn runs f on an OS thread that has entered the named namespace, then
// takes the thread back to the namespace it came from.
func doIn(ns string, f func() error) error {
	target, err := os.Open(filepath.Join("/var/run/netns", ns))
	if err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netlab: setns %s: %w", ns, err)
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the lab's namespace: keep it locked so
		// that it ends with this goroutine instead of serving others.
		return fmt.Errorf("netlab: setns back: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// lockPrefix takes an exclusive lock on the prefix's lock file, waiting
// while another process holds it (until ctx ends): two runs of the same
// test on one machine then take turns instead of removing each other's
// namespaces. Closing the file releases it.
func lockPrefix(ctx context.Context, prefix string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "netlab-"+prefix+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("netlab: lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if err != unix.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("netlab: lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("netlab: lab %q is in use by another process: %w", prefix, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
