package blob

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
)

const (
	tagSize   = chacha20poly1305.Overhead
	nonceSize = chacha20poly1305.NonceSize
	keySize   = chacha20poly1305.KeySize
	tmpPrefix = "tmp-"
	slotAlign = 4096
)

// States of a chunk in memory.
const (
	unknown uint8 = iota // not checked since the blob was loaded
	absent
	present
)

var errExists = errors.New("blob: already exists")

// Store keeps blobs in a directory. It is safe for concurrent use.
type Store struct {
	dir  string
	key  [32]byte
	done chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	blobs  map[ids.Content]*blob // loaded blobs

	recent recentChunks // chunks just written or read, for the next reader
}

// Open opens the store in dir, creating dir (mode 0700) if needed, with
// key the store's at-rest key. It removes the temporary files of imports
// that a crash interrupted.
func Open(dir string, key [32]byte) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob: open: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: open: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("blob: open: %w", err)
			}
		}
	}
	return &Store{dir: dir, key: key, done: make(chan struct{}), blobs: map[ids.Content]*blob{}}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Close closes the store and its files. Operations in progress end with
// errors wrapping ErrClosed, and so does every later call. Chunks written
// are left to the operating system to flush (see the package comment).
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	blobs := s.blobs
	s.blobs = nil
	s.mu.Unlock()
	var first error
	for _, b := range blobs {
		if err := b.shutdown(ErrClosed); err != nil && first == nil {
			first = fmt.Errorf("blob: close: %w", err)
		}
	}
	return first
}

func (s *Store) path(root ids.Content) string {
	return filepath.Join(s.dir, hex.EncodeToString(root[:]))
}

// headerKey returns the AEAD that seals the header of the blob root.
func (s *Store) headerKey(root ids.Content) cipher.AEAD {
	aead, _ := chacha20poly1305.New(keys.Derive(s.key[:], root[:], keys.BlobKey, nil, keySize))
	return aead
}

// createTemp creates the temporary file of b, of the blob's full size
// (sparse, so its slots are zeros), and sets b.f.
func (s *Store) createTemp(b *blob) error {
	f, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	if err := f.Truncate(fileSize(b.m)); err != nil {
		discard(f)
		return err
	}
	b.f = f
	return nil
}

// writeHeader seals b's data key dk and manifest and writes them at the
// start of b's file. b.root is set.
func (s *Store) writeHeader(b *blob, dk [keySize]byte) error {
	pt := append(dk[:], b.m.Marshal()...)
	hdr := make([]byte, 4+nonceSize, 4+headerLen(len(b.m.Chunks)))
	if _, err := rand.Read(hdr[4:]); err != nil {
		return err
	}
	hdr = s.headerKey(b.root).Seal(hdr, hdr[4:], pt, b.root[:])
	binary.BigEndian.PutUint32(hdr, uint32(len(hdr)-4))
	_, err := b.f.WriteAt(hdr, 0)
	return err
}

// install syncs b's temporary file, renames it to the blob's name and
// registers b, or fails with errExists if the blob is in the store
// already (and then leaves the file to the caller).
func (s *Store) install(b *blob) error {
	if err := b.f.Sync(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.blobs[b.root]; ok {
		return errExists
	}
	p := s.path(b.root)
	if _, err := os.Lstat(p); err == nil {
		return errExists
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(b.f.Name(), p); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.blobs[b.root] = b
	return nil
}

// get returns the blob root, loading it if needed.
func (s *Store) get(root ids.Content) (*blob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if b, ok := s.blobs[root]; ok {
		return b, nil
	}
	b, err := s.load(root)
	if err != nil {
		return nil, err
	}
	s.blobs[root] = b
	return b, nil
}

// load opens the file of the blob root and its header.
func (s *Store) load(root ids.Content) (*blob, error) {
	f, err := os.OpenFile(s.path(root), os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob %x", ErrNotFound, root[:8])
	}
	if err != nil {
		return nil, fmt.Errorf("blob: load %x: %w", root[:8], err)
	}
	b, err := s.readHeader(f, root)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

func (s *Store) readHeader(f *os.File, root ids.Content) (*blob, error) {
	bad := func(why string) error { return fmt.Errorf("%w: blob %x: header %s", ErrBadManifest, root[:8], why) }
	var l [4]byte
	if _, err := f.ReadAt(l[:], 0); err != nil {
		return nil, bad("unreadable")
	}
	n := binary.BigEndian.Uint32(l[:])
	if n < uint32(headerLen(0)) || n > uint32(headerLen(MaxChunks)) {
		return nil, bad("length out of range")
	}
	hdr := make([]byte, n)
	if _, err := f.ReadAt(hdr, 4); err != nil {
		return nil, bad("unreadable")
	}
	pt, err := s.headerKey(root).Open(hdr[nonceSize:nonceSize], hdr[:nonceSize], hdr[nonceSize:], root[:])
	if err != nil {
		return nil, bad("does not open")
	}
	m, err := ParseManifest(pt[keySize:])
	if err != nil {
		return nil, err
	}
	if m.Root() != root {
		return nil, bad("is of another blob")
	}
	aead, _ := chacha20poly1305.New(pt[:keySize])
	return &blob{root: root, m: m, f: f, aead: aead, off: dataOffset(len(m.Chunks)),
		gone: make(chan struct{}), state: make([]uint8, len(m.Chunks)), changed: make(chan struct{})}, nil
}

// chunk returns the blob root and checks that i is one of its chunks.
func (s *Store) chunk(root ids.Content, i int) (*blob, error) {
	b, err := s.get(root)
	if err != nil {
		return nil, err
	}
	if i < 0 || i >= len(b.m.Chunks) {
		return nil, fmt.Errorf("%w: chunk %d of %x (%d chunks)", ErrNotFound, i, root[:8], len(b.m.Chunks))
	}
	return b, nil
}

// Import reads size bytes of content from r and stores them as a new blob,
// returning its manifest. It reads one chunk at a time and passes it to
// transform, if not nil, with its index; transform must return exactly
// len(chunk)+overhead bytes (overhead is 0 without a transform, and at
// most MaxOverhead), and may work in place: chunk has room for the
// overhead, and the result is used before the next call. The manifest
// describes the transformed content (see the package comment).
//
// The blob is written to a temporary file, renamed to its root at the end;
// an error, including ctx's end or the store's closing, removes it.
//
// The manifest's nonce is random unless an option fixes it (WithNonce).
// With a random nonce every import makes a new blob; with a fixed one the
// same content gives the same root, and importing content whose blob is
// in the store already succeeds: the chunks that blob lacks (a receive in
// progress) are filled from the import, and the manifest is returned.
func (s *Store) Import(ctx context.Context, r io.Reader, size int64, overhead int,
	transform func(index int, chunk []byte) []byte, opts ...ImportOption) (*Manifest, error) {
	var o importOptions
	for _, opt := range opts {
		opt(&o)
	}
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("blob: import: size %d out of range", size)
	}
	if overhead < 0 || overhead > MaxOverhead || (transform == nil && overhead != 0) {
		return nil, fmt.Errorf("blob: import: overhead %d", overhead)
	}
	cs, err := chunkSizeFor(size, overhead)
	if err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	in := cs - overhead // input bytes per chunk
	n := int(ceilDiv(size, in))
	m := &Manifest{Size: size + int64(n)*int64(overhead), ChunkSize: cs, Chunks: make([][32]byte, n)}
	if m.Size > MaxSize {
		return nil, fmt.Errorf("blob: import: %d bytes with overhead is too large", m.Size)
	}
	if o.nonce != nil {
		m.Nonce = *o.nonce
	} else if _, err := rand.Read(m.Nonce[:]); err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	// The chunk hashes, hence the root, are known only at the end: write
	// the slots first, the header last.
	b, dk, err := newBlob(m, present)
	if err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	if err := s.createTemp(b); err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			discard(b.f)
		}
	}()
	if err := s.importChunks(ctx, b, r, size, in, overhead, transform); err != nil {
		return nil, err
	}
	b.root = m.Root()
	if err := s.writeHeader(b, dk); err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	if err := s.install(b); err != nil {
		if errors.Is(err, errExists) && o.nonce != nil { // the same content again
			if err := s.fill(b); err != nil {
				return nil, fmt.Errorf("blob: import: %w", err)
			}
			return m.clone(), nil
		}
		if errors.Is(err, errExists) { // the same root: a collision of random nonces
			err = fmt.Errorf("blob %x is in the store already", b.root[:8])
		}
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	ok = true
	return m.clone(), nil
}

// ImportFile imports the file at path as Import does. The file must be a
// regular file; if its size changes while it is imported, the import
// fails and stores nothing.
func (s *Store) ImportFile(ctx context.Context, path string, overhead int,
	transform func(index int, chunk []byte) []byte, opts ...ImportOption) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("blob: import: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("blob: import: %s is not a regular file", path)
	}
	m, err := s.Import(ctx, &sizeCheck{f: f, size: fi.Size()}, fi.Size(), overhead, transform, opts...)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Add registers the blob of manifest m, to be received: it creates the
// blob's file with the manifest and empty slots. Adding a blob that is in
// the store already does nothing. A malformed manifest is refused with an
// error wrapping ErrBadManifest.
func (s *Store) Add(m *Manifest) error {
	if err := m.validate(); err != nil {
		return err
	}
	m = m.clone()
	root := m.Root()
	if _, err := s.get(root); !errors.Is(err, ErrNotFound) {
		return err
	}
	b, dk, err := newBlob(m, absent)
	if err != nil {
		return fmt.Errorf("blob: add: %w", err)
	}
	b.root = root
	if err := s.createTemp(b); err != nil {
		return fmt.Errorf("blob: add: %w", err)
	}
	err = s.writeHeader(b, dk)
	if err == nil {
		err = s.install(b)
	}
	if err != nil {
		discard(b.f)
		if errors.Is(err, errExists) { // added concurrently
			return nil
		}
		return fmt.Errorf("blob: add: %w", err)
	}
	return nil
}

// Has reports whether the blob root is in the store (and its file opens).
func (s *Store) Has(root ids.Content) bool {
	_, err := s.get(root)
	return err == nil
}

// Manifest returns the manifest of the blob root.
func (s *Store) Manifest(root ids.Content) (*Manifest, error) {
	b, err := s.get(root)
	if err != nil {
		return nil, err
	}
	return b.m.clone(), nil
}

// Missing returns the indexes of the chunks of the blob root that are not
// present, in ascending order (none if the blob is complete).
func (s *Store) Missing(root ids.Content) ([]int, error) {
	b, err := s.get(root)
	if err != nil {
		return nil, err
	}
	var out []int
	for i := range b.m.Chunks {
		ok, err := b.isPresent(i)
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, i)
		}
	}
	return out, nil
}

// Complete reports whether every chunk of the blob root is present.
func (s *Store) Complete(root ids.Content) bool {
	missing, err := s.Missing(root)
	return err == nil && len(missing) == 0
}

// WriteChunk stores chunk i of the blob root and wakes those waiting for
// it. Data that is not the chunk the manifest lists (length or BLAKE3
// hash) is refused with an error wrapping ErrChunkMismatch, and nothing is
// written. Writing a chunk that is present does nothing. The write is not
// synced: after a crash the chunk may read as missing, never as wrong.
// The store may keep data (for the next ReadChunk): the caller must not
// modify it afterwards.
func (s *Store) WriteChunk(root ids.Content, i int, data []byte) error {
	b, err := s.get(root)
	if err != nil {
		return err
	}
	if i < 0 || i >= len(b.m.Chunks) {
		return fmt.Errorf("%w: no chunk %d in %x (%d chunks)", ErrChunkMismatch, i, root[:8], len(b.m.Chunks))
	}
	if len(data) != b.m.ChunkLen(i) {
		return fmt.Errorf("%w: chunk %d of %x has %d bytes, not %d", ErrChunkMismatch, i, root[:8], len(data), b.m.ChunkLen(i))
	}
	if blake3.Sum256(data) != b.m.Chunks[i] {
		return fmt.Errorf("%w: chunk %d of %x: hash differs", ErrChunkMismatch, i, root[:8])
	}
	b.mu.Lock()
	st := b.state[i]
	b.mu.Unlock()
	if st == present {
		return nil
	}
	// An unknown slot may hold the chunk already: writing it again writes
	// the same bytes.
	if err := b.write(i, data); err != nil {
		return err
	}
	s.recent.put(root, i, data)
	return nil
}

// ReadChunk returns chunk i of the blob root, decrypted and checked
// against the manifest, or an error wrapping ErrMissing if it is not
// present (or its slot is damaged, which then counts as missing).
func (s *Store) ReadChunk(root ids.Content, i int) ([]byte, error) {
	b, err := s.chunk(root, i)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	st := b.state[i]
	b.mu.Unlock()
	if st == absent {
		return nil, fmt.Errorf("%w: chunk %d of %x", ErrMissing, i, root[:8])
	}
	if st == present {
		if c := s.recent.get(root, i); c != nil {
			return c, nil
		}
	}
	c, err := b.read(i)
	if err != nil {
		return nil, err
	}
	s.recent.put(root, i, bytes.Clone(c))
	return c, nil
}

// Wait blocks until chunk i of the blob root is present. It returns ctx's
// error if ctx ends first, an error wrapping ErrClosed if the store
// closes, or one wrapping ErrNotFound if the blob is removed.
func (s *Store) Wait(ctx context.Context, root ids.Content, i int) error {
	b, err := s.chunk(root, i)
	if err != nil {
		return err
	}
	for {
		b.mu.Lock()
		changed := b.changed
		b.mu.Unlock()
		ok, err := b.isPresent(i)
		if ok || err != nil {
			return err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("blob: wait for chunk %d of %x: %w", i, root[:8], ctx.Err())
		case <-s.done:
			return fmt.Errorf("%w: waiting for chunk %d of %x", ErrClosed, i, root[:8])
		case <-b.gone:
			return fmt.Errorf("%w: blob %x removed", ErrNotFound, root[:8])
		}
	}
}

// Remove deletes the blob root. Those waiting for its chunks get an error
// wrapping ErrNotFound, and so does every later use of it.
func (s *Store) Remove(root ids.Content) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	b := s.blobs[root]
	delete(s.blobs, root)
	err := os.Remove(s.path(root))
	s.mu.Unlock()
	s.recent.forget(root)
	if b != nil {
		b.shutdown(ErrNotFound)
		close(b.gone)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist) && b == nil:
		return fmt.Errorf("%w: blob %x", ErrNotFound, root[:8])
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("blob: remove %x: %w", root[:8], err)
	}
	return nil
}

// List returns the roots of all the blobs in the store, complete or not
// (to resume receiving those that are not after a restart).
func (s *Store) List() ([]ids.Content, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("blob: list: %w", err)
	}
	var out []ids.Content
	for _, e := range ents {
		var root ids.Content
		if n, err := hex.Decode(root[:], []byte(e.Name())); err == nil && n == 32 && len(e.Name()) == 64 {
			out = append(out, root)
		}
	}
	return out, nil
}
