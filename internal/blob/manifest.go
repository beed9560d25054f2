package blob

import (
	"encoding/binary"
	"fmt"

	"github.com/zeebo/blake3"

	"github.com/pipesnet/pipes/internal/ids"
)

// Layout of a marshalled manifest (integers big endian):
//
//	magic "PBLB" | version (1 byte) | chunk size (4) | size (8) | nonce (16) | chunk hashes (32 each)
const (
	manifestMagic   = "PBLB"
	manifestVersion = 1
	manifestHeader  = 4 + 1 + 4 + 8 + 16
)

// Manifest describes the content of a blob.
type Manifest struct {
	Size      int64      // content bytes
	ChunkSize int        // bytes of every chunk but the last; a power of two
	Chunks    [][32]byte // BLAKE3-256 of each chunk's bytes; ceil(Size/ChunkSize) of them
	Nonce     [16]byte   // random per file, for callers that encrypt chunks; only carried
}

// Marshal encodes the manifest in its fixed binary layout.
func (m *Manifest) Marshal() []byte {
	b := make([]byte, 0, manifestHeader+32*len(m.Chunks))
	b = append(b, manifestMagic...)
	b = append(b, manifestVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(m.ChunkSize))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Size))
	b = append(b, m.Nonce[:]...)
	for i := range m.Chunks {
		b = append(b, m.Chunks[i][:]...)
	}
	return b
}

// ParseManifest decodes and validates a marshalled manifest. Errors wrap
// ErrBadManifest.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) < manifestHeader || string(b[:4]) != manifestMagic {
		return nil, fmt.Errorf("%w: not a manifest", ErrBadManifest)
	}
	if b[4] != manifestVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadManifest, b[4])
	}
	cs := binary.BigEndian.Uint32(b[5:9])
	size := binary.BigEndian.Uint64(b[9:17])
	if err := checkShape(uint64(cs), size); err != nil {
		return nil, err
	}
	n := (size + uint64(cs) - 1) / uint64(cs)
	if uint64(len(b)-manifestHeader) != 32*n {
		return nil, fmt.Errorf("%w: %d bytes for %d chunks", ErrBadManifest, len(b), n)
	}
	m := &Manifest{Size: int64(size), ChunkSize: int(cs), Chunks: make([][32]byte, n)}
	copy(m.Nonce[:], b[17:manifestHeader])
	for i := range m.Chunks {
		copy(m.Chunks[i][:], b[manifestHeader+32*i:])
	}
	return m, nil
}

// checkShape validates a chunk size and a content size.
func checkShape(cs, size uint64) error {
	if cs < MinChunkSize || cs > MaxChunkSize || cs&(cs-1) != 0 {
		return fmt.Errorf("%w: chunk size %d", ErrBadManifest, cs)
	}
	if size > MaxSize {
		return fmt.Errorf("%w: size %d", ErrBadManifest, size)
	}
	if n := (size + cs - 1) / cs; n > MaxChunks {
		return fmt.Errorf("%w: %d chunks", ErrBadManifest, n)
	}
	return nil
}

// validate checks a manifest built in memory as ParseManifest checks a
// marshalled one.
func (m *Manifest) validate() error {
	if m.Size < 0 || m.ChunkSize <= 0 {
		return fmt.Errorf("%w: size %d, chunk size %d", ErrBadManifest, m.Size, m.ChunkSize)
	}
	if err := checkShape(uint64(m.ChunkSize), uint64(m.Size)); err != nil {
		return err
	}
	if n := ceilDiv(m.Size, m.ChunkSize); int64(len(m.Chunks)) != n {
		return fmt.Errorf("%w: %d chunks listed, %d expected", ErrBadManifest, len(m.Chunks), n)
	}
	return nil
}

// Root returns the blob's id: the BLAKE3-256 hash of the marshalled
// manifest.
func (m *Manifest) Root() ids.Content {
	return blake3.Sum256(m.Marshal())
}

// ChunkLen returns the length of chunk i: ChunkSize, or less for the last
// chunk. It returns 0 for an index out of range (a zero-size file has no
// chunks).
func (m *Manifest) ChunkLen(i int) int {
	n := len(m.Chunks)
	switch {
	case i < 0 || i >= n:
		return 0
	case i < n-1:
		return m.ChunkSize
	default:
		return int(m.Size - int64(i)*int64(m.ChunkSize))
	}
}

// clone returns a deep copy of m.
func (m *Manifest) clone() *Manifest {
	c := *m
	c.Chunks = append([][32]byte(nil), m.Chunks...)
	return &c
}

// chunkSizeFor returns the chunk size for size bytes of input when each
// chunk grows by overhead bytes in the transform: the smallest power of
// two from DefaultChunkSize up such that the input fits in MaxChunks
// chunks of chunkSize-overhead bytes.
func chunkSizeFor(size int64, overhead int) (int, error) {
	for cs := DefaultChunkSize; cs <= MaxChunkSize; cs *= 2 {
		if ceilDiv(size, cs-overhead) <= MaxChunks {
			return cs, nil
		}
	}
	return 0, fmt.Errorf("blob: %d bytes is too large (at most %d)", size, int64(MaxSize))
}

func ceilDiv(a int64, b int) int64 {
	return (a + int64(b) - 1) / int64(b)
}
