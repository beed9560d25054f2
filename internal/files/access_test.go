package files

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"slices"
	"testing"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/service"
	"github.com/pipesnet/pipes/internal/testutil"
)

func readKeyOf(t testing.TB) (*identity.KeyPair, *ReadKey) {
	t.Helper()
	ik, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	rk, err := DeriveReadKey(ik)
	if err != nil {
		t.Fatal(err)
	}
	return ik, rk
}

func plain(n int, seed uint64) []byte {
	b := make([]byte, n)
	mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 9}).Read(b)
	return b
}

// sealAll builds the ciphertext of p for readers, as an import does.
func sealAll(t testing.TB, p []byte, seg int, name string, readers ...*ReadKey) ([]byte, []byte) {
	t.Helper()
	var idl []ids.Identity
	var pubs []hpke.PublicKey
	for _, r := range readers {
		idl = append(idl, r.id)
		pubs = append(pubs, r.priv.PublicKey())
	}
	key := make([]byte, 32)
	rand.Read(key)
	h, err := buildHeader(key, int64(len(p)), seg, name, idl, pubs)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(newSealer(bytes.NewReader(p), h, key))
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(ct)) != h.cipherSize() {
		t.Fatalf("ciphertext of %d bytes, the header says %d", len(ct), h.cipherSize())
	}
	return ct, key
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// openAll opens ciphertext ct with k as Open does.
func openAll(ct []byte, k *ReadKey) (io.ReadSeekCloser, string, error) {
	r := nopCloser{bytes.NewReader(ct)}
	h, err := readHeader(r)
	if err != nil {
		return nil, "", err
	}
	key, name, err := h.open(k)
	if err != nil {
		return nil, "", err
	}
	if h.cipherSize() != int64(len(ct)) {
		return nil, "", ErrBadData
	}
	return newOpener(r, &fileAccess{h: h, readable: true, key: key, name: name}), name, nil
}

// TestRestrictedFormatRoundTrip: content of every size around the segment
// boundaries reads back exactly, for each reader, and at random offsets.
func TestRestrictedFormatRoundTrip(t *testing.T) {
	_, x := readKeyOf(t)
	_, y := readKeyOf(t)
	const seg = minSegment
	for _, n := range []int{0, 1, seg - 1, seg, seg + 1, 2 * seg, 5*seg + 17} {
		p := plain(n, uint64(n))
		ct, _ := sealAll(t, p, seg, "name.txt", x, y)
		for _, k := range []*ReadKey{x, y} {
			r, name, err := openAll(ct, k)
			if err != nil {
				t.Fatalf("size %d: %v", n, err)
			}
			if name != "name.txt" {
				t.Fatalf("size %d: name %q", n, name)
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("size %d: read %d bytes, %v", n, len(got), err)
			}
			rng := mrand.New(mrand.NewPCG(uint64(n), 1))
			for range 20 {
				off := rng.IntN(n + 1)
				l := rng.IntN(3 * seg)
				if _, err := r.Seek(int64(off), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, l)
				m, err := io.ReadFull(r, buf)
				want := p[off:min(off+l, n)]
				if !bytes.Equal(buf[:m], want) || (m < l && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF)) {
					t.Fatalf("size %d: %d bytes at %d: got %d, %v", n, l, off, m, err)
				}
			}
			if end, _ := r.Seek(0, io.SeekEnd); end != int64(n) {
				t.Fatalf("size %d: SeekEnd gives %d", n, end)
			}
		}
	}
}

// TestRestrictedFormatWrongKey: an identity not among the readers gets
// ErrNoSecret; a reader entry whose sealed key is another's fails.
func TestRestrictedFormatWrongKey(t *testing.T) {
	_, x := readKeyOf(t)
	_, z := readKeyOf(t)
	ct, _ := sealAll(t, plain(3000, 1), minSegment, "n", x)
	if _, _, err := openAll(ct, z); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("a non-reader: %v", err)
	}
	if _, _, err := openAll(ct, nil); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("no read key: %v", err)
	}
	// z pretends to be x: the entry of x does not open with z's key.
	z2 := &ReadKey{id: x.id, priv: z.priv}
	if _, _, err := openAll(ct, z2); !errors.Is(err, ErrBadData) {
		t.Fatalf("another key under the reader's id: %v", err)
	}
}

// TestRestrictedFormatTampered: every single byte changed in the header
// or a segment gives an error (never a panic, never other plaintext).
func TestRestrictedFormatTampered(t *testing.T) {
	_, x := readKeyOf(t)
	p := plain(3*minSegment+100, 2)
	ct, _ := sealAll(t, p, minSegment, "secret-name", x)
	h, err := parseHeader(ct)
	if err != nil {
		t.Fatal(err)
	}
	hl := len(h.raw)
	positions := []int{0, 3, 4, 7, 8, 15, 16, 19, 20, 21, 22, 22 + 31, 22 + 32, 22 + 34, 22 + 500, hl - 20, hl - 1,
		hl, hl + 5, hl + minSegment + 16, len(ct) - 1}
	for _, pos := range positions {
		bad := bytes.Clone(ct)
		bad[pos] ^= 0x40
		r, _, err := openAll(bad, x)
		if err != nil {
			continue // refused at open
		}
		got, err := io.ReadAll(r)
		if err == nil {
			t.Fatalf("byte %d changed: read %d bytes with no error", pos, len(got))
		}
		if !errors.Is(err, ErrBadData) {
			t.Fatalf("byte %d changed: %v", pos, err)
		}
	}
	// Truncated and lengthened.
	for _, bad := range [][]byte{ct[:len(ct)-1], append(bytes.Clone(ct), 0), ct[:hl], ct[:10]} {
		if r, _, err := openAll(bad, x); err == nil {
			if _, err := io.ReadAll(r); err == nil {
				t.Fatalf("%d bytes of %d read with no error", len(bad), len(ct))
			}
		}
	}
	// A segment moved to another place does not open.
	moved := bytes.Clone(ct)
	s := minSegment + tagSize
	copy(moved[hl:hl+s], ct[hl+s:hl+2*s])
	r, _, err := openAll(moved, x)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrBadData) {
		t.Fatalf("a segment moved: %v", err)
	}
}

// identityHost is a fakeHost whose certificate names identity ik.
type identityHost struct {
	*fakeHost
	ik *identity.KeyPair
}

func (h identityHost) Keys() service.Keys {
	k := h.fakeHost.Keys()
	k.Cert.IdentityKey = h.ik.Public
	return k
}

// startWithKey starts a service of identity ik on a host of its own.
func startWithKey(t *testing.T, ik *identity.KeyPair, rk *ReadKey) (*Service, *fakeHost) {
	t.Helper()
	fh := newFakeHost(t)
	s := New(Config{ReadKey: rk})
	if err := s.Start(context.Background(), identityHost{fh, ik}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, fh
}

// TestRestrictedService: through the service, a file added for a reader
// whose key was received reads back, shows its readers, keeps no name in
// its record, and publishes the node's own key; a reader whose key is not
// known fails the add with ErrNotFound and stores nothing.
func TestRestrictedService(t *testing.T) {
	ik, rk := readKeyOf(t)
	_, y := readKeyOf(t)
	s, fh := startWithKey(t, ik, rk)
	ctx := context.Background()

	if _, err := s.AddReader(ctx, "a", bytes.NewReader([]byte("x")), AddOptions{Readers: []ids.Identity{y.id}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an unknown reader: %v", err)
	}
	if l, _ := fh.blobs.List(); len(l) != 0 || len(s.List()) != 0 {
		t.Fatalf("a failed add left %d blobs, %d files", len(l), len(s.List()))
	}
	if err := s.handleReadKey(dispatchMsg(y.record)); err != nil {
		t.Fatal(err)
	}
	p := plain(3*segmentSize+5, 3)
	id, err := s.AddReader(ctx, "report.pdf", bytes.NewReader(p), AddOptions{Readers: []ids.Identity{y.id}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	st, err := s.Stat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Name != "report.pdf" || !st.Readable || len(st.Readers) != 2 || st.Readers[0] != rk.id || st.Readers[1] != y.id || st.Size != int64(len(p)) {
		t.Fatalf("Stat: %+v", st)
	}
	if name, _ := s.kept(id); name != "" {
		t.Fatalf("the record keeps the name %q", name)
	}
	m, _ := fh.blobs.Manifest(id)
	if m.Nonce != restrictedNonce {
		t.Fatal("the manifest does not mark the file restricted")
	}
	// The same content again is another file (a new content key).
	id2, err := s.AddReader(ctx, "report.pdf", bytes.NewReader(p), AddOptions{Readers: []ids.Identity{y.id}})
	if err != nil || id2 == id {
		t.Fatalf("the same content again: %s, %v", id2.Short(), err)
	}
	// A plain file is readable, with no readers.
	pid, err := s.AddReader(ctx, "plain", bytes.NewReader(p), AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Stat(ctx, pid); !st.Readable || st.Readers != nil || st.Name != "plain" {
		t.Fatalf("Stat of a plain file: %+v", st)
	}
	testutil.WaitFor(t, "the read key is published", func() bool {
		return slices.ContainsFunc(fh.broadcasts(), func(b []byte) bool { return bytes.Equal(b, rk.record) })
	})
}

// TestRestrictedFromFile: Add of a path streams it; the file sealed to
// another identity only cannot be opened by a service of a third.
func TestRestrictedFromFile(t *testing.T) {
	ik, rk := readKeyOf(t)
	s, fh := startWithKey(t, ik, rk)
	p := plain(2*segmentSize+1, 4)
	path := t.TempDir() + "/f.bin"
	if err := os.WriteFile(path, p, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := s.Add(context.Background(), path, AddOptions{Readers: []ids.Identity{rk.id}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, p) {
		t.Fatal("other content")
	}
	// A service of another identity with the same blob: not a reader.
	zk, zr := readKeyOf(t)
	z, zh := startWithKey(t, zk, zr)
	m, _ := fh.blobs.Manifest(id)
	if err := zh.blobs.Add(m); err != nil {
		t.Fatal(err)
	}
	for i := range m.Chunks {
		c, _ := fh.blobs.ReadChunk(id, i)
		if err := zh.blobs.WriteChunk(id, i, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := z.save(id, &record{size: m.Size, complete: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := z.Open(id); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("Open on a non-reader: %v", err)
	}
	st, err := z.Stat(context.Background(), id)
	if err != nil || st.Readable || st.Name != "" || len(st.Readers) != 1 || st.Readers[0] != rk.id {
		t.Fatalf("Stat on a non-reader: %+v, %v", st, err)
	}
}
