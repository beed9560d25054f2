// Package history is the persistent log of a pipeline on one node: its
// packets in the order the node logged them (LogIDs 0, 1, 2, ...), indexes
// by packet id and by sender sequence, the batch signatures that let the
// node prove its packets to other nodes, and the heads (for each sender,
// the last sequence number logged: a version vector) that sync compares.
//
// A sender's packets are logged in sequence order with no gaps: Append
// refuses a packet whose sequence number is not its sender's head plus
// one. Every Append is one synced, atomic store batch.
//
// Packets are stored in blocks of consecutive LogIDs (up to blockRecords
// records or blockBytes of data), each block encrypted at rest with a key
// of the pipeline (ChaCha20-Poly1305, a random nonce per block, the
// block's store key as associated data). Packing saves a key, a nonce and
// a tag per packet; a block is the unit of reading. Senders are numbered
// per pipeline, so a record names its sender in one or two bytes. Keys,
// sequence numbers and signatures are stored in clear.
//
// # Keyspace
//
// Tables of the shared store (see package store). Each log has a handle,
// a number unique in the store that stands for (local node, pipeline) in
// its keys, so that several nodes can share one store and keys stay short:
//
//	'P' | node | pipe                        -> handle (8 bytes)
//	'P'                                      -> the last handle allocated
//	'L' | handle | first logID               -> sealed block of records
//	'X' | handle | id[:8] | logID            -> nothing (index by packet id)
//	'Q' | handle | sender | seq              -> logID, for the first packet of each
//	                                            run of a sender's packets with
//	                                            consecutive LogIDs
//	'H' | handle | sender                    -> head
//	'N' | handle | sender number             -> sender id
//	'G' | handle | sender | last seq         -> first seq || signature
//	'T' | handle                             -> data bytes stored
//	'W' | handle                             -> LogIDs below this are in 'X'
//	'C' | node | sender                      -> certificate (pb.Signed)
//	'F' | node | pipe                        -> sealed definition
//	'S' | node | pipe                        -> sealed pipeline key (encrypted pipelines)
//	'Z' | node | pipe                        -> sealed tombstone (shut down pipelines)
//	'Y' | node | root                        -> sealed file to fetch: pipeline | sender | manifest
//	'O' | node | root                        -> sealed owner of a stored file: pipeline
//
// Integers in keys and values are big endian (8 bytes; sender numbers 4).
package history

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/pipesnet/pipes/internal/ids"
	"github.com/pipesnet/pipes/internal/keys"
	"github.com/pipesnet/pipes/internal/store"
)

// Tables (allocated in package store; key layouts above).
const (
	tLog    = store.TLog
	tByID   = store.TByID
	tBySeq  = store.TBySeq
	tHead   = store.THead
	tSender = store.TSender
	tProof  = store.TProof
	tBytes  = store.TBytes
	tCert   = store.TCert
	tDef    = store.TDef
	tHandle = store.THandle
	tIndex  = store.TIndex
	tSecret = store.TSecret
	tTomb   = store.TTomb
	tFetch  = store.TFetch
	tOwner  = store.TOwner
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
	ID     ids.Packet
	Sender ids.Node
	Seq    uint64
	HLC    int64
	Type   int64
	Dest   ids.Node // zero: every node of the pipeline
	File   bool     // Data is a file's manifest
	Data   []byte
}

// Proof is the signature of one batch of a sender's packets, FirstSeq to
// LastSeq, over the concatenation of their ids.
type Proof struct {
	Sender    ids.Node
	FirstSeq  uint64
	LastSeq   uint64
	Signature []byte
	Cert      []byte // the sender's certificate (pb.Signed), stored once per sender
}

// Config configures Open.
type Config struct {
	Node     ids.Node // the local node
	Pipeline ids.Pipeline
	Key      [32]byte // the pipeline's at-rest key (see DeriveKey)
	// PacketID computes a record's packet id from its other fields.
	PacketID func(*Record) ids.Packet
}

// run is where a sender's last run of consecutive LogIDs ends.
type run struct {
	seq   uint64
	logID int64
}

// Log is the history of one pipeline on one node. It is safe for
// concurrent use; appends are serialised.
type Log struct {
	db   *store.DB
	cfg  Config
	aead cipher.AEAD
	pfx  []byte // the log's handle (see handleOf)

	mu      sync.Mutex // held across an Append's commit
	next    int64
	heads   map[ids.Node]uint64
	bytes   int64
	runs    map[ids.Node]run
	numbers map[ids.Node]uint32 // sender -> number
	senders []ids.Node          // number -> sender
	tail    tail                // the last block
	indexed int64               // LogIDs below it are in the index by packet id

	cacheMu sync.Mutex
	cache   [4]cachedBlock // recently decoded blocks, for readers that come back to them
	cacheAt int
}

// DeriveKey derives the 32-byte key of one purpose (a label of package
// keys and an id, or nil) from a node's store key, unsalted.
func DeriveKey(storeKey [32]byte, label keys.Label, id []byte) [32]byte {
	return [32]byte(keys.Derive(storeKey[:], nil, label, id, 32))
}

// Drop deletes the whole history of pipeline pipe for node, in one atomic
// write. The log must not be in use (no Log of it open, or none used
// again).
func Drop(db *store.DB, node ids.Node, pipe ids.Pipeline) error {
	handleMu.Lock()
	defer handleMu.Unlock()
	hk := store.Key(tHandle, node[:], pipe[:])
	h, err := db.Get(hk)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("history: drop: %w", err)
	}
	err = db.Batch(func(b *store.Batch) error {
		for _, t := range []byte{tLog, tByID, tBySeq, tHead, tSender, tProof, tBytes, tIndex} {
			if err := b.DeletePrefix(store.Key(t, h)); err != nil {
				return err
			}
		}
		return b.Delete(hk)
	})
	if err != nil {
		return fmt.Errorf("history: drop: %w", err)
	}
	return nil
}

// Open loads the log's heads, senders and length from the store.
func Open(db *store.DB, cfg Config) (*Log, error) {
	if cfg.PacketID == nil {
		return nil, errors.New("history: Config.PacketID is required")
	}
	aead, _ := chacha20poly1305.New(cfg.Key[:])
	l := &Log{db: db, cfg: cfg, aead: aead, heads: map[ids.Node]uint64{}, runs: map[ids.Node]run{},
		numbers: map[ids.Node]uint32{}}
	h, err := handleOf(db, cfg.Node, cfg.Pipeline)
	if err != nil {
		return nil, fmt.Errorf("history: open: %w", err)
	}
	l.pfx = h
	if err := l.load(); err != nil {
		return nil, fmt.Errorf("history: open: %w", err)
	}
	return l, nil
}

func (l *Log) load() error {
	err := l.db.Scan(l.key(tHead), func(k, v []byte) error {
		if len(k) != 1+handleLen+32 || len(v) != 8 {
			return fmt.Errorf("%w: head record", ErrDamaged)
		}
		l.heads[ids.Node(k[1+handleLen:])] = binary.BigEndian.Uint64(v)
		return nil
	})
	if err != nil {
		return err
	}
	err = l.db.Scan(l.key(tSender), func(k, v []byte) error {
		if len(k) != 1+handleLen+4 || len(v) != 32 || binary.BigEndian.Uint32(k[1+handleLen:]) != uint32(len(l.senders)) {
			return fmt.Errorf("%w: sender record", ErrDamaged)
		}
		l.numbers[ids.Node(v)] = uint32(len(l.senders))
		l.senders = append(l.senders, ids.Node(v))
		return nil
	})
	if err != nil {
		return err
	}
	// The next LogID follows the last block's records.
	prefix := l.key(tLog)
	k, v, err := l.db.Last(prefix, store.PrefixEnd(prefix))
	switch {
	case err == nil:
		pt, err := l.decryptBlock(k, v)
		if err != nil {
			return err
		}
		recs, err := l.decodeBlock(k, pt)
		if err != nil {
			return err
		}
		l.next = recs[len(recs)-1].LogID + 1
		if len(recs) < tailRecords && len(pt) < tailBytes {
			l.tail = tail{first: recs[0].LogID, pt: pt, n: len(recs)}
		}
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	if v, err := l.db.Get(l.key(tIndex)); err == nil && len(v) == 8 {
		l.indexed = min(int64(binary.BigEndian.Uint64(v)), l.next)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if v, err := l.db.Get(l.key(tBytes)); err == nil && len(v) == 8 {
		l.bytes = int64(binary.BigEndian.Uint64(v))
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	// Where each sender's last run ends: its head, at the LogID its last
	// run gives it.
	for s, h := range l.heads {
		seq0, id0, err := l.runOf(s, h)
		if err != nil {
			return err
		}
		l.runs[s] = run{seq: h, logID: id0 + int64(h-seq0)}
	}
	return nil
}

// runOf returns the start (sequence number and LogID) of the run of
// sender's packets that holds seq.
func (l *Log) runOf(sender ids.Node, seq uint64) (uint64, int64, error) {
	k, v, err := l.db.Last(l.key(tBySeq, sender[:]), l.key(tBySeq, sender[:], be(seq+1)))
	if errors.Is(err, store.ErrNotFound) {
		return 0, 0, fmt.Errorf("%w: %x seq %d", ErrNotFound, sender[:4], seq)
	}
	if err != nil {
		return 0, 0, err
	}
	if len(v) != 8 || len(k) < 8 {
		return 0, 0, fmt.Errorf("%w: seq index", ErrDamaged)
	}
	return binary.BigEndian.Uint64(k[len(k)-8:]), int64(binary.BigEndian.Uint64(v)), nil
}

// handleLen is the size of a log's handle.
const handleLen = 8

// handleMu serialises the allocation of handles.
var handleMu sync.Mutex

// handleOf returns the handle of the log of pipe on node, allocating it on
// first use: a short, local stand-in for node | pipe (64 bytes) in every
// key of the log, which keeps keys short and comparisons cheap.
// 'P' | node | pipe -> handle; 'P' -> the last handle allocated in the
// store.
func handleOf(db *store.DB, node ids.Node, pipe ids.Pipeline) ([]byte, error) {
	handleMu.Lock()
	defer handleMu.Unlock()
	k := store.Key(tHandle, node[:], pipe[:])
	v, err := db.Get(k)
	if err == nil && len(v) == handleLen {
		return v, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if err == nil {
		return nil, fmt.Errorf("%w: log handle", ErrDamaged)
	}
	counter := store.Key(tHandle) // one counter for the whole store: nodes that share it never share a handle
	var last uint64
	if c, err := db.Get(counter); err == nil && len(c) == 8 {
		last = binary.BigEndian.Uint64(c)
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	h := be(last + 1)
	err = db.Batch(func(b *store.Batch) error {
		if err := b.Set(counter, h); err != nil {
			return err
		}
		return b.Set(k, h)
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// key returns table | handle | parts.
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
func (l *Log) Head(sender ids.Node) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.heads[sender]
}

// Heads returns a copy of every sender's head.
func (l *Log) Heads() map[ids.Node]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[ids.Node]uint64, len(l.heads))
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
	heads := map[ids.Node]uint64{}
	head := func(s ids.Node) uint64 {
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
	runs := map[ids.Node]run{}
	numbers := map[ids.Node]uint32{}
	nsenders := len(l.senders)
	number := func(s ids.Node) (uint32, bool) {
		if n, ok := l.numbers[s]; ok {
			return n, false
		}
		if n, ok := numbers[s]; ok {
			return n, false
		}
		n := uint32(nsenders)
		nsenders++
		numbers[s] = n
		return n, true
	}
	var last tail
	// A small commit on an up-to-date index indexes its packets at once;
	// a large one (catching up) leaves them to IndexSome, off the path
	// that makes the packets durable and readable.
	index := l.indexed == l.next && len(recs) <= indexInline
	err := l.db.Batch(func(b *store.Batch) error {
		var block []byte
		blockFirst, blockN := next, 0
		if l.tail.n > 0 && l.tail.n < tailRecords && len(l.tail.pt) < tailBytes {
			// Continue the last block.
			block = append(block, l.tail.pt...)
			blockFirst, blockN = l.tail.first, l.tail.n
		}
		flush := func() error {
			if blockN == 0 {
				return nil
			}
			k := l.key(tLog, be(uint64(blockFirst)))
			sealed, err := l.sealBlock(k, block)
			if err != nil {
				return err
			}
			last = tail{n: -1} // full: the next commit starts a new block
			if blockN < tailRecords && len(block) < tailBytes {
				last = tail{first: blockFirst, pt: append([]byte(nil), block...), n: blockN}
			}
			block, blockN = block[:0], 0
			return b.Set(k, sealed)
		}
		for _, r := range recs {
			if blockN > 0 && (blockN >= blockRecords || len(block)+len(r.Data) > blockBytes) {
				if err := flush(); err != nil {
					return err
				}
			}
			if blockN == 0 {
				blockFirst = next
			}
			n, isNew := number(r.Sender)
			if isNew {
				if err := b.Set(l.key(tSender, binary.BigEndian.AppendUint32(nil, n)), r.Sender[:]); err != nil {
					return err
				}
			}
			block = appendRecord(block, n, r)
			blockN++
			id := be(uint64(next))
			if index {
				if err := b.Set(l.key(tByID, r.ID[:8], id), nil); err != nil {
					return err
				}
			}
			last, ok := runs[r.Sender]
			if !ok {
				last = l.runs[r.Sender]
			}
			if last.seq != r.Seq-1 || last.logID != next-1 || last.seq == 0 {
				if err := b.Set(l.key(tBySeq, r.Sender[:], be(r.Seq)), id); err != nil {
					return err
				}
			}
			runs[r.Sender] = run{seq: r.Seq, logID: next}
			next++
			size += int64(len(r.Data))
		}
		if err := flush(); err != nil {
			return err
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
		if index {
			if err := b.Set(l.key(tIndex), be(uint64(next))); err != nil {
				return err
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
	if index {
		l.indexed = next
	}
	switch {
	case last.n > 0:
		l.tail = last
	case last.n < 0:
		l.tail = tail{}
	}
	for s, h := range heads {
		l.heads[s] = h
	}
	for s, r := range runs {
		l.runs[s] = r
	}
	for s, n := range numbers {
		l.numbers[s] = n
		for uint32(len(l.senders)) <= n {
			l.senders = append(l.senders, ids.Node{})
		}
		l.senders[n] = s
	}
	return nil
}
