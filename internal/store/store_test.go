package store

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func open(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSetGetScanBatchPersist(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	if _, err := db.Get([]byte("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key: %v", err)
	}
	for i := range 5 {
		if err := db.Set(Key('a', []byte{byte(i)}), []byte{byte(10 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	db.Set(Key('b', []byte{0}), []byte("other table"))
	err := db.Batch(func(b *Batch) error {
		b.Delete(Key('a', []byte{0}))
		return b.Set(Key('a', []byte{9}), []byte{19})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Batch(func(b *Batch) error {
		b.Set(Key('a', []byte{7}), []byte{1})
		return errors.New("abort")
	}); err == nil {
		t.Fatal("aborted batch returned nil")
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := db.Get([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if err := db.Set([]byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("set after close: %v", err)
	}
	db = open(t, dir)
	var keys []string
	db.Scan([]byte{'a'}, func(k, v []byte) error {
		keys = append(keys, fmt.Sprintf("%d=%d", k[1], v[0]))
		return nil
	})
	if got := strings.Join(keys, ","); got != "1=11,2=12,3=13,4=14,9=19" {
		t.Fatalf("scan after reopen: %s", got)
	}
}

func TestPrefixEnd(t *testing.T) {
	if got := PrefixEnd([]byte{1, 0xff}); string(got) != string([]byte{2}) {
		t.Fatalf("PrefixEnd: %v", got)
	}
	if PrefixEnd([]byte{0xff, 0xff}) != nil {
		t.Fatal("PrefixEnd of all 0xff")
	}
}

func TestSecondOpenInProcessLocked(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	// The same directory through a symlink is the same directory.
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := Open(link, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("open via symlink: %v", err)
	}
	db.Close()
	open(t, dir)
}

func TestSecondOpenOtherProcessLocked(t *testing.T) {
	if os.Getenv("PIPES_STORE_CHILD") != "" {
		t.Skip("child")
	}
	dir := t.TempDir()
	db := open(t, dir)
	child := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), "PIPES_STORE_CHILD="+dir)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := child(); !strings.Contains(out, "RESULT locked") {
		t.Fatalf("child opened a locked store: %s", out)
	}
	db.Close()
	if out := child(); !strings.Contains(out, "RESULT opened") {
		t.Fatalf("child could not open a released store: %s", out)
	}
}

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("PIPES_STORE_CHILD")
	if dir == "" {
		t.Skip("helper for TestSecondOpenOtherProcessLocked")
	}
	db, err := Open(dir, Options{})
	switch {
	case errors.Is(err, ErrLocked):
		fmt.Println("RESULT locked")
	case err != nil:
		fmt.Println("RESULT error", err)
	default:
		db.Close()
		fmt.Println("RESULT opened")
	}
}

func TestCorruptStoreDetected(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	for i := range 100 {
		db.Set([]byte(fmt.Sprint(i)), make([]byte, 100))
	}
	db.Close()
	manifests, _ := filepath.Glob(filepath.Join(dir, "db", "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatal("no MANIFEST")
	}
	for _, m := range manifests {
		b, _ := os.ReadFile(m)
		for i := range b {
			b[i] ^= 0x5a
		}
		os.WriteFile(m, b, 0o600)
	}
	_, err := Open(dir, Options{})
	if err == nil {
		t.Fatal("corrupted store opened")
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, "db")) {
		t.Fatalf("error does not name the store: %v", err)
	}
	t.Logf("corruption reported as: %v", err)
}

func TestConcurrentUse(t *testing.T) {
	db := open(t, t.TempDir())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				k := []byte(fmt.Sprintf("%d-%d", g, i))
				if err := db.Set(k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := db.Get(k); err != nil || string(v) != string(k) {
					t.Errorf("get %s: %s %v", k, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
