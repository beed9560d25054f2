package history

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/store"
)

// Blocks hold at most blockRecords records and, unless one record alone
// is larger, blockBytes of data.
const (
	blockRecords = 256
	blockBytes   = 256 << 10
)

// A commit adds its first records to the last block, rewriting it, while
// that block is small (fewer than tailRecords records and tailBytes
// bytes): one writer that commits a packet at a time then still gets
// blocks of many packets, at the price of rewriting a few KiB per commit.
const (
	tailRecords = 64
	tailBytes   = 16 << 10
)

// tail is the last block written: its first LogID, plaintext and records.
type tail struct {
	first int64
	pt    []byte
	n     int
}

// appendRecord encodes a record into a block: uvarint sender number |
// flags (bit 0: destination follows; bit 1: file packet) | [destination] | uvarint seq |
// varint hlc | varint type | uvarint data length | data.
func appendRecord(b []byte, sender uint32, r *Record) []byte {
	b = binary.AppendUvarint(b, uint64(sender))
	var flags byte
	if r.File {
		flags |= 2
	}
	if !r.Dest.IsZero() {
		b = append(b, flags|1)
		b = append(b, r.Dest[:]...)
	} else {
		b = append(b, flags)
	}
	b = binary.AppendUvarint(b, r.Seq)
	b = binary.AppendVarint(b, r.HLC)
	b = binary.AppendVarint(b, r.Type)
	b = binary.AppendUvarint(b, uint64(len(r.Data)))
	return append(b, r.Data...)
}

// sealBlock encrypts a block with a random nonce and its key as associated
// data.
func (l *Log) sealBlock(key, block []byte) ([]byte, error) {
	out := make([]byte, chacha20poly1305.NonceSize, chacha20poly1305.NonceSize+len(block)+l.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return l.aead.Seal(out, out, block, key), nil
}

// openBlock decrypts and decodes the block stored under key.
func (l *Log) openBlock(key, v []byte) ([]*Record, error) {
	pt, err := l.decryptBlock(key, v)
	if err != nil {
		return nil, err
	}
	return l.decodeBlock(key, pt)
}

// decryptBlock returns the plaintext of the block stored under key.
func (l *Log) decryptBlock(key, v []byte) ([]byte, error) {
	n := chacha20poly1305.NonceSize
	if len(v) < n+l.aead.Overhead() || len(key) < 8 {
		return nil, fmt.Errorf("%w: short block", ErrDamaged)
	}
	pt, err := l.aead.Open(nil, v[:n], v[n:], key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return pt, nil
}

// decodeBlock decodes the plaintext of the block stored under key. The
// records' data share pt.
func (l *Log) decodeBlock(key, pt []byte) ([]*Record, error) {
	first := int64(binary.BigEndian.Uint64(key[len(key)-8:]))
	var out []*Record
	for len(pt) > 0 {
		r := &Record{LogID: first + int64(len(out))}
		sn, k := binary.Uvarint(pt)
		if k <= 0 {
			return nil, fmt.Errorf("%w: sender", ErrDamaged)
		}
		pt = pt[k:]
		s, ok := l.senderOf(sn)
		if !ok || len(pt) < 1 {
			return nil, fmt.Errorf("%w: sender number %d", ErrDamaged, sn)
		}
		r.Sender = s
		flags := pt[0]
		pt = pt[1:]
		r.File = flags&2 != 0
		if flags&1 != 0 {
			if len(pt) < 32 {
				return nil, fmt.Errorf("%w: destination", ErrDamaged)
			}
			copy(r.Dest[:], pt)
			pt = pt[32:]
		}
		if r.Seq, k = binary.Uvarint(pt); k <= 0 {
			return nil, fmt.Errorf("%w: seq", ErrDamaged)
		}
		pt = pt[k:]
		if r.HLC, k = binary.Varint(pt); k <= 0 {
			return nil, fmt.Errorf("%w: time", ErrDamaged)
		}
		pt = pt[k:]
		if r.Type, k = binary.Varint(pt); k <= 0 {
			return nil, fmt.Errorf("%w: type", ErrDamaged)
		}
		pt = pt[k:]
		size, k := binary.Uvarint(pt)
		if k <= 0 || uint64(len(pt)-k) < size {
			return nil, fmt.Errorf("%w: data", ErrDamaged)
		}
		r.Data = pt[k : k+int(size) : k+int(size)]
		pt = pt[k+int(size):]
		r.ID = l.cfg.PacketID(r)
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty block", ErrDamaged)
	}
	return out, nil
}

// senderOf returns the sender with number n.
func (l *Log) senderOf(n uint64) (ids.Node, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n >= uint64(len(l.senders)) {
		return ids.Node{}, false
	}
	return l.senders[n], true
}

var errStop = errors.New("stop")

// cachedBlock is a decoded block; its records are shared, read-only. A
// block is identified by its first LogID and its stored size: the last
// block may be rewritten with more records, and then it is larger.
type cachedBlock struct {
	first int64
	size  int
	recs  []*Record
}

func (l *Log) cached(first int64, size int) []*Record {
	l.cacheMu.Lock()
	defer l.cacheMu.Unlock()
	for _, c := range l.cache {
		if c.recs != nil && c.first == first && c.size == size {
			return c.recs
		}
	}
	return nil
}

func (l *Log) remember(first int64, size int, recs []*Record) {
	l.cacheMu.Lock()
	defer l.cacheMu.Unlock()
	l.cache[l.cacheAt] = cachedBlock{first: first, size: size, recs: recs}
	l.cacheAt = (l.cacheAt + 1) % len(l.cache)
}

// blocks calls fn with the records of the blocks that may hold LogIDs
// from..to (to < 0: to the end), in order, block by block, until fn
// returns false.
func (l *Log) blocks(from, to int64, fn func([]*Record) bool) error {
	prefix := l.key(tLog)
	// The block holding from starts at or before it.
	start := l.key(tLog, be(uint64(max(from, 0))))
	if k, _, err := l.db.Last(prefix, l.key(tLog, be(uint64(max(from, 0))+1))); err == nil {
		start = k
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	upper := store.PrefixEnd(prefix)
	if to >= 0 {
		upper = l.key(tLog, be(uint64(to)+1))
	}
	err := l.db.Range(start, upper, func(k, v []byte) error {
		first := int64(binary.BigEndian.Uint64(k[len(k)-8:]))
		recs := l.cached(first, len(v))
		if recs == nil {
			var err error
			if recs, err = l.openBlock(k, v); err != nil {
				return err
			}
			l.remember(first, len(v), recs)
		}
		if !fn(recs) {
			return errStop
		}
		return nil
	})
	if err == errStop {
		return nil
	}
	return err
}

// Since calls fn with the records of LogID > after, in order, until fn
// returns false or limit records (limit <= 0: no limit) have been read.
func (l *Log) Since(after int64, limit int, fn func(*Record) bool) error {
	n := 0
	err := l.blocks(after+1, -1, func(recs []*Record) bool {
		for _, r := range recs {
			if r.LogID <= after {
				continue
			}
			n++
			if !fn(r) || (limit > 0 && n >= limit) {
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("history: read: %w", err)
	}
	return nil
}

// Get returns the record with LogID id.
func (l *Log) Get(id int64) (*Record, error) {
	var out *Record
	err := l.blocks(id, id, func(recs []*Record) bool {
		for _, r := range recs {
			if r.LogID == id {
				out = r
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	if out == nil {
		return nil, ErrNotFound
	}
	return out, nil
}

// ByID returns the record of packet id.
func (l *Log) ByID(id ids.Packet) (*Record, error) {
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
	// Packets logged in bulk wait for IndexSome: look through them.
	l.mu.Lock()
	from := l.indexed
	l.mu.Unlock()
	var found *Record
	err = l.blocks(from, -1, func(recs []*Record) bool {
		for _, r := range recs {
			if r.LogID >= from && r.ID == id {
				found = r
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	if found != nil {
		return found, nil
	}
	return nil, ErrNotFound
}

// seqRange returns sender's packets first..last, in sequence order: the
// runs of the sequence index give their LogIDs, then the blocks that hold
// them are read in one scan.
func (l *Log) seqRange(sender ids.Node, first, last uint64) ([]*Record, error) {
	seq0, id0, err := l.runOf(sender, first)
	if err != nil {
		return nil, err
	}
	// Runs that start after first, up to last.
	type start struct {
		seq   uint64
		logID int64
	}
	runs := []start{{seq0, id0}}
	err = l.db.Range(l.key(tBySeq, sender[:], be(first+1)), l.key(tBySeq, sender[:], be(last+1)), func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("%w: seq index", ErrDamaged)
		}
		runs = append(runs, start{binary.BigEndian.Uint64(k[len(k)-8:]), int64(binary.BigEndian.Uint64(v))})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	want := make(map[int64]uint64, last-first+1) // LogID -> seq
	lo, hi := int64(-1), int64(-1)
	ri := 0
	for s := first; s <= last; s++ {
		for ri+1 < len(runs) && runs[ri+1].seq <= s {
			ri++
		}
		id := runs[ri].logID + int64(s-runs[ri].seq)
		want[id] = s
		if lo < 0 || id < lo {
			lo = id
		}
		hi = max(hi, id)
	}
	out := make([]*Record, last-first+1)
	found := 0
	err = l.blocks(lo, hi, func(recs []*Record) bool {
		for _, r := range recs {
			if s, ok := want[r.LogID]; ok && r.Sender == sender && r.Seq == s {
				out[s-first] = r
				found++
			}
		}
		return found < len(out)
	})
	if err != nil {
		return nil, fmt.Errorf("history: read: %w", err)
	}
	if found != len(out) {
		return nil, fmt.Errorf("%w: %x seq %d..%d (%d of %d found)", ErrNotFound, sender[:4], first, last, found, len(out))
	}
	return out, nil
}

// indexInline is the largest commit whose packets are indexed by id in
// the commit itself.
const indexInline = 1024

// Unindexed returns how many logged packets are not yet in the index by
// packet id.
func (l *Log) Unindexed() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next - l.indexed
}

// IndexSome adds up to max logged packets to the index by packet id and
// reports how many it added (0: the index is complete). The log's writer
// calls it when it has nothing else to do; it is not meant to run
// concurrently with itself.
func (l *Log) IndexSome(max int) (int, error) {
	l.mu.Lock()
	from, to := l.indexed, min(l.indexed+int64(max), l.next)-1
	l.mu.Unlock()
	if from > to {
		return 0, nil
	}
	var recs []*Record
	err := l.blocks(from, to, func(rs []*Record) bool {
		for _, r := range rs {
			if r.LogID >= from && r.LogID <= to {
				recs = append(recs, r)
			}
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("history: index: %w", err)
	}
	if len(recs) == 0 {
		return 0, fmt.Errorf("%w: LogIDs %d..%d missing", ErrDamaged, from, to)
	}
	end := recs[len(recs)-1].LogID + 1
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.indexed != from {
		return 0, nil // indexed meanwhile
	}
	err = l.db.Batch(func(b *store.Batch) error {
		for _, r := range recs {
			if err := b.Set(l.key(tByID, r.ID[:8], be(uint64(r.LogID))), nil); err != nil {
				return err
			}
		}
		return b.Set(l.key(tIndex), be(uint64(end)))
	})
	if err != nil {
		return 0, fmt.Errorf("history: index: %w", err)
	}
	l.indexed = end
	return len(recs), nil
}
