package store

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cockroachdb/pebble/v2"
)

// corruptError reports a damaged database. It wraps both ErrCorrupt and
// Pebble's error.
type corruptError struct {
	op   string // "" for Open
	dir  string
	path string
	err  error
}

func (e *corruptError) Error() string {
	if e.op == "" {
		return fmt.Sprintf("store: the store at %s is corrupted: restore %s from a backup, or move it away to start with an empty store: %v",
			e.dir, e.path, e.err)
	}
	return fmt.Sprintf("store: %s: the store at %s is corrupted: %v", e.op, e.dir, e.err)
}

func (e *corruptError) Unwrap() []error { return []error{ErrCorrupt, e.err} }

// isOpenCorruption tells whether err, from opening a Pebble database that
// existed or not, means the database is damaged: Pebble says so, or the
// database existed but a file it needs (its manifest, the marker naming
// the manifest, a table) is missing.
func isOpenCorruption(existed bool, err error) bool {
	if pebble.IsCorruptionError(err) {
		return true
	}
	return existed && (errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, pebble.ErrDBDoesNotExist) ||
		errors.Is(err, pebble.ErrDBNotPristine))
}

// opErr wraps an error of operation op, as a corruptError if Pebble found
// the database damaged.
func (d *DB) opErr(op string, err error) error {
	if pebble.IsCorruptionError(err) {
		return &corruptError{op: op, dir: d.dir, path: d.path, err: err}
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
