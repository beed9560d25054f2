// Package atomicfile writes files so that a crash leaves either the old
// content or the new one, never a mix: the data goes to a temporary file in
// the same directory, is synced, gets its mode, and is then renamed (or
// linked, to refuse replacing) into place.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with data, with mode perm.
func Write(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Rename)
}

// Create writes data to path with mode perm, failing with an error that
// wraps fs.ErrExist if path exists.
func Create(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Link)
}

// WriteFrom replaces path with what r yields until EOF, with mode perm,
// streaming it (for content too large to hold in memory). An error from r
// leaves path as it was.
func WriteFrom(path string, r io.Reader, perm os.FileMode) error {
	return place(path, perm, os.Rename, func(f *os.File) error {
		_, err := io.Copy(f, r)
		return err
	})
}

func write(path string, data []byte, perm os.FileMode, how func(tmp, path string) error) error {
	return place(path, perm, how, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

func place(path string, perm os.FileMode, place func(tmp, path string) error, fill func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	err = f.Chmod(perm)
	if err == nil {
		err = fill(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = place(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
