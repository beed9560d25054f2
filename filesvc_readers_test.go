package pipes_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pipesnet/pipes"
	"github.com/pipesnet/pipes/internal/files"
	"github.com/pipesnet/pipes/internal/testnet"
)

// TestFileReaders: access control with real nodes of three identities. A
// (identity X) adds a file holding a plaintext marker for readers Y; C
// (identity Z) fetches it and holds it blind: it can serve it but not
// open it, and neither its data directory nor the chunks it serves hold
// the marker. With A gone, B (identity Y) fetches it from C and reads it
// exactly. A reader whose key is not known fails the add, storing
// nothing.
func TestFileReaders(t *testing.T) {
	ms := cluster(t, "freaders", 3, nil)
	c, a, b := ms[0], ms[1], ms[2] // c is the gateway: a can leave without splitting the others
	ctx := context.Background()
	x, y, z := a.N.Identity().ID(), b.N.Identity().ID(), c.N.Identity().ID()
	if x == y || y == z || x == z {
		t.Fatal("the members share an identity")
	}
	marker := []byte("PLAINTEXT-MARKER-of-a-restricted-file")
	data := content(3*testChunk+4321, 21)
	for off := 0; off+len(marker) < len(data); off += 40000 {
		copy(data[off:], marker)
	}

	// Unknown reader: a clear error, nothing stored.
	if _, err := a.N.Files().AddReader(ctx, "x", bytes.NewReader(data), pipes.WithReaders(pipes.IdentityID{9, 9})); !errors.Is(err, pipes.ErrNotFound) {
		t.Fatalf("Add for an unknown reader: %v", err)
	}
	if l := a.N.Files().List(); len(l) != 0 {
		t.Fatalf("a failed add left %d files", len(l))
	}

	// Y's read key reaches A as B publishes it.
	var id pipes.FileID
	testnet.Eventually(t, 30*time.Second, "A learns Y's read key", func() error {
		var err error
		id, err = a.N.Files().AddReader(ctx, "secret.bin", bytes.NewReader(data), pipes.WithReaders(y))
		if err != nil && !errors.Is(err, pipes.ErrNotFound) {
			t.Fatal(err)
		}
		return err
	})
	st, err := a.N.Files().Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "secret.bin" || !st.Readable || len(st.Readers) != 2 || st.Readers[0] != x || st.Readers[1] != y {
		t.Fatalf("Stat on the writer: %+v", st)
	}

	// C holds it blind.
	waitHolders(t, c.N, id, a)
	// Stat asked of the holder: the readers, not the name.
	st, err = c.N.Files().Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "" || st.Readable || st.Local || len(st.Readers) != 2 || st.Readers[0] != x || st.Readers[1] != y {
		t.Fatalf("Stat of a holder's file on a non-reader: %+v", st)
	}
	if err := c.N.Files().Fetch(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.N.Files().Open(id); !errors.Is(err, pipes.ErrNoSecret) {
		t.Fatalf("Open on a holder that is not a reader: %v", err)
	}
	st, err = c.N.Files().Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "" || st.Readable || !st.Local || len(st.Readers) != 2 || st.Readers[1] != y {
		t.Fatalf("Stat on the blind holder: %+v", st)
	}

	// A leaves; B gets it from C alone and reads it.
	waitHolders(t, b.N, id, c, a)
	if st, err := b.N.Files().Stat(ctx, id); err != nil || st.Name != "secret.bin" || !st.Readable || st.Local {
		t.Fatalf("Stat of a holder's file on a reader: %+v, %v", st, err)
	}
	if err := a.N.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// C serves its first chunk only once B opened the file (which waits
	// for the header while the fetch runs) and started a read far in.
	var mu sync.Mutex
	var served [][]byte
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	pipes.FileService(c.N).SetHooks(files.Hooks{
		ServeChunk: func(int) {
			once.Do(func() { close(entered) })
			select {
			case <-release:
			case <-time.After(30 * time.Second):
			}
		},
		Served: func(_ int, d []byte) {
			mu.Lock()
			served = append(served, bytes.Clone(d))
			mu.Unlock()
		},
	})
	fetched := make(chan error, 1)
	go func() { fetched <- b.N.Files().Fetch(ctx, id, nil) }()
	<-entered
	type opened struct {
		part []byte
		err  error
	}
	const at, span = 2*testChunk + 777, 5000
	read := make(chan opened, 1)
	go func() {
		r, err := b.N.Files().Open(id)
		if err != nil {
			read <- opened{nil, err}
			return
		}
		defer r.Close()
		if _, err := r.Seek(at, io.SeekStart); err != nil {
			read <- opened{nil, err}
			return
		}
		part := make([]byte, span)
		_, err = io.ReadFull(r, part)
		read <- opened{part, err}
	}()
	close(release)
	if got := <-read; got.err != nil || !bytes.Equal(got.part, data[at:at+span]) {
		t.Fatalf("a read during the fetch: %v", got.err)
	}
	if err := <-fetched; err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, b.N, id); !bytes.Equal(got, data) {
		t.Fatalf("the reader reads %d other bytes", len(got))
	}
	if st, err := b.N.Files().Stat(ctx, id); err != nil || st.Name != "secret.bin" || !st.Readable {
		t.Fatalf("Stat on the reader: %+v, %v", st, err)
	}

	// Nothing of C's has the marker: what it served, and its files.
	mu.Lock()
	n := len(served)
	for i, d := range served {
		if bytes.Contains(d, marker) {
			t.Errorf("chunk %d served by the blind holder holds the marker", i)
		}
	}
	mu.Unlock()
	if n == 0 {
		t.Fatal("the blind holder served nothing")
	}
	files := 0
	err = filepath.WalkDir(c.Dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, marker) || bytes.Contains(b, []byte("secret.bin")) {
			t.Errorf("%s on the blind holder holds the marker or the name", path)
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("walking the holder's directory: %d files, %v", files, err)
	}
}
