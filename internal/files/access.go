package files

import (
	"bufio"
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/blob"
	"github.com/pipesnet/pipes/internal/ids"
)

// Restricted files (docs/protocol.md, "Reader keys and restricted
// files"). A file added with readers is stored and transferred as a blob
// whose content is
//
//	header | sealed segment 0 | sealed segment 1 | ...
//
// header:
//
//	magic "pRF" 1 (4) | header length H (4, every byte of the header) |
//	plaintext size (8) | segment size S (4) | reader count n (2) |
//	n × ( identity id (32) | length (2) | HPKE Seal of the content key ) |
//	name length (2) | sealed name
//
// The content key is 32 random bytes, sealed to each reader's read key
// (HPKE ML-KEM-768+X25519, HKDF-SHA256, ChaCha20-Poly1305; info
// sealKeyInfo || identity id). The name is sealed with ChaCha20-Poly1305
// under the content key, nonce 0xff × 12, associated data SHA-256 of the
// header's bytes before the name field. Segment i holds plaintext bytes
// [i·S, (i+1)·S) sealed under the content key, nonce 0 (4) | i (8, big
// endian), associated data SHA-256 of the whole header; every segment is
// S bytes but the last, and a file of 0 bytes has none.
//
// The blob's manifest carries restrictedNonce (plain files carry zeros),
// so a file's kind follows from its id alone: content that happens to
// begin like a header is never taken for a restricted file. The file id
// is the root of the ciphertext: holders verify every chunk without the
// key, and the same plaintext added again (or for other readers) gets
// another id, as its content key is new.
var restrictedNonce = [16]byte([]byte("pipes/restricted"))

// Bounds of the format.
const (
	// MaxReaders is the most identities a file can be restricted to.
	MaxReaders = 128
	// segmentSize is the plaintext bytes of a sealed segment.
	segmentSize  = 64 << 10
	minSegment   = 1 << 10
	maxSegment   = 16 << 20
	maxSealedKey = 2048
	headerFixed  = 4 + 4 + 8 + 4 + 2
	maxHeader    = headerFixed + MaxReaders*(32+2+maxSealedKey) + 2 + MaxName + chacha20poly1305.Overhead
	tagSize      = chacha20poly1305.Overhead
)

var headerMagic = [4]byte{'p', 'R', 'F', 1}

// accessState is the service's part for restricted files.
type accessState struct {
	book  keyBook
	key   *ReadKey    // the node's read key, if it is its identity's: set by startAccess
	ready atomic.Bool // startAccess is done: reader keys received are kept
	stopP func()      // the presence subscription of the publisher

	mu    sync.Mutex
	files map[ids.Content]*fileAccess // headers read, by file
}

// fileAccess is what this node knows of a restricted file's header.
type fileAccess struct {
	h        *header
	readable bool
	key      []byte // the content key, when readable
	name     string // the name, when readable
}

// header is a parsed header.
type header struct {
	raw     []byte // the header's bytes
	size    int64  // plaintext bytes
	seg     int    // plaintext bytes a segment
	readers []ids.Identity
	sealed  [][]byte // the sealed content key of each reader
	nameAD  []byte   // SHA-256 of the header before the name
	name    []byte   // the sealed name
	segAD   []byte   // SHA-256 of the header
}

func (h *header) segments() int64 { return (h.size + int64(h.seg) - 1) / int64(h.seg) }

// cipherSize is the size of the blob's content.
func (h *header) cipherSize() int64 { return int64(len(h.raw)) + h.size + h.segments()*tagSize }

func keyInfo(id ids.Identity) []byte { return append([]byte(sealKeyInfo), id[:]...) }

var nameNonce = bytes.Repeat([]byte{0xff}, chacha20poly1305.NonceSize)

func segNonce(i int64) []byte {
	var n [chacha20poly1305.NonceSize]byte
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n[:]
}

// buildHeader seals key to each reader and name under key.
func buildHeader(key []byte, size int64, seg int, name string, readers []ids.Identity,
	pubs []hpke.PublicKey) (*header, error) {
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	b := append([]byte(nil), headerMagic[:]...)
	b = append(b, 0, 0, 0, 0) // length, set below
	b = binary.BigEndian.AppendUint64(b, uint64(size))
	b = binary.BigEndian.AppendUint32(b, uint32(seg))
	b = binary.BigEndian.AppendUint16(b, uint16(len(readers)))
	for i, id := range readers {
		ct, err := hpke.Seal(pubs[i], readKDF, readAEAD, keyInfo(id), key)
		if err != nil {
			return nil, fmt.Errorf("files: sealing the key to %x: %w", id[:4], err)
		}
		b = append(b, id[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(ct)))
		b = append(b, ct...)
	}
	total := len(b) + 2 + len(name) + tagSize
	binary.BigEndian.PutUint32(b[4:], uint32(total))
	nameAD := sha256.Sum256(b)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)+tagSize))
	b = aead.Seal(b, nameNonce, []byte(name), nameAD[:])
	return parseHeader(b)
}

// parseHeader parses a header from the network (the start of a blob
// whose manifest says it is restricted). b must hold at least the header;
// bytes after it are not looked at. It never panics.
func parseHeader(b []byte) (*header, error) {
	if len(b) < headerFixed {
		return nil, fmt.Errorf("%w: header too short", ErrBadData)
	}
	if !bytes.Equal(b[:4], headerMagic[:]) {
		return nil, fmt.Errorf("%w: not a restricted file's header", ErrBadData)
	}
	hl := binary.BigEndian.Uint32(b[4:])
	if hl < headerFixed+2+tagSize || hl > maxHeader || int64(len(b)) < int64(hl) {
		return nil, fmt.Errorf("%w: header length %d", ErrBadData, hl)
	}
	b = b[:hl]
	h := &header{raw: b, size: int64(binary.BigEndian.Uint64(b[8:])), seg: int(binary.BigEndian.Uint32(b[16:]))}
	if h.size < 0 || h.size > blob.MaxSize || h.seg < minSegment || h.seg > maxSegment {
		return nil, fmt.Errorf("%w: size %d, segment %d", ErrBadData, h.size, h.seg)
	}
	n := int(binary.BigEndian.Uint16(b[20:]))
	if n == 0 || n > MaxReaders {
		return nil, fmt.Errorf("%w: %d readers", ErrBadData, n)
	}
	p := b[headerFixed:]
	for range n {
		if len(p) < 34 {
			return nil, fmt.Errorf("%w: header truncated", ErrBadData)
		}
		id := ids.Identity(p[:32])
		l := int(binary.BigEndian.Uint16(p[32:]))
		if l == 0 || l > maxSealedKey || len(p) < 34+l {
			return nil, fmt.Errorf("%w: sealed key of %d bytes", ErrBadData, l)
		}
		h.readers = append(h.readers, id)
		h.sealed = append(h.sealed, p[34:34+l])
		p = p[34+l:]
	}
	if len(p) < 2 {
		return nil, fmt.Errorf("%w: header truncated", ErrBadData)
	}
	ad := sha256.Sum256(b[:len(b)-len(p)])
	h.nameAD = ad[:]
	if l := int(binary.BigEndian.Uint16(p)); l != len(p)-2 || l < tagSize || l > MaxName+tagSize {
		return nil, fmt.Errorf("%w: sealed name of %d bytes", ErrBadData, l)
	}
	h.name = p[2:]
	sum := sha256.Sum256(b)
	h.segAD = sum[:]
	return h, nil
}

// open opens the content key and the name with read key k; ErrNoSecret
// if k's identity is not a reader, ErrBadData if its sealed key does not
// open.
func (h *header) open(k *ReadKey) (key []byte, name string, err error) {
	if k == nil {
		return nil, "", ErrNoSecret
	}
	i := slices.Index(h.readers, k.id)
	if i < 0 {
		return nil, "", ErrNoSecret
	}
	key, err = hpke.Open(k.priv, readKDF, readAEAD, keyInfo(k.id), h.sealed[i])
	if err != nil || len(key) != chacha20poly1305.KeySize {
		return nil, "", fmt.Errorf("%w: the content key sealed to this identity does not open", ErrBadData)
	}
	aead, _ := chacha20poly1305.New(key)
	nm, err := aead.Open(nil, nameNonce, h.name, h.nameAD)
	if err != nil {
		return nil, "", fmt.Errorf("%w: the name does not open", ErrBadData)
	}
	return key, string(nm), nil
}

// sealer is the content of a restricted blob, read from the plaintext:
// the header, then each segment sealed as it is read. It holds one
// segment.
type sealer struct {
	src  io.Reader
	h    *header
	aead cipher.AEAD
	out  []byte // what is left to give of the header or the current segment
	buf  []byte
	next int64 // index of the next segment
	err  error
}

func newSealer(src io.Reader, h *header, key []byte) *sealer {
	aead, _ := chacha20poly1305.New(key)
	return &sealer{src: src, h: h, aead: aead, out: h.raw, buf: make([]byte, h.seg+tagSize)}
}

func (s *sealer) Read(p []byte) (int, error) {
	if len(s.out) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.next >= s.h.segments() {
			return 0, io.EOF
		}
		n := int(min(int64(s.h.seg), s.h.size-s.next*int64(s.h.seg)))
		if _, err := io.ReadFull(s.src, s.buf[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("fewer bytes than the size said: %w", blob.ErrChanged)
			}
			s.err = err
			return 0, err
		}
		s.out = s.aead.Seal(s.buf[:0], segNonce(s.next), s.buf[:n], s.h.segAD)
		s.next++
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// restrictTo returns readers without duplicates, this node's identity
// first, and their read keys; an error wrapping ErrNotFound if one is
// not known.
func (s *Service) restrictTo(readers []ids.Identity) ([]ids.Identity, []hpke.PublicKey, error) {
	self := ids.Identity(s.host.Keys().Cert.IdentityID())
	all := []ids.Identity{self}
	for _, r := range readers {
		if !slices.Contains(all, r) {
			all = append(all, r)
		}
	}
	if len(all) > MaxReaders {
		return nil, nil, fmt.Errorf("%w: at most %d readers", ErrInvalid, MaxReaders)
	}
	pubs := make([]hpke.PublicKey, len(all))
	for i, id := range all {
		var err error
		if pubs[i], err = s.readerKey(id); err != nil {
			return nil, nil, fmt.Errorf("files: add: %w", err)
		}
	}
	return all, pubs, nil
}

// addRestricted imports size bytes of src as a file only readers (and
// this node's identity) can read: streamed, one segment in memory.
func (s *Service) addRestricted(ctx context.Context, name string, src io.Reader, size int64,
	readers []ids.Identity) (ids.Content, error) {
	all, pubs, err := s.restrictTo(readers)
	if err != nil {
		return ids.Content{}, err
	}
	key := make([]byte, chacha20poly1305.KeySize)
	rand.Read(key)
	h, err := buildHeader(key, size, segmentSize, name, all, pubs)
	if err != nil {
		return ids.Content{}, err
	}
	if h.cipherSize() > blob.MaxSize {
		return ids.Content{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	m, err := s.blobs.Import(ctx, newSealer(src, h, key), h.cipherSize(), 0, nil, blob.WithNonce(restrictedNonce))
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add %s: %w", name, err)
	}
	if n, _ := src.Read(make([]byte, 1)); n > 0 {
		s.discard(m.Root()) // more bytes than the size said
		return ids.Content{}, fmt.Errorf("files: add %s: %w", name, blob.ErrChanged)
	}
	s.remember(m.Root(), &fileAccess{h: h, readable: s.readKey() != nil, key: key, name: name})
	return s.added(m, "") // the record keeps no name: the header has it sealed
}

// addRestrictedFile is addRestricted of the regular file at path.
func (s *Service) addRestrictedFile(ctx context.Context, path, name string, readers []ids.Identity) (ids.Content, error) {
	f, err := os.Open(path)
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ids.Content{}, fmt.Errorf("files: add: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return ids.Content{}, fmt.Errorf("files: add %s: not a regular file", path)
	}
	id, err := s.addRestricted(ctx, name, f, fi.Size(), readers)
	if err != nil {
		return id, err
	}
	if after, err := f.Stat(); err != nil || after.Size() != fi.Size() {
		s.Remove(ctx, id)
		return ids.Content{}, fmt.Errorf("files: add %s: %w", path, blob.ErrChanged)
	}
	return id, nil
}

func (s *Service) remember(id ids.Content, fa *fileAccess) {
	s.acc.mu.Lock()
	defer s.acc.mu.Unlock()
	if s.acc.files == nil {
		s.acc.files = map[ids.Content]*fileAccess{}
	}
	s.acc.files[id] = fa
}

// restricted reports whether the blob of manifest m is a restricted file.
func restricted(m *blob.Manifest) bool { return m.Nonce == restrictedNonce }

// access returns what this node knows of restricted file id, reading its
// header from r (the ciphertext) the first time; nil if the header's
// chunks are not here (and a fetch that runs is not waited for unless r
// waits).
func (s *Service) access(id ids.Content, r io.ReadSeeker) (*fileAccess, error) {
	s.acc.mu.Lock()
	fa := s.acc.files[id]
	s.acc.mu.Unlock()
	if fa != nil {
		return fa, nil
	}
	h, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	fa = &fileAccess{h: h}
	if key, name, err := h.open(s.readKey()); err == nil {
		fa.readable, fa.key, fa.name = true, key, name
	} else if !errors.Is(err, ErrNoSecret) {
		return nil, err
	}
	s.remember(id, fa)
	return fa, nil
}

// readHeader reads and parses the header at the start of r.
func readHeader(r io.ReadSeeker) (*header, error) {
	var fixed [8]byte
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, fmt.Errorf("files: the header: %w", err)
	}
	hl := binary.BigEndian.Uint32(fixed[4:])
	if hl < 8 || hl > maxHeader {
		return nil, fmt.Errorf("%w: header length %d", ErrBadData, hl)
	}
	b := make([]byte, hl)
	copy(b, fixed[:])
	if _, err := io.ReadFull(r, b[8:]); err != nil {
		return nil, fmt.Errorf("files: the header: %w", err)
	}
	return parseHeader(b)
}

// fill sets the access fields of info, a file this node has a record of:
// every file not restricted is readable; a restricted one shows its
// readers and its plaintext's size and, to readers, its name once its
// header is here.
func (s *Service) fill(info *Info) {
	m, err := s.blobs.Manifest(info.ID)
	if err != nil || !restricted(m) {
		info.Readable = err == nil
		return
	}
	c := &reader{s: s, id: info.ID, m: m, ctx: s.ctx, cancel: func() {}, noWait: true}
	fa, err := s.access(info.ID, c)
	if err != nil {
		return
	}
	info.Readers = slices.Clone(fa.h.readers)
	info.Readable = fa.readable
	info.Size = fa.h.size // the plaintext's, which the header says in the clear
	if fa.readable {
		info.Name = fa.name
	}
}

// openRestricted returns a reader of the plaintext of the restricted
// file c reads the ciphertext of: ErrNoSecret if this node's identity is
// not one of its readers. It reads the header first, which waits for its
// chunks while a fetch of the file runs.
func (s *Service) openRestricted(c *reader) (io.ReadSeekCloser, error) {
	fa, err := s.access(c.id, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if !fa.readable {
		c.Close()
		return nil, fmt.Errorf("%w: file %s", ErrNoSecret, c.id.Short())
	}
	if fa.h.cipherSize() != c.m.Size {
		c.Close()
		return nil, fmt.Errorf("%w: the header's size does not match the file's", ErrBadData)
	}
	return newOpener(c, fa), nil
}

func newOpener(c io.ReadSeekCloser, fa *fileAccess) *opener {
	aead, _ := chacha20poly1305.New(fa.key)
	return &opener{c: c, h: fa.h, aead: aead, cur: -1}
}

// opener reads the plaintext of a restricted file, opening only the
// segments it reads; it keeps the current one.
type opener struct {
	c    io.ReadSeekCloser // the ciphertext
	h    *header
	aead cipher.AEAD

	mu    sync.Mutex
	off   int64
	cur   int64 // index of plain, -1 for none
	plain []byte
	buf   []byte
}

func (o *opener) Read(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.off >= o.h.size {
		return 0, io.EOF
	}
	seg := int64(o.h.seg)
	i := o.off / seg
	if o.cur != i {
		n := int(min(seg, o.h.size-i*seg)) + tagSize
		if o.buf == nil {
			o.buf = make([]byte, o.h.seg+tagSize)
		}
		if _, err := o.c.Seek(int64(len(o.h.raw))+i*(seg+tagSize), io.SeekStart); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(o.c, o.buf[:n]); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: segment %d truncated", ErrBadData, i)
			}
			return 0, err
		}
		pl, err := o.aead.Open(o.plain[:0], segNonce(i), o.buf[:n], o.h.segAD)
		if err != nil {
			o.cur = -1
			return 0, fmt.Errorf("%w: segment %d does not open", ErrBadData, i)
		}
		o.plain, o.cur = pl, i
	}
	n := copy(p, o.plain[o.off-i*seg:])
	o.off += int64(n)
	return n, nil
}

func (o *opener) Seek(off int64, whence int) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return seekTo(&o.off, o.h.size, off, whence)
}

func (o *opener) Close() error { return o.c.Close() }

// forget drops what is known of file id's header (its copy is removed).
func (s *Service) forget(id ids.Content) {
	s.acc.mu.Lock()
	defer s.acc.mu.Unlock()
	delete(s.acc.files, id)
}

// fillRemote sets the access fields of info, restricted file id of
// manifest m that this node does not keep, from the header in chunk 0 as
// holder serves it (verified against m). It leaves them unset if the
// header does not fit in chunk 0 or the holder fails.
func (s *Service) fillRemote(ctx context.Context, holder ids.Node, id ids.Content, m *blob.Manifest, info *Info) {
	c, err := s.host.Dial(ctx, holder, ServiceName)
	if err != nil {
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if len(m.Chunks) == 0 || writeFrame(c, reqChunks, chunksRequest(id, 0, 1)) != nil {
		return
	}
	a, err := readChunkAnswer(bufio.NewReader(c), m, 0, nil)
	if err != nil || a.data == nil || blake3.Sum256(a.data) != m.Chunks[0] {
		return
	}
	h, err := parseHeader(a.data)
	if err != nil {
		return
	}
	info.Readers = slices.Clone(h.readers)
	info.Size = h.size
	if _, name, err := h.open(s.readKey()); err == nil {
		info.Readable, info.Name = true, name
	}
}
