package store

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipesnet/pipes/internal/testutil"
)

// filled returns a closed store with 100 keys, flushed to a table.
func filled(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustSet(t, db, []byte(fmt.Sprint(i)), bytes.Repeat([]byte{'v'}, 100))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// damage applies fn to every file of the database matching pattern.
func damage(t *testing.T, dir, pattern string, fn func(path string) error) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "db", pattern))
	if len(files) == 0 {
		t.Fatalf("no %s in the database", pattern)
	}
	for _, f := range files {
		if err := fn(f); err != nil {
			t.Fatal(err)
		}
	}
}

func overwrite(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for i := range b {
		b[i] ^= 0x5a
	}
	return os.WriteFile(path, b, 0o600)
}

// TestCorruptStoreOnOpen damages the manifest (Pebble v2 keeps no CURRENT
// file: marker.manifest.* names the manifest) in several ways.
func TestCorruptStoreOnOpen(t *testing.T) {
	for _, c := range []struct {
		name, pattern string
		fn            func(string) error
	}{
		{"overwritten MANIFEST", "MANIFEST-*", overwrite},
		{"truncated MANIFEST", "MANIFEST-*", func(p string) error { return os.Truncate(p, 0) }},
		{"missing MANIFEST", "MANIFEST-*", os.Remove},
		{"missing manifest marker", "marker.manifest.*", os.Remove},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filled(t)
			damage(t, dir, c.pattern, c.fn)
			for range 2 { // the failed Open released the lock
				_, err := Open(dir, Options{})
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open: %v", err)
				}
				if msg := err.Error(); !strings.Contains(msg, "the store at "+dir+" is corrupted") {
					t.Fatalf("unclear error: %v", err)
				}
				t.Logf("%v", err)
			}
		})
	}
}

// TestCorruptTable damages a table, which Pebble finds only when it reads
// it: the read fails with ErrCorrupt, and the process goes on.
func TestCorruptTable(t *testing.T) {
	dir := filled(t)
	damage(t, dir, "*.sst", overwrite)
	var logged syncBuffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	db, err := Open(dir, Options{Logger: log})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer db.Close()
	if _, err := db.Get([]byte("7")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get: %v", err)
	}
	err = db.Scan(nil, func(k, v []byte) error { return nil })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Scan: %v", err)
	}
	if !strings.Contains(logged.String(), "on-disk corruption") {
		t.Fatalf("corruption not logged:\n%s", logged.String())
	}
}

// syncBuffer is an output sink safe to read while another goroutine writes it.
type syncBuffer = testutil.Buffer
