package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func testManifest(size int64, cs int) *Manifest {
	m := &Manifest{Size: size, ChunkSize: cs, Chunks: make([][32]byte, ceilDiv(size, cs))}
	for i := range m.Chunks {
		m.Chunks[i][0], m.Chunks[i][31] = byte(i), byte(i>>8)
	}
	m.Nonce[3] = 7
	return m
}

func TestManifestRoundTrip(t *testing.T) {
	for _, m := range []*Manifest{
		testManifest(0, DefaultChunkSize),
		testManifest(1, DefaultChunkSize),
		testManifest(DefaultChunkSize, DefaultChunkSize),
		testManifest(DefaultChunkSize+1, DefaultChunkSize),
		testManifest(MinChunkSize*MaxChunks, MinChunkSize),
		testManifest(MaxSize, MaxChunkSize),
	} {
		b := m.Marshal()
		if len(b) >= 600<<10 {
			t.Errorf("manifest of %d chunks is %d bytes", len(m.Chunks), len(b))
		}
		got, err := ParseManifest(b)
		if err != nil {
			t.Fatalf("size %d: %v", m.Size, err)
		}
		if !bytes.Equal(got.Marshal(), b) || got.Root() != m.Root() {
			t.Fatalf("size %d: round trip differs", m.Size)
		}
		if err := got.validate(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChunkLen(t *testing.T) {
	m := testManifest(2*DefaultChunkSize+5, DefaultChunkSize)
	for i, want := range map[int]int{-1: 0, 0: DefaultChunkSize, 1: DefaultChunkSize, 2: 5, 3: 0} {
		if got := m.ChunkLen(i); got != want {
			t.Errorf("ChunkLen(%d) = %d, want %d", i, got, want)
		}
	}
	if n := len(testManifest(0, DefaultChunkSize).Chunks); n != 0 {
		t.Errorf("empty file has %d chunks", n)
	}
}

func TestParseManifestRefuses(t *testing.T) {
	good := testManifest(3*DefaultChunkSize, DefaultChunkSize).Marshal()
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string][]byte{
		"empty":      nil,
		"short":      good[:manifestHeader-1],
		"magic":      edit(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version":    edit(func(b []byte) []byte { b[4] = 2; return b }),
		"not pow2":   edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], DefaultChunkSize+1); return b }),
		"too small":  edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], MinChunkSize/2); return b }),
		"too big":    edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], MaxChunkSize*2); return b }),
		"zero chunk": edit(func(b []byte) []byte { binary.BigEndian.PutUint32(b[5:], 0); return b }),
		"huge size":  edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[9:], MaxSize+1); return b }),
		"neg size":   edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[9:], 1<<63); return b }),
		"more size":  edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[9:], 3*DefaultChunkSize+1); return b }),
		"less size":  edit(func(b []byte) []byte { binary.BigEndian.PutUint64(b[9:], 2*DefaultChunkSize); return b }),
		"trailing":   append(bytes.Clone(good), 0),
		"truncated":  good[:len(good)-1],
		"too many":   testManifest(MinChunkSize*(MaxChunks+1), MinChunkSize).Marshal(),
	}
	for name, b := range cases {
		if _, err := ParseManifest(b); !errors.Is(err, ErrBadManifest) {
			t.Errorf("%s: err = %v, want ErrBadManifest", name, err)
		}
	}
	bad := testManifest(3*DefaultChunkSize, DefaultChunkSize)
	bad.Chunks = bad.Chunks[:2]
	if err := bad.validate(); !errors.Is(err, ErrBadManifest) {
		t.Errorf("validate: %v", err)
	}
	bad = testManifest(0, DefaultChunkSize)
	bad.Size = -1
	if err := bad.validate(); !errors.Is(err, ErrBadManifest) {
		t.Errorf("validate negative size: %v", err)
	}
}

func TestChunkSizeRule(t *testing.T) {
	for _, c := range []struct {
		size     int64
		overhead int
		want     int
	}{
		{0, 0, DefaultChunkSize},
		{1, 0, DefaultChunkSize},
		{DefaultChunkSize * MaxChunks, 0, DefaultChunkSize}, // 4 GiB
		{DefaultChunkSize*MaxChunks + 1, 0, 2 * DefaultChunkSize},
		{DefaultChunkSize * MaxChunks, 16, 2 * DefaultChunkSize},
		{(DefaultChunkSize - 16) * MaxChunks, 16, DefaultChunkSize},
		{MaxSize, 0, MaxChunkSize},
	} {
		got, err := chunkSizeFor(c.size, c.overhead)
		if err != nil || got != c.want {
			t.Errorf("chunkSizeFor(%d, %d) = %d, %v; want %d", c.size, c.overhead, got, err, c.want)
		}
	}
	for _, c := range []struct {
		size     int64
		overhead int
	}{{MaxSize + 1, 0}, {MaxSize, 16}} {
		if _, err := chunkSizeFor(c.size, c.overhead); err == nil {
			t.Errorf("chunkSizeFor(%d, %d) accepted", c.size, c.overhead)
		}
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add(testManifest(0, DefaultChunkSize).Marshal())
	f.Add(testManifest(1, MinChunkSize).Marshal())
	f.Add(testManifest(3*DefaultChunkSize+9, DefaultChunkSize).Marshal())
	f.Add(testManifest(MaxChunkSize, MaxChunkSize).Marshal())
	f.Add([]byte("PBLB\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("error %v does not wrap ErrBadManifest", err)
			}
			return
		}
		if !bytes.Equal(m.Marshal(), b) {
			t.Fatal("re-marshalling differs")
		}
		if err := m.validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		if n := len(m.Chunks); n > 0 && (m.ChunkLen(n-1) <= 0 || m.ChunkLen(n-1) > m.ChunkSize) {
			t.Fatalf("last chunk length %d", m.ChunkLen(n-1))
		}
	})
}
