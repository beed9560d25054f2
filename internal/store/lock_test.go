package store

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecondOpenInProcess(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("error does not name the directory: %v", err)
	}
	// Another name of the same directory is the same directory.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Skip(err)
	}
	for _, name := range []string{link, dir + "/.", filepath.Join(dir, "db", "..")} {
		if _, err := Open(name, Options{}); !errors.Is(err, ErrLocked) {
			t.Fatalf("Open(%s): %v", name, err)
		}
	}
	db.Close()
	open(t, link).Close()
	open(t, dir)
}

// TestLockIsPerOpenFile checks the operating-system lock alone, without the
// process-wide set: a second open file of the same lock in the same process
// fails to lock it.
func TestLockIsPerOpenFile(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	key := db.lock.key
	openDirs.Lock()
	delete(openDirs.m, key)
	openDirs.Unlock()
	t.Cleanup(func() {
		openDirs.Lock()
		openDirs.m[key] = struct{}{} // for release
		openDirs.Unlock()
	})

	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tryLock(f); !errors.Is(err, errHeld) {
		t.Fatalf("second lock in the same process: %v", err)
	}
	_, err = Open(dir, Options{})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open past the process-wide set: %v", err)
	}
	if want := fmt.Sprintf("by this process (pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("error does not name the holder: %v", err)
	}
}

const childEnv = "PIPES_STORE_TEST_CHILD_DIR"

// TestSecondOpenOtherProcess runs this test binary as a child that tries
// to open a directory this process holds, then once it is released.
func TestSecondOpenOtherProcess(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	db := open(t, dir)
	mustSet(t, db, []byte("k"), []byte("from parent"))
	if out := openInChild(t, dir); !strings.Contains(out, "RESULT locked") ||
		!strings.Contains(out, fmt.Sprintf("by pid %d", os.Getpid())) {
		t.Fatalf("child, directory locked:\n%s", out)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if out := openInChild(t, dir); !strings.Contains(out, "RESULT opened from parent") {
		t.Fatalf("child, directory released:\n%s", out)
	}
	open(t, dir) // the child released it too
}

func openInChild(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	return string(out)
}

// TestHelperProcess is the child of TestSecondOpenOtherProcess.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("helper for TestSecondOpenOtherProcess")
	}
	db, err := Open(dir, Options{})
	switch {
	case errors.Is(err, ErrLocked):
		fmt.Println("RESULT locked:", err)
	case err != nil:
		fmt.Println("RESULT error:", err)
	default:
		v, err := db.Get([]byte("k"))
		db.Close()
		fmt.Printf("RESULT opened %s %v\n", v, err)
	}
}
