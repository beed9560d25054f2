//go:build linux

package netlab

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

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
