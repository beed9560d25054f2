package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestConcurrentUse(t *testing.T) {
	db := open(t, t.TempDir())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				k := Key('c', []byte{byte(g)}, []byte(fmt.Sprint(i)))
				if err := db.Set(k, k); err != nil {
					t.Error(err)
					return
				}
				if v, err := db.Get(k); err != nil || string(v) != string(k) {
					t.Errorf("get %x: %x %v", k, v, err)
					return
				}
				if i%10 == 0 {
					err := db.Batch(func(b *Batch) error {
						return b.Delete(k)
					})
					if err != nil {
						t.Error(err)
						return
					}
					n := 0
					if err := db.Scan([]byte{'c', byte(g)}, func(k, v []byte) error { n++; return nil }); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	n := 0
	db.Scan([]byte{'c'}, func(k, v []byte) error { n++; return nil })
	if n != 8*45 {
		t.Fatalf("%d keys, want %d", n, 8*45)
	}
}

// TestCloseDuringUse closes the store under running operations: each
// either completes or returns ErrClosed, and concurrent Closes all wait.
func TestCloseDuringUse(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir)
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				k := []byte(fmt.Sprint(g, "-", i))
				var err error
				switch i % 4 {
				case 0:
					err = db.Set(k, k)
				case 1:
					_, err = db.Get(k)
					if errors.Is(err, ErrNotFound) {
						err = nil
					}
				case 2:
					err = db.Scan(nil, func(k, v []byte) error { return nil })
				case 3:
					err = db.Batch(func(b *Batch) error { return b.Set(k, k) })
				}
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	var closers sync.WaitGroup
	for range 3 {
		closers.Go(func() {
			if err := db.Close(); err != nil {
				t.Error(err)
			}
			// Every Close returns only once the directory is free.
			if _, err := db.Get(nil); !errors.Is(err, ErrClosed) {
				t.Errorf("get after close: %v", err)
			}
		})
	}
	closers.Wait()
	wg.Wait()
	open(t, dir)
}

// TestCallsInScanDuringClose checks that a Scan's function may still call
// the DB while Close waits for that Scan: the call fails with ErrClosed
// instead of deadlocking.
func TestCallsInScanDuringClose(t *testing.T) {
	db := open(t, t.TempDir())
	mustSet(t, db, []byte("k"), []byte("v"))
	closed := make(chan error, 1)
	err := db.Scan(nil, func(k, v []byte) error {
		go func() { closed <- db.Close() }()
		for deadline := time.Now().Add(10 * time.Second); ; {
			db.mu.Lock()
			c := db.closed
			db.mu.Unlock()
			if c {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("Close did not start")
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := db.Get(k); !errors.Is(err, ErrClosed) {
			return fmt.Errorf("get while closing: %v", err)
		}
		if err := db.Set(k, v); !errors.Is(err, ErrClosed) {
			return fmt.Errorf("set while closing: %v", err)
		}
		select {
		case err := <-closed:
			return fmt.Errorf("Close returned during a Scan: %v", err)
		default:
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not finish after the Scan")
	}
}
