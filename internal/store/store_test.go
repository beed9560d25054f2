package store

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens dir and closes it at the end of the test.
func open(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustSet(t *testing.T, db *DB, k, v []byte) {
	t.Helper()
	if err := db.Set(k, v); err != nil {
		t.Fatal(err)
	}
}

// scanAll returns "key=value" pairs of prefix, comma-separated.
func scanAll(t *testing.T, db *DB, prefix []byte) string {
	t.Helper()
	var kv []string
	err := db.Scan(prefix, func(k, v []byte) error {
		kv = append(kv, fmt.Sprintf("%x=%s", k, v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(kv, ",")
}

func TestSetGetDelete(t *testing.T) {
	db := open(t, t.TempDir())
	if _, err := db.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent key: %v", err)
	}
	mustSet(t, db, []byte("k"), []byte("v1"))
	mustSet(t, db, []byte("k"), []byte("v2"))
	v, err := db.Get([]byte("k"))
	if err != nil || string(v) != "v2" {
		t.Fatalf("get: %q %v", v, err)
	}
	v[0] = 'X' // a copy: changing it changes nothing stored
	if v, _ := db.Get([]byte("k")); string(v) != "v2" {
		t.Fatalf("get returned shared memory: %q", v)
	}
	mustSet(t, db, []byte("empty"), nil)
	if v, err := db.Get([]byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %v %v", v, err)
	}
	if err := db.Delete([]byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	if err := db.Delete([]byte("never")); err != nil {
		t.Fatalf("delete absent key: %v", err)
	}
}

func TestScan(t *testing.T) {
	db := open(t, t.TempDir())
	for _, id := range []byte{3, 1, 2} {
		mustSet(t, db, Key('a', []byte{id}, []byte{0xff}), []byte{'0' + id})
	}
	mustSet(t, db, Key('a'-1, []byte{9}), []byte("before"))
	mustSet(t, db, Key('a'+1, []byte{0}), []byte("after"))
	if got := scanAll(t, db, []byte{'a'}); got != "6101ff=1,6102ff=2,6103ff=3" {
		t.Fatalf("scan a: %s", got)
	}
	if got := scanAll(t, db, Key('a', []byte{2})); got != "6102ff=2" {
		t.Fatalf("scan a/2: %s", got)
	}
	if got := scanAll(t, db, []byte{'z'}); got != "" {
		t.Fatalf("scan of an empty table: %s", got)
	}
	if got := scanAll(t, db, nil); got != "6009=before,6101ff=1,6102ff=2,6103ff=3,6200=after" {
		t.Fatalf("scan all: %s", got)
	}
	stop := errors.New("stop")
	n := 0
	err := db.Scan([]byte{'a'}, func(k, v []byte) error {
		n++
		return stop
	})
	if err != stop || n != 1 {
		t.Fatalf("fn error: %v after %d keys", err, n)
	}
}

// TestScanCallsBack checks that fn may use the DB, and sees the store as
// it was when Scan began.
func TestScanCallsBack(t *testing.T) {
	db := open(t, t.TempDir())
	for i := range 3 {
		mustSet(t, db, Key('a', []byte{byte(i)}), []byte("old"))
	}
	err := db.Scan([]byte{'a'}, func(k, v []byte) error {
		if string(v) != "old" {
			return fmt.Errorf("saw %s", v)
		}
		if _, err := db.Get(k); err != nil {
			return err
		}
		return db.Set(Key('a', []byte{k[1] + 1}), []byte("new"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, db, []byte{'a'}); got != "6100=old,6101=new,6102=new,6103=new" {
		t.Fatalf("after scan: %s", got)
	}
}

func TestBatch(t *testing.T) {
	db := open(t, t.TempDir())
	mustSet(t, db, []byte("a"), []byte("1"))
	var kept *Batch
	err := db.Batch(func(b *Batch) error {
		kept = b
		if err := b.Delete([]byte("a")); err != nil {
			return err
		}
		if err := b.Set([]byte("b"), []byte("2")); err != nil {
			return err
		}
		// Reads in fn do not see the batch.
		if v, err := db.Get([]byte("a")); err != nil || string(v) != "1" {
			return fmt.Errorf("read in batch: %q %v", v, err)
		}
		return b.Set([]byte("c"), []byte("3"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := scanAll(t, db, nil); got != "62=2,63=3" {
		t.Fatalf("after batch: %s", got)
	}
	if err := kept.Set([]byte("d"), nil); err == nil {
		t.Fatal("batch usable after its function returned")
	}

	abort := errors.New("abort")
	err = db.Batch(func(b *Batch) error {
		b.Set([]byte("x"), []byte("no"))
		b.Delete([]byte("b"))
		return abort
	})
	if err != abort {
		t.Fatalf("aborted batch: %v", err)
	}
	func() {
		defer func() { recover() }()
		db.Batch(func(b *Batch) error {
			b.Set([]byte("y"), []byte("no"))
			panic("boom")
		})
	}()
	if got := scanAll(t, db, nil); got != "62=2,63=3" {
		t.Fatalf("aborted batches wrote: %s", got)
	}
	if err := db.Batch(func(*Batch) error { return nil }); err != nil {
		t.Fatalf("empty batch: %v", err)
	}
}

func TestPersistAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	if db.Dir() != dir {
		t.Fatalf("Dir() = %s, want %s", db.Dir(), dir)
	}
	for i := range 100 {
		mustSet(t, db, Key('n', []byte{byte(i)}), bytes.Repeat([]byte{byte(i)}, 100))
	}
	db.Delete(Key('n', []byte{0}))
	db.Batch(func(b *Batch) error { return b.Set(Key('m'), []byte("batch")) })
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir)
	n := 0
	db.Scan([]byte{'n'}, func(k, v []byte) error {
		n++
		if !bytes.Equal(v, bytes.Repeat(k[1:], 100)) {
			t.Errorf("value of %x", k)
		}
		return nil
	})
	if n != 99 {
		t.Fatalf("%d keys after reopen, want 99", n)
	}
	if v, err := db.Get(Key('m')); err != nil || string(v) != "batch" {
		t.Fatalf("batch after reopen: %q %v", v, err)
	}
	// And without Close's flush: the WAL alone keeps synced writes.
	mustSet(t, db, Key('w'), []byte("wal"))
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestClosed(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	mustSet(t, db, []byte("k"), []byte("v"))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Get":    func() error { _, err := db.Get([]byte("k")); return err }(),
		"Set":    db.Set([]byte("k"), nil),
		"Delete": db.Delete([]byte("k")),
		"Batch":  db.Batch(func(*Batch) error { t.Error("fn called"); return nil }),
		"Scan":   db.Scan(nil, func(k, v []byte) error { t.Error("fn called"); return nil }),
		"Flush":  db.Flush(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	// The directory can be opened again.
	db2 := open(t, dir)
	if v, err := db2.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("reopen: %q %v", v, err)
	}
	if _, err := db.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("old handle after reopen: %v", err)
	}
}

func TestKey(t *testing.T) {
	if got := Key(7, []byte{1, 2}, nil, []byte{3}); !bytes.Equal(got, []byte{7, 1, 2, 3}) {
		t.Fatalf("Key: %v", got)
	}
	if got := Key(7); !bytes.Equal(got, []byte{7}) {
		t.Fatalf("Key without parts: %v", got)
	}
	for _, c := range []struct{ in, want []byte }{
		{[]byte{1, 2}, []byte{1, 3}},
		{[]byte{1, 0xff}, []byte{2}},
		{[]byte{1, 0xff, 0xff}, []byte{2}},
		{[]byte{0xff, 0xff}, nil},
		{nil, nil},
	} {
		in := bytes.Clone(c.in)
		if got := PrefixEnd(in); !bytes.Equal(got, c.want) || (c.want == nil) != (got == nil) {
			t.Errorf("PrefixEnd(%v) = %v, want %v", c.in, got, c.want)
		}
		if !bytes.Equal(in, c.in) {
			t.Errorf("PrefixEnd modified its argument: %v", in)
		}
	}
}
