package blob

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// With a fixed nonce the same content gives the same root, a second
// import succeeds, and it fills the chunks a received copy lacks; without
// one, two imports give two roots.
func TestImportWithNonce(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	data := randomData(3*DefaultChunkSize+100, 7)
	var zero [16]byte
	m1, err := s.Import(ctx, bytes.NewReader(data), int64(len(data)), 0, nil, WithNonce(zero))
	if err != nil {
		t.Fatal(err)
	}
	m2, err := s.Import(ctx, bytes.NewReader(data), int64(len(data)), 0, nil, WithNonce(zero))
	if err != nil {
		t.Fatalf("second import of the same content: %v", err)
	}
	if m1.Root() != m2.Root() || m1.Nonce != zero {
		t.Fatalf("roots %x and %x, nonce %x", m1.Root(), m2.Root(), m1.Nonce)
	}
	r1, err := s.Import(ctx, bytes.NewReader(data), int64(len(data)), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Root() == m1.Root() {
		t.Fatal("an import without a nonce has the fixed nonce's root")
	}

	// Another store receives the blob partly, then imports the content.
	other := openStore(t, t.TempDir())
	if err := other.Add(m1); err != nil {
		t.Fatal(err)
	}
	c, err := s.ReadChunk(m1.Root(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.WriteChunk(m1.Root(), 1, c); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Import(ctx, bytes.NewReader(data), int64(len(data)), 0, nil, WithNonce(zero)); err != nil {
		t.Fatal(err)
	}
	if !other.Complete(m1.Root()) || !bytes.Equal(readAll(t, other, m1.Root()), data) {
		t.Fatal("the import did not complete the received copy")
	}
	if n := len(files(t, other.dir)); n != 1 {
		t.Fatalf("%d files in the store, want the one blob", n)
	}
}

// A file that grows while it is imported fails the import and leaves
// nothing in the store.
func TestImportFileChanged(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "store"))
	path := filepath.Join(dir, "f")
	data := randomData(2*DefaultChunkSize, 3)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	grow := func(i int, c []byte) []byte {
		if i == 0 {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
			} else {
				f.Write([]byte("more"))
				f.Close()
			}
		}
		return c
	}
	_, err := s.ImportFile(context.Background(), path, 0, grow)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("import of a growing file: %v, want ErrChanged", err)
	}
	if n := len(files(t, s.dir)); n != 0 {
		t.Fatalf("%d files left in the store", n)
	}
}
