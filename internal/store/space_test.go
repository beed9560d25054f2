package store

import (
	"errors"
	"fmt"
	"testing"
)

func TestDiskFullRefusesWritesAndLosesNothing(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, Options{MinFreeBytes: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var avail uint64 = 1 << 20
	db.space.free = func(string) (uint64, error) { return avail, nil }
	if err := db.Set([]byte("a"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	avail = 500 // below the reserve
	db.space.checked = db.space.checked.AddDate(-1, 0, 0)
	err = db.Batch(func(b *Batch) error {
		for i := range 10 {
			if err := b.Set(fmt.Appendf(nil, "b%d", i), []byte("x")); err != nil {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("batch on a full disk: %v", err)
	}
	if err := db.Set([]byte("c"), []byte("2")); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("set on a full disk: %v", err)
	}
	n := 0
	db.Scan(nil, func(k, v []byte) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d keys after refused writes, want 1", n)
	}
	avail = 1 << 20 // space freed: writes work again
	if err := db.Set([]byte("c"), []byte("2")); err != nil {
		t.Fatalf("set after space was freed: %v", err)
	}
}

func TestRangeAndLast(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 10 {
		if err := db.Set(Key('r', []byte{byte(i)}), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	err = db.Range(Key('r', []byte{3}), Key('r', []byte{6}), func(k, v []byte) error {
		got = append(got, v[0])
		return nil
	})
	if err != nil || string(got) != "\x03\x04\x05" {
		t.Fatalf("Range: %v %v", got, err)
	}
	k, v, err := db.Last(Key('r'), PrefixEnd(Key('r')))
	if err != nil || k[1] != 9 || v[0] != 9 {
		t.Fatalf("Last: %v %v %v", k, v, err)
	}
	if _, _, err := db.Last(Key('s'), PrefixEnd(Key('s'))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Last of nothing: %v", err)
	}
}
