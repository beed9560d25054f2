package files

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/chacha20"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// scratchPrefix begins the names of the scratch directories, in the blob
// store's directory (the store lists only the names of blobs); Start
// removes those a crash left.
const scratchPrefix = ".scratch-"

// scratch is a directory of temporary files for archives, restores and
// rebuilt shards: the content of a file passes through them (compressed,
// cut into shards, joined again), so their bytes are encrypted like the
// store's, with XChaCha20 under a key that exists only in memory and a
// random nonce per file. A file is written once, from its start, and
// read any number of times. The files are not authenticated: what is
// read back is checked all the same, a shard against its id and a
// restored file against the file's id, when it is imported.
type scratch struct {
	dir string
	key [chacha20.KeySize]byte

	mu     sync.Mutex
	nonces map[string][]byte
}

// newScratch makes a scratch directory in parent.
func newScratch(parent string) (*scratch, error) {
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(parent, scratchPrefix)
	if err != nil {
		return nil, err
	}
	sc := &scratch{dir: dir, nonces: map[string][]byte{}}
	rand.Read(sc.key[:])
	return sc, nil
}

// removeScratch removes the scratch directories left in parent.
func removeScratch(parent string) {
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), scratchPrefix) {
			os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// remove deletes the directory and its files.
func (sc *scratch) remove() { os.RemoveAll(sc.dir) }

// scratchFile is a scratch file being written.
type scratchFile struct {
	f *os.File
	w cipher.StreamWriter
	n int64
}

func (w *scratchFile) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n += int64(n)
	return n, err
}

// Sync flushes the file to the disk.
func (w *scratchFile) Sync() error { return w.f.Sync() }

// Close closes the file.
func (w *scratchFile) Close() error { return w.f.Close() }

// create creates the file name, which must not have been created before.
func (sc *scratch) create(name string) (*scratchFile, error) {
	nonce := make([]byte, chacha20.NonceSizeX)
	rand.Read(nonce)
	sc.mu.Lock()
	_, dup := sc.nonces[name]
	if !dup {
		sc.nonces[name] = nonce
	}
	sc.mu.Unlock()
	if dup {
		return nil, fmt.Errorf("files: scratch file %s written twice", name)
	}
	c, err := chacha20.NewUnauthenticatedCipher(sc.key[:], nonce)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(sc.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return &scratchFile{f: f, w: cipher.StreamWriter{S: c, W: f}}, nil
}

// scratchReader reads a scratch file.
type scratchReader struct {
	f     *os.File
	c     *chacha20.Cipher
	key   []byte
	nonce []byte
	off   int64
}

// open opens the file name for reading.
func (sc *scratch) open(name string) (*scratchReader, error) {
	sc.mu.Lock()
	nonce := sc.nonces[name]
	sc.mu.Unlock()
	if nonce == nil {
		return nil, fmt.Errorf("files: scratch file %s: %w", name, os.ErrNotExist)
	}
	f, err := os.Open(filepath.Join(sc.dir, name))
	if err != nil {
		return nil, err
	}
	r := &scratchReader{f: f, key: sc.key[:], nonce: nonce}
	if err := r.at(0); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// at sets the key stream to offset off.
func (r *scratchReader) at(off int64) error {
	c, err := chacha20.NewUnauthenticatedCipher(r.key, r.nonce)
	if err != nil {
		return err
	}
	c.SetCounter(uint32(off / 64))
	if skip := off % 64; skip > 0 {
		var b [64]byte
		c.XORKeyStream(b[:skip], b[:skip])
	}
	r.c, r.off = c, off
	return nil
}

func (r *scratchReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	r.c.XORKeyStream(p[:n], p[:n])
	r.off += int64(n)
	return n, err
}

// Seek sets the offset of the next Read (from the start only).
func (r *scratchReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekStart || off < 0 || off/64 > 1<<32-1 {
		return r.off, errors.New("files: a scratch file seeks from its start, within 256 GiB")
	}
	if _, err := r.f.Seek(off, io.SeekStart); err != nil {
		return r.off, err
	}
	return off, r.at(off)
}

// Close closes the file.
func (r *scratchReader) Close() error { return r.f.Close() }

// size returns the length of the file name.
func (sc *scratch) size(name string) (int64, error) {
	fi, err := os.Stat(filepath.Join(sc.dir, name))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// importScratch imports the scratch file name into the blob store with
// nonce, and removes it.
func (s *Service) importScratch(ctx context.Context, sc *scratch, name string, nonce [16]byte) (*blob.Manifest, error) {
	n, err := sc.size(name)
	if err != nil {
		return nil, err
	}
	r, err := sc.open(name)
	if err != nil {
		return nil, err
	}
	defer func() { r.Close(); os.Remove(filepath.Join(sc.dir, name)) }()
	return s.blobs.Import(ctx, r, n, 0, nil, blob.WithNonce(nonce))
}

// newScratch makes a scratch directory for work on file id, among the
// blob store's files (on the same disk).
func (s *Service) newScratch(what string, id ids.Content) (*scratch, error) {
	sc, err := newScratch(s.blobs.Dir())
	if err != nil {
		return nil, fmt.Errorf("files: %s %s: %w", what, id.Short(), err)
	}
	return sc, nil
}
