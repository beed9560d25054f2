package blob

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
)

// blob is a loaded blob: its open file and what is known of its chunks.
type blob struct {
	root ids.Content
	m    *Manifest
	f    *os.File
	aead cipher.AEAD // under the data key
	off  int64       // offset of slot 0
	gone chan struct{}

	// rw is held shared to read slots and exclusively to write them and
	// to close f, so that a read's snapshot of writes (below) tells
	// whether a write may have changed the slot since.
	rw   sync.RWMutex
	shut error // set once f is closed: ErrNotFound (removed) or ErrClosed

	mu      sync.Mutex
	state   []uint8       // per chunk: unknown, absent or present
	writes  uint64        // slot writes so far
	changed chan struct{} // closed and replaced when a chunk becomes present
}

// headerLen is the length of the sealed header of a blob of n chunks, and
// dataOffset the offset of its first slot.
func headerLen(n int) int { return nonceSize + keySize + manifestHeader + 32*n + tagSize }

func dataOffset(n int) int64 {
	return int64(4+headerLen(n)+slotAlign-1) / slotAlign * slotAlign
}

// fileSize is the size of the file of a blob with manifest m.
func fileSize(m *Manifest) int64 {
	n := len(m.Chunks)
	if n == 0 {
		return dataOffset(0)
	}
	return dataOffset(n) + int64(n-1)*int64(m.ChunkSize+tagSize) + int64(m.ChunkLen(n-1)+tagSize)
}

func chunkNonce(i int) []byte {
	var n [nonceSize]byte
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n[:]
}

func (b *blob) slot(i int) int64 {
	return b.off + int64(i)*int64(b.m.ChunkSize+tagSize)
}

// newBlob returns a blob of manifest m with a new random data key, every
// chunk in state st.
func newBlob(m *Manifest, st uint8) (*blob, [keySize]byte, error) {
	var dk [keySize]byte
	if _, err := rand.Read(dk[:]); err != nil {
		return nil, dk, err
	}
	aead, _ := chacha20poly1305.New(dk[:])
	b := &blob{m: m, aead: aead, off: dataOffset(len(m.Chunks)),
		gone: make(chan struct{}), state: make([]uint8, len(m.Chunks)), changed: make(chan struct{})}
	for i := range b.state {
		b.state[i] = st
	}
	return b, dk, nil
}

// discard closes and removes a temporary file.
func discard(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// shutdown closes the blob's file; later operations on b fail with why.
func (b *blob) shutdown(why error) error {
	b.rw.Lock()
	defer b.rw.Unlock()
	if b.shut != nil {
		return nil
	}
	b.shut = why
	return b.f.Close()
}

// setPresent records that chunk i is present, waking waiters. b.mu is held.
func (b *blob) setPresent(i int) {
	if b.state[i] != present {
		b.state[i] = present
		close(b.changed)
		b.changed = make(chan struct{})
	}
}

// read reads, opens and verifies chunk i, recording whether it is present.
func (b *blob) read(i int) ([]byte, error) {
	buf := make([]byte, b.m.ChunkLen(i)+tagSize)
	b.rw.RLock()
	if b.shut != nil {
		b.rw.RUnlock()
		return nil, fmt.Errorf("%w: blob %x", b.shut, b.root[:8])
	}
	b.mu.Lock()
	w := b.writes
	b.mu.Unlock()
	_, err := b.f.ReadAt(buf, b.slot(i))
	b.rw.RUnlock()
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("blob: read chunk %d of %x: %w", i, b.root[:8], err)
	}
	// The slot opens only under this blob's data key with the chunk's
	// index as nonce, and only a chunk that matched the manifest's hash
	// was ever sealed there: no need to hash it again.
	var pt []byte
	ok := err == nil
	if ok {
		pt, err = b.aead.Open(buf[:0], chunkNonce(i), buf, nil)
		ok = err == nil
	}
	b.mu.Lock()
	if ok {
		b.setPresent(i)
	} else if b.writes == w {
		// No write since the read: the slot is really empty or damaged.
		b.state[i] = absent
	}
	b.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: chunk %d of %x", ErrMissing, i, b.root[:8])
	}
	return pt, nil
}

// isPresent reports whether chunk i is present, reading its slot if that
// is not known yet.
func (b *blob) isPresent(i int) (bool, error) {
	b.mu.Lock()
	st := b.state[i]
	b.mu.Unlock()
	if st != unknown {
		return st == present, nil
	}
	_, err := b.read(i)
	if errors.Is(err, ErrMissing) {
		return false, nil
	}
	return err == nil, err
}

// sealBufs holds the buffers chunks are sealed into before they are
// written (nothing keeps them after the write).
var sealBufs sync.Pool

// write seals chunk i and writes it to its slot.
func (b *blob) write(i int, data []byte) error {
	var buf []byte
	if p, ok := sealBufs.Get().(*[]byte); ok && cap(*p) >= len(data)+tagSize {
		buf = *p
	} else {
		buf = make([]byte, 0, max(len(data), b.m.ChunkSize)+tagSize)
	}
	sealed := b.aead.Seal(buf[:0], chunkNonce(i), data, nil)
	defer sealBufs.Put(&sealed)
	b.rw.Lock()
	defer b.rw.Unlock()
	if b.shut != nil {
		return fmt.Errorf("%w: blob %x", b.shut, b.root[:8])
	}
	_, err := b.f.WriteAt(sealed, b.slot(i))
	b.mu.Lock()
	b.writes++
	if err == nil {
		b.setPresent(i)
	}
	b.mu.Unlock()
	if err != nil {
		return fmt.Errorf("blob: write chunk %d of %x: %w", i, b.root[:8], err)
	}
	return nil
}
