package files

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/pipesnet/pipes/internal/identity"
	"github.com/pipesnet/pipes/internal/ids"
)

// A duty (kinds.Duties, docs/protocol.md "Duties") is a signed record
// that any node of the network may set, saying what the network keeps of
// a file:
//
//	version 1 (1) | kind (1) | network id (32) | setter's node key (32) |
//	    file id (32) | set-at (8, ns) | body | signature (64)
//
//	kind 1, copies:  copies (2)                  0 ends the duty
//	kind 2, archive: data (2) | parity (2) | flags (1, bit 0: zstd,
//	                 bit 1: a restricted file's blob) |
//	                 size (8) | payload (8) | shard size (8) |
//	                 name length (2) | name | shard ids (32 each, data+parity)
//
// signed with the setter's node key under DutyContext over every byte
// before the signature. A file has at most one duty of each kind; the one
// set last (set-at, then the signature's bytes) wins. Nodes forward
// duties they did not set (re-broadcasts, newcomers), so the setter is
// the key's node, not the message's origin: a receiver checks the
// network, the signature, and that set-at is not ahead of its clock by
// more than maxDutySkew.
const (
	dutyVersion = 1
	dutyHeader  = 1 + 1 + 32 + 32 + 32 + 8
	// DutyContext is the signature context of duties.
	DutyContext = "pipes/v1 file duty"
	// MaxDuties is the most duties a node keeps; it refuses new ones
	// beyond (updates of those it has still apply).
	MaxDuties = 8192
	// MaxDutyBytes bounds the bytes of the duties a node keeps (a duty of
	// 256 shards has 9 KiB): it refuses new files beyond.
	MaxDutyBytes = 16 << 20
	// MaxCopies is the most copies a duty asks for.
	MaxCopies = 64
	// MaxShards is the most shards of an archive.
	MaxShards = 256

	dutyCopies  byte = 1
	dutyArchive byte = 2

	maxDutySkew  = 10 * time.Minute
	tombstoneFor = 7 * 24 * time.Hour // how long an ended duty is kept
	maxPayload   = 1 << 48            // bytes an archive shards, at most
	maxDutyBytes = dutyHeader + 2 + 2 + 1 + 24 + 2 + MaxName + 32*MaxShards + ed25519.SignatureSize
)

// duty is a decoded, verified duty.
type duty struct {
	kind   byte
	file   ids.Content
	setAt  uint64
	setter ids.Node

	copies int // kind dutyCopies

	// kind dutyArchive
	data, parity int
	compressed   bool
	restricted   bool  // the file is restricted: its manifest carries restrictedNonce
	size         int64 // of the file
	payload      int64 // bytes sharded: size, or the compressed size
	shardSize    int64 // of each shard's payload (its blob has shardHeader more)
	name         string
	shards       []ids.Content

	raw []byte // the signed encoding
}

// dutyKey is the store key of a duty: "d" | kind | file id.
func dutyKey(kind byte, file ids.Content) []byte {
	return append([]byte{'d', kind}, file[:]...)
}

type dutySlot struct {
	kind byte
	file ids.Content
}

// ended reports whether d is a tombstone (a copies duty of 0).
func (d *duty) ended() bool { return d.kind == dutyCopies && d.copies == 0 }

// encodeDuty signs d (its raw is set) by key in network.
func encodeDuty(key *identity.KeyPair, network [32]byte, d *duty) []byte {
	b := make([]byte, 0, dutyHeader+64+32*len(d.shards)+len(d.name))
	b = append(b, dutyVersion, d.kind)
	b = append(b, network[:]...)
	b = append(b, key.Public...)
	b = append(b, d.file[:]...)
	b = binary.BigEndian.AppendUint64(b, d.setAt)
	switch d.kind {
	case dutyCopies:
		b = binary.BigEndian.AppendUint16(b, uint16(d.copies))
	case dutyArchive:
		b = binary.BigEndian.AppendUint16(b, uint16(d.data))
		b = binary.BigEndian.AppendUint16(b, uint16(d.parity))
		var fl byte
		if d.compressed {
			fl |= 1
		}
		if d.restricted {
			fl |= 2
		}
		b = append(b, fl)
		b = binary.BigEndian.AppendUint64(b, uint64(d.size))
		b = binary.BigEndian.AppendUint64(b, uint64(d.payload))
		b = binary.BigEndian.AppendUint64(b, uint64(d.shardSize))
		b = binary.BigEndian.AppendUint16(b, uint16(len(d.name)))
		b = append(b, d.name...)
		for _, s := range d.shards {
			b = append(b, s[:]...)
		}
	}
	b = append(b, identity.Sign(key, DutyContext, b)...)
	d.raw = b
	d.setter = ids.Node(sha256.Sum256(key.Public))
	return b
}

// decodeDuty decodes and verifies a duty of network; now bounds set-at.
func decodeDuty(b []byte, network [32]byte, now time.Time) (*duty, error) {
	if len(b) > maxDutyBytes {
		return nil, fmt.Errorf("%w: duty of %d bytes", ErrOversize, len(b))
	}
	if len(b) < dutyHeader+2+ed25519.SignatureSize || b[0] != dutyVersion {
		return nil, fmt.Errorf("%w: duty of %d bytes", ErrMalformed, len(b))
	}
	if !bytes.Equal(b[2:34], network[:]) {
		return nil, fmt.Errorf("%w: a duty of another network", ErrForged)
	}
	body, sig := b[:len(b)-ed25519.SignatureSize], b[len(b)-ed25519.SignatureSize:]
	key := ed25519.PublicKey(b[34:66])
	d := &duty{kind: b[1], file: ids.Content(b[66:98]), setAt: binary.BigEndian.Uint64(b[98:106]),
		setter: ids.Node(sha256.Sum256(key))}
	rest := body[dutyHeader:]
	switch d.kind {
	case dutyCopies:
		if len(rest) != 2 {
			return nil, fmt.Errorf("%w: copies duty of %d bytes", ErrMalformed, len(b))
		}
		d.copies = int(binary.BigEndian.Uint16(rest))
		if d.copies > MaxCopies {
			return nil, fmt.Errorf("%w: %d copies", ErrOversize, d.copies)
		}
	case dutyArchive:
		if len(rest) < 2+2+1+24+2 {
			return nil, fmt.Errorf("%w: archive duty of %d bytes", ErrMalformed, len(b))
		}
		d.data, d.parity = int(binary.BigEndian.Uint16(rest)), int(binary.BigEndian.Uint16(rest[2:]))
		d.compressed, d.restricted = rest[4]&1 != 0, rest[4]&2 != 0
		d.size = int64(binary.BigEndian.Uint64(rest[5:]))
		d.payload = int64(binary.BigEndian.Uint64(rest[13:]))
		d.shardSize = int64(binary.BigEndian.Uint64(rest[21:]))
		n := int(binary.BigEndian.Uint16(rest[29:]))
		rest = rest[31:]
		total := d.data + d.parity
		switch {
		case d.data < 1 || total > MaxShards:
			return nil, fmt.Errorf("%w: %d+%d shards", ErrMalformed, d.data, d.parity)
		case n > MaxName || len(rest) != n+32*total:
			return nil, fmt.Errorf("%w: archive duty of %d bytes", ErrMalformed, len(b))
		case d.size < 0 || d.payload < 0 || d.payload > maxPayload ||
			d.shardSize != (d.payload+int64(d.data)-1)/int64(d.data):
			return nil, fmt.Errorf("%w: archive sizes", ErrMalformed)
		}
		d.name = string(rest[:n])
		d.shards = make([]ids.Content, total)
		for i := range d.shards {
			d.shards[i] = ids.Content(rest[n+32*i:])
		}
	default:
		return nil, fmt.Errorf("%w: duty of kind %d", ErrMalformed, d.kind)
	}
	if d.setAt > uint64(now.Add(maxDutySkew).UnixNano()) {
		return nil, fmt.Errorf("%w: a duty set in the future", ErrMalformed)
	}
	if !identity.Verify(key, DutyContext, body, sig) {
		return nil, fmt.Errorf("%w: the duty's signature does not verify", ErrForged)
	}
	d.raw = append([]byte(nil), b...)
	return d, nil
}

// newer reports whether a wins over b (last writer wins).
func (a *duty) newer(b *duty) bool {
	if a.setAt != b.setAt {
		return a.setAt > b.setAt
	}
	return bytes.Compare(a.raw[len(a.raw)-64:], b.raw[len(b.raw)-64:]) > 0
}

// duties are the duties this node knows, and the shards they name.
type duties struct {
	mu     sync.Mutex
	m      map[dutySlot]*duty
	shards map[ids.Content]shardRef // shard id → its archive
	bytes  int                      // of the duties kept
	last   uint64                   // set-at of the last duty this node set
}

// shardRef names shard index of the archive of file.
type shardRef struct {
	file  ids.Content
	index int
}

func newDuties() *duties {
	return &duties{m: map[dutySlot]*duty{}, shards: map[ids.Content]shardRef{}}
}

// apply keeps d if it wins over what the table has of its slot, and
// reports whether it did.
func (t *duties) apply(d *duty) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := dutySlot{d.kind, d.file}
	old := t.m[k]
	if old != nil && !d.newer(old) {
		return false
	}
	if old == nil && (len(t.m) >= MaxDuties || t.bytes+len(d.raw) > MaxDutyBytes) {
		return false
	}
	if old != nil {
		for _, s := range old.shards {
			delete(t.shards, s)
		}
		t.bytes -= len(old.raw)
	}
	t.bytes += len(d.raw)
	t.m[k] = d
	for i, s := range d.shards {
		t.shards[s] = shardRef{file: d.file, index: i}
	}
	return true
}

// get returns the duty of kind of file, nil if none (or ended).
func (t *duties) get(kind byte, file ids.Content) *duty {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.m[dutySlot{kind, file}]
	if d == nil || d.ended() {
		return nil
	}
	return d
}

// shardOf returns the archive duty that id is a shard of.
func (t *duties) shardOf(id ids.Content) (*duty, int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.shards[id]
	if !ok {
		return nil, 0, false
	}
	return t.m[dutySlot{dutyArchive, r.file}], r.index, true
}

// all returns every duty kept, tombstones included.
func (t *duties) all() []*duty {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*duty, 0, len(t.m))
	for _, d := range t.m {
		out = append(out, d)
	}
	return out
}

// expired removes the tombstones set before now-tombstoneFor and returns
// them.
func (t *duties) expired(now time.Time) []*duty {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*duty
	limit := uint64(now.Add(-tombstoneFor).UnixNano())
	for k, d := range t.m {
		if d.ended() && d.setAt < limit {
			delete(t.m, k)
			t.bytes -= len(d.raw)
			out = append(out, d)
		}
	}
	return out
}

// nextSetAt returns the set-at of a duty this node sets now: its clock,
// above the last it set and above prev's.
func (t *duties) nextSetAt(prev *duty) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	at := max(uint64(time.Now().UnixNano()), t.last+1)
	if prev != nil {
		at = max(at, prev.setAt+1)
	}
	t.last = at
	return at
}

// slot returns the duty of kind of file, tombstones included.
func (t *duties) slot(kind byte, file ids.Content) *duty {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[dutySlot{kind, file}]
}
