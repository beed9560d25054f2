package blob

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// flip flips one byte of the file at off.
func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x80
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptedSlotReadsAsMissing(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	data := randomData(3*DefaultChunkSize+50, 3)
	m, err := s.Import(t.Context(), bytes.NewReader(data), int64(len(data)), 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	root := m.Root()
	path := filepath.Join(dir, files(t, dir)[0])
	slot := func(i int) int64 { return dataOffset(len(m.Chunks)) + int64(i)*int64(m.ChunkSize+tagSize) }

	// Damaged while the store is open (the chunk is known present).
	flip(t, path, slot(2)+100)
	if _, err := s.ReadChunk(root, 2); !errors.Is(err, ErrMissing) {
		t.Fatalf("damaged chunk read: %v", err)
	}
	if missing, _ := s.Missing(root); !slices.Equal(missing, []int{2}) {
		t.Fatalf("Missing = %v", missing)
	}

	// Damaged while the store is closed.
	s.Close()
	flip(t, path, slot(1)+int64(m.ChunkSize+tagSize-1)) // the tag
	s = openStore(t, dir)
	if _, err := s.ReadChunk(root, 1); !errors.Is(err, ErrMissing) {
		t.Fatalf("damaged chunk read after restart: %v", err)
	}
	if missing, _ := s.Missing(root); !slices.Equal(missing, []int{1, 2}) {
		t.Fatalf("Missing = %v", missing)
	}
	if s.Complete(root) {
		t.Fatal("complete with damaged chunks")
	}
	cs := m.ChunkSize
	for _, i := range []int{1, 2} {
		if err := s.WriteChunk(root, i, data[i*cs:(i+1)*cs]); err != nil {
			t.Fatal(err)
		}
	}
	if !s.Complete(root) || !bytes.Equal(readAll(t, s, root), data) {
		t.Fatal("repaired blob differs")
	}

	// A damaged header: the blob does not open.
	s.Close()
	flip(t, path, 30)
	s = openStore(t, dir)
	if s.Has(root) {
		t.Fatal("blob with a damaged header opens")
	}
	if _, err := s.Manifest(root); !errors.Is(err, ErrBadManifest) {
		t.Fatalf("Manifest of a damaged blob: %v", err)
	}
}

func TestWaitEnds(t *testing.T) {
	m, chunks, _ := source(t, 2*DefaultChunkSize)
	root := m.Root()
	s := openStore(t, t.TempDir())
	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(t.Context(), root, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Wait for chunk out of range: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Wait(ctx, root, 0) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with ctx cancelled: %v", err)
	}

	// Closing a Reader ends its Read.
	r := s.Reader(t.Context(), root)
	go func() {
		_, err := io.ReadAll(r)
		done <- err
	}()
	r.Close()
	if err := <-done; err == nil {
		t.Fatal("Read of a closed reader succeeded")
	}

	go func() { done <- s.Wait(t.Context(), root, 1) }()
	if err := s.Remove(root); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrNotFound) {
		t.Fatalf("Wait when removed: %v", err)
	}
	if err := s.WriteChunk(root, 0, chunks[0]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("WriteChunk after Remove: %v", err)
	}

	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.Wait(t.Context(), root, 1) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait when closed: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	m, chunks, data := source(t, 8*DefaultChunkSize+3)
	root := m.Root()
	s := openStore(t, t.TempDir())
	other, err := s.Import(t.Context(), bytes.NewReader(data[:1000]), 1000, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(m); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			r := s.Reader(t.Context(), root)
			defer r.Close()
			if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, data) {
				t.Errorf("reader: %v", err)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for _, i := range rand.Perm(len(chunks)) {
				if err := s.WriteChunk(root, i, chunks[i]); err != nil {
					t.Error(err)
				}
				if _, err := s.Missing(root); err != nil {
					t.Error(err)
				}
				if _, err := s.ReadChunk(root, i); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() {
		if err := s.Add(m); err != nil {
			t.Error(err)
		}
		if err := s.Remove(other.Root()); err != nil {
			t.Error(err)
		}
		if _, err := s.List(); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if !s.Complete(root) {
		t.Fatal("not complete")
	}
}

// generator produces size bytes of a repeating pseudo-random pattern
// without holding them, calling check every 16 MiB.
type generator struct {
	pattern []byte
	off     int64
	size    int64
	check   func()
}

func (g *generator) Read(p []byte) (int, error) {
	if g.off == g.size {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.size-g.off)]
	for k := 0; k < len(p); {
		k += copy(p[k:], g.pattern[(g.off+int64(k))%int64(len(g.pattern)):])
	}
	if g.off/(16<<20) != (g.off+int64(len(p)))/(16<<20) {
		g.check()
	}
	g.off += int64(len(p))
	return len(p), nil
}

func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func TestLargeImportMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("256 MiB import")
	}
	const size = 256 << 20
	const limit = 16 << 20
	s := openStore(t, t.TempDir())
	base := heapInUse()
	var peak uint64
	check := func() { peak = max(peak, heapInUse()) }
	pattern := randomData(65521, 4) // prime length: no two chunks alike
	m, err := s.Import(t.Context(), &generator{pattern: pattern, size: size, check: check}, size, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if peak == 0 || peak > base+limit {
		t.Fatalf("heap in use grew from %d to %d bytes during import", base, peak)
	}
	t.Logf("import: heap in use %d -> %d bytes at most", base, peak)

	base, peak = heapInUse(), 0
	want := &generator{pattern: pattern, size: size, check: check}
	r := s.Reader(t.Context(), m.Root())
	defer r.Close()
	got, exp := make([]byte, 64<<10), make([]byte, 64<<10)
	var n int64
	for {
		k, err := r.Read(got)
		if k > 0 {
			if _, err := io.ReadFull(want, exp[:k]); err != nil || !bytes.Equal(got[:k], exp[:k]) {
				t.Fatalf("content differs at %d", n)
			}
			n += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != size {
		t.Fatalf("read %d bytes", n)
	}
	if peak == 0 || peak > base+limit {
		t.Fatalf("heap in use grew from %d to %d bytes while reading", base, peak)
	}
	t.Logf("read: heap in use %d -> %d bytes at most", base, peak)
}
