package store

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// errBatchDone is returned by a Batch used after its function returned.
var errBatchDone = errors.New("store: batch used after its function returned")

// Get returns a copy of the value stored under key, or ErrNotFound.
func (d *DB) Get(key []byte) ([]byte, error) {
	if err := d.enter(); err != nil {
		return nil, err
	}
	defer d.ops.Done()
	v, closer, err := d.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, d.opErr("get", err)
	}
	defer closer.Close()
	return append([]byte{}, v...), nil
}

// Set stores value under key. The write is synced: it is durable when Set
// returns nil.
func (d *DB) Set(key, value []byte) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	return d.write("set", len(key)+len(value), func() error { return d.pdb.Set(key, value, pebble.Sync) })
}

// Delete removes key, synced. Deleting an absent key is not an error.
func (d *DB) Delete(key []byte) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	return d.write("delete", len(key), func() error { return d.pdb.Delete(key, pebble.Sync) })
}

// Batch collects writes to apply atomically. It is valid only during the
// function passed to DB.Batch and is not safe for concurrent use.
type Batch struct {
	b    *pebble.Batch
	done bool
}

// Set adds the write of value under key to the batch.
func (b *Batch) Set(key, value []byte) error {
	if b.done {
		return errBatchDone
	}
	if err := b.b.Set(key, value, nil); err != nil {
		return fmt.Errorf("store: batch set: %w", err)
	}
	return nil
}

// Delete adds the removal of key to the batch.
func (b *Batch) Delete(key []byte) error {
	if b.done {
		return errBatchDone
	}
	if err := b.b.Delete(key, nil); err != nil {
		return fmt.Errorf("store: batch delete: %w", err)
	}
	return nil
}

// DeletePrefix adds the removal of every key that starts with prefix to
// the batch (one range tombstone; the space is reclaimed by compaction).
func (b *Batch) DeletePrefix(prefix []byte) error {
	if b.done {
		return errBatchDone
	}
	if err := b.b.DeleteRange(prefix, PrefixEnd(prefix), nil); err != nil {
		return fmt.Errorf("store: batch delete range: %w", err)
	}
	return nil
}

// Batch calls fn and then applies the writes it added to b atomically and
// synced. If fn returns an error (which Batch returns as is) or panics,
// none of them is applied. Reads in fn do not see the batch's writes; fn
// may use the DB's other methods but Close.
func (d *DB) Batch(fn func(b *Batch) error) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	b := &Batch{b: d.pdb.NewBatch()}
	defer func() {
		b.done = true
		b.b.Close()
	}()
	if err := fn(b); err != nil {
		return err
	}
	if b.b.Empty() {
		return nil
	}
	return d.write("write", len(b.b.Repr()), func() error { return b.b.Commit(pebble.Sync) })
}

// GetMany calls fn(i, value) for each keys[i] that is present, in order,
// with one iterator: much cheaper than one Get per key when the keys are
// sorted and near each other. keys must be in ascending order. The value
// is valid only during the call. An error from fn stops and is returned.
func (d *DB) GetMany(keys [][]byte, fn func(i int, value []byte) error) error {
	if len(keys) == 0 {
		return nil
	}
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	it, err := d.pdb.NewIter(&pebble.IterOptions{LowerBound: keys[0], UpperBound: append(append([]byte{}, keys[len(keys)-1]...), 0)})
	if err != nil {
		return d.opErr("get", err)
	}
	for i, k := range keys {
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return d.opErr("get", err)
		}
		if err := fn(i, v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return d.opErr("get", err)
	}
	return nil
}

// Range calls fn for every key k with lower <= k < upper, in key order
// (nil upper: no upper bound), under the same rules as Scan.
func (d *DB) Range(lower, upper []byte, fn func(key, value []byte) error) error {
	return d.iterate(lower, upper, false, fn)
}

// Last returns a copy of the greatest key with lower <= k < upper and its
// value, or ErrNotFound.
func (d *DB) Last(lower, upper []byte) (key, value []byte, err error) {
	err = d.iterate(lower, upper, true, func(k, v []byte) error {
		key, value = append([]byte{}, k...), append([]byte{}, v...)
		return nil
	})
	if err == nil && key == nil {
		err = ErrNotFound
	}
	return key, value, err
}

// Scan calls fn for every key that starts with prefix, in key order, with
// the key and its value; an empty prefix scans everything. The slices are
// valid only during the call: copy what you keep. fn sees the store as it
// was when Scan began, and may use the DB's other methods but Close. An
// error from fn stops the scan and is returned as is.
func (d *DB) Scan(prefix []byte, fn func(key, value []byte) error) error {
	return d.iterate(prefix, PrefixEnd(prefix), false, fn)
}

// iterate calls fn for the keys in [lower, upper), or for the last one only.
func (d *DB) iterate(lower, upper []byte, lastOnly bool, fn func(key, value []byte) error) error {
	if err := d.enter(); err != nil {
		return err
	}
	defer d.ops.Done()
	it, err := d.pdb.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return d.opErr("scan", err)
	}
	first, next := it.First, it.Next
	if lastOnly {
		first, next = it.Last, func() bool { return false }
	}
	for valid := first(); valid; valid = next() {
		v, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return d.opErr("scan", err)
		}
		if err := fn(it.Key(), v); err != nil {
			it.Close()
			return err
		}
	}
	if err := it.Close(); err != nil {
		return d.opErr("scan", err)
	}
	return nil
}
