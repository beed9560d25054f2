// Package history is the persistent log of a pipeline on one node: its
// packets in the order the node logged them (LogIDs 0, 1, 2, ...), indexes
// by packet id and by sender sequence, the batch signatures that let the
// node prove its packets to other nodes, and the heads (for each sender,
// the last sequence number logged: a version vector) that sync compares.
//
// A sender's packets are logged in sequence order with no gaps: Append
// refuses a packet whose sequence number is not its sender's head plus
// one. Packet contents are encrypted at rest with a key of the pipeline
// (ChaCha20-Poly1305, a random nonce per record, the record's key as
// associated data); keys, sequence numbers and signatures are stored in
// clear. Every Append is one synced, atomic store batch.
//
// # Keyspace
//
// Tables of the shared store (see package store), all under the local
// node's id so that several nodes can share one store:
//
//	'L' | node | pipe | logID                -> sealed record
//	'X' | node | pipe | id[:8] | logID       -> nothing (index by packet id)
//	'Q' | node | pipe | sender | seq         -> logID
//	'H' | node | pipe | sender               -> head
//	'G' | node | pipe | sender | last seq    -> first seq || signature
//	'T' | node | pipe                        -> data bytes stored
//	'C' | node | sender                      -> certificate (pb.Signed)
//	'F' | node | pipe                        -> sealed definition
//
// Integers in keys and values are 8-byte big endian.
package history

import (
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/store"
)

const (
	tLog   = 'L'
	tByID  = 'X'
	tBySeq = 'Q'
	tHead  = 'H'
	tProof = 'G'
	tBytes = 'T'
	tCert  = 'C'
	tDef   = 'F'
)

// Errors.
var (
	ErrNotFound = errors.New("history: not found")
	ErrGap      = errors.New("history: packet out of its sender's sequence")
	ErrDamaged  = errors.New("history: stored record does not decrypt or parse")
)

// Record is one logged packet.
type Record struct {
	LogID  int64
	ID     [32]byte
	Sender [32]byte
	Seq    uint64
	HLC    int64
	Type   int64
	Dest   [32]byte // zero: every node of the pipeline
	Data   []byte
}

// Proof is the signature of one batch of a sender's packets, FirstSeq to
// LastSeq, over the concatenation of their ids.
type Proof struct {
	Sender    [32]byte
	FirstSeq  uint64
	LastSeq   uint64
	Signature []byte
	Cert      []byte // the sender's certificate (pb.Signed), stored once per sender
}

// Config configures Open.
type Config struct {
	Node     [32]byte // the local node
	Pipeline [32]byte
	Key      [32]byte // the pipeline's at-rest key (see DeriveKey)
	// PacketID computes a record's packet id from its other fields.
	PacketID func(*Record) [32]byte
}

// Log is the history of one pipeline on one node. It is safe for
// concurrent use; appends are serialised.
type Log struct {
	db   *store.DB
	cfg  Config
	aead cipher.AEAD
	pfx  []byte // node | pipe

	mu    sync.Mutex // held across an Append's commit
	next  int64
	heads map[[32]byte]uint64
	bytes int64
}

// DeriveKey derives the key of one purpose (a label and an id) from a
// node's store key with HKDF-SHA256.
func DeriveKey(storeKey [32]byte, label string, id []byte) [32]byte {
	k, err := hkdf.Key(sha256.New, storeKey[:], nil, "pipes/v1 "+label+string(id), 32)
	if err != nil {
		panic(err) // only for lengths HKDF-SHA256 cannot produce
	}
	return [32]byte(k)
}

// Open loads the log's heads and length from the store.
func Open(db *store.DB, cfg Config) (*Log, error) {
	if cfg.PacketID == nil {
		return nil, errors.New("history: Config.PacketID is required")
	}
	aead, _ := chacha20poly1305.New(cfg.Key[:])
	l := &Log{db: db, cfg: cfg, aead: aead, heads: map[[32]byte]uint64{}}
	l.pfx = append(append([]byte{}, cfg.Node[:]...), cfg.Pipeline[:]...)
	err := db.Scan(l.key(tHead), func(k, v []byte) error {
		if len(k) != 1+64+32 || len(v) != 8 {
			return fmt.Errorf("%w: head record", ErrDamaged)
		}
		l.heads[[32]byte(k[65:])] = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: open: %w", err)
	}
	prefix := l.key(tLog)
	k, _, err := db.Last(prefix, store.PrefixEnd(prefix))
	switch {
	case err == nil && len(k) == len(prefix)+8:
		l.next = int64(binary.BigEndian.Uint64(k[len(prefix):])) + 1
	case err == nil:
		return nil, fmt.Errorf("%w: log key", ErrDamaged)
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("history: open: %w", err)
	}
	if v, err := db.Get(l.key(tBytes)); err == nil && len(v) == 8 {
		l.bytes = int64(binary.BigEndian.Uint64(v))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("history: open: %w", err)
	}
	return l, nil
}

// key returns table | node | pipe | parts.
func (l *Log) key(table byte, parts ...[]byte) []byte {
	return store.Key(table, append([][]byte{l.pfx}, parts...)...)
}

func be(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// Next returns the LogID the next logged packet gets: the number of
// packets logged.
func (l *Log) Next() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// Bytes returns the data bytes of the logged packets.
func (l *Log) Bytes() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bytes
}

// Head returns the last sequence number logged of sender (0: none).
func (l *Log) Head(sender [32]byte) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heads[sender]
}

// Heads returns a copy of every sender's head.
func (l *Log) Heads() map[[32]byte]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[[32]byte]uint64, len(l.heads))
	for k, v := range l.heads {
		out[k] = v
	}
	return out
}

// Append logs recs in order, giving them the next LogIDs (it sets their
// LogID fields), with the batch proofs that cover them. Each record's
// sequence number must be its sender's head plus one (counting the records
// before it): otherwise nothing is written and the error wraps ErrGap.
// The write is synced: when Append returns nil the records are durable.
// On any error nothing is logged.
func (l *Log) Append(recs []*Record, proofs []Proof) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	heads := map[[32]byte]uint64{}
	head := func(s [32]byte) uint64 {
		if h, ok := heads[s]; ok {
			return h
		}
		return l.heads[s]
	}
	for _, r := range recs {
		if r.Seq != head(r.Sender)+1 {
			return fmt.Errorf("%w: %x seq %d after %d", ErrGap, r.Sender[:4], r.Seq, head(r.Sender))
		}
		heads[r.Sender] = r.Seq
	}
	next, size := l.next, l.bytes
	err := l.db.Batch(func(b *store.Batch) error {
		for _, r := range recs {
			id := be(uint64(next))
			sealed, err := l.seal(l.key(tLog, id), r)
			if err != nil {
				return err
			}
			if err := b.Set(l.key(tLog, id), sealed); err != nil {
				return err
			}
			if err := b.Set(l.key(tByID, r.ID[:8], id), nil); err != nil {
				return err
			}
			if err := b.Set(l.key(tBySeq, r.Sender[:], be(r.Seq)), id); err != nil {
				return err
			}
			next++
			size += int64(len(r.Data))
		}
		for s, h := range heads {
			if err := b.Set(l.key(tHead, s[:]), be(h)); err != nil {
				return err
			}
		}
		for _, p := range proofs {
			v := append(be(p.FirstSeq), p.Signature...)
			if err := b.Set(l.key(tProof, p.Sender[:], be(p.LastSeq)), v); err != nil {
				return err
			}
			if len(p.Cert) > 0 {
				if err := b.Set(store.Key(tCert, l.cfg.Node[:], p.Sender[:]), p.Cert); err != nil {
					return err
				}
			}
		}
		return b.Set(l.key(tBytes), be(uint64(size)))
	})
	if err != nil {
		return fmt.Errorf("history: append: %w", err)
	}
	for i, r := range recs {
		r.LogID = l.next + int64(i)
	}
	l.next, l.bytes = next, size
	for s, h := range heads {
		l.heads[s] = h
	}
	return nil
}

// seal encodes and encrypts r: sender | flags | [dest] | uvarint seq |
// varint hlc | varint type | data, sealed with a random nonce and the
// record's key as associated data.
func (l *Log) seal(key []byte, r *Record) ([]byte, error) {
	pt := make([]byte, 0, 32+1+32+30+len(r.Data))
	pt = append(pt, r.Sender[:]...)
	if r.Dest != ([32]byte{}) {
		pt = append(pt, 1)
		pt = append(pt, r.Dest[:]...)
	} else {
		pt = append(pt, 0)
	}
	pt = binary.AppendUvarint(pt, r.Seq)
	pt = binary.AppendVarint(pt, r.HLC)
	pt = binary.AppendVarint(pt, r.Type)
	pt = append(pt, r.Data...)
	out := make([]byte, chacha20poly1305.NonceSize, chacha20poly1305.NonceSize+len(pt)+l.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return l.aead.Seal(out, out, pt, key), nil
}

// open decrypts and decodes a record stored under key.
func (l *Log) open(key, v []byte) (*Record, error) {
	n := chacha20poly1305.NonceSize
	if len(v) < n+l.aead.Overhead() {
		return nil, fmt.Errorf("%w: short record", ErrDamaged)
	}
	pt, err := l.aead.Open(nil, v[:n], v[n:], key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	r := &Record{}
	if len(pt) < 33 {
		return nil, fmt.Errorf("%w: short record", ErrDamaged)
	}
	copy(r.Sender[:], pt)
	flags, rest := pt[32], pt[33:]
	if flags&1 != 0 {
		if len(rest) < 32 {
			return nil, fmt.Errorf("%w: short record", ErrDamaged)
		}
		copy(r.Dest[:], rest)
		rest = rest[32:]
	}
	var k int
	if r.Seq, k = binary.Uvarint(rest); k <= 0 {
		return nil, fmt.Errorf("%w: seq", ErrDamaged)
	}
	rest = rest[k:]
	if r.HLC, k = binary.Varint(rest); k <= 0 {
		return nil, fmt.Errorf("%w: time", ErrDamaged)
	}
	rest = rest[k:]
	if r.Type, k = binary.Varint(rest); k <= 0 {
		return nil, fmt.Errorf("%w: type", ErrDamaged)
	}
	r.Data = rest[k:]
	if len(key) >= 8 {
		r.LogID = int64(binary.BigEndian.Uint64(key[len(key)-8:]))
	}
	r.ID = l.cfg.PacketID(r)
	return r, nil
}

// Since calls fn with the records of LogID > after, in order, until fn
// returns false or limit records (limit <= 0: no limit) have been read.
func (l *Log) Since(after int64, limit int, fn func(*Record) bool) error {
	from := max(after+1, 0)
	prefix := l.key(tLog)
	n := 0
	errStop := errors.New("stop")
	err := l.db.Range(l.key(tLog, be(uint64(from))), store.PrefixEnd(prefix), func(k, v []byte) error {
		r, err := l.open(k, v)
		if err != nil {
			return err
		}
		n++
		if !fn(r) || (limit > 0 && n >= limit) {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return fmt.Errorf("history: read: %w", err)
	}
	return nil
}

// Get returns the record with LogID id.
func (l *Log) Get(id int64) (*Record, error) {
	k := l.key(tLog, be(uint64(id)))
	v, err := l.db.Get(k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	return l.open(k, v)
}

// ByID returns the record of packet id.
func (l *Log) ByID(id [32]byte) (*Record, error) {
	var logIDs []int64
	err := l.db.Scan(l.key(tByID, id[:8]), func(k, _ []byte) error {
		logIDs = append(logIDs, int64(binary.BigEndian.Uint64(k[len(k)-8:])))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	for _, lid := range logIDs { // more than one only if ids share 8 bytes
		r, err := l.Get(lid)
		if err != nil {
			return nil, err
		}
		if r.ID == id {
			return r, nil
		}
	}
	return nil, ErrNotFound
}

// Cert returns the stored certificate of sender.
func (l *Log) Cert(sender [32]byte) ([]byte, error) {
	v, err := l.db.Get(store.Key(tCert, l.cfg.Node[:], sender[:]))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	return v, err
}

// Segment is the tail of one signed batch of a sender, as sync sends it:
// the ids of the batch's packets before the first record, then the records
// to the batch's end, and the batch's signature over all of the ids.
type Segment struct {
	FirstSeq  uint64
	PrefixIDs [][32]byte
	Records   []*Record
	Signature []byte
}

// Segments calls fn with the segments that hold sender's packets from
// sequence number from on, batch by batch, until they cover to, fn
// returns false, or about maxBytes of data have been passed (at least one
// segment is). The first segment starts at from; later ones at their
// batch's start.
func (l *Log) Segments(sender [32]byte, from, to uint64, maxBytes int, fn func(*Segment) bool) error {
	if from == 0 {
		from = 1
	}
	head := l.Head(sender)
	to = min(to, head)
	lower := l.key(tProof, sender[:], be(from))
	upper := store.PrefixEnd(l.key(tProof, sender[:]))
	type proof struct {
		first, last uint64
		sig         []byte
	}
	var proofs []proof
	covered := from - 1
	errStop := errors.New("stop")
	err := l.db.Range(lower, upper, func(k, v []byte) error {
		if len(v) < 8 {
			return fmt.Errorf("%w: proof record", ErrDamaged)
		}
		p := proof{first: binary.BigEndian.Uint64(v), last: binary.BigEndian.Uint64(k[len(k)-8:]), sig: bytes.Clone(v[8:])}
		if p.last <= covered {
			return nil
		}
		proofs = append(proofs, p)
		covered = p.last
		if covered >= to {
			return errStop
		}
		return nil
	})
	if err != nil && err != errStop {
		return fmt.Errorf("history: read proofs: %w", err)
	}
	sent := 0
	pos := from
	for _, p := range proofs {
		if p.first > pos || p.last > head {
			return fmt.Errorf("%w: proofs of %x do not cover seq %d", ErrDamaged, sender[:4], pos)
		}
		recs, err := l.seqRange(sender, p.first, p.last)
		if err != nil {
			return err
		}
		seg := &Segment{FirstSeq: p.first, Signature: p.sig}
		for _, r := range recs {
			if r.Seq < pos {
				seg.PrefixIDs = append(seg.PrefixIDs, r.ID)
				continue
			}
			seg.Records = append(seg.Records, r)
			sent += len(r.Data) + 64
		}
		pos = p.last + 1
		if !fn(seg) || sent >= maxBytes || pos > to {
			return nil
		}
	}
	return nil
}

// seqRange returns sender's packets first..last, in sequence order: the
// sequence index in one scan, then the records with one iterator.
func (l *Log) seqRange(sender [32]byte, first, last uint64) ([]*Record, error) {
	var logIDs []uint64
	err := l.db.Range(l.key(tBySeq, sender[:], be(first)), l.key(tBySeq, sender[:], be(last+1)), func(_, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: seq index", ErrDamaged)
		}
		logIDs = append(logIDs, binary.BigEndian.Uint64(v))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	if uint64(len(logIDs)) != last-first+1 {
		return nil, fmt.Errorf("%w: %x seq %d..%d", ErrNotFound, sender[:4], first, last)
	}
	// A sender's packets are logged in sequence order, so their LogIDs
	// ascend with their sequence numbers.
	keys := make([][]byte, len(logIDs))
	for i, id := range logIDs {
		if i > 0 && id <= logIDs[i-1] {
			return nil, fmt.Errorf("%w: seq index out of log order", ErrDamaged)
		}
		keys[i] = l.key(tLog, be(id))
	}
	out := make([]*Record, len(keys))
	err = l.db.GetMany(keys, func(i int, v []byte) error {
		r, err := l.open(keys[i], v)
		out[i] = r
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	for i, r := range out {
		if r == nil {
			return nil, fmt.Errorf("%w: log record %d", ErrNotFound, logIDs[i])
		}
	}
	return out, nil
}
