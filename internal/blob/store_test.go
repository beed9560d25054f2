package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var testKey = [32]byte{1, 2, 3}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, testKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// randomData returns n deterministic pseudo-random bytes.
func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// The test transform: XOR with 0x5a in place, then a trailer of
// testOverhead bytes holding the index.
const testOverhead = 16

func xorTransform(i int, c []byte) []byte {
	for j := range c {
		c[j] ^= 0x5a
	}
	var trailer [testOverhead]byte
	trailer[0], trailer[1] = byte(i), byte(i>>8)
	return append(c, trailer[:]...)
}

// untransform inverts xorTransform on the stored content.
func untransform(t *testing.T, m *Manifest, stored []byte) []byte {
	t.Helper()
	var out []byte
	for i := range m.Chunks {
		c := stored[i*m.ChunkSize : i*m.ChunkSize+m.ChunkLen(i)]
		body, trailer := c[:len(c)-testOverhead], c[len(c)-testOverhead:]
		if int(trailer[0])|int(trailer[1])<<8 != i {
			t.Fatalf("chunk %d has the trailer of %d", i, trailer[0])
		}
		for _, b := range body {
			out = append(out, b^0x5a)
		}
	}
	return out
}

func readAll(t *testing.T, s *Store, root [32]byte) []byte {
	t.Helper()
	r := s.Reader(t.Context(), root)
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// files returns the names of the files in dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestImportReadBack(t *testing.T) {
	s := openStore(t, t.TempDir())
	cs := DefaultChunkSize
	for _, size := range []int{0, 1, cs, cs + 1, 5<<20 + 123} {
		for _, tr := range []bool{false, true} {
			data := randomData(size, uint64(size))
			overhead, transform := 0, (func(int, []byte) []byte)(nil)
			if tr {
				overhead, transform = testOverhead, xorTransform
			}
			m, err := s.Import(t.Context(), bytes.NewReader(data), int64(size), overhead, transform)
			if err != nil {
				t.Fatalf("size %d, transform %v: %v", size, tr, err)
			}
			n := int(ceilDiv(int64(size), cs-overhead))
			if m.ChunkSize != cs || len(m.Chunks) != n || m.Size != int64(size+n*overhead) {
				t.Fatalf("size %d, transform %v: manifest %d bytes, %d chunks of %d", size, tr, m.Size, len(m.Chunks), m.ChunkSize)
			}
			root := m.Root()
			if !s.Has(root) || !s.Complete(root) {
				t.Fatalf("size %d: imported blob not complete", size)
			}
			if missing, err := s.Missing(root); err != nil || len(missing) != 0 {
				t.Fatalf("Missing = %v, %v", missing, err)
			}
			if got, err := s.Manifest(root); err != nil || !bytes.Equal(got.Marshal(), m.Marshal()) {
				t.Fatalf("Manifest: %v", err)
			}
			stored := readAll(t, s, root)
			if int64(len(stored)) != m.Size {
				t.Fatalf("read %d bytes, manifest says %d", len(stored), m.Size)
			}
			for i := range m.Chunks {
				c, err := s.ReadChunk(root, i)
				if err != nil || !bytes.Equal(c, stored[i*cs:i*cs+m.ChunkLen(i)]) {
					t.Fatalf("chunk %d: %v", i, err)
				}
			}
			if tr {
				stored = untransform(t, m, stored)
			}
			if !bytes.Equal(stored, data) {
				t.Fatalf("size %d, transform %v: content differs", size, tr)
			}
		}
	}
	roots, err := s.List()
	if err != nil || len(roots) != 10 {
		t.Fatalf("List: %d roots, %v", len(roots), err)
	}
}

func TestImportFile(t *testing.T) {
	s := openStore(t, t.TempDir())
	data := randomData(3*DefaultChunkSize+7, 1)
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := s.ImportFile(t.Context(), path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, m.Root()); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if _, err := s.ImportFile(t.Context(), filepath.Join(path, "nope"), 0, nil); err == nil {
		t.Fatal("imported a missing file")
	}
}

func TestImportAborted(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randomData(4*DefaultChunkSize, 2)

	ctx, cancel := context.WithCancel(t.Context())
	r := &cancelAfter{r: bytes.NewReader(data), n: DefaultChunkSize, cancel: cancel}
	if _, err := s.Import(ctx, r, int64(len(data)), 0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled import: %v", err)
	}
	if _, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data))+1, 0, nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short input: %v", err)
	}
	bad := func(i int, c []byte) []byte { return c }
	if _, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), 4, bad); err == nil {
		t.Fatal("transform of the wrong length accepted")
	}
	if _, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), 4, nil); err == nil {
		t.Fatal("overhead without transform accepted")
	}
	if _, err := s.Import(t.Context(), bytes.NewReader(data), MaxSize+1, 0, nil); err == nil {
		t.Fatal("size over MaxSize accepted")
	}
	if names := files(t, dir); len(names) != 0 {
		t.Fatalf("files left behind: %v", names)
	}

	// A temporary file left by a crash is removed by Open.
	if err := os.WriteFile(filepath.Join(dir, tmpPrefix+"crash"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("import after Close: %v", err)
	}
	openStore(t, dir)
	if names := files(t, dir); len(names) != 0 {
		t.Fatalf("files left behind: %v", names)
	}
}

// cancelAfter cancels a context once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	if c.n -= k; c.n <= 0 {
		c.cancel()
	}
	return k, err
}

// source imports size random bytes in a store of its own and returns its
// manifest and the chunks.
func source(t *testing.T, size int) (*Manifest, [][]byte, []byte) {
	t.Helper()
	src := openStore(t, t.TempDir())
	data := randomData(size, uint64(size))
	m, err := src.Import(t.Context(), bytes.NewReader(data), int64(size), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	chunks := make([][]byte, len(m.Chunks))
	for i := range chunks {
		if chunks[i], err = src.ReadChunk(m.Root(), i); err != nil {
			t.Fatal(err)
		}
	}
	return m, chunks, data
}

func TestReceive(t *testing.T) {
	m, chunks, data := source(t, 9*DefaultChunkSize+1234)
	root := m.Root()
	s := openStore(t, t.TempDir())
	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(m); err != nil {
		t.Fatalf("second Add: %v", err)
	}
	missing, err := s.Missing(root)
	if err != nil || len(missing) != len(chunks) || s.Complete(root) {
		t.Fatalf("Missing after Add = %v, %v", missing, err)
	}
	if _, err := s.ReadChunk(root, 0); !errors.Is(err, ErrMissing) {
		t.Fatalf("ReadChunk of an absent chunk: %v", err)
	}

	// The reader starts before any chunk is there; chunk 0 comes last.
	got := make(chan []byte, 1)
	go func() {
		r := s.Reader(t.Context(), root)
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	waited := make(chan error, 1)
	go func() { waited <- s.Wait(t.Context(), root, 5) }()
	order := rand.Perm(len(chunks) - 1)
	for k := range order {
		order[k]++
	}
	order = append(order, 0)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for _, i := range order {
			if err := s.WriteChunk(root, i, chunks[i]); err != nil {
				t.Error(err)
			}
		}
	}()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatal("received content differs")
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	<-written
	if !s.Complete(root) {
		t.Fatal("not complete")
	}
	if err := s.WriteChunk(root, 3, chunks[3]); err != nil {
		t.Fatalf("rewriting a present chunk: %v", err)
	}
	if err := s.Add(m); err != nil || !s.Complete(root) {
		t.Fatalf("Add of a complete blob: %v", err)
	}
}

func TestBadChunkRefused(t *testing.T) {
	m, chunks, _ := source(t, 2*DefaultChunkSize+10)
	root := m.Root()
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, files(t, dir)[0])
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(chunks[1])
	flipped[100] ^= 1
	for name, err := range map[string]error{
		"flipped":      s.WriteChunk(root, 1, flipped),
		"short":        s.WriteChunk(root, 1, chunks[1][1:]),
		"long":         s.WriteChunk(root, 2, append(bytes.Clone(chunks[2]), 0)),
		"other chunk":  s.WriteChunk(root, 0, chunks[1]),
		"out of range": s.WriteChunk(root, 3, chunks[2]),
		"negative":     s.WriteChunk(root, -1, chunks[2]),
	} {
		if !errors.Is(err, ErrChunkMismatch) {
			t.Errorf("%s: %v, want ErrChunkMismatch", name, err)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("a refused chunk changed the blob's file")
	}
	if missing, _ := s.Missing(root); len(missing) != 3 {
		t.Fatalf("Missing = %v", missing)
	}
	if err := s.WriteChunk([32]byte{9}, 0, chunks[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown blob: %v", err)
	}
	bad := m.clone()
	bad.Chunks = bad.Chunks[1:]
	if err := s.Add(bad); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("Add of a bad manifest: %v", err)
	}
}

func TestRestart(t *testing.T) {
	m, chunks, data := source(t, 6*DefaultChunkSize-1)
	root := m.Root()
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2, 3} {
		if err := s.WriteChunk(root, i, chunks[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Missing(root); !errors.Is(err, ErrClosed) {
		t.Fatalf("Missing after Close: %v", err)
	}
	if _, err := s.List(); !errors.Is(err, ErrClosed) {
		t.Fatalf("List after Close: %v", err)
	}

	s = openStore(t, dir)
	roots, err := s.List()
	if err != nil || len(roots) != 1 || roots[0] != root {
		t.Fatalf("List = %x, %v", roots, err)
	}
	if c, err := s.ReadChunk(root, 2); err != nil || !bytes.Equal(c, chunks[2]) {
		t.Fatalf("ReadChunk after restart: %v", err)
	}
	if missing, err := s.Missing(root); err != nil || !slices.Equal(missing, []int{1, 4, 5}) {
		t.Fatalf("Missing after restart = %v, %v", missing, err)
	}
	if _, err := s.ReadChunk(root, 4); !errors.Is(err, ErrMissing) {
		t.Fatalf("ReadChunk of a missing chunk: %v", err)
	}
	for _, i := range []int{5, 1, 4} {
		if err := s.WriteChunk(root, i, chunks[i]); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Complete(root) || !bytes.Equal(readAll(t, s, root), data) {
		t.Fatal("content differs after restart")
	}
	if err := s.Remove(root); err != nil {
		t.Fatal(err)
	}
	if s.Has(root) || len(files(t, dir)) != 0 {
		t.Fatal("removed blob still there")
	}
	if err := s.Remove(root); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestNoPlaintextAtRest(t *testing.T) {
	marker := []byte("PIPES-BLOB-PLAINTEXT-MARKER-0123456789")
	data := bytes.Repeat(marker, (3*DefaultChunkSize)/len(marker))
	xored := xorTransform(0, bytes.Clone(marker))[:len(marker)]
	dir := t.TempDir()
	s := openStore(t, filepath.Join(dir, "a"))
	m, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), testOverhead, xorTransform); err != nil {
		t.Fatal(err)
	}
	r := openStore(t, filepath.Join(dir, "b"))
	if err := r.Add(m); err != nil {
		t.Fatal(err)
	}
	for i := range m.Chunks {
		c, err := s.ReadChunk(m.Root(), i)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.WriteChunk(m.Root(), i, c); err != nil {
			t.Fatal(err)
		}
	}
	root := m.Root()
	patterns := map[string][]byte{"plaintext": marker, "transformed": xored, "chunk hash": m.Chunks[0][:],
		"manifest": m.Marshal()[:manifestHeader]}
	n := 0
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for name, p := range patterns {
			if bytes.Contains(b, p) {
				t.Errorf("%s found in %s", name, path)
			}
		}
		if bytes.Contains(b, root[:]) {
			t.Errorf("root found in %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("scanned %d files, want 3", n)
	}
	fi, err := os.Stat(filepath.Join(dir, "a"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store directory mode %v, %v", fi.Mode(), err)
	}
}
