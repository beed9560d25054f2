package files

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// A scratch file reads back what was written, from any offset, and its
// bytes on the disk are not the plaintext's.
func TestScratch(t *testing.T) {
	parent := t.TempDir()
	sc, err := newScratch(parent)
	if err != nil {
		t.Fatal(err)
	}
	p := bytes.Repeat([]byte("a plaintext marker "), 10_000)
	w, err := sc.create("f")
	if err != nil {
		t.Fatal(err)
	}
	for b := p; len(b) > 0; {
		n := min(len(b), 1+rand.IntN(5000))
		if _, err := w.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	if w.n != int64(len(p)) || w.Close() != nil {
		t.Fatalf("wrote %d bytes", w.n)
	}
	if _, err := sc.create("f"); err == nil {
		t.Fatal("a scratch file was created twice")
	}
	raw, err := os.ReadFile(filepath.Join(sc.dir, "f"))
	if err != nil || len(raw) != len(p) || bytes.Contains(raw, []byte("marker")) {
		t.Fatalf("on disk: %d bytes, %v, plaintext there: %v", len(raw), err, bytes.Contains(raw, []byte("marker")))
	}
	r, err := sc.open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, off := range []int64{0, 1, 63, 64, 65, 4096 + 17, int64(len(p)) - 1, int64(len(p))} {
		if _, err := r.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, p[off:]) {
			t.Fatalf("from %d: %d bytes, %v", off, len(got), err)
		}
	}
	if _, err := sc.open("g"); err == nil {
		t.Fatal("opened a scratch file never written")
	}
	removeScratch(parent)
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("left %d entries", len(ents))
	}
}
